"""n_jobs does not change results; the per-task chunking."""

import warnings

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

import skmtl._parallel
from skmtl import SharedParamRegressor
from skmtl._parallel import TaskWorkers, map_task_chunks

FITTED = ("coef_", "intercept_", "shared_coef_", "shared_intercept_", "task_coef_")


# ------------------------------------------------------------ n_jobs invariance


@pytest.mark.parametrize(
    "backend, n_jobs, fit_intercept",
    # Processes cost seconds per fit on 2 cores: loky runs one configuration.
    [("threading", 2, True), ("threading", 3, False), ("loky", 2, True)],
    ids=["threading-2-intercept", "threading-3-no-intercept", "loky-2-intercept"],
)
@pytest.mark.parametrize("loss", ["squared", "huber"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_n_jobs_does_not_change_the_fit(
    problem_factory, layout, loss, fit_intercept, backend, n_jobs
):
    # Enough tasks for several chunks per worker.
    kw = dict(n_tasks=11, n_samples=40) if layout == "wide" else dict(sizes=np.arange(2, 13))
    prob = problem_factory(layout, weights=True, outliers=True, **kw)
    params = dict(
        alpha_shared=0.3, alpha_task=0.7, loss=loss, fit_intercept=fit_intercept,
        task_column=prob.task_column, tol=1e-6,
    )
    fits = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        for jobs in (None, 1, n_jobs):
            with joblib.parallel_config(backend=backend):
                model = SharedParamRegressor(n_jobs=jobs, **params)
                fits.append(model.fit(prob.X, prob.y, sample_weight=prob.sample_weight))
    default, serial, parallel = fits
    # None and 1 are the same plain loop.
    for name in FITTED:
        assert_array_equal(getattr(default, name), getattr(serial, name), err_msg=name)
    # Only the order of floating-point reductions may differ.
    for name in FITTED:
        assert_allclose(getattr(parallel, name), getattr(serial, name), rtol=1e-12, atol=1e-14,
                        err_msg=name)
    assert parallel.n_iter_ == serial.n_iter_


# ------------------------------------------------------------ map_task_chunks


@pytest.mark.parametrize("n_tasks", [1, 3, 8, 101])
@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_chunks_cover_every_task_once_in_order(n_tasks, backend):
    # ``range`` is a picklable module-level callable: func(start, stop).
    with joblib.parallel_config(backend=backend):
        results, chunks = map_task_chunks(range, n_tasks, n_jobs=2)
    assert [list(r) for r in results] == [list(range(a, b)) for a, b in chunks]
    assert [t for r in results for t in r] == list(range(n_tasks))
    assert all(a < b for a, b in chunks)
    if n_tasks >= 2:
        # Parallel runs split the work, in a few chunks per worker, not one
        # call per task.
        assert 1 < len(chunks) <= min(n_tasks, 8)


def test_chunk_function_gets_the_extra_arguments():
    with joblib.parallel_config(backend="threading"):
        results, _ = map_task_chunks(
            _slice_sum, 10, np.arange(10.0), np.ones(10), n_jobs=2
        )
    assert sum(results) == np.arange(10.0).sum() + 10


def _slice_sum(start, stop, a, b):
    return a[start:stop].sum() + b[start:stop].sum()


@pytest.mark.parametrize("n_jobs", [None, 1])
def test_serial_is_one_plain_call(n_jobs):
    calls = []

    def record(start, stop, tag):
        calls.append((start, stop, tag))
        return tag

    # A closure cannot be pickled: a serial run never hands it to joblib,
    # not even inside a parallel_config asking for workers.
    with joblib.parallel_config(n_jobs=2):
        results, chunks = map_task_chunks(record, 50, "x", n_jobs=n_jobs)
    assert calls == [(0, 50, "x")]
    assert results == ["x"]
    assert chunks == [(0, 50)]


def test_no_tasks_makes_no_call():
    calls = []
    results, chunks = map_task_chunks(lambda a, b: calls.append(a), 0)
    assert (results, chunks, calls) == ([], [], [])


def test_cheap_calls_run_serially(monkeypatch):
    monkeypatch.setattr(skmtl._parallel, "_MIN_PARALLEL_COST", 1e6)
    calls = []

    def record(start, stop):
        calls.append((start, stop))
        return stop - start

    results, chunks = map_task_chunks(record, 50, n_jobs=2, cost=1e5)
    assert calls == [(0, 50)] and chunks == [(0, 50)] and results == [50]
    with joblib.parallel_config(backend="threading"):
        results, chunks = map_task_chunks(
            _slice_sum, 10, np.arange(10.0), np.ones(10), n_jobs=2, cost=1e7
        )
    assert len(chunks) > 1 and sum(results) == np.arange(10.0).sum() + 10


# ---------------------------------------------------------------- TaskWorkers


def test_task_workers_cover_every_task_once_in_order_on_every_call():
    # One Parallel kept open for many calls (the loky case is in
    # test_n_jobs_does_not_change_the_fit).
    with joblib.parallel_config(backend="threading"), TaskWorkers(2) as workers:
        for n_tasks in (1, 3, 101, 101):
            results, chunks = map_task_chunks(range, n_tasks, n_jobs=workers)
            assert [t for r in results for t in r] == list(range(n_tasks))
            assert [list(r) for r in results] == [list(range(a, b)) for a, b in chunks]
            if n_tasks >= 4:
                assert len(chunks) > 1


def test_task_workers_raise_what_a_chunk_raises():
    with joblib.parallel_config(backend="threading"), TaskWorkers(2) as workers:
        with pytest.raises(ZeroDivisionError):
            map_task_chunks(_fail_on_last_task, 10, n_jobs=workers)
        # The workers still serve the next call.
        results, _ = map_task_chunks(range, 10, n_jobs=workers)
    assert [t for r in results for t in r] == list(range(10))


def _fail_on_last_task(start, stop):
    return 1 / (stop - 10) if stop == 10 else stop


def test_serial_task_workers_make_one_plain_call():
    calls = []
    with TaskWorkers(None) as workers:
        results, chunks = map_task_chunks(lambda a, b: calls.append((a, b)), 7, n_jobs=workers)
    assert calls == [(0, 7)] and chunks == [(0, 7)]
