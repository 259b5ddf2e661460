"""Each task's score under two models: which tasks gain from sharing and which lose."""

import numpy as np
from sklearn.utils import check_array

from ..metrics import per_task_score
from ._plotting import check_matplotlib_support, label_text, task_labels_or_range

# Metrics for which a smaller value is better.
_ERRORS = {"mean_squared_error", "mean_absolute_error"}
_METRIC_NAMES = {
    "r2": "R²",
    "explained_variance": "explained variance",
    "mean_squared_error": "mean squared error",
    "mean_absolute_error": "mean absolute error",
}
_GAIN, _LOSS, _TIE = "tab:blue", "tab:orange", "tab:gray"
# Marker areas (points^2) of the smallest possible and of the largest task.
_MIN_SIZE, _MAX_SIZE = 8.0, 160.0


def _observed_counts(y_true, task):
    """Number of observed (non-NaN) labels and label of each task, in per_task_score's order."""
    y_true = np.asarray(y_true, dtype=np.float64)
    observed = ~np.isnan(y_true)
    if task is None:
        counts = observed.reshape(len(y_true), -1).sum(axis=0)
        return counts, np.arange(len(counts))
    labels, codes = np.unique(np.asarray(task), return_inverse=True)
    return np.bincount(codes, weights=observed, minlength=len(labels)).astype(int), labels


def _task_column_of(X, task_column):
    """The task labels held in column ``task_column`` of ``X`` (long layout)."""
    if hasattr(X, "iloc"):
        column = X[task_column] if isinstance(task_column, str) else X.iloc[:, task_column]
        return column.to_numpy()
    if isinstance(task_column, str):
        raise ValueError(
            f"task_column={task_column!r} is a column name, but X has no column names."
        )
    return check_array(X, dtype=None, ensure_all_finite=False, input_name="X")[:, task_column]


class PerTaskScoreDisplay:
    """Each task's score under two models, one against the other.

    Every task is a point with model B's score on the x-axis and model A's
    on the y-axis: above the diagonal model A does better on that task,
    below it worse. Typically A is a multi-task estimator and B one
    independent model per task (or one pooled model), and the plot shows
    which tasks gain from sharing and which lose. Points are coloured by
    which model wins and sized by the task's number of labels.

    Use :meth:`from_estimator` or :meth:`from_predictions` to compute the
    scores and plot them. All parameters are stored as attributes.

    Parameters
    ----------
    scores_a : array-like of shape (n_tasks,)
        Each task's score under model A (y-axis); NaN for a task without one.
    scores_b : array-like of shape (n_tasks,)
        Each task's score under model B (x-axis).
    task_labels : array-like of shape (n_tasks,), default=None
        The task of each score. None means ``0 .. n_tasks - 1``.
    n_samples : array-like of shape (n_tasks,), default=None
        Each task's number of labels, by which the points are sized. None
        draws all points at one size.
    name_a : str, default='model A'
        Name of model A.
    name_b : str, default='model B'
        Name of model B.
    metric : {'r2', 'explained_variance', 'mean_squared_error', \
            'mean_absolute_error'}, default='r2'
        The score: for the two errors a smaller value is better.

    Attributes
    ----------
    gain_ : ndarray of shape (n_tasks,)
        How much better model A does than model B on each task:
        ``scores_a - scores_b``, or ``scores_b - scores_a`` for an error
        metric. Positive where A wins.
    scatter_ : matplotlib PathCollection
        The points, one per task with both scores; its offsets are
        ``(scores_b, scores_a)``.
    annotations_ : list of matplotlib Annotation
        The task labels written next to the largest gains (largest first),
        then next to the largest losses (largest first).
    line_ : matplotlib AxLine
        The diagonal, where both models score the same.
    ax_ : matplotlib Axes
        Axes with the plot.
    figure_ : matplotlib Figure
        Figure containing the plot.

    See Also
    --------
    skmtl.metrics.per_task_score : The per-task scores.
    TaskSimilarityDisplay : Which tasks have alike models.

    Examples
    --------
    >>> from sklearn.linear_model import Ridge
    >>> from skmtl import SharedParamRegressor
    >>> from skmtl.datasets import make_multitask_regression
    >>> from skmtl.inspection import PerTaskScoreDisplay
    >>> X, y = make_multitask_regression(n_tasks=10, n_samples_per_task=40,
    ...     n_features=5, structure="clustered", random_state=0)
    >>> train, test = slice(0, None, 2), slice(1, None, 2)
    >>> model = SharedParamRegressor(alpha_task=0.01, task_column=0).fit(X[train], y[train])
    >>> pooled = Ridge().fit(X[train, 1:], y[train])  # one model for all tasks
    >>> display = PerTaskScoreDisplay.from_predictions(
    ...     y[test], model.predict(X[test]), pooled.predict(X[test, 1:]),
    ...     task=X[test, 0], name_a="SharedParamRegressor", name_b="pooled Ridge")
    >>> int((display.gain_ > 0).sum())  # tasks on which sharing beats pooling
    10
    """

    def __init__(self, *, scores_a, scores_b, task_labels=None, n_samples=None,
                 name_a="model A", name_b="model B", metric="r2"):
        self.scores_a = scores_a
        self.scores_b = scores_b
        self.task_labels = task_labels
        self.n_samples = n_samples
        self.name_a = name_a
        self.name_b = name_b
        self.metric = metric

    def plot(self, ax=None, *, annotate=3, scatter_kwargs=None, line_kwargs=None):
        """Plot the scores of model A against those of model B.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to plot on. None creates a new figure and axes.
        annotate : int, default=3
            Write the task label next to the points of this many tasks with
            the largest gains and this many with the largest losses (0: none).
        scatter_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.scatter`
            (``c`` or ``s`` replace the colours by gain and sizes by task size).
        line_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.axline`
            for the diagonal.

        Returns
        -------
        display : PerTaskScoreDisplay
            The display, with the plot attributes set.
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        if self.metric not in _METRIC_NAMES:
            raise ValueError(
                f"metric must be one of {sorted(_METRIC_NAMES)}; got {self.metric!r}."
            )
        scores_a = np.asarray(self.scores_a, dtype=np.float64)
        scores_b = np.asarray(self.scores_b, dtype=np.float64)
        if scores_a.ndim != 1 or scores_a.shape != scores_b.shape:
            raise ValueError(
                "scores_a and scores_b must be 1-D with one score per task; got shapes "
                f"{scores_a.shape} and {scores_b.shape}."
            )
        n_tasks = len(scores_a)
        text = label_text(task_labels_or_range(self.task_labels, n_tasks))
        if not (isinstance(annotate, int) and annotate >= 0):
            raise ValueError(f"annotate must be a non-negative int; got {annotate!r}.")
        gain = scores_a - scores_b
        if self.metric in _ERRORS:
            gain = -gain
        shown = ~np.isnan(gain)
        colors = np.where(gain > 0, _GAIN, np.where(gain < 0, _LOSS, _TIE))[shown]
        user_kwargs = dict(scatter_kwargs or {})
        by_gain = not ({"c", "color"} & user_kwargs.keys())
        scatter_kwargs = {"alpha": 0.8, "edgecolors": "white", "linewidths": 0.5}
        if by_gain:
            scatter_kwargs["c"] = colors
        if self.n_samples is not None:
            n_samples = task_labels_or_range(self.n_samples, n_tasks, "n_samples")
            n_samples = np.asarray(n_samples, dtype=np.float64)
            size = _MIN_SIZE + (_MAX_SIZE - _MIN_SIZE) * n_samples / max(n_samples.max(), 1)
            scatter_kwargs["s"] = size[shown]
        scatter_kwargs.update(user_kwargs)
        line_kwargs = {"color": "black", "alpha": 0.7, "linestyle": "--",
                       **(line_kwargs or {})}

        if ax is None:
            _, ax = plt.subplots()
        self.line_ = ax.axline((0.0, 0.0), slope=1.0, **line_kwargs)
        self.scatter_ = ax.scatter(scores_b[shown], scores_a[shown], **scatter_kwargs)
        name = _METRIC_NAMES[self.metric]
        ax.set(xlabel=f"{name} of {self.name_b}", ylabel=f"{name} of {self.name_a}")
        ax.set_aspect("equal", adjustable="datalim")
        if by_gain:
            counts = [(_GAIN, f"{self.name_a} better", np.sum(gain > 0)),
                      (_LOSS, f"{self.name_b} better", np.sum(gain < 0)),
                      (_TIE, "equal", np.sum(gain == 0))]
            handles = [Line2D([], [], marker="o", linestyle="", color=color,
                              label=f"{label} ({count} task{'s' * int(count != 1)})")
                       for color, label, count in counts if count]
            ax.legend(handles=handles, loc="best")

        ranked = np.flatnonzero(shown)[np.argsort(gain[shown], kind="stable")]
        extremes = [k for k in ranked[::-1][:annotate] if gain[k] > 0]
        extremes += [k for k in ranked[:annotate] if gain[k] < 0]
        self.annotations_ = [
            ax.annotate(text[k], (scores_b[k], scores_a[k]), xytext=(4, 4),
                        textcoords="offset points", fontsize="small")
            for k in extremes
        ]

        self.gain_ = gain
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_predictions(cls, y_true, y_pred_a, y_pred_b, *, task=None, metric="r2",
                         sample_weight=None, name_a="model A", name_b="model B", ax=None,
                         annotate=3, scatter_kwargs=None, line_kwargs=None):
        """Plot each task's score of two sets of predictions.

        Parameters
        ----------
        y_true : array-like of shape (n_samples,) or (n_samples, n_tasks)
            True values. Wide layout: one column per task, NaN for a missing
            label. Long layout: 1-D, with ``task``.
        y_pred_a : array-like of the same shape as y_true
            Predictions of model A.
        y_pred_b : array-like of the same shape as y_true
            Predictions of model B.
        task : array-like of shape (n_samples,), default=None
            Long layout: the task label of each row. None: the wide layout,
            one task per column of ``y_true``.
        metric : {'r2', 'explained_variance', 'mean_squared_error', \
                'mean_absolute_error'}, default='r2'
            The per-task score (:func:`skmtl.metrics.per_task_score`).
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.
        name_a : str, default='model A'
            Name of model A.
        name_b : str, default='model B'
            Name of model B.
        ax : matplotlib Axes, default=None
            Axes to plot on. None creates a new figure and axes.
        annotate : int, default=3
            Label this many tasks with the largest gains and this many with
            the largest losses.
        scatter_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.scatter`.
        line_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.axline`
            for the diagonal.

        Returns
        -------
        display : PerTaskScoreDisplay
            The display, plotted; tasks are in the order of
            :func:`skmtl.metrics.per_task_score` (columns, or sorted labels).

        See Also
        --------
        PerTaskScoreDisplay.from_estimator : The same from two fitted models.

        Examples
        --------
        >>> import numpy as np
        >>> from skmtl.inspection import PerTaskScoreDisplay
        >>> y_true = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 4.0], [4.0, 6.0]])
        >>> y_a = np.array([[1.0, 2.5], [2.0, 0.0], [3.0, 3.5], [5.0, 6.0]])
        >>> y_b = np.array([[1.5, 2.0], [2.5, 0.0], [3.5, 4.0], [4.5, 5.0]])
        >>> display = PerTaskScoreDisplay.from_predictions(y_true, y_a, y_b)
        >>> display.gain_.round(3)
        array([0.   , 0.062])
        """
        check_matplotlib_support(f"{cls.__name__}.from_predictions")
        scores_a = per_task_score(y_true, y_pred_a, metric=metric, task=task,
                                  sample_weight=sample_weight)
        scores_b = per_task_score(y_true, y_pred_b, metric=metric, task=task,
                                  sample_weight=sample_weight)
        n_samples, labels = _observed_counts(y_true, task)
        display = cls(scores_a=scores_a, scores_b=scores_b, task_labels=labels,
                      n_samples=n_samples, name_a=name_a, name_b=name_b, metric=metric)
        return display.plot(ax=ax, annotate=annotate, scatter_kwargs=scatter_kwargs,
                            line_kwargs=line_kwargs)

    @classmethod
    def from_estimator(cls, estimator_a, estimator_b, X, y, *, task=None, metric="r2",
                       sample_weight=None, name_a=None, name_b=None, ax=None,
                       annotate=3, scatter_kwargs=None, line_kwargs=None):
        """Plot each task's score of two fitted models on the data ``X, y``.

        Parameters
        ----------
        estimator_a : estimator instance
            Fitted regressor whose ``predict(X)`` has the shape of ``y``
            (model A, y-axis), typically a multi-task estimator.
        estimator_b : estimator instance
            Fitted regressor to compare with (model B, x-axis), for instance
            one model per task or one pooled model.
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Input passed to both estimators' ``predict``; preferably held out.
        y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            True values. Wide layout: one column per task, NaN for a missing
            label. Long layout: 1-D.
        task : array-like of shape (n_samples,), default=None
            Long layout: the task label of each row. None reads it from the
            ``task_column`` of ``X`` when one of the estimators (A first) has a
            ``task_column`` that is not None, and otherwise means the wide
            layout.
        metric : {'r2', 'explained_variance', 'mean_squared_error', \
                'mean_absolute_error'}, default='r2'
            The per-task score (:func:`skmtl.metrics.per_task_score`).
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights.
        name_a : str, default=None
            Name of model A; None means its class name.
        name_b : str, default=None
            Name of model B; None means its class name.
        ax : matplotlib Axes, default=None
            Axes to plot on. None creates a new figure and axes.
        annotate : int, default=3
            Label this many tasks with the largest gains and this many with
            the largest losses.
        scatter_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.scatter`.
        line_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.axline`
            for the diagonal.

        Returns
        -------
        display : PerTaskScoreDisplay
            The display, plotted.

        See Also
        --------
        PerTaskScoreDisplay.from_predictions : The same from predictions.

        Examples
        --------
        >>> from sklearn.linear_model import Ridge
        >>> from skmtl import SharedFeatureRegressor
        >>> from skmtl.datasets import make_multitask_regression
        >>> from skmtl.inspection import PerTaskScoreDisplay
        >>> X, y = make_multitask_regression(n_tasks=8, n_samples_per_task=15,
        ...     n_features=10, structure="low_rank", rank=1, layout="wide",
        ...     random_state=0)
        >>> shared = SharedFeatureRegressor(alpha=0.1).fit(X[:10], y[:10])
        >>> separate = Ridge().fit(X[:10], y[:10])  # one Ridge per column
        >>> display = PerTaskScoreDisplay.from_estimator(
        ...     shared, separate, X[10:], y[10:], name_b="one Ridge per task")
        >>> display.scores_a.shape
        (8,)
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        if task is None:
            for estimator in (estimator_a, estimator_b):
                task_column = getattr(estimator, "task_column", None)
                if task_column is not None:
                    task = _task_column_of(X, task_column)
                    break
        return cls.from_predictions(
            y, estimator_a.predict(X), estimator_b.predict(X), task=task, metric=metric,
            sample_weight=sample_weight,
            name_a=type(estimator_a).__name__ if name_a is None else name_a,
            name_b=type(estimator_b).__name__ if name_b is None else name_b,
            ax=ax, annotate=annotate, scatter_kwargs=scatter_kwargs, line_kwargs=line_kwargs,
        )
