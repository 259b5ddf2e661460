"""A fit interrupted inside a per-task step leaves the estimator as it was.

The fault is raised from inside the per-task work that every estimator sends
through :func:`skmtl._parallel.map_task_chunks`, at its first, a middle and
its last call serially, and at a middle one through joblib's worker threads:
an exception, and a ``KeyboardInterrupt`` (a ``BaseException``, which
``except Exception`` would let through). A last test makes a chunk fail
inside a worker process.
"""

import copy
import sys
import threading
import warnings

import joblib
import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import skmtl._parallel


class _Fault(RuntimeError):
    pass


def _patch_per_task_steps(monkeypatch, fail_at, error):
    """Make the ``fail_at``-th per-task step raise ``error``; returns the call counter.

    ``fail_at=None`` only counts. Every module that imported
    ``map_task_chunks`` gets the counting version.
    """
    real = skmtl._parallel.map_task_chunks
    calls = [0]
    lock = threading.Lock()

    def step(func):
        def run(start, stop, *args):
            # Worker threads count too.
            with lock:
                calls[0] += 1
                fail = calls[0] == fail_at
            if fail:
                raise error("injected fault in a per-task step")
            return func(start, stop, *args)

        return run

    def faulty(func, n_tasks, *args, **kwargs):
        return real(step(func), n_tasks, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("skmtl") and getattr(module, "map_task_chunks", None) is real:
            monkeypatch.setattr(module, "map_task_chunks", faulty)
    return calls


def _fit(model, case, y=None):
    # The counting step shares a lock with the test: worker threads, also
    # for the fits that prefer processes (the process case is
    # test_fault_in_a_worker_process_leaves_the_estimator_unfitted).
    with warnings.catch_warnings(), joblib.parallel_config(backend="threading"):
        # Few iterations on purpose: the fault, not the optimum, is tested.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(case.X, case.y if y is None else y)


def _n_steps(model, case, monkeypatch, y=None):
    """Number of per-task steps that ``model.fit`` runs (on a copy)."""
    with monkeypatch.context() as m:
        calls = _patch_per_task_steps(m, None, _Fault)
        _fit(copy.deepcopy(model), case, y)
    return calls[0]


def _assert_same_state(state, model):
    assert vars(model).keys() == state.keys()
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            assert_array_equal(getattr(model, name), value, err_msg=name)
        else:
            assert getattr(model, name) == value, name


def _fail_points(n, n_jobs):
    # Through joblib (slower on small problems) the middle step only.
    return [(n + 1) // 2] if n_jobs else sorted({1, (n + 1) // 2, n})


@pytest.mark.parametrize("error", [_Fault, KeyboardInterrupt])
@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("fit_case", ["wide", "long"], indirect=True)
def test_interrupted_fit_leaves_a_new_estimator_unfitted(
    make_estimator, fit_case, n_jobs, error, monkeypatch
):
    n = _n_steps(make_estimator(task_column=fit_case.task_column, n_jobs=n_jobs), fit_case,
                 monkeypatch)
    assert n >= 1
    for fail_at in _fail_points(n, n_jobs):
        model = make_estimator(task_column=fit_case.task_column, n_jobs=n_jobs)
        params = copy.deepcopy(vars(model))
        with monkeypatch.context() as m:
            calls = _patch_per_task_steps(m, fail_at, error)
            with pytest.raises(error, match="injected fault"):
                _fit(model, fit_case)
        # Parallel workers may finish their other chunks.
        assert calls[0] >= fail_at
        _assert_same_state(params, model)
        with pytest.raises(NotFittedError):
            model.predict(fit_case.X)


@pytest.mark.parametrize("error", [_Fault, KeyboardInterrupt])
@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("fit_case", ["wide", "long"], indirect=True)
def test_interrupted_refit_keeps_the_previous_model(
    make_estimator, fit_case, n_jobs, error, monkeypatch
):
    params = dict(task_column=fit_case.task_column, n_jobs=n_jobs)
    if "warm_start" in make_estimator().get_params():
        # The refit starts from the previous model: a half-updated warm start
        # state would show.
        params["warm_start"] = True
    # Other targets for the refit, so that a partly stored refit would differ.
    y_new = 2.0 * fit_case.y + 1.0
    model = _fit(make_estimator(**params), fit_case)
    for fail_at in _fail_points(_n_steps(model, fit_case, monkeypatch, y_new), n_jobs):
        state = copy.deepcopy(vars(model))
        before = model.predict(fit_case.X)
        with monkeypatch.context() as m:
            _patch_per_task_steps(m, fail_at, error)
            with pytest.raises(error, match="injected fault"):
                _fit(model, fit_case, y_new)
        _assert_same_state(state, model)
        assert_array_equal(model.predict(fit_case.X), before)


def test_fault_in_a_worker_process_leaves_the_estimator_unfitted(monkeypatch, tmp_path):
    # SharedObjectiveRegressor's long layout runs on worker processes, its
    # data written to files (here also on a small problem). From the third
    # call on the design's stand-in names a file that is not there: the
    # chunk fails inside a worker process, and the parent gets the error.
    from skmtl import SharedObjectiveRegressor, _parallel

    monkeypatch.setenv("JOBLIB_TEMP_FOLDER", str(tmp_path))
    monkeypatch.setattr(_parallel, "_SHARE_MIN_BYTES", 0)
    stand_in, calls = _parallel._SharedData.stand_in, [0]

    def failing(self, value):
        shared = stand_in(self, value)
        if isinstance(shared, _parallel._SharedObject) and shared.value is None:
            calls[0] += 1
            if calls[0] >= 3:
                missing = {None: str(tmp_path / "gone" / "0.npy")}
                return _parallel._SharedObject(str(tmp_path / "gone"), "gone", None, missing,
                                               shared.keep)
        return shared

    monkeypatch.setattr(_parallel._SharedData, "stand_in", failing)
    rng = np.random.RandomState(0)
    X = np.column_stack([np.repeat(np.arange(6), 8), rng.normal(size=(48, 3))])
    model = SharedObjectiveRegressor(task_column=0, activation="tanh", n_jobs=2, random_state=0)
    params = copy.deepcopy(vars(model))
    with joblib.parallel_config(backend="loky"), pytest.raises(FileNotFoundError):
        model.fit(X, rng.normal(size=48))
    assert calls[0] == 3
    _assert_same_state(params, model)
    with pytest.raises(NotFittedError):
        model.predict(X)
    # The fit's files are removed after the failure too.
    assert not list(tmp_path.glob("skmtl-*"))
