"""Synthetic multi-task regression problems with a known sharing structure."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

_STRUCTURES = ("shared", "low_rank", "sparse", "clustered")
# How far a task strays from what it shares, relative to the shared part's scale.
_TASK_SPREAD = 0.2


def _per_task(value, n_tasks, name, *, integer):
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n_tasks, arr.item())
    if arr.shape != (n_tasks,):
        raise ValueError(f"{name} must be a scalar or have one value per task ({n_tasks}); "
                         f"got shape {arr.shape}.")
    if integer:
        if not all(isinstance(v, numbers.Integral) or float(v).is_integer() for v in arr.tolist()):
            raise ValueError(f"{name} must hold integers; got {value!r}.")
        arr = arr.astype(np.int64)
        if np.any(arr < 1):
            raise ValueError(f"{name} must be at least 1; got {value!r}.")
    else:
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name} must be finite and non-negative; got {value!r}.")
    return arr


def _coefficients(structure, n_tasks, n_features, rank, n_informative, n_clusters, rng):
    if structure == "shared":
        w0 = rng.standard_normal(n_features)
        return w0 + _TASK_SPREAD * rng.standard_normal((n_tasks, n_features))
    if structure == "low_rank":
        k = min(rank, n_tasks, n_features)
        return rng.standard_normal((n_tasks, k)) @ rng.standard_normal((k, n_features)) / np.sqrt(k)
    if structure == "sparse":
        coef = np.zeros((n_tasks, n_features))
        support = rng.choice(n_features, size=n_informative, replace=False)
        coef[:, support] = rng.standard_normal((n_tasks, n_informative))
        return coef
    centers = rng.standard_normal((n_clusters, n_features))
    # Every cluster gets at least one task; the rest are assigned at random.
    labels = rng.permutation(np.concatenate([np.arange(n_clusters),
                                             rng.randint(0, n_clusters, n_tasks - n_clusters)]))
    return centers[labels] + _TASK_SPREAD * rng.standard_normal((n_tasks, n_features))


def make_multitask_regression(
    n_tasks=10,
    n_samples_per_task=100,
    n_features=20,
    *,
    structure="shared",
    noise=1.0,
    missing_rate=0.0,
    layout="long",
    rank=3,
    n_informative=None,
    n_clusters=3,
    random_state=None,
    coef=False,
):
    """Generate a multi-task linear regression problem with a known structure.

    Features are independent standard normal; task ``t``'s target is
    ``y = X @ coef[t] + noise[t] * e`` with standard normal ``e`` and no
    intercept. ``structure`` says how the task coefficients relate:

    - ``'shared'``: ``coef[t] = w_0 + v_t`` with a common standard normal
      ``w_0`` and small task deviations ``v_t`` (standard deviation 0.2), as
      :class:`~skmtl.SharedParamRegressor` assumes;
    - ``'low_rank'``: ``coef`` is ``(n_tasks, rank) @ (rank, n_features)``,
      tasks share a ``rank``-dimensional subspace (``penalty='trace'``);
    - ``'sparse'``: the same ``n_informative`` features are non-zero in every
      task, the others zero in all (``penalty='l21'``, ``MultiTaskLasso``);
    - ``'clustered'``: tasks fall in ``n_clusters`` groups, each task its
      group's standard normal center plus a deviation of standard deviation
      0.2; every group has at least one task.

    Parameters
    ----------
    n_tasks : int, default=10
        Number of tasks.
    n_samples_per_task : int or array-like of shape (n_tasks,), default=100
        Rows per task (long layout), or labelled rows per task (wide layout:
        ``max(n_samples_per_task)`` rows, of which task ``t`` observes a
        random ``n_samples_per_task[t]``; the others are NaN).
    n_features : int, default=20
        Number of features.
    structure : {'shared', 'low_rank', 'sparse', 'clustered'}, default='shared'
        How the task coefficients are related (above).
    noise : float or array-like of shape (n_tasks,), default=1.0
        Standard deviation of the Gaussian noise, one value or one per task.
    missing_rate : float, default=0.0
        Wide layout only: each label is also left out (NaN) with this
        probability, keeping at least two labels per task.
    layout : {'long', 'wide'}, default='long'
        ``'long'``: ``X`` is ``(n_samples, 1 + n_features)`` with the task
        label (``0 .. n_tasks - 1``) in column 0 and ``y`` is 1-D, rows
        grouped by task. ``'wide'``: ``X`` is ``(n_samples, n_features)``,
        shared by all tasks, and ``y`` is ``(n_samples, n_tasks)`` with NaN
        for missing labels.
    rank : int, default=3
        ``structure='low_rank'``: the rank of ``coef`` (at most
        ``min(n_tasks, n_features)``).
    n_informative : int, default=None
        ``structure='sparse'``: the number of non-zero features; None means
        ``max(1, n_features // 10)``.
    n_clusters : int, default=3
        ``structure='clustered'``: the number of task groups (at most
        ``n_tasks``).
    random_state : int, RandomState instance or None, default=None
        Seed of the random numbers.
    coef : bool, default=False
        If True, also return the true coefficients.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features + 1) or (n_samples, n_features)
        Long layout: the task label in column 0, then the features. Wide
        layout: the features.
    y : ndarray of shape (n_samples,) or (n_samples, n_tasks)
        The targets (NaN = missing label, wide layout only).
    coef : ndarray of shape (n_tasks, n_features)
        The true coefficients, row ``t`` for task ``t``. Only returned if
        ``coef=True``.

    See Also
    --------
    sklearn.datasets.make_regression : One task, or several on the same coefficients' scale.
    skmtl.datasets.load_school : Real grouped data in the long layout.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl.datasets import make_multitask_regression
    >>> X, y, coef = make_multitask_regression(
    ...     n_tasks=5, n_features=8, structure="low_rank", rank=2, random_state=0, coef=True)
    >>> X.shape, y.shape, int(np.linalg.matrix_rank(coef))
    ((500, 9), (500,), 2)
    """
    for name, value in (("n_tasks", n_tasks), ("n_features", n_features), ("rank", rank),
                        ("n_clusters", n_clusters)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if structure not in _STRUCTURES:
        raise ValueError(f"structure must be one of {_STRUCTURES}; got {structure!r}.")
    if layout not in ("long", "wide"):
        raise ValueError(f"layout must be 'long' or 'wide'; got {layout!r}.")
    if not 0 <= missing_rate < 1:
        raise ValueError(f"missing_rate must be in [0, 1); got {missing_rate!r}.")
    if missing_rate and layout == "long":
        raise ValueError("missing_rate applies to the wide layout only: in the long layout a "
                         "task simply has fewer rows (use n_samples_per_task).")
    if n_informative is None:
        n_informative = max(1, n_features // 10)
    if not isinstance(n_informative, numbers.Integral) or not 1 <= n_informative <= n_features:
        raise ValueError(f"n_informative must be an integer in [1, n_features={n_features}]; "
                         f"got {n_informative!r}.")
    if structure == "clustered" and n_clusters > n_tasks:
        raise ValueError(f"n_clusters={n_clusters} must not exceed n_tasks={n_tasks}.")
    sizes = _per_task(n_samples_per_task, n_tasks, "n_samples_per_task", integer=True)
    noise = _per_task(noise, n_tasks, "noise", integer=False)
    rng = check_random_state(random_state)

    W = _coefficients(structure, n_tasks, n_features, rank, n_informative, n_clusters, rng)
    if layout == "long":
        task = np.repeat(np.arange(n_tasks), sizes)
        Xf = rng.standard_normal((len(task), n_features))
        y = np.einsum("ij,ij->i", Xf, W[task]) + noise[task] * rng.standard_normal(len(task))
        X = np.column_stack([task.astype(np.float64), Xf])
    else:
        n_rows = int(sizes.max())
        X = rng.standard_normal((n_rows, n_features))
        y = X @ W.T + noise * rng.standard_normal((n_rows, n_tasks))
        for t in range(n_tasks):
            order = rng.permutation(n_rows)
            observed = order[: sizes[t]]
            keep = rng.random(sizes[t]) >= missing_rate
            keep[: min(2, sizes[t])] = True
            missing = np.ones(n_rows, dtype=bool)
            missing[observed[keep]] = False
            y[missing, t] = np.nan
    return (X, y, W) if coef else (X, y)
