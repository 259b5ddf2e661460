"""How alike the fitted task models are: a similarity matrix and its clustered heat map."""

import math
import warnings

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.utils.validation import check_is_fitted

from ._plotting import check_matplotlib_support, label_text, task_labels_or_range

_METRICS = ("cosine", "correlation")
_KINDS = ("deviation", "model")

# A task vector this much smaller than the largest coefficient row is rounding
# noise (a deviation computed as a difference of nearly equal rows), which
# has no direction to compare.
_ZERO_RTOL = 100 * np.finfo(np.float64).eps


def _task_vectors(estimator, kind):
    """One row per task: the task's own model, or its deviation from the shared one."""
    if not hasattr(estimator, "fit"):
        raise TypeError(
            f"estimator must be a fitted estimator; got {type(estimator).__name__}."
        )
    check_is_fitted(estimator)
    # Without coef_ (SharedObjectiveRegressor with a nonlinear activation) the
    # task models are the heads a_t on the shared representation.
    name = "coef_" if hasattr(estimator, "coef_") else "head_coef_"
    if not hasattr(estimator, name):
        raise TypeError(
            f"task_similarity needs an estimator with one coefficient row per task "
            f"(coef_ or head_coef_); {type(estimator).__name__} has neither."
        )
    model = np.asarray(getattr(estimator, name), dtype=np.float64)
    if model.ndim != 2 or model.shape[0] < 2:
        raise ValueError(
            f"task_similarity needs at least 2 tasks; {type(estimator).__name__}."
            f"{name} has shape {model.shape}."
        )
    if kind == "model":
        return model, model
    if hasattr(estimator, "task_coef_"):
        # SharedParamRegressor: v_t = coef_ - shared_coef_, the model's own split.
        return np.asarray(estimator.task_coef_, dtype=np.float64), model
    # The mean of the task models is what predicts a task fit never saw.
    return model - model.mean(axis=0), model


def task_similarity(estimator, *, metric="cosine", kind="deviation"):
    """Similarity between the fitted task models of a multi-task estimator.

    Each task is represented by a vector of coefficients, and two tasks are
    compared by the cosine of the angle between their vectors (or the
    correlation of their entries). The intercepts are left out: they hold
    each task's level of the target, which says nothing about how the
    features act, and their scale is not that of the coefficients.

    Parameters
    ----------
    estimator : estimator instance
        A fitted :class:`~skmtl.SharedParamRegressor`,
        :class:`~skmtl.SharedFeatureRegressor` or
        :class:`~skmtl.SharedObjectiveRegressor`, or any fitted estimator
        with a ``coef_`` of shape ``(n_tasks, n_features)`` (for instance
        :class:`~sklearn.linear_model.MultiTaskLasso`), with at least two
        tasks.
    metric : {'cosine', 'correlation'}, default='cosine'
        ``'cosine'``: the cosine of the angle between two task vectors.
        ``'correlation'``: Pearson's correlation of their entries, the
        cosine of the vectors after each is centered on its mean entry.
    kind : {'deviation', 'model'}, default='deviation'
        What represents a task.

        - ``'deviation'``: the part of the task's model that is its own, its
          coefficients minus those of the shared model (the model that
          predicts a task fit never saw): ``task_coef_`` (:math:`v_t`) for
          :class:`~skmtl.SharedParamRegressor`, the task's row of ``coef_``
          minus the mean row for the others. All tasks share the shared
          model, so without it the similarity of tasks that differ is
          masked by what they have in common. With two tasks the two
          deviations from the mean are opposite (similarity -1).
        - ``'model'``: the task's coefficients, ``coef_[t]``.

        For a :class:`~skmtl.SharedObjectiveRegressor` with a nonlinear
        activation, which has no ``coef_``, the task vectors are the heads
        ``head_coef_`` (minus their mean for ``'deviation'``): the tasks'
        weights on the shared hidden units.

    Returns
    -------
    similarity : ndarray of shape (n_tasks, n_tasks)
        Symmetric, in [-1, 1], with ones on the diagonal; row and column
        ``k`` are task ``estimator.tasks_[k]``. A task whose vector is zero
        (a task with no deviation from the shared model, or every coefficient
        removed by a sparse penalty) has no direction: its row and column are
        NaN and a ``UserWarning`` names it.

    Raises
    ------
    NotFittedError
        If the estimator is not fitted.

    See Also
    --------
    TaskSimilarityDisplay : The similarity as a clustered heat map.
    scipy.spatial.distance.cdist : One minus the similarity, for
        ``metric='cosine'`` or ``'correlation'``.

    Examples
    --------
    >>> from skmtl import SharedParamRegressor
    >>> from skmtl.datasets import make_multitask_regression
    >>> from skmtl.inspection import task_similarity
    >>> X, y = make_multitask_regression(
    ...     n_tasks=6, n_features=5, structure="clustered", n_clusters=2, random_state=0)
    >>> model = SharedParamRegressor(alpha_task=0.1, task_column=0).fit(X, y)
    >>> similarity = task_similarity(model)
    >>> similarity.shape
    (6, 6)
    >>> (similarity > 0.5).astype(int)  # two groups: tasks 0, 1, 5 and tasks 2, 3, 4
    array([[1, 1, 0, 0, 0, 1],
           [1, 1, 0, 0, 0, 1],
           [0, 0, 1, 1, 1, 0],
           [0, 0, 1, 1, 1, 0],
           [0, 0, 1, 1, 1, 0],
           [1, 1, 0, 0, 0, 1]])
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}; got {kind!r}.")
    vectors, model = _task_vectors(estimator, kind)
    if metric == "correlation":
        vectors = vectors - vectors.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(vectors, axis=1)
    zero = norms <= _ZERO_RTOL * np.linalg.norm(model, axis=1).max()
    unit = vectors[~zero] / norms[~zero, None]
    similarity = np.full((len(vectors), len(vectors)), np.nan)
    inner = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(inner, 1.0)
    similarity[np.ix_(~zero, ~zero)] = inner
    if zero.any():
        labels = task_labels_or_range(getattr(estimator, "tasks_", None), len(vectors))
        warnings.warn(
            f"Task(s) {labels[zero][:10].tolist()} have a zero {kind} vector, so no "
            f"{metric} similarity: their rows and columns are NaN.",
            UserWarning,
        )
    return similarity


def _cluster_order(similarity):
    """Leaf order of the average-linkage dendrogram on ``1 - similarity``.

    A NaN similarity (a task with no direction) is taken as the largest
    distance, 2, so that such tasks join last and sit at an end.
    """
    n_tasks = len(similarity)
    if n_tasks < 3:
        return np.arange(n_tasks)
    distance = 1.0 - np.where(np.isnan(similarity), -1.0, similarity)
    distance = np.clip((distance + distance.T) / 2, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    return leaves_list(linkage(squareform(distance, checks=False), method="average"))


class TaskSimilarityDisplay:
    """Heat map of the similarity between tasks, in clustered order.

    Use :meth:`from_estimator` to compute the similarity of a fitted
    estimator's task models (:func:`task_similarity`) and plot it; the
    constructor takes a similarity matrix computed in any other way. All
    parameters are stored as attributes.

    Tasks are ordered by the leaves of the average-linkage dendrogram on
    ``1 - similarity``, so that groups of alike tasks show as blocks along
    the diagonal.

    Parameters
    ----------
    similarity : ndarray of shape (n_tasks, n_tasks)
        Symmetric similarity between tasks, at most 1 (1 on the diagonal).
    task_labels : array-like of shape (n_tasks,), default=None
        Label of each row of ``similarity``. None means ``0 .. n_tasks - 1``.
    similarity_label : str, default='similarity'
        What the colour bar says the values are.

    Attributes
    ----------
    order_ : ndarray of shape (n_tasks,)
        Row of ``similarity`` shown at each position (from top to bottom and
        from left to right); ``arange(n_tasks)`` when not clustered.
    ordered_task_labels_ : ndarray of shape (n_tasks,)
        ``task_labels[order_]``: the tasks in the order shown.
    im_ : matplotlib AxesImage
        The heat map; its array is ``similarity[order_][:, order_]``.
    colorbar_ : matplotlib Colorbar or None
        The colour bar, None when ``colorbar=False``.
    ax_ : matplotlib Axes
        Axes with the heat map.
    figure_ : matplotlib Figure
        Figure containing the heat map.

    See Also
    --------
    task_similarity : The similarity of the fitted task models.
    PerTaskScoreDisplay : Which tasks gain from sharing and which lose.

    Examples
    --------
    >>> from skmtl import SharedFeatureRegressor
    >>> from skmtl.datasets import make_multitask_regression
    >>> from skmtl.inspection import TaskSimilarityDisplay
    >>> X, y = make_multitask_regression(n_tasks=8, n_features=5, structure="clustered",
    ...     n_clusters=2, layout="wide", random_state=0)
    >>> model = SharedFeatureRegressor(alpha=0.01).fit(X, y)
    >>> display = TaskSimilarityDisplay.from_estimator(model)
    >>> display.ordered_task_labels_  # the two groups of tasks, one after the other
    array([5, 1, 2, 6, 4, 7, 0, 3])
    """

    def __init__(self, *, similarity, task_labels=None, similarity_label="similarity"):
        self.similarity = similarity
        self.task_labels = task_labels
        self.similarity_label = similarity_label

    def plot(self, ax=None, *, cluster=True, cmap="RdBu_r", colorbar=True,
             max_tick_labels=40, im_kw=None):
        """Plot the heat map.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to plot on. None creates a new figure and axes.
        cluster : bool, default=True
            Order the tasks by hierarchical clustering. False keeps the
            order of ``similarity``.
        cmap : str or matplotlib Colormap, default='RdBu_r'
            Colour map, spread over [-1, 1] (a diverging one shows the sign).
        colorbar : bool, default=True
            Whether to add a colour bar.
        max_tick_labels : int, default=40
            Label every task when there are at most this many, else every
            ``ceil(n_tasks / max_tick_labels)``-th.
        im_kw : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.imshow`.

        Returns
        -------
        display : TaskSimilarityDisplay
            The display, with the plot attributes set.
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        import matplotlib.pyplot as plt

        similarity = np.asarray(self.similarity, dtype=np.float64)
        if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
            raise ValueError(
                f"similarity must be a square matrix; got shape {similarity.shape}."
            )
        n_tasks = len(similarity)
        labels = task_labels_or_range(self.task_labels, n_tasks)
        if not (isinstance(max_tick_labels, int) and max_tick_labels >= 1):
            raise ValueError(
                f"max_tick_labels must be a positive int; got {max_tick_labels!r}."
            )
        order = _cluster_order(similarity) if cluster else np.arange(n_tasks)

        if ax is None:
            _, ax = plt.subplots()
        im_kw = {"cmap": cmap, "vmin": -1.0, "vmax": 1.0, "interpolation": "nearest",
                 **(im_kw or {})}
        self.im_ = ax.imshow(similarity[np.ix_(order, order)], **im_kw)
        self.colorbar_ = ax.figure.colorbar(self.im_, ax=ax, label=self.similarity_label) \
            if colorbar else None
        ordered = labels[order]
        ticks = np.arange(0, n_tasks, math.ceil(n_tasks / max_tick_labels))
        text = label_text(ordered[ticks])
        ax.set_xticks(ticks, text, rotation=90 if len(ticks) > 10 else 0)
        ax.set_yticks(ticks, text)
        ax.set(xlabel="task", ylabel="task")

        self.order_ = order
        self.ordered_task_labels_ = ordered
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, metric="cosine", kind="deviation", cluster=True,
                       ax=None, cmap="RdBu_r", colorbar=True, max_tick_labels=40,
                       im_kw=None):
        """Plot the similarity of a fitted estimator's task models.

        Parameters
        ----------
        estimator : estimator instance
            Fitted multi-task estimator (see :func:`task_similarity`).
        metric : {'cosine', 'correlation'}, default='cosine'
            How two task vectors are compared (see :func:`task_similarity`).
        kind : {'deviation', 'model'}, default='deviation'
            What represents a task: its deviation from the shared model or
            its whole model (see :func:`task_similarity`).
        cluster : bool, default=True
            Order the tasks by hierarchical clustering.
        ax : matplotlib Axes, default=None
            Axes to plot on. None creates a new figure and axes.
        cmap : str or matplotlib Colormap, default='RdBu_r'
            Colour map, spread over [-1, 1].
        colorbar : bool, default=True
            Whether to add a colour bar.
        max_tick_labels : int, default=40
            Label every task when there are at most this many.
        im_kw : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.imshow`.

        Returns
        -------
        display : TaskSimilarityDisplay
            The display, plotted.

        See Also
        --------
        task_similarity : The matrix that is plotted.

        Examples
        --------
        >>> from skmtl import SharedParamRegressor
        >>> from skmtl.datasets import make_multitask_regression
        >>> from skmtl.inspection import TaskSimilarityDisplay
        >>> X, y = make_multitask_regression(n_tasks=5, n_features=4, random_state=0)
        >>> model = SharedParamRegressor(task_column=0).fit(X, y)
        >>> display = TaskSimilarityDisplay.from_estimator(model, metric="correlation")
        >>> display.im_.get_array().shape
        (5, 5)
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        similarity = task_similarity(estimator, metric=metric, kind=kind)
        what = "task deviations" if kind == "deviation" else "task models"
        display = cls(
            similarity=similarity,
            task_labels=getattr(estimator, "tasks_", None),
            similarity_label=f"{metric} similarity of the {what}",
        )
        return display.plot(ax=ax, cluster=cluster, cmap=cmap, colorbar=colorbar,
                            max_tick_labels=max_tick_labels, im_kw=im_kw)
