"""Fitting a dask DataFrame from per-task sufficient statistics.

The statistics are computed partition by partition and summed, so the fit
must equal the in-memory fit of the same rows up to floating-point reduction
order, and bad input must get the in-memory path's errors.
"""

import os

import numpy as np
import pandas as pd
import pytest

dask = pytest.importorskip(
    "dask", reason="dask is the optional extra [distributed] (the [test] extra installs it)"
)
dd = pytest.importorskip(
    "dask.dataframe",
    reason="dask.dataframe is the optional extra [distributed] (the [test] extra installs it)",
)

from skmtl import (  # noqa: E402
    SharedFeatureRegressor,
    SharedObjectiveRegressor,
    SharedParamRegressor,
)

N_PARTITIONS = 5


@pytest.fixture(autouse=True)
def _local_scheduler():
    """dask's threaded scheduler unless a test asks for the cluster.

    A dask Client makes itself the default scheduler of the whole process, so
    once a test has started the session's cluster every ``compute`` would go
    there; this module's own functions (``_take``) are not importable on its
    workers, and such a compute was seen to hang instead of failing.
    """
    with dask.config.set(scheduler="threads"):
        yield

CONFIGS = {
    "param-float": (SharedParamRegressor, dict(alpha_shared=0.3, alpha_task=0.5)),
    "param-float-no-intercept": (
        SharedParamRegressor, dict(alpha_shared=0.3, alpha_task=0.5, fit_intercept=False)
    ),
    "param-auto": (SharedParamRegressor, dict(alpha_task="auto")),
    "feature-l21": (SharedFeatureRegressor, dict(alpha=0.02, penalty="l21", tol=1e-9)),
    "feature-trace": (SharedFeatureRegressor, dict(alpha=0.05, penalty="trace", tol=1e-9)),
}

COMPARED = {
    SharedParamRegressor: ("coef_", "intercept_", "shared_coef_", "shared_intercept_"),
    SharedFeatureRegressor: ("coef_", "intercept_", "components_"),
}
AUTO = ("task_covariance_", "noise_variance_", "reml_log_likelihood_")


def _data(*, labels="int", weights=False, raw_scales=True, n_tasks=9, n_samples=400, seed=0):
    """Long-layout rows in random task order (each task spans partitions).

    ``raw_scales``: features of very different scales and offsets, which
    make the uncentered statistics ill-conditioned, as real data does.
    """
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, n_tasks, n_samples)
    X = rng.normal(size=(n_samples, 3))
    if raw_scales:
        X = X * [1.0, 10.0, 0.1] + [0.0, 50.0, -2.0]
    coef = rng.normal(size=3) + 0.5 * rng.normal(size=(n_tasks, 3))
    y = np.einsum("ij,ij->i", X, coef[codes]) + rng.normal(size=n_tasks)[codes]
    y += rng.normal(size=n_samples)
    names = (
        np.array([f"school {c:02d}" for c in range(n_tasks)], dtype=object)
        if labels == "str" else 10 * np.arange(n_tasks) - 15
    )
    frame = pd.DataFrame(X, columns=["hours", "size", "ratio"])
    frame.insert(1, "task", names[codes])
    sw = rng.uniform(0.2, 3.0, size=n_samples) if weights else None
    return frame, pd.Series(y, name="score"), sw


def _to_dask(frame, y, sw):
    ddf = dd.from_pandas(frame, npartitions=N_PARTITIONS)
    dy = dd.from_pandas(y, npartitions=N_PARTITIONS)
    dw = None if sw is None else dd.from_pandas(pd.Series(sw), npartitions=N_PARTITIONS)
    # The point of the test: every task's rows are split across partitions.
    tasks_per_partition = [set(p["task"]) for p in ddf.partitions]
    assert all(sum(t in s for s in tasks_per_partition) >= 2 for t in set(frame["task"]))
    return ddf, dy, dw


def _assert_close(actual, desired, name):
    actual, desired = np.asarray(actual, dtype=float), np.asarray(desired, dtype=float)
    scale = max(float(np.max(np.abs(desired), initial=0.0)), 1e-300)
    assert actual.shape == desired.shape, name
    assert np.max(np.abs(actual - desired), initial=0.0) <= 1e-8 * scale, name


def _assert_same_fit(on_dask, in_memory):
    names = COMPARED[type(in_memory)]
    if "task_covariance_" in vars(in_memory):
        names += AUTO
    for name in names:
        _assert_close(getattr(on_dask, name), getattr(in_memory, name), name)
    np.testing.assert_array_equal(on_dask.tasks_, in_memory.tasks_)
    assert on_dask.tasks_.dtype == in_memory.tasks_.dtype
    np.testing.assert_array_equal(on_dask.feature_names_in_, in_memory.feature_names_in_)
    assert on_dask.n_features_in_ == in_memory.n_features_in_ == 4
    assert on_dask.n_tasks_ == in_memory.n_tasks_


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("labels", ["int", "str"])
@pytest.mark.parametrize("config", CONFIGS)
def test_fit_equals_in_memory_fit(config, labels, weights):
    cls, params = CONFIGS[config]
    # On the raw-scale data the REML optimum has a zero variance, where the
    # deviance is so flat that merely shuffling the rows of an in-memory fit
    # moves the coefficients by 1e-7: REML is compared on standardized
    # features, where the optimum is interior and the fit reproducible.
    frame, y, sw = _data(labels=labels, weights=weights, raw_scales=config != "param-auto")
    in_memory = cls(task_column="task", **params).fit(frame, y, sample_weight=sw)
    ddf, dy, dw = _to_dask(frame, y, sw)
    on_dask = cls(task_column="task", **params).fit(ddf, dy, sample_weight=dw)
    _assert_same_fit(on_dask, in_memory)


def _take(rows, full):
    return full.iloc[rows]


def test_task_column_by_position_and_empty_partitions():
    frame, y, _ = _data()
    in_memory = SharedParamRegressor(task_column=-3).fit(frame, y)
    full = frame.assign(score=y)
    chunks = np.array_split(np.arange(len(full)), 4)
    chunks.insert(2, chunks[0][:0])
    ddf = dd.from_map(_take, chunks, full=full, meta=full.iloc[:0])
    assert (ddf.map_partitions(len).compute() == 0).sum() == 1
    with dask.config.set(scheduler="sync"):
        on_dask = SharedParamRegressor(task_column=-3).fit(ddf[list(frame.columns)], ddf["score"])
    _assert_same_fit(on_dask, in_memory)


@pytest.mark.parametrize("labels", ["int", "str"])
def test_lazy_predict_equals_in_memory_predict_with_unknown_tasks(labels):
    frame, y, _ = _data(labels=labels)
    known = frame["task"] != frame["task"].iloc[0]
    model = SharedParamRegressor(task_column="task", handle_unknown="shared")
    ddf, dy, _ = _to_dask(frame, y, None)
    dknown = ddf["task"] != frame["task"].iloc[0]
    model.fit(ddf[dknown], dy[dknown])
    in_memory = SharedParamRegressor(task_column="task", handle_unknown="shared").fit(
        frame[known], y[known]
    )
    lazy = model.predict(ddf)
    assert lazy.npartitions == ddf.npartitions
    pred = lazy.compute()
    # One pass over the rows, aligned with X's index; the unknown task is
    # predicted by the shared model.
    pd.testing.assert_index_equal(pred.index, frame.index)
    _assert_close(pred.to_numpy(), in_memory.predict(frame), "predict")
    unknown = ~known.to_numpy()
    shared = frame.iloc[:, [0, 2, 3]].to_numpy() @ model.shared_coef_ + model.shared_intercept_
    _assert_close(pred.to_numpy()[unknown], shared[unknown], "unknown task")
    model.set_params(handle_unknown="error")
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError, match="unknown task label"):
        model.predict(ddf).compute()


def test_fit_on_the_cluster_equals_in_memory_fit(dask_client):
    frame, y, sw = _data(labels="str", weights=True, raw_scales=False)
    full = frame.assign(score=y, weight=sw)
    client_pid = os.getpid()

    def partition(rows):
        # Runs where dask puts it; the fit must never build a partition here.
        import os

        if os.getpid() == client_pid:
            raise AssertionError("a partition was materialized in the client process")
        return full.iloc[rows]

    rows = np.array_split(np.arange(len(full)), 7)
    ddf = dd.from_map(partition, rows, meta=full.iloc[:0])
    X, dy, dw = ddf[list(frame.columns)], ddf["score"], ddf["weight"]
    with dask.config.set(scheduler="distributed"):
        _fit_on_the_cluster(X, dy, dw, frame, y, sw)


def _fit_on_the_cluster(X, dy, dw, frame, y, sw):
    for cls, params in (CONFIGS["param-auto"], CONFIGS["feature-l21"]):
        on_cluster = cls(task_column="task", **params).fit(X, dy, sample_weight=dw)
        in_memory = cls(task_column="task", **params).fit(frame, y, sample_weight=sw)
        _assert_same_fit(on_cluster, in_memory)
        _assert_close(on_cluster.predict(X).compute().to_numpy(), in_memory.predict(frame), "predict")


# ------------------------------------------------------------------ errors


def _corrupt(frame, y, sw, what):
    """A copy of the data with one fault in the last partition's rows."""
    frame, y = frame.copy(), y.copy()
    sw = None if sw is None else sw.copy()
    row = len(frame) - 3
    if what == "nan-X":
        frame.loc[row, "size"] = np.nan
    elif what == "inf-X":
        frame.loc[row, "ratio"] = np.inf
    elif what == "nan-y":
        y[row] = np.nan
    elif what == "inf-y":
        y[row] = -np.inf
    elif what == "negative-weight":
        sw[row] = -1.0
    elif what == "zero-weights":
        sw[:] = 0.0
    elif what == "nan-label":
        frame["task"] = frame["task"].astype(float)
        frame.loc[row, "task"] = np.nan
    elif what == "mixed-labels":
        # Strings in the last partition, numbers in the others: each
        # partition alone is fine.
        frame["task"] = frame["task"].astype(object)
        frame.loc[frame.index[-len(frame) // N_PARTITIONS:], "task"] = "late school"
    elif what == "text-feature":
        frame["ratio"] = frame["ratio"].astype(object)
        frame.loc[row, "ratio"] = "high"
    elif what == "one-row":
        frame, y = frame.iloc[:1], y.iloc[:1]
        sw = None if sw is None else sw[:1]
    return frame, y, sw


@pytest.mark.parametrize(
    "what",
    ["nan-X", "inf-X", "nan-y", "inf-y", "negative-weight", "zero-weights", "nan-label",
     "mixed-labels", "text-feature", "one-row"],
)
def test_bad_input_gets_the_in_memory_error(what):
    frame, y, sw = _data(weights=what.endswith(("weight", "weights")))
    frame, y, sw = _corrupt(frame, y, sw, what)
    with pytest.raises((ValueError, TypeError)) as expected:
        SharedParamRegressor(task_column="task").fit(frame, y, sample_weight=sw)
    n = min(N_PARTITIONS, len(frame))
    # dask would turn object columns (mixed labels, text) into strings.
    with dask.config.set({"dataframe.convert-string": False}):
        ddf, dy = dd.from_pandas(frame, npartitions=n), dd.from_pandas(y, npartitions=n)
        dw = None if sw is None else dd.from_pandas(pd.Series(sw), npartitions=n)
    with dask.config.set(scheduler="sync"), pytest.raises(expected.type) as raised:
        SharedParamRegressor(task_column="task").fit(ddf, dy, sample_weight=dw)
    assert str(raised.value) == str(expected.value)


def test_missing_task_column_gets_the_in_memory_error():
    frame, y, _ = _data()
    model = SharedFeatureRegressor(task_column="school")
    with pytest.raises(ValueError) as expected:
        model.fit(frame, y)
    ddf, dy, _ = _to_dask(frame, y, None)
    with pytest.raises(ValueError) as raised:
        model.fit(ddf, dy)
    assert str(raised.value) == str(expected.value)


@pytest.mark.parametrize(
    "estimator, error, match",
    [
        (SharedParamRegressor(), ValueError, "task_column"),
        (SharedParamRegressor(task_column="task", loss="huber"), ValueError, "loss='huber'"),
        (SharedParamRegressor(task_column="task", solver="lbfgs"), ValueError, "solver='lbfgs'"),
        (SharedParamRegressor(task_column="task", solver="newton"), ValueError, "solver='newton'"),
        (SharedFeatureRegressor(task_column="task", loss="huber"), ValueError, "loss='huber'"),
        (SharedObjectiveRegressor(task_column="task"), TypeError, "SharedObjectiveRegressor"),
    ],
    ids=["wide-layout", "param-huber", "param-lbfgs", "param-newton", "feature-huber",
         "objective"],
)
def test_unsupported_configuration_is_refused_before_any_work(estimator, error, match):
    frame, y, _ = _data()
    ddf, dy, _ = _to_dask(frame, y, None)
    # A graph that fails if it is ever computed: the refusal must come first.
    poisoned = ddf.map_partitions(_fail, meta=ddf)
    with pytest.raises(error, match=match):
        estimator.fit(poisoned, dy)
    assert not hasattr(estimator, "coef_")


def _fail(part):
    raise AssertionError("the data was computed")


@pytest.mark.parametrize(
    "argument, make",
    [
        ("y", lambda ddf, dy, dw, y, sw: (ddf, y.to_numpy(), None)),
        ("y", lambda ddf, dy, dw, y, sw: (ddf, ddf[["hours"]], None)),
        ("sample_weight", lambda ddf, dy, dw, y, sw: (ddf, dy, sw)),
        ("X", lambda ddf, dy, dw, y, sw: (ddf.to_dask_array(lengths=True), dy, None)),
        ("y", lambda ddf, dy, dw, y, sw: (ddf.compute(), dy, None)),
    ],
    ids=["numpy-y", "frame-y", "numpy-weight", "dask-array-X", "pandas-X-dask-y"],
)
def test_mismatched_containers_name_the_argument(argument, make):
    frame, y, sw = _data(weights=True)
    ddf, dy, dw = _to_dask(frame, y, sw)
    X, target, weight = make(ddf, dy, dw, y, sw)
    with pytest.raises(TypeError, match=f"^{argument} "):
        SharedParamRegressor(task_column="task").fit(X, target, sample_weight=weight)


def test_methods_other_than_fit_and_predict_refuse_dask():
    frame, y, _ = _data()
    ddf, dy, _ = _to_dask(frame, y, None)
    model = SharedFeatureRegressor(penalty="l21", alpha=0.02, task_column="task")
    with dask.config.set(scheduler="sync"):
        model.fit(ddf, dy)
    with pytest.raises(TypeError, match="^X is a dask DataFrame"):
        model.transform(ddf)
    with pytest.raises(TypeError, match="^X is a dask DataFrame"):
        model.score(ddf, dy)
    wide = SharedParamRegressor().fit(frame[["hours", "size"]], y)
    with pytest.raises(TypeError, match="long layout"):
        wide.predict(ddf[["hours", "size"]])


def test_importing_skmtl_does_not_import_dask():
    import subprocess
    import sys

    code = "import sys, skmtl; print(any(m.split('.')[0] == 'dask' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"



@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
def test_statistics_serve_the_gram_of_the_rows_and_refuse_row_access(problem_factory, weights):
    from skmtl._tasks import LongTasks, SufficientStatsTasks, make_long_tasks

    prob = problem_factory("long", sizes=[1, 3, 70, 5], weights=weights)
    rows, _ = make_long_tasks(prob.X[:, 1:], prob.X[:, 0], prob.y, prob.sample_weight)
    assert isinstance(rows, LongTasks)
    n_obs, log_w = rows.positive_weight_stats()
    stats = SufficientStatsTasks(
        *rows.gram(0, rows.n_tasks, True), rows.n_observed, n_obs, log_w
    )
    assert (stats.n_tasks, stats.n_features) == (rows.n_tasks, rows.n_features)
    # S is summed per task first: equal up to rounding.
    assert stats.S == pytest.approx(rows.S, rel=1e-14)
    np.testing.assert_array_equal(stats.task_weight_sums(), rows.task_weight_sums())
    for fit_intercept in (True, False):
        for start, stop in ((0, 4), (1, 3)):
            for ours, theirs in zip(
                stats.gram(start, stop, fit_intercept), rows.gram(start, stop, fit_intercept)
            ):
                np.testing.assert_array_equal(ours, theirs)
    for method in ("linear_loss_grad", "head_loss_grad", "row_range", "pair_weights", "task_means"):
        with pytest.raises(TypeError, match="sufficient statistics"):
            getattr(stats, method)(0, 1)
