"""Scores for multi-task predictions that leave out missing labels.

scikit-learn's metrics and its ``'r2'`` scorer fail on a NaN in ``y``, which
in the wide layout means "no label for this task on this row". These compute
per-task scores, their mean, and the pooled explained variance that the
multi-task literature reports, on the observed labels only, and provide
scorers for ``GridSearchCV(scoring=...)``.
"""

from ._scorers import get_scorer, get_scorer_names
from ._scores import mean_task_score, per_task_score, pooled_explained_variance_score

__all__ = [
    "get_scorer",
    "get_scorer_names",
    "mean_task_score",
    "per_task_score",
    "pooled_explained_variance_score",
]
