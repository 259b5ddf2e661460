"""skmtl: multi-task learning for scikit-learn users.

Every group of rows ("task": a school, a hospital, a store, a target column)
gets its own model while borrowing strength from the others.
"""

from ._shared_feature import SharedFeatureRegressor, shared_feature_path
from ._shared_objective import SharedObjectiveRegressor
from ._shared_param import SharedParamRegressor

__version__ = "0.1.0.dev0"

__all__ = [
    "SharedFeatureRegressor",
    "SharedObjectiveRegressor",
    "SharedParamRegressor",
    "shared_feature_path",
    "__version__",
]
