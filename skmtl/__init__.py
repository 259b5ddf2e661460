"""skmtl: multi-task learning for scikit-learn users.

Every group of rows ("task": a school, a hospital, a store, a target column)
gets its own model while borrowing strength from the others.
"""

from ._shared_objective import SharedObjectiveRegressor
from ._shared_param import SharedParamRegressor

__version__ = "0.1.0.dev0"

__all__ = ["SharedObjectiveRegressor", "SharedParamRegressor", "__version__"]
