"""SharedObjectiveRegressor's task weights and per-task losses round by round."""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._shared_objective import SharedObjectiveRegressor
from ._plotting import check_matplotlib_support, label_text, task_labels_or_range

# Above this many tasks a legend would hide the curves.
_MAX_LEGEND = 10


class TaskWeightsDisplay:
    """Task weights and per-task training losses of a shared-objective fit.

    Two panels, one line per task, against the training round: the weight
    :math:`\\lambda_t` that the task's loss had in the joint objective
    (``task_weights_history_``) and the task's loss :math:`D_t` at the end of
    the round (``loss_curve_``, log scale). They show how the weighting
    strategy ('uncertainty', 'dwa', 'gradnorm') moved the weights, and which
    tasks kept a high loss.

    Use :meth:`from_estimator` to plot a fitted
    :class:`~skmtl.SharedObjectiveRegressor`. All parameters are stored as
    attributes.

    Parameters
    ----------
    task_weights_history : array-like of shape (n_rounds, n_tasks)
        The task weights used in each round.
    loss_curve : array-like of shape (n_rounds, n_tasks)
        Each task's loss at the end of each round.
    task_labels : array-like of shape (n_tasks,), default=None
        The task of each column. None means ``0 .. n_tasks - 1``.

    Attributes
    ----------
    weight_lines_ : list of matplotlib Line2D
        One line per task in the weight panel; line ``k`` plots column ``k``
        of ``task_weights_history`` against the rounds ``1 .. n_rounds``.
    loss_lines_ : list of matplotlib Line2D
        One line per task in the loss panel, column ``k`` of ``loss_curve``.
    axes_ : ndarray of shape (2,) of matplotlib Axes
        The weight panel and the loss panel.
    figure_ : matplotlib Figure
        Figure containing the panels.

    See Also
    --------
    skmtl.SharedObjectiveRegressor : The estimator whose training is shown.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl import SharedObjectiveRegressor
    >>> from skmtl.inspection import TaskWeightsDisplay
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 5))
    >>> signal = X[:, 0] - X[:, 1]
    >>> y = np.column_stack([signal + 0.1 * rng.normal(size=200),
    ...                      signal + rng.normal(size=200)])
    >>> model = SharedObjectiveRegressor(n_components=2, random_state=0).fit(X, y)
    >>> display = TaskWeightsDisplay.from_estimator(model)
    >>> [line.get_ydata()[-1].round(2) for line in display.weight_lines_]
    [np.float64(1.98), np.float64(0.02)]
    """

    def __init__(self, *, task_weights_history, loss_curve, task_labels=None):
        self.task_weights_history = task_weights_history
        self.loss_curve = loss_curve
        self.task_labels = task_labels

    def plot(self, ax=None, *, line_kwargs=None):
        """Plot the weights and the losses.

        Parameters
        ----------
        ax : array-like of 2 matplotlib Axes, default=None
            The axes of the weight panel and of the loss panel. None creates
            a new figure with the two side by side.
        line_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot` for
            every line.

        Returns
        -------
        display : TaskWeightsDisplay
            The display, with the plot attributes set.
        """
        check_matplotlib_support(f"{type(self).__name__}.plot")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        weights = np.asarray(self.task_weights_history, dtype=np.float64)
        losses = np.asarray(self.loss_curve, dtype=np.float64)
        if weights.ndim != 2 or weights.shape != losses.shape:
            raise ValueError(
                "task_weights_history and loss_curve must be 2-D of one shape "
                f"(n_rounds, n_tasks); got {weights.shape} and {losses.shape}."
            )
        n_rounds, n_tasks = weights.shape
        labels = label_text(task_labels_or_range(self.task_labels, n_tasks))
        if ax is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, layout="constrained")
        else:
            axes = np.asarray(ax, dtype=object).ravel()
            if len(axes) != 2:
                raise ValueError(
                    "ax must be None or two matplotlib Axes (weights, losses); got "
                    f"{len(axes)}."
                )
        line_kwargs = {"linewidth": 1.5 if n_tasks <= _MAX_LEGEND else 0.8,
                       **(line_kwargs or {})}
        rounds = np.arange(1, n_rounds + 1)
        self.weight_lines_ = [
            axes[0].plot(rounds, weights[:, k], label=labels[k], **line_kwargs)[0]
            for k in range(n_tasks)
        ]
        self.loss_lines_ = [
            axes[1].plot(rounds, losses[:, k], label=labels[k], **line_kwargs)[0]
            for k in range(n_tasks)
        ]
        axes[0].set(xlabel="round", ylabel="task weight", title="Task weights")
        axes[1].set(xlabel="round", ylabel="task loss", yscale="log",
                    title="Per-task training loss")
        for panel in axes:
            panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        if n_tasks <= _MAX_LEGEND:
            # Outside the panel: inside, it hides the curves it names.
            axes[1].legend(title="task", loc="upper left", bbox_to_anchor=(1.02, 1.0))

        self.axes_ = np.asarray(axes, dtype=object)
        self.figure_ = axes[0].figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, line_kwargs=None):
        """Plot the weights and losses of a fitted SharedObjectiveRegressor.

        Parameters
        ----------
        estimator : SharedObjectiveRegressor
            A fitted :class:`~skmtl.SharedObjectiveRegressor`.
        ax : array-like of 2 matplotlib Axes, default=None
            The axes of the weight panel and of the loss panel. None creates
            a new figure.
        line_kwargs : dict, default=None
            Keyword arguments passed to :meth:`matplotlib.axes.Axes.plot` for
            every line.

        Returns
        -------
        display : TaskWeightsDisplay
            The display, plotted.

        Raises
        ------
        TypeError
            If ``estimator`` is not a SharedObjectiveRegressor.
        NotFittedError
            If it is not fitted.

        See Also
        --------
        TaskWeightsDisplay : The display and its attributes.

        Examples
        --------
        >>> from skmtl import SharedObjectiveRegressor
        >>> from skmtl.datasets import make_multitask_regression
        >>> from skmtl.inspection import TaskWeightsDisplay
        >>> X, y = make_multitask_regression(n_tasks=4, n_features=5, random_state=0)
        >>> model = SharedObjectiveRegressor(
        ...     n_components=3, task_weights="dwa", task_column=0, random_state=0).fit(X, y)
        >>> display = TaskWeightsDisplay.from_estimator(model)
        >>> len(display.loss_lines_)
        4
        """
        check_matplotlib_support(f"{cls.__name__}.from_estimator")
        if not isinstance(estimator, SharedObjectiveRegressor):
            raise TypeError(
                "TaskWeightsDisplay.from_estimator needs a SharedObjectiveRegressor, the "
                f"estimator that learns task weights; got {type(estimator).__name__}."
            )
        check_is_fitted(estimator)
        display = cls(task_weights_history=estimator.task_weights_history_,
                      loss_curve=estimator.loss_curve_, task_labels=estimator.tasks_)
        return display.plot(ax=ax, line_kwargs=line_kwargs)
