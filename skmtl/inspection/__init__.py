"""Inspect fitted multi-task models: how alike the tasks are, who gains from sharing.

The Displays follow scikit-learn's (``sklearn.metrics.PredictionErrorDisplay``):
``from_estimator`` or ``from_predictions`` compute the data and call
``plot(ax=None, ...)``, which draws it and sets ``ax_`` and ``figure_``.
They need matplotlib, which is imported only when plotting
(``pip install "skmtl[plot]"``); :func:`task_similarity` does not.
"""

from ._per_task_score import PerTaskScoreDisplay
from ._similarity import TaskSimilarityDisplay, task_similarity
from ._task_weights import TaskWeightsDisplay

__all__ = [
    "PerTaskScoreDisplay",
    "TaskSimilarityDisplay",
    "TaskWeightsDisplay",
    "task_similarity",
]
