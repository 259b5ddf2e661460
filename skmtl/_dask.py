"""Fit a dask DataFrame from per-task sufficient statistics.

The squared-loss solvers of ``SharedParamRegressor`` and
``SharedFeatureRegressor`` read the data only through the per-task statistics
of :meth:`skmtl._tasks.LongTasks.gram` (``Z_t^T S_t Z_t``, ``Z_t^T S_t y_t``,
``y_t^T S_t y_t`` and the summed weights, ``Z_t = [X_t, 1]``). For a dask
DataFrame in the long layout these are computed partition by partition where
the partitions live, each partition checked exactly as in-memory data is, and
summed in a tree of small merges: no process ever holds the rows, and the
client receives ``n_tasks`` small matrices. The statistics are sums without
centering, as the in-memory path forms them, so both fits agree to
floating-point reduction order.

dask (and pandas, which dask DataFrames need) is imported only once the user
has passed a dask collection: a collection is recognized by the module of its
type, so that importing skmtl never imports dask.
"""

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import validate_data

from ._tasks import SufficientStatsTasks, check_task_labels, make_long_tasks

# Partial statistics merged per node of the reduction tree: a few merges of
# n_tasks (p x p) matrices each, instead of one node receiving every partition.
_SPLIT_EVERY = 8


def is_dask_collection(obj):
    """Whether ``obj`` is a dask collection (DataFrame, Series, Array, ...)."""
    return type(obj).__module__.partition(".")[0] == "dask"


def _is_dask_dataframe(obj):
    return is_dask_collection(obj) and type(obj).__name__ == "DataFrame"


def _is_dask_series(obj):
    return is_dask_collection(obj) and type(obj).__name__ == "Series"


def check_in_memory(obj, name):
    """Refuse a dask collection where only in-memory data is supported."""
    if is_dask_collection(obj):
        raise TypeError(
            f"{name} is a dask {type(obj).__name__}: skmtl takes dask DataFrames in "
            "fit (long layout, from sufficient statistics) and predict (lazily) only. "
            f"Compute {name} first, or map the method over its partitions with "
            "map_partitions."
        )


def check_fit_input(estimator, X, y, sample_weight):
    """Whether fit takes the dask path; raise if dask input cannot take it."""
    if not _is_dask_dataframe(X):
        for name, value in (("X", X), ("y", y), ("sample_weight", sample_weight)):
            if is_dask_collection(value):
                raise TypeError(
                    f"{name} is a dask {type(value).__name__}, but only a dask DataFrame "
                    "X (long layout) with y and sample_weight as dask Series is "
                    "fitted out of core; got X of type "
                    f"{type(X).__module__}.{type(X).__name__}."
                )
        return False
    if estimator.task_column is None:
        raise ValueError(
            "X is a dask DataFrame, which is fitted in the long layout only: set "
            "task_column to the column of X that holds each row's task label."
        )
    estimator._check_sufficient_stats()
    if not _is_dask_series(y):
        raise TypeError(
            "y must be a dask Series partitioned like X when X is a dask DataFrame; "
            f"got y of type {type(y).__module__}.{type(y).__name__}."
        )
    if sample_weight is not None and not _is_dask_series(sample_weight):
        raise TypeError(
            "sample_weight must be None or a dask Series partitioned like X when X "
            "is a dask DataFrame; got sample_weight of type "
            f"{type(sample_weight).__module__}.{type(sample_weight).__name__}."
        )
    return True


def _free_name(columns, base):
    name = base
    while name in columns:
        name = f"_{name}"
    return name


def long_statistics(estimator, X, y, sample_weight):
    """Per-task sufficient statistics of a dask DataFrame in the long layout.

    Returns
    -------
    data : SufficientStatsTasks
    tasks : ndarray
        The sorted unique task labels.
    """
    columns = list(X.columns)
    validate_data(estimator, _empty_like(X), reset=True, skip_check_array=True)
    estimator._frame_task_position(columns)
    y_name = _free_name(columns, "__skmtl_y__")
    frame = X.assign(**{y_name: y})
    w_name = None
    if sample_weight is not None:
        w_name = _free_name(columns + [y_name], "__skmtl_sample_weight__")
        frame = frame.assign(**{w_name: sample_weight})
    # The partitions are checked by an unfitted copy: the estimator itself may
    # carry a large previous fit, and the checks must not change it.
    checker = clone(estimator)
    where = f"task_column={estimator.task_column!r} of X"
    from dask import delayed

    stats = [
        delayed(_partition_statistics)(part, checker, len(columns), y_name, w_name)
        for part in frame.to_delayed()
    ]
    while True:
        stats = [
            delayed(_merge)(where, *stats[i:i + _SPLIT_EVERY])
            for i in range(0, len(stats), _SPLIT_EVERY)
        ]
        if len(stats) == 1:
            break
    merged = stats[0].compute()
    if merged is None:
        estimator._check_n_rows(0)
    tasks, G, g, yy, weight_sums, n_rows, n_positive, log_weights = merged
    estimator._check_n_rows(n_rows)
    if w_name is not None:
        estimator._check_weight_sum(weight_sums.sum())
    return SufficientStatsTasks(G, g, yy, weight_sums, n_rows, n_positive, log_weights), tasks


def _empty_like(X):
    """An empty pandas DataFrame with ``X``'s columns: what scikit-learn reads
    ``n_features_in_`` and ``feature_names_in_`` from."""
    import pandas as pd

    return pd.DataFrame(columns=X.columns)


def _partition_statistics(part, checker, n_columns, y_name, w_name):
    """Checked per-task statistics of one partition (``None`` when empty)."""
    if len(part) == 0:
        return None
    X = part.iloc[:, :n_columns]
    labels, Xf, y = checker._check_long_rows(X, part[y_name])
    sw = None
    if w_name is not None:
        sw = checker._check_weights(part[w_name], Xf, all_rows=False)
    data, tasks = make_long_tasks(Xf, labels, y, sw)
    G, g, yy, weight_sums = data.gram(0, data.n_tasks, True)
    return (tasks, G, g, yy, weight_sums, len(y), *data.positive_weight_stats())


def _merge(where, *parts):
    """Sum partial statistics over the union of their task labels."""
    parts = [part for part in parts if part is not None]
    if not parts:
        return None
    # Each partition's labels are checked; across partitions they may still
    # mix strings and numbers.
    labels = check_task_labels(np.concatenate([part[0] for part in parts]), where=where)
    tasks = np.unique(labels)
    p = parts[0][1].shape[1]
    G, g = np.zeros((len(tasks), p, p)), np.zeros((len(tasks), p))
    yy, weight_sums = np.zeros(len(tasks)), np.zeros(len(tasks))
    for part in parts:
        idx = np.searchsorted(tasks, part[0])
        G[idx] += part[1]
        g[idx] += part[2]
        yy[idx] += part[3]
        weight_sums[idx] += part[4]
    totals = [sum(part[i] for part in parts) for i in (5, 6, 7)]
    return (tasks, G, g, yy, weight_sums, *totals)


def predict(estimator, X):
    """Lazy predictions of a dask DataFrame in the long layout, partition by partition."""
    if estimator.task_column is None or not _is_dask_dataframe(X):
        raise TypeError(
            f"X is a dask {type(X).__name__}: predict takes a dask DataFrame in the "
            "long layout only (task_column set at fit)."
        )
    # Column names and count are checked now; the rows when computed.
    validate_data(estimator, _empty_like(X), reset=False, skip_check_array=True)
    import pandas as pd

    return X.map_partitions(_predict_partition, estimator, meta=pd.Series(dtype=np.float64))


def _predict_partition(part, estimator):
    import pandas as pd

    pred = estimator.predict(part) if len(part) else np.empty(0)
    return pd.Series(pred, index=part.index, dtype=np.float64)
