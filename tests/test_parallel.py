"""n_jobs does not change results; the per-task chunking."""

import os
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


def test_cheap_calls_on_worker_processes_run_serially(monkeypatch):
    # A floor of its own on processes.
    monkeypatch.setattr(skmtl._parallel, "_MIN_PARALLEL_COST", 1e6)
    monkeypatch.setattr(skmtl._parallel, "_MIN_PROCESS_COST", 1e8)
    calls = []

    def record(start, stop):
        calls.append((start, stop))
        return stop - start

    with joblib.parallel_config(backend="loky"), TaskWorkers(2, "processes") as workers:
        assert workers.processes
        # Above the floor of threads, below that of processes: one plain call.
        results, chunks = map_task_chunks(record, 50, n_jobs=workers, cost=1e7)
        assert calls == [(0, 50)] and chunks == [(0, 50)] and results == [50]
        # ``range``: a function the worker processes can unpickle.
        results, chunks = map_task_chunks(range, 10, n_jobs=workers, cost=1e9)
    assert len(chunks) == 2 and [t for r in results for t in r] == list(range(10))
    with joblib.parallel_config(backend="threading"), TaskWorkers(2) as workers:
        assert not workers.processes


# ---------------------------------------------------------------- TaskWorkers


def test_subclasses_of_joblib_backends_go_through_parallel(monkeypatch):
    # ray's joblib backend is a MultiprocessingBackend whose pool runs on a
    # cluster: no files written for it, no chunk handed to its pool directly.
    from joblib._parallel_backends import MultiprocessingBackend

    from skmtl import _parallel

    class ClusterBackend(MultiprocessingBackend):
        pass

    joblib.register_parallel_backend("cluster-like", ClusterBackend)
    handed = []
    monkeypatch.setattr(_parallel, "_run_pooled", lambda *args: handed.append(args))
    with joblib.parallel_config(backend="cluster-like"), TaskWorkers(2) as workers:
        assert not workers.processes
        results, chunks = map_task_chunks(range, 10, n_jobs=workers)
        assert workers._parallel is not None and workers._submit is None
    assert not handed
    assert len(chunks) > 2 and [t for r in results for t in r] == list(range(10))
    with joblib.parallel_config(backend="threading"), TaskWorkers(2) as workers:
        results, chunks = map_task_chunks(range, 10, n_jobs=workers)
        # joblib's own threading backend: the parent and one pool thread.
        assert workers._submit is not None and len(chunks) == 2 and len(handed) == 1


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


# ------------------------------------------------------- worker processes
#
# With loky or multiprocessing, TaskWorkers writes the arguments named by share()
# once to memory-mapped files (_SharedData), sends stand-ins, and computes
# the first chunk in the parent. The tests lower _SHARE_MIN_BYTES to 0 so
# that the small problems here go through the files.


def _long_network_problem(seed=0, sizes=(3, 5, 2, 6, 4, 7, 1, 5)):
    from skmtl._shared_objective import _Network
    from skmtl._tasks import make_long_tasks

    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    X, y = rng.normal(size=(len(labels), 3)), rng.normal(size=len(labels))
    data, _ = make_long_tasks(X, labels, y, rng.uniform(0.5, 2.0, len(labels)))
    net = _Network(3, 4, len(sizes), "tanh", fit_intercept=True)
    theta = net.initialize(data, 0) + 0.5 * rng.normal(size=net.offsets[-1])
    return data, net, theta


def test_parent_first_chunks_cover_every_task_once_with_a_larger_first():
    for n_tasks, n_workers, extra in [(1000, 2, 0.15), (1000, 3, 0.4), (7, 2, 0.15), (1, 2, 0.4)]:
        chunks = skmtl._parallel._parent_first_chunks(n_tasks, n_workers, extra)
        assert [t for a, b in chunks for t in range(a, b)] == list(range(n_tasks))
        if n_tasks >= 1000:
            sizes = np.diff([0] + [b for _, b in chunks])
            assert len(sizes) == n_workers
            assert_allclose(sizes[0] / sizes[1:], 1 + extra, rtol=0.01)


def test_stand_ins_replace_the_fixed_arrays_and_rebuild_them(monkeypatch, tmp_path):
    import pickle

    from skmtl import _parallel

    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    monkeypatch.setattr(_parallel, "_SHARE_MIN_BYTES", 0)
    monkeypatch.setattr(_parallel, "_ATTACHED", {"folder": None, "arrays": {}, "objects": {}})
    data, net, _ = _long_network_problem()
    # The parent's cache of task groups, filled.
    data._batch_groups(0, data.n_tasks)
    XT, other = net.design(data.X), np.arange(5.0)
    shared = _parallel._SharedData(remote_fraction=0.5)
    shared.share((data, XT))
    shared.wait()
    data_in, XT_in = shared.stand_in(data), shared.stand_in(XT)
    # Not a fixed argument: passed as it is.
    assert shared.stand_in(other) is other
    # Written once: the same stand-ins, the same files, on every call.
    assert shared.stand_in(data) is data_in and shared.stand_in(XT) is XT_in
    files = sorted(tmp_path.glob("skmtl-*/*.npy"))
    assert len(files) == 1 + sum(isinstance(a, np.ndarray) for a in vars(data).values())
    # A stand-in pickles without its arrays.
    assert len(pickle.dumps(XT_in)) < 1000 < XT.nbytes
    assert len(pickle.dumps(data_in)) < sum(a.nbytes for a in vars(data).values()
                                            if isinstance(a, np.ndarray))
    # What a worker process rebuilds (here in this process): the same
    # values, read only, without the parent's cache.
    XT_w, data_w = XT_in.attach(), data_in.attach()
    assert_array_equal(XT_w, XT)
    assert not XT_w.flags.writeable
    for name, value in vars(data).items():
        if isinstance(value, np.ndarray):
            assert_array_equal(getattr(data_w, name), value, err_msg=name)
            assert not getattr(data_w, name).flags.writeable
    assert data._groups and not data_w._groups
    # Kept for the later calls of the fit.
    assert data_in.attach() is data_w
    shared.close()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("keep", [True, False])
def test_workers_keep_the_mapped_arrays_only_below_the_budget(keep, monkeypatch, tmp_path):
    from skmtl import _parallel

    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    monkeypatch.setattr(_parallel, "_SHARE_MIN_BYTES", 0)
    attached = {"folder": None, "arrays": {}, "objects": {}}
    monkeypatch.setattr(_parallel, "_ATTACHED", attached)
    a = np.arange(50_000.0)
    # 0.5 * 400 kB touched against the budget.
    monkeypatch.setattr(_parallel, "_KEEP_MAPPED_BYTES", 300_000 if keep else 100_000)
    shared = _parallel._SharedData(remote_fraction=0.5)
    shared.share((a,))
    shared.wait()
    stand_in = shared.stand_in(a)
    assert shared.keep is keep
    # parent_pid=-1: _run_chunk takes the worker process's path, here.
    total = _parallel._run_chunk(_slice_sum, 10, 20, (stand_in, np.ones(50_000)), -1)
    assert total == a[10:20].sum() + 10
    assert bool(attached["arrays"]) is keep
    shared.close()


@pytest.mark.parametrize(
    "backend, keep",
    [("loky", True), ("loky", False), ("multiprocessing", True)],
    ids=["loky-kept", "loky-mapped-per-call", "multiprocessing-kept"],
)
def test_objective_on_worker_processes_equals_the_serial_one(
    backend, keep, monkeypatch, tmp_path
):
    from skmtl import _parallel
    from skmtl._losses import LOSSES
    from skmtl._shared_objective import _objective

    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    monkeypatch.setattr(_parallel, "_SHARE_MIN_BYTES", 0)
    monkeypatch.setattr(_parallel, "_KEEP_MAPPED_BYTES", np.inf if keep else 0)
    data, net, theta = _long_network_problem()
    losses = tuple(LOSSES["huber" if t % 2 else "squared"] for t in range(data.n_tasks))
    weights = np.linspace(0.5, 1.5, data.n_tasks)
    args = (net, data, losses, 0.3, weights, 0.01)
    with joblib.parallel_config(backend=backend), TaskWorkers(2, "processes") as workers:
        workers.share(net.labels(data), net.design(data.X))
        workers._shared.wait()
        for step in range(3):
            # Other parameters at every call, the same data.
            point = theta + 0.1 * step
            expected = _objective(point, *args, None)
            got = _objective(point, *args, workers)
            assert workers._shared.keep is keep
            assert len(list(tmp_path.glob("skmtl-*/*.npy"))) >= 2
            for e, g in zip(expected, got):
                assert_allclose(g, e, rtol=1e-13, atol=1e-15)
    assert not list(tmp_path.iterdir())


def test_calls_run_in_the_parent_until_the_data_is_written(monkeypatch, tmp_path):
    # The files are written by a thread while the fit goes on: a call made
    # before they are there runs in the parent, the next ones on workers.
    import threading

    from skmtl import _parallel
    from skmtl._shared_param import _gram_chunk
    from skmtl._tasks import make_long_tasks

    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    monkeypatch.setattr(_parallel, "_SHARE_MIN_BYTES", 0)
    # The real ``ready``, not the tests' waiting one (conftest).
    monkeypatch.setattr(_parallel._SharedData, "ready", _parallel._SharedData.ready.__wrapped__)
    release, save = threading.Event(), np.save

    def held_save(*args, **kwargs):
        release.wait()
        save(*args, **kwargs)

    monkeypatch.setattr(_parallel.np, "save", held_save)
    rng = np.random.RandomState(0)
    data, _ = make_long_tasks(rng.normal(size=(60, 2)), np.repeat(np.arange(6), 10),
                              rng.normal(size=60), None)
    expected = data.gram(0, 6, True)
    with joblib.parallel_config(backend="loky"), TaskWorkers(2, "processes") as workers:
        workers.share(data)
        try:
            results, chunks = map_task_chunks(_gram_chunk, 6, data, True, n_jobs=workers)
        finally:
            # Else leaving the block would wait for the writer forever.
            release.set()
        # One plain call, and no stand-in sent anywhere yet.
        assert chunks == [(0, 6)] and workers._shared.keep is None
        workers._shared.wait()
        results, chunks = map_task_chunks(_gram_chunk, 6, data, True, n_jobs=workers)
        assert len(chunks) == 2 and workers._shared.keep is not None
    for got, want in zip((np.concatenate(r) for r in zip(*results)), expected):
        assert_allclose(got, want, rtol=1e-13)
    assert not list(tmp_path.iterdir())


def test_fit_on_worker_processes_leaves_no_files(monkeypatch, tmp_path):
    from skmtl import _parallel

    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    monkeypatch.setattr(_parallel, "_SHARE_MIN_BYTES", 0)
    written = []
    close = _parallel._SharedData.close

    def record(self):
        if self.folder is not None:
            written.extend(os.listdir(self.folder))
        close(self)

    monkeypatch.setattr(_parallel._SharedData, "close", record)
    X, serial, parallel = _serial_and_process_fits()
    # The design and the labels' arrays went through files, removed at the end.
    assert len(written) >= 2
    assert not list(tmp_path.iterdir())
    assert_allclose(parallel.predict(X), serial.predict(X), rtol=1e-8)


def _serial_and_process_fits(expect_warning=None):
    """A small long-layout SharedObjectiveRegressor fit serially and on two loky processes."""
    from skmtl import SharedObjectiveRegressor

    rng = np.random.RandomState(0)
    X = np.column_stack([np.repeat(np.arange(6), 8), rng.normal(size=(48, 3))])
    y = rng.normal(size=48)
    params = dict(task_column=0, activation="tanh", max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        serial = SharedObjectiveRegressor(**params).fit(X, y)
        with joblib.parallel_config(backend="loky"):
            if expect_warning is None:
                parallel = SharedObjectiveRegressor(n_jobs=2, **params).fit(X, y)
            else:
                with pytest.warns(UserWarning, match=expect_warning):
                    parallel = SharedObjectiveRegressor(n_jobs=2, **params).fit(X, y)
    return X, serial, parallel


def test_a_small_dev_shm_is_not_used(monkeypatch):
    # joblib's rule: /dev/shm only with 2 GB free (a default Docker container
    # has 64 MB), else the system's temporary folder; JOBLIB_TEMP_FOLDER wins.
    from skmtl import _parallel

    monkeypatch.delenv("JOBLIB_TEMP_FOLDER", raising=False)
    monkeypatch.setattr(_parallel, "_SHM_MIN_BYTES", float("inf"))
    assert _parallel._temp_root() is None
    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", "/somewhere")
    assert _parallel._temp_root() == "/somewhere"


def test_no_room_for_the_data_finishes_the_fit_in_one_process(monkeypatch, tmp_path):
    # A full temporary folder (np.save raising ENOSPC): a warning, and the
    # fit goes on serially instead of failing.
    import errno

    from skmtl import _parallel

    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    monkeypatch.setattr(_parallel, "_SHARE_MIN_BYTES", 0)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_parallel.np, "save", full)
    X, serial, parallel = _serial_and_process_fits(expect_warning="No space")
    assert_allclose(parallel.predict(X), serial.predict(X), rtol=1e-8)
    assert not list(tmp_path.iterdir())
