"""Scores that leave out missing labels: per task, averaged over tasks, pooled."""

import numpy as np
from sklearn.metrics import (
    explained_variance_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)
from sklearn.utils import check_array, check_consistent_length

_METRICS = {
    "r2": r2_score,
    "explained_variance": explained_variance_score,
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
}
# Undefined on fewer than two labels: the variance of y_true is in the denominator.
_NEEDS_TWO = {"r2", "explained_variance"}


def _check_targets(y_true, y_pred, sample_weight):
    """Float arrays of one shape; NaN allowed in ``y_true`` only (a missing label)."""
    y_true = check_array(y_true, ensure_2d=False, dtype=np.float64,
                         ensure_all_finite="allow-nan", input_name="y_true")
    y_pred = check_array(y_pred, ensure_2d=False, dtype=np.float64, input_name="y_pred")
    if y_true.ndim > 2:
        raise ValueError(f"y_true must be 1-D or 2-D; got shape {y_true.shape}.")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred have different shapes: {y_true.shape} and "
                         f"{y_pred.shape}.")
    if sample_weight is not None:
        sample_weight = check_array(sample_weight, ensure_2d=False, dtype=np.float64,
                                    input_name="sample_weight")
        check_consistent_length(y_true, sample_weight)
    return y_true, y_pred, sample_weight


def _task_columns(y_true, y_pred, task, sample_weight):
    """One ``(y_true, y_pred, weight)`` triple of observed labels per task."""
    if task is None:
        Y, P = y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1)
        observed = ~np.isnan(Y)
        return [
            (Y[observed[:, t], t], P[observed[:, t], t],
             None if sample_weight is None else sample_weight[observed[:, t]])
            for t in range(Y.shape[1])
        ]
    if y_true.ndim != 1:
        raise ValueError("task is for the long layout, where y_true is 1-D; got y_true of "
                         f"shape {y_true.shape}.")
    task = np.asarray(task)
    check_consistent_length(y_true, task)
    observed = ~np.isnan(y_true)
    out = []
    for label in np.unique(task):
        rows = (task == label) & observed
        out.append((y_true[rows], y_pred[rows], None if sample_weight is None else sample_weight[rows]))
    return out


def _pooled(y_true, y_pred, sample_weight):
    """Every observed label of every task, stacked, with its row's weight."""
    y_true, y_pred, sample_weight = _check_targets(y_true, y_pred, sample_weight)
    Y, P = y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1)
    W = np.ones_like(Y) if sample_weight is None else np.broadcast_to(sample_weight[:, None], Y.shape)
    observed = ~np.isnan(Y)
    return Y[observed], P[observed], W[observed]


def pooled_mean_squared_error(y_true, y_pred, *, sample_weight=None):
    """Mean squared error over every observed label of every task (private)."""
    y, p, w = _pooled(y_true, y_pred, sample_weight)
    return float(np.average((y - p) ** 2, weights=w)) if len(y) and w.sum() > 0 else np.nan


def per_task_score(y_true, y_pred, *, metric="r2", task=None, sample_weight=None):
    """Score of every task on its observed labels.

    Like scikit-learn's ``multioutput='raw_values'``, but a NaN in ``y_true``
    is a missing label and is left out of its task's score, and the long
    layout (one task label per row) is accepted too.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
        True values. Wide layout: one column per task, NaN for a missing
        label. Long layout: 1-D, with ``task``.
    y_pred : array-like of the same shape as y_true
        Predicted values (no NaN).
    metric : {'r2', 'explained_variance', 'mean_squared_error', \
            'mean_absolute_error'}, default='r2'
        The scikit-learn metric computed on each task's observed labels.
    task : array-like of shape (n_samples,), default=None
        Long layout: the task label of each row. None: the wide layout, one
        task per column of ``y_true``.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights.

    Returns
    -------
    scores : ndarray of shape (n_tasks,)
        One score per column of ``y_true``, or per label of ``task`` in
        sorted order (``np.unique(task)``). NaN for a task with no observed
        label, and for ``'r2'`` and ``'explained_variance'`` with fewer than
        two.

    See Also
    --------
    mean_task_score : Their mean over tasks.
    pooled_explained_variance_score : One R^2 over all observed labels.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl.metrics import per_task_score
    >>> y_true = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 4.0], [4.0, 6.0]])
    >>> y_pred = np.array([[1.0, 2.5], [2.0, 0.0], [3.0, 3.5], [5.0, 6.0]])
    >>> per_task_score(y_true, y_pred).round(3)
    array([0.8  , 0.938])
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}; got {metric!r}.")
    y_true, y_pred, sample_weight = _check_targets(y_true, y_pred, sample_weight)
    scores = []
    for yt, yp, sw in _task_columns(y_true, y_pred, task, sample_weight):
        if len(yt) < (2 if metric in _NEEDS_TWO else 1):
            scores.append(np.nan)
        else:
            scores.append(float(_METRICS[metric](yt, yp, sample_weight=sw)))
    return np.asarray(scores)


def mean_task_score(y_true, y_pred, *, metric="r2", task=None, sample_weight=None):
    """Mean over tasks of :func:`per_task_score`, tasks without a score left out.

    With ``metric='r2'``, a complete wide ``y_true`` and no ``task`` this is
    ``r2_score(y_true, y_pred, multioutput='uniform_average')``, and with
    missing labels it is what the estimators' ``score`` returns in the wide
    layout.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
        True values; NaN marks a missing label.
    y_pred : array-like of the same shape as y_true
        Predicted values.
    metric : {'r2', 'explained_variance', 'mean_squared_error', \
            'mean_absolute_error'}, default='r2'
        The per-task metric.
    task : array-like of shape (n_samples,), default=None
        Long layout: the task label of each row.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights.

    Returns
    -------
    score : float
        The mean of the per-task scores (NaN when no task has one).

    See Also
    --------
    per_task_score : The scores it averages.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl.metrics import mean_task_score
    >>> y_true = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 4.0], [4.0, 6.0]])
    >>> y_pred = np.array([[1.0, 2.5], [2.0, 0.0], [3.0, 3.5], [5.0, 6.0]])
    >>> round(mean_task_score(y_true, y_pred), 4)
    0.8688
    """
    scores = per_task_score(y_true, y_pred, metric=metric, task=task, sample_weight=sample_weight)
    scores = scores[~np.isnan(scores)]
    return float(scores.mean()) if len(scores) else np.nan


def pooled_explained_variance_score(y_true, y_pred, *, sample_weight=None):
    """Explained variance over all observed labels of all tasks, pooled.

    The score the multi-task literature reports on School and similar data
    (Argyriou, Evgeniou & Pontil, 2008): one minus the (weighted) sum of
    squared errors over the sum of squares about the mean, both over every
    observed label of every task,

    .. math:: 1 - \\sum_{(i,t)} s_i (y_{it} - \\hat y_{it})^2 /
              \\sum_{(i,t)} s_i (y_{it} - \\bar y)^2,

    with :math:`\\bar y` the weighted mean of all observed labels. It is the
    R^2 of the stacked observed labels (``r2_score`` in the long layout); it
    is not scikit-learn's ``explained_variance_score``, which also forgives a
    constant bias of the predictions.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
        True values; NaN marks a missing label.
    y_pred : array-like of the same shape as y_true
        Predicted values.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights (in the wide layout, a row's weight applies to each of
        its labels).

    Returns
    -------
    score : float
        The pooled explained variance; NaN with fewer than two observed
        labels or when they are all equal.

    See Also
    --------
    mean_task_score : The per-task scores averaged instead.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl.metrics import pooled_explained_variance_score
    >>> y_true = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 4.0], [4.0, 6.0]])
    >>> y_pred = np.array([[1.0, 2.5], [2.0, 0.0], [3.0, 3.5], [5.0, 6.0]])
    >>> round(pooled_explained_variance_score(y_true, y_pred), 4)
    0.911
    """
    y, p, w = _pooled(y_true, y_pred, sample_weight)
    if len(y) < 2 or w.sum() <= 0:
        return np.nan
    mean = np.average(y, weights=w)
    total = np.sum(w * (y - mean) ** 2)
    if total == 0:
        return np.nan
    return float(1.0 - np.sum(w * (y - p) ** 2) / total)
