"""A fit interrupted inside a per-task step leaves the estimator as it was.

The fault is raised from inside the per-task work that every estimator sends
through :func:`skmtl._parallel.map_task_chunks`, at its first, a middle and
its last call serially, and at a middle one through joblib's workers: an exception, and a
``KeyboardInterrupt`` (a ``BaseException``, which ``except Exception`` would
let through).
"""

import copy
import sys
import threading
import warnings

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
    with warnings.catch_warnings():
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
