"""Shared fixtures for the skmtl tests."""

import os

# scikit-learn's check_array_api_input skips itself unless scipy's array API
# mode is on; with it on, the check runs (numpy namespace) instead of skipping.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg

# ---------------------------------------------------------------- problems
#
# A problem is what a test passes to ``fit`` (``X``, ``y``, ``sample_weight``,
# ``task_column``) together with the same data as a flat list of observed
# (row, task) pairs, which is all the reference solvers below read: features
# ``Xp``, task index ``tp`` (into the sorted labels), target ``yp``, weight
# ``sp``, and ``S`` from SPEC section 3 (wide: the weights of *all* rows,
# labelled or not; long: the weights of the rows).


def _task_effects(rng, n_tasks, n_features):
    """Coefficients and intercepts of tasks that share a common part."""
    w0 = rng.normal(size=n_features)
    coef = w0 + 0.5 * rng.normal(size=(n_tasks, n_features))
    intercept = 1.0 + rng.normal(size=n_tasks)
    return coef, intercept


def _noise(rng, size, outliers):
    # Student-t noise puts some residuals far past Huber's epsilon, so that the
    # Huber and squared solutions really differ.
    return rng.standard_t(2, size=size) if outliers else 0.3 * rng.normal(size=size)


def make_wide_problem(
    *, n_samples=30, n_features=3, n_tasks=4, missing=0.25, weights=False,
    outliers=False, unlabelled_rows=1, edit=None, seed=0,
):
    """Wide layout: shared ``X``, ``Y`` with NaN for missing labels.

    The first ``unlabelled_rows`` rows have no label at all; they still count
    in ``S``. ``edit(Y)``, when given, changes ``Y`` in place before the pairs
    are read from it.
    """
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, n_features))
    coef, intercept = _task_effects(rng, n_tasks, n_features)
    Y = X @ coef.T + intercept + _noise(rng, (n_samples, n_tasks), outliers)
    observed = rng.uniform(size=Y.shape) >= missing
    observed[:unlabelled_rows] = False
    Y[~observed] = np.nan
    if edit is not None:
        edit(Y)
        observed = ~np.isnan(Y)
    sw = rng.uniform(0.2, 3.0, size=n_samples) if weights else None
    s = np.ones(n_samples) if sw is None else sw
    rows, tasks = np.nonzero(observed)
    return SimpleNamespace(
        layout="wide", X=X, y=Y, sample_weight=sw, task_column=None,
        Xp=X[rows], tp=tasks, yp=Y[rows, tasks], sp=s[rows], S=s.sum(),
        n_tasks=n_tasks, tasks=np.arange(n_tasks),
    )


def make_long_problem(
    *, n_samples=60, n_features=3, n_tasks=4, weights=False, outliers=False,
    sizes=None, edit=None, seed=0,
):
    """Long layout: task label in column 0 of ``X``, rows in random order.

    The labels are spaced ints (``10 * t - 15``), so that a mix-up between
    labels and their positions in ``tasks_`` shows. ``sizes`` fixes the
    number of rows of each task. ``edit(y, codes)``, when given, changes ``y``
    in place (``codes``: each row's task index).
    """
    rng = np.random.RandomState(seed)
    if sizes is None:
        sizes = np.full(n_tasks, n_samples // n_tasks)
    sizes = np.asarray(sizes)
    n_tasks = len(sizes)
    codes = rng.permutation(np.repeat(np.arange(n_tasks), sizes))
    n_samples = len(codes)
    features = rng.normal(size=(n_samples, n_features))
    coef, intercept = _task_effects(rng, n_tasks, n_features)
    y = np.einsum("ij,ij->i", features, coef[codes]) + intercept[codes]
    y += _noise(rng, n_samples, outliers)
    if edit is not None:
        edit(y, codes)
    tasks = 10 * np.arange(n_tasks) - 15
    sw = rng.uniform(0.2, 3.0, size=n_samples) if weights else None
    s = np.ones(n_samples) if sw is None else sw
    return SimpleNamespace(
        layout="long", X=np.column_stack([tasks[codes], features]), y=y,
        sample_weight=sw, task_column=0,
        Xp=features, tp=codes, yp=y, sp=s, S=s.sum(),
        n_tasks=n_tasks, tasks=tasks,
    )


def make_problem(layout, **kwargs):
    return (make_wide_problem if layout == "wide" else make_long_problem)(**kwargs)


@pytest.fixture
def problem_factory():
    """``problem_factory(layout, **kwargs)`` -> a problem (see above)."""
    return make_problem


# -------------------------------------------------------------- reference
#
# SPEC section 3, written out on its own: unknowns beta = (theta_0, u_1, ...,
# u_T) with theta_0 = (w_0, b_0) and u_t = (v_t, c_t); the pair (i, t) has
# design row z_i in the theta_0 block and in the u_t block, so that its
# prediction is z_i . (theta_0 + u_t). Objective
#     (1/S) sum s_i loss(y_it - z_i . (theta_0 + u_t))
#     + alpha_shared/2 ||w_0||^2 + alpha_task/2 sum_t ||u_t||^2.


def _huber(r, epsilon):
    a = np.abs(r)
    return np.where(a <= epsilon, 0.5 * r**2, epsilon * a - 0.5 * epsilon**2)


def _stacked_design(prob, fit_intercept):
    Z = np.column_stack([prob.Xp, np.ones(len(prob.yp))]) if fit_intercept else prob.Xp
    n, p = Z.shape
    rows = np.repeat(np.arange(n), p)
    shared_cols = np.tile(np.arange(p), n)
    task_cols = p * (1 + np.repeat(prob.tp, p)) + shared_cols
    data = np.concatenate([Z.ravel(), Z.ravel()])
    A = scipy.sparse.csr_matrix(
        (data, (np.concatenate([rows, rows]), np.concatenate([shared_cols, task_cols]))),
        shape=(n, p * (prob.n_tasks + 1)),
    )
    return A, p


def _penalty(prob, p, alpha_shared, alpha_task, fit_intercept):
    shared = np.full(p, float(alpha_shared))
    if fit_intercept:
        shared[-1] = 0.0  # b_0 is not penalized
    return np.concatenate([shared, np.full(p * prob.n_tasks, float(alpha_task))])


def _unpack(beta, prob, p, fit_intercept):
    theta0 = beta[:p]
    full = theta0 + beta[p:].reshape(prob.n_tasks, p)
    d = prob.Xp.shape[1]
    return SimpleNamespace(
        coef=full[:, :d],
        intercept=full[:, d] if fit_intercept else np.zeros(prob.n_tasks),
        shared_coef=theta0[:d],
        shared_intercept=float(theta0[d]) if fit_intercept else 0.0,
        beta=beta,
    )


def objective_and_gradient(prob, beta, *, alpha_shared, alpha_task, fit_intercept=True,
                           loss="squared", epsilon=1.35):
    """The written objective and its gradient in ``(theta_0, u_1, ..., u_T)``."""
    A, p = _stacked_design(prob, fit_intercept)
    pen = _penalty(prob, p, alpha_shared, alpha_task, fit_intercept)
    r = prob.yp - A @ beta
    if loss == "squared":
        value, deriv = 0.5 * r**2, r
    else:
        value, deriv = _huber(r, epsilon), np.clip(r, -epsilon, epsilon)
    f = prob.sp @ value / prob.S + 0.5 * beta @ (pen * beta)
    grad = -(A.T @ (prob.sp * deriv)) / prob.S + pen * beta
    return f, grad


def reference_fit(prob, *, alpha_shared, alpha_task, fit_intercept=True, loss="squared",
                  epsilon=1.35):
    """Minimizer of the written objective.

    Squared loss: the stacked normal equations ``(A^T diag(s) A / S + P)
    beta = A^T diag(s) y / S``, one sparse direct solve. Huber: Newton's
    trust-region method of ``scipy.optimize.minimize`` with the generalized
    Hessian (the objective is piecewise quadratic), to a gradient of 1e-12.
    """
    A, p = _stacked_design(prob, fit_intercept)
    pen = _penalty(prob, p, alpha_shared, alpha_task, fit_intercept)
    Aw = scipy.sparse.diags(prob.sp / prob.S) @ A
    H = (A.T @ Aw + scipy.sparse.diags(pen)).tocsc()
    beta = scipy.sparse.linalg.spsolve(H, Aw.T @ prob.yp)
    if loss == "huber":
        kw = dict(alpha_shared=alpha_shared, alpha_task=alpha_task,
                  fit_intercept=fit_intercept, loss=loss, epsilon=epsilon)

        def hess(b):
            inside = np.abs(prob.yp - A @ b) <= epsilon
            Ai = scipy.sparse.diags(inside * prob.sp / prob.S) @ A
            return (A.T @ Ai).toarray() + np.diag(pen)

        res = scipy.optimize.minimize(
            lambda b: objective_and_gradient(prob, b, **kw), beta, jac=True, hess=hess,
            method="trust-exact", options={"gtol": 1e-12, "maxiter": 500},
        )
        grad = objective_and_gradient(prob, res.x, **kw)[1]
        assert np.max(np.abs(grad)) < 1e-10, res.message
        beta = res.x
    return _unpack(beta, prob, p, fit_intercept)


@pytest.fixture
def reference():
    """``reference(problem, alpha_shared=..., alpha_task=..., ...)`` -> solution."""
    return reference_fit


@pytest.fixture
def objective():
    """``objective(problem, beta, alpha_shared=..., ...)`` -> (value, gradient)."""
    return objective_and_gradient


@pytest.fixture(autouse=True)
def _parallel_even_when_small(monkeypatch):
    """Run n_jobs > 1 through joblib even on the tests' small problems.

    Outside the tests, calls cheaper than joblib's dispatch run serially
    (skmtl._parallel._MIN_PARALLEL_COST, _MIN_PROCESS_COST); the tests want
    the parallel path itself checked.
    """
    import skmtl._parallel

    monkeypatch.setattr(skmtl._parallel, "_MIN_PARALLEL_COST", 0.0)
    monkeypatch.setattr(skmtl._parallel, "_MIN_PROCESS_COST", 0.0)
    # Outside the tests, calls made while the data is still being written for
    # the worker processes run in the parent; here every call waits for the
    # files, so that the process path is taken from the first call on
    # (test_calls_run_in_the_parent_until_the_data_is_written checks the other).
    ready = skmtl._parallel._SharedData.ready

    def ready_after_writing(self):
        self.wait()
        return ready(self)

    ready_after_writing.__wrapped__ = ready
    monkeypatch.setattr(skmtl._parallel._SharedData, "ready", ready_after_writing)


# ------------------------------------------------------------ dask cluster


@pytest.fixture(scope="session")
def dask_client():
    """A client of a two-process dask LocalCluster on 127.0.0.1, one per session.

    Starting a cluster takes seconds, so every test that needs one shares it.
    """
    distributed = pytest.importorskip(
        "distributed",
        reason="dask.distributed is the optional extra [distributed] (the [test] extra installs it)",
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:
        yield client


# ------------------------------------------------------- every estimator
#
# One configuration per code path of every public estimator (SharedParam:
# squared and Huber with a float alpha_task, and the REML 'auto'; SharedFeature:
# both penalties; SharedObjective: few rounds). Tests that must hold for every
# estimator take the ``make_estimator`` fixture: ``make_estimator(**params)``
# builds one with ``params`` on top of these.


def _estimators():
    from skmtl import SharedFeatureRegressor, SharedObjectiveRegressor, SharedParamRegressor

    return {
        "param-squared": (SharedParamRegressor, dict(alpha_shared=0.3, alpha_task=0.7)),
        "param-huber": (SharedParamRegressor, dict(alpha_shared=0.3, alpha_task=0.7,
                                                   loss="huber")),
        "param-auto": (SharedParamRegressor, dict(alpha_shared=0.3, alpha_task="auto")),
        "feature-l21": (SharedFeatureRegressor, dict(alpha=0.05, penalty="l21")),
        "feature-trace": (SharedFeatureRegressor, dict(alpha=0.05, penalty="trace")),
        "objective": (SharedObjectiveRegressor, dict(n_components=2, max_iter=3,
                                                     random_state=0)),
    }


ESTIMATORS = _estimators()


def _factory(name):
    cls, defaults = ESTIMATORS[name]

    def make(**params):
        return cls(**{**defaults, **params})

    make.name, make.cls = name, cls
    return make


@pytest.fixture(params=list(ESTIMATORS))
def make_estimator(request):
    """``make_estimator(**params)`` -> an unfitted estimator, for every estimator."""
    return _factory(request.param)


def pytest_generate_tests(metafunc):
    """A test taking ``estimator_case`` runs over a table of every estimator x its cases.

    The test module's ``estimator_cases(make)`` lists the cases of one
    estimator (``make`` as from ``make_estimator``) as
    ``pytest.param(*values, id=...)``; the test receives ``(make, *values)``.
    """
    if "estimator_case" not in metafunc.fixturenames:
        return
    table = [
        pytest.param((make, *case.values), id=f"{make.name}-{case.id}", marks=case.marks)
        for make in map(_factory, ESTIMATORS)
        for case in metafunc.module.estimator_cases(make)
    ]
    metafunc.parametrize("estimator_case", table)


@pytest.fixture(params=["wide", "wide-1d", "long", "long-strings"])
def fit_case(request):
    """A small fit: ``X``, ``y``, ``task_column`` and ``X_new`` to predict.

    Wide with missing labels and a row with none, wide with a 1-D ``y``, long
    with int labels, long with string labels in a DataFrame. ``X_new`` of the
    long cases holds a task that fit never saw.
    """
    import pandas as pd

    rng = np.random.RandomState(0)
    X = rng.normal(size=(30, 3))
    Y = X @ rng.normal(size=(3, 4)) + rng.normal(size=(30, 4))
    Y[rng.uniform(size=Y.shape) < 0.2] = np.nan
    Y[0] = np.nan
    y = X @ rng.normal(size=3) + rng.normal(size=30)
    labels = np.repeat([3, 1, 2], 10)
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(
        school=pd.Series(np.array(["x", "y", "z"])[labels - 1], dtype="str")
    )
    df_new = df.assign(school=pd.Series(np.where(np.arange(30) % 7 == 0, "w", df.school),
                                        dtype="str"))
    cases = {
        "wide": (X, Y, X[::-1]),
        "wide-1d": (X, Y[:, 1], X[::-1]),
        "long": (np.column_stack([labels, X]), y,
                 np.column_stack([np.repeat([3, 1, 2, 4], [7, 7, 8, 8]), X])),
        "long-strings": (df, y, df_new),
    }
    X, y, X_new = cases[request.param]
    return SimpleNamespace(name=request.param, X=X, y=y, X_new=X_new,
                           task_column={"long": 0, "long-strings": "school"}.get(request.param))


