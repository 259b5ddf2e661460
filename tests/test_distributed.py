"""Fits distributed through joblib's dask backend equal the local ones.

SPEC section 4: ``joblib.parallel_config(backend=...)`` moves the per-task
steps to another engine without code changes, and results do not depend on
the backend beyond floating-point reduction order. The cluster is two worker
processes on 127.0.0.1 (the session fixture ``dask_client`` of conftest.py).
The autouse fixture of conftest.py sends even the tests' small per-task calls
through joblib in this process; each test also checks that the scheduler
really received work, so that a silently local run cannot pass.
"""

import warnings

import joblib
import numpy as np
import pytest

pytest.importorskip(
    "distributed",
    reason="dask.distributed is the optional extra [distributed] (the [test] extra installs it)",
)

from distributed import get_task_stream  # noqa: E402
from numpy.testing import assert_allclose  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402

from skmtl import (  # noqa: E402
    SharedFeatureRegressor,
    SharedObjectiveRegressor,
    SharedParamRegressor,
)

# Each joblib call on the dask backend costs a few hundred milliseconds here,
# so the iterative solvers run a few iterations only. That also makes the
# comparison exact: two converged fits may differ by up to ``tol`` when
# reduction order nudges the optimizer's path, while the same iterations must
# agree to rounding. The direct solvers (param-float, l21's Gram statistics)
# run to completion.
ESTIMATORS = {
    "param-float": SharedParamRegressor(alpha_shared=0.3, alpha_task=0.5),
    "param-auto": SharedParamRegressor(alpha_task="auto", max_iter=3),
    "param-huber": SharedParamRegressor(alpha_task=0.5, loss="huber", max_iter=5),
    "feature-l21": SharedFeatureRegressor(alpha=0.02, penalty="l21", tol=1e-8),
    "feature-trace": SharedFeatureRegressor(alpha=0.02, penalty="trace", max_iter=5),
    "objective": SharedObjectiveRegressor(n_components=2, max_iter=2, random_state=0),
}

# Only the order of floating-point reductions may differ (SPEC section 4).
TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture
def problem(problem_factory):
    # Uneven tasks, weights and outliers (which make Huber differ from the
    # squared loss); 12 tasks give several chunks per worker.
    return problem_factory("long", sizes=np.arange(4, 16), weights=True, outliers=True, seed=3)


def _fit(estimator, prob):
    with warnings.catch_warnings():
        # The iterative fits stop after a few iterations on purpose.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(prob.X, prob.y, sample_weight=prob.sample_weight)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fit_on_dask_equals_local_fit(dask_client, problem, name):
    estimator = clone(ESTIMATORS[name]).set_params(task_column=0)
    local = _fit(clone(estimator), problem)
    with get_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        remote = _fit(clone(estimator).set_params(n_jobs=2), problem)
    assert len(stream.data) > 0, "no per-task step reached the dask scheduler"
    assert_allclose(remote.coef_, local.coef_, **TOL)
    assert_allclose(remote.intercept_, local.intercept_, **TOL)
    assert_allclose(remote.predict(problem.X), local.predict(problem.X), **TOL)
    if name == "param-auto":
        assert_allclose(remote.task_covariance_, local.task_covariance_, **TOL)
    assert remote.n_iter_ == local.n_iter_


def _search(n_jobs=None, inner_n_jobs=None):
    return GridSearchCV(
        SharedParamRegressor(task_column=0, n_jobs=inner_n_jobs),
        {"alpha_task": [0.1, 1.0, 10.0], "alpha_shared": [0.0, 1.0]},
        cv=KFold(3, shuffle=True, random_state=0),
        n_jobs=n_jobs,
    )


N_FITS = 6 * 3  # candidates x folds


def test_grid_search_on_dask_equals_local_search(dask_client, problem):
    local = _search().fit(problem.X, problem.y)
    with get_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
        remote = _search(n_jobs=2).fit(problem.X, problem.y)
    assert len(stream.data) > 0, "the search did not run on the dask scheduler"
    assert remote.best_params_ == local.best_params_
    for key in ("mean_test_score", "std_test_score"):
        assert_allclose(remote.cv_results_[key], local.cv_results_[key], **TOL)
    assert_allclose(remote.best_estimator_.coef_, local.best_estimator_.coef_, **TOL)
    assert_allclose(remote.predict(problem.X), local.predict(problem.X), **TOL)


def test_nested_search_runs_inner_steps_locally(dask_client, problem):
    # In every worker process, count the joblib.Parallel calls that the
    # per-task helper makes, and drop its cost threshold there too, so that
    # n_jobs alone decides whether an inner step is dispatched. The functions
    # are defined here so that they travel to the workers by value.
    def install_counter():
        import skmtl._parallel as par

        original = par.Parallel

        def counting(*args, **kwargs):
            par._test_parallel_calls += 1
            return original(*args, **kwargs)

        par._test_saved = (original, par._MIN_PARALLEL_COST)
        par._test_parallel_calls = 0
        par.Parallel, par._MIN_PARALLEL_COST = counting, 0.0

    def remove_counter():
        import skmtl._parallel as par

        par.Parallel, par._MIN_PARALLEL_COST = par._test_saved
        return par._test_parallel_calls

    inner_calls, scheduler_tasks = {}, {}
    for inner_n_jobs in (None, 2):
        dask_client.run(install_counter)
        try:
            with get_task_stream(dask_client) as stream, joblib.parallel_config(backend="dask"):
                _search(n_jobs=2, inner_n_jobs=inner_n_jobs).fit(problem.X, problem.y)
        finally:
            counts = dask_client.run(remove_counter)
        inner_calls[inner_n_jobs] = sum(counts.values())
        scheduler_tasks[inner_n_jobs] = len(stream.data)
    # Inner n_jobs=None: the per-task steps ran as plain loops inside the
    # outer fits, and the scheduler saw at most one task per outer fit
    # (joblib may batch several fits into one task).
    assert inner_calls[None] == 0
    assert 0 < scheduler_tasks[None] <= N_FITS
    # Both measures do see inner steps when the inner estimators ask for
    # jobs: joblib then sends them from the workers back to the scheduler.
    assert inner_calls[2] >= N_FITS
    assert scheduler_tasks[2] > N_FITS
