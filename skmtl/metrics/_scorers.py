"""Scorers for ``GridSearchCV(scoring=...)`` that accept NaN (missing labels) in ``y``."""

import numpy as np

from ._scores import mean_task_score, pooled_explained_variance_score, pooled_mean_squared_error


def _final_estimator(estimator):
    # A Pipeline's task column is its last step's.
    return estimator[-1] if hasattr(estimator, "steps") else estimator


def _task_labels(estimator, X):
    """The task label of every row of ``X`` in the long layout, None in the wide one."""
    task_column = getattr(_final_estimator(estimator), "task_column", None)
    if task_column is None:
        return None
    if hasattr(X, "iloc"):
        return (X[task_column] if isinstance(task_column, str) else X.iloc[:, task_column]).to_numpy()
    return np.asarray(X)[:, task_column]


class _MultiTaskScorer:
    """``scorer(estimator, X, y_true, sample_weight=None)``; greater is better."""

    def __init__(self, name, score_func, sign, kwargs, per_task):
        self._name = name
        self._score_func = score_func
        self._sign = sign
        self._kwargs = kwargs
        self._per_task = per_task

    def __call__(self, estimator, X, y_true, sample_weight=None):
        y_pred = estimator.predict(X)
        kwargs = dict(self._kwargs, sample_weight=sample_weight)
        if self._per_task:
            kwargs["task"] = _task_labels(estimator, X)
        return self._sign * self._score_func(y_true, y_pred, **kwargs)

    def __repr__(self):
        return f"skmtl.metrics.get_scorer({self._name!r})"


_SCORERS = {
    "pooled_explained_variance": (pooled_explained_variance_score, 1, {}, False),
    "mean_task_r2": (mean_task_score, 1, {"metric": "r2"}, True),
    "mean_task_explained_variance": (mean_task_score, 1, {"metric": "explained_variance"}, True),
    "neg_pooled_mean_squared_error": (pooled_mean_squared_error, -1, {}, False),
}


def get_scorer_names():
    """Return the names accepted by :func:`get_scorer`.

    Returns
    -------
    names : list of str
        The scorer names, sorted.

    See Also
    --------
    get_scorer : The scorer of a name.

    Examples
    --------
    >>> from skmtl.metrics import get_scorer_names
    >>> get_scorer_names()[:2]
    ['mean_task_explained_variance', 'mean_task_r2']
    """
    return sorted(_SCORERS)


def get_scorer(name):
    """A scorer for ``GridSearchCV(scoring=...)`` that leaves out missing labels.

    scikit-learn's ``'r2'`` fails when ``y`` holds a NaN (a missing label in
    the wide layout). These scorers compute their score on the observed
    labels only, in both layouts:

    - ``'pooled_explained_variance'``:
      :func:`pooled_explained_variance_score` (in the long layout the same
      as ``'r2'``);
    - ``'mean_task_r2'``, ``'mean_task_explained_variance'``:
      :func:`mean_task_score`; in the long layout the task of each row is
      read from ``X`` at the estimator's ``task_column`` (a Pipeline's last
      step's);
    - ``'neg_pooled_mean_squared_error'``: minus the mean squared error over
      all observed labels.

    Parameters
    ----------
    name : str
        One of :func:`get_scorer_names`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y_true, sample_weight=None)``, greater is better.

    See Also
    --------
    get_scorer_names : The accepted names.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skmtl import SharedParamRegressor
    >>> from skmtl.metrics import get_scorer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 3))
    >>> Y = X @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(60, 2))
    >>> Y[::7, 1] = np.nan
    >>> search = GridSearchCV(SharedParamRegressor(), {"alpha_task": [0.01, 1.0]},
    ...                       scoring=get_scorer("mean_task_r2"), cv=3).fit(X, Y)
    >>> bool(search.best_score_ > 0.9)
    True
    """
    try:
        func, sign, kwargs, per_task = _SCORERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"{name!r} is not a valid scorer name; use one of "
                         f"{get_scorer_names()}.") from None
    return _MultiTaskScorer(name, func, sign, kwargs, per_task)
