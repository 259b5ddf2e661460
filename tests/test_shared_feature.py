"""SharedFeatureRegressor and shared_feature_path against independent references.

References: scikit-learn's MultiTaskLasso and Lasso (L2,1 penalty, complete
wide layout), cvxpy solves of the written objective (any layout, both
penalties, both losses), and the optimality (KKT) conditions evaluated in
plain numpy from the raw data.
"""

import re
import warnings

import numpy as np
import pytest
from joblib import parallel_config
from scipy.optimize import minimize_scalar
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, LinearRegression, MultiTaskLasso
from sklearn.pipeline import make_pipeline

from skmtl import SharedFeatureRegressor, shared_feature_path

try:
    import cvxpy as cp
except ImportError:  # cvxpy is in the [test] extra, not a runtime dependency
    cp = None

needs_cvxpy = pytest.mark.skipif(
    cp is None, reason="cvxpy (in the [test] extra) is not installed: no reference solve"
)

EPSILON = 1.0


# ---------------------------------------------------------------- helpers


def _long_problem(seed=0, n_tasks=4, d=6, rank=2, weights=False):
    """Long layout with tasks of different sizes and rows, low-rank W."""
    rng = np.random.RandomState(seed)
    sizes = rng.randint(15, 40, size=n_tasks)
    codes = np.repeat(np.arange(n_tasks), sizes)
    X = rng.normal(size=(len(codes), d)) + rng.normal(size=d)
    W = rng.normal(size=(d, rank)) @ rng.normal(size=(rank, n_tasks))
    W[d // 2:] = 0.0
    y = np.einsum("ij,ji->i", X, W[:, codes]) + rng.normal(size=n_tasks)[codes]
    y += 0.5 * rng.standard_t(2, size=len(y))
    sw = rng.uniform(0.5, 2.0, size=len(y)) if weights else None
    order = rng.permutation(len(y))
    return X[order], codes[order], y[order], None if sw is None else sw[order]


def _loss(r, loss):
    if loss == "squared":
        return 0.5 * r**2, r
    small = np.abs(r) <= EPSILON
    value = np.where(small, 0.5 * r**2, EPSILON * np.abs(r) - 0.5 * EPSILON**2)
    return value, np.where(small, r, EPSILON * np.sign(r))


def _data_term(X, codes, y, sw, W, b, loss):
    """D and its gradients in (W, b), straight from SPEC section 3."""
    s = np.ones(len(y)) if sw is None else sw
    r = y - np.einsum("ij,ji->i", X, W[:, codes]) - b[codes]
    value, deriv = _loss(r, loss)
    T = W.shape[1]
    grad_W = -np.stack([X[codes == t].T @ (s * deriv)[codes == t] for t in range(T)], axis=1)
    grad_b = -np.bincount(codes, weights=s * deriv, minlength=T)
    return (s * value).sum() / s.sum(), grad_W / s.sum(), grad_b / s.sum()


def _penalty(W, penalty):
    if penalty == "l21":
        return np.linalg.norm(W, axis=1).sum()
    return np.linalg.svd(W, compute_uv=False).sum()


def _objective(X, codes, y, sw, W, b, loss, penalty, alpha):
    return _data_term(X, codes, y, sw, W, b, loss)[0] + alpha * _penalty(W, penalty)


def _fit_long(X, codes, y, sw, **params):
    model = SharedFeatureRegressor(task_column=0, **params)
    model.fit(np.column_stack([codes, X]), y, sample_weight=sw)
    return model, model.coef_.T, model.intercept_


def _cvxpy_solve(X, codes, y, sw, loss, penalty, alpha):
    T, d = codes.max() + 1, X.shape[1]
    s = np.ones(len(y)) if sw is None else sw
    W, b = cp.Variable((d, T)), cp.Variable(T)
    terms = []
    for t in range(T):
        rows = codes == t
        r = y[rows] - X[rows] @ W[:, t] - b[t]
        # cvxpy's huber is twice SPEC's: M^2-scaled so that huber(r, M) = r^2 inside.
        f = 0.5 * cp.square(r) if loss == "squared" else 0.5 * cp.huber(r, EPSILON)
        terms.append(s[rows] @ f)
    reg = cp.sum(cp.norm(W, 2, axis=1)) if penalty == "l21" else cp.normNuc(W)
    problem = cp.Problem(cp.Minimize(cp.sum(cp.hstack(terms)) / s.sum() + alpha * reg))
    problem.solve(
        solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10,
    )
    return problem.value, W.value, b.value


def _alpha_max_reference(X, codes, y, penalty, loss="squared"):
    """The dual norm of the gradient at W = 0 and the intercepts at their
    optimum there (the task means, or each task's Huber location)."""
    T = codes.max() + 1
    b = np.array([
        minimize_scalar(lambda c: _loss(y[codes == t] - c, loss)[0].sum()).x for t in range(T)
    ])
    _, G, _ = _data_term(X, codes, y, None, np.zeros((X.shape[1], T)), b, loss)
    return np.linalg.norm(G, axis=1).max() if penalty == "l21" else np.linalg.norm(G, 2)


# -------------------------------------------------- L2,1 = MultiTaskLasso


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_l21_equals_multitask_lasso(fit_intercept):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(80, 12)) + 2.0
    Y = X[:, :4] @ rng.normal(size=(4, 3)) + rng.normal(size=(80, 3)) + 5.0
    params = dict(alpha=0.3, fit_intercept=fit_intercept)
    ref = MultiTaskLasso(tol=1e-12, max_iter=100_000, **params).fit(X, Y)
    model = SharedFeatureRegressor(penalty="l21", tol=1e-12, **params).fit(X, Y)
    assert model.n_components_ == np.count_nonzero(np.linalg.norm(ref.coef_, axis=0))
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(model.intercept_, ref.intercept_, atol=1e-6)


def test_l21_long_layout_of_shared_rows_equals_multitask_lasso():
    # Each task owns a copy of every row: the per-task Gram solver must give
    # MultiTaskLasso's solution.
    rng = np.random.RandomState(1)
    X = rng.normal(size=(50, 8))
    Y = X[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(50, 4))
    ref = MultiTaskLasso(alpha=0.2, tol=1e-12, max_iter=100_000).fit(X, Y)
    codes = np.repeat(np.arange(4), 50)
    X_long, y_long = np.tile(X, (4, 1)), Y.T.ravel()
    # S counts the rows of all tasks, T times MultiTaskLasso's: alpha / T.
    model, W, b = _fit_long(X_long, codes, y_long, None, alpha=0.2 / 4, penalty="l21", tol=1e-12)
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(model.intercept_, ref.intercept_, atol=1e-6)


def test_single_task_l21_equals_lasso():
    rng = np.random.RandomState(2)
    X = rng.normal(size=(60, 10))
    y = X[:, 0] - 2 * X[:, 1] + rng.normal(size=60)
    ref = Lasso(alpha=0.1, tol=1e-12, max_iter=100_000).fit(X, y)
    model = SharedFeatureRegressor(alpha=0.1, penalty="l21", tol=1e-12).fit(X, y)
    assert model.coef_.shape == (10,) and isinstance(model.intercept_, float)
    np.testing.assert_allclose(model.coef_, ref.coef_, atol=1e-6)
    assert model.predict(X).shape == (60,)


# ------------------------------------------------------------------ cvxpy


@needs_cvxpy
@pytest.mark.parametrize("loss", ["squared", "huber"])
@pytest.mark.parametrize("penalty", ["l21", "trace"])
def test_objective_matches_cvxpy(penalty, loss):
    X, codes, y, sw = _long_problem(seed=3, weights=True)
    alpha = 0.05
    tol = 1e-12 if loss == "squared" else 1e-11
    _, W, b = _fit_long(
        X, codes, y, sw, alpha=alpha, penalty=penalty, loss=loss, epsilon=EPSILON,
        tol=tol, max_iter=100_000,
    )
    ref_value, W_ref, b_ref = _cvxpy_solve(X, codes, y, sw, loss, penalty, alpha)
    ours = _objective(X, codes, y, sw, W, b, loss, penalty, alpha)
    assert abs(ours - ref_value) <= 1e-8 * abs(ref_value)
    np.testing.assert_allclose(W, W_ref, atol=1e-4)


@needs_cvxpy
def test_factorized_trace_matches_cvxpy():
    X, codes, y, sw = _long_problem(seed=4, n_tasks=5, d=8, rank=2)
    alpha = 0.1
    model, W, b = _fit_long(X, codes, y, sw, alpha=alpha, n_components=4, tol=1e-12)
    ref_value, _, _ = _cvxpy_solve(X, codes, y, sw, "squared", "trace", alpha)
    ours = _objective(X, codes, y, sw, W, b, "squared", "trace", alpha)
    assert abs(ours - ref_value) <= 1e-8 * abs(ref_value)
    assert model.n_components_ <= 4


# -------------------------------------------------------------------- KKT


@pytest.mark.parametrize("loss", ["squared", "huber"])
@pytest.mark.parametrize("penalty", ["l21", "trace"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_kkt_conditions_at_solution(penalty, loss, layout):
    X, codes, y, sw = _long_problem(seed=5)
    alpha = 0.3 * _alpha_max_reference(X, codes, y, penalty, loss)
    params = dict(alpha=alpha, penalty=penalty, loss=loss, epsilon=EPSILON, max_iter=100_000)
    params["tol"] = 1e-13 if loss == "squared" else 1e-11
    if layout == "long":
        _, W, b = _fit_long(X, codes, y, sw, **params)
    else:
        # The wide layout of the same labels: NaN where a task has no label.
        # Every row has one label, so S is the same in both layouts.
        Y = np.full((len(y), codes.max() + 1), np.nan)
        Y[np.arange(len(y)), codes] = y
        model = SharedFeatureRegressor(**params).fit(X, Y)
        W, b = model.coef_.T, model.intercept_
    _, G, g_b = _data_term(X, codes, y, sw, W, b, loss)
    np.testing.assert_allclose(g_b, 0, atol=1e-7)
    if penalty == "l21":
        norms = np.linalg.norm(W, axis=1)
        active = norms > 0
        assert 0 < active.sum() < len(norms)
        np.testing.assert_allclose(
            G[active], -alpha * W[active] / norms[active, None], atol=1e-6 * alpha
        )
        assert np.linalg.norm(G[~active], axis=1).max() <= alpha * (1 + 1e-6)
    else:
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        r = int(np.sum(s > 1e-10 * s[0]))
        assert 0 < r < min(W.shape)
        # -G / alpha is a subgradient of the nuclear norm: U_r V_r^T on the
        # support, spectral norm at most 1 everywhere.
        np.testing.assert_allclose(U[:, :r].T @ G @ Vt[:r].T, -alpha * np.eye(r), atol=1e-6 * alpha)
        assert np.linalg.norm(G, 2) <= alpha * (1 + 1e-6)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_factorized_equals_proximal_gradient_on_wide_data(fit_intercept):
    # The complete wide layout has its own factored objective (one Gram
    # matrix, W never formed): it must land on the same convex optimum.
    rng = np.random.RandomState(14)
    X = rng.normal(size=(120, 15)) + 1.0
    Y = X @ (rng.normal(size=(15, 2)) @ rng.normal(size=(2, 12))) + rng.normal(size=(120, 12))
    params = dict(alpha=1.0, fit_intercept=fit_intercept, tol=1e-12, max_iter=10_000)
    full = SharedFeatureRegressor(**params).fit(X, Y)
    factored = SharedFeatureRegressor(n_components=4, **params).fit(X, Y)
    assert 0 < full.n_components_ <= 4
    np.testing.assert_allclose(factored.coef_, full.coef_, atol=1e-6)
    np.testing.assert_allclose(factored.intercept_, full.intercept_, atol=1e-6)


def test_factorized_warns_when_k_is_too_small():
    X, codes, y, sw = _long_problem(seed=6, n_tasks=5, rank=3)
    alpha = 0.05 * _alpha_max_reference(X, codes, y, "trace")
    full, W_full, _ = _fit_long(X, codes, y, sw, alpha=alpha, tol=1e-10)
    assert full.n_components_ >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        big, W_big, _ = _fit_long(X, codes, y, sw, alpha=alpha, n_components=5, tol=1e-10)
    np.testing.assert_allclose(W_big, W_full, atol=1e-6)
    with pytest.warns(ConvergenceWarning, match="n_components=1 is too small"):
        _fit_long(X, codes, y, sw, alpha=alpha, n_components=1, tol=1e-10)


# ------------------------------------------------------------ transformer


@pytest.mark.parametrize("penalty", ["l21", "trace"])
def test_transform_is_projection_on_components(penalty):
    pd = pytest.importorskip("pandas")
    X, codes, y, sw = _long_problem(seed=7)
    alpha = 0.2 * _alpha_max_reference(X, codes, y, penalty)
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
    frame.insert(2, "school", codes)
    model = SharedFeatureRegressor(alpha=alpha, penalty=penalty, task_column="school").fit(frame, y)
    P = model.components_
    assert P.shape == (model.n_components_, X.shape[1]) and 0 < len(P) < X.shape[1]
    np.testing.assert_allclose(P @ P.T, np.eye(len(P)), atol=1e-10)
    # The task coefficients live in the span of the components.
    np.testing.assert_allclose(model.coef_ @ P.T @ P, model.coef_, atol=1e-8)
    Z = model.transform(frame)
    np.testing.assert_allclose(Z, X @ P.T, rtol=1e-12, atol=1e-12)
    names = model.get_feature_names_out()
    assert len(names) == Z.shape[1]
    if penalty == "l21":
        selected = np.flatnonzero(np.linalg.norm(model.coef_, axis=0) > 0)
        assert list(names) == [f"f{j}" for j in selected]
    else:
        assert all(re.fullmatch(r"sharedfeatureregressor\d+", n) for n in names)


def test_pipeline_first_step():
    rng = np.random.RandomState(8)
    X = rng.normal(size=(100, 10))
    Y = X[:, :3] @ rng.normal(size=(3, 4)) + 0.1 * rng.normal(size=(100, 4))
    selector = SharedFeatureRegressor(alpha=0.05, penalty="l21")
    pipe = make_pipeline(selector, LinearRegression()).fit(X, Y)
    chosen = np.flatnonzero(pipe[0].components_.any(axis=0))
    ref = LinearRegression().fit(X[:, chosen], Y)
    np.testing.assert_allclose(pipe.predict(X), ref.predict(X[:, chosen]), atol=1e-10)


# ----------------------------------------------- layouts, n_jobs, options


@pytest.mark.parametrize("loss", ["squared", "huber"])
@pytest.mark.parametrize("penalty", ["l21", "trace"])
def test_n_jobs_does_not_change_results(penalty, loss):
    X, codes, y, sw = _long_problem(seed=9, n_tasks=12, weights=True)
    fits = [_fit_long(X, codes, y, sw, alpha=0.05, penalty=penalty, loss=loss)]
    # Threads split the tasks into chunks exactly as processes do, without
    # paying a process pool's dispatch at every gradient step of the test.
    with parallel_config(backend="threading"):
        fits.append(_fit_long(X, codes, y, sw, alpha=0.05, penalty=penalty, loss=loss, n_jobs=2))
    if penalty == "l21" and loss == "squared":
        # Only the Gram matrices are per-task work here: one call to the
        # default process-based backend is affordable.
        fits.append(_fit_long(X, codes, y, sw, alpha=0.05, penalty=penalty, loss=loss, n_jobs=2))
    for fit in fits[1:]:
        np.testing.assert_allclose(fit[1], fits[0][1], rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(fit[2], fits[0][2], rtol=1e-9, atol=1e-11)
        assert fit[0].n_iter_ == fits[0][0].n_iter_


@pytest.mark.parametrize("penalty", ["l21", "trace"])
def test_warm_start(penalty):
    X, codes, y, sw = _long_problem(seed=10)
    Xl = np.column_stack([codes, X])
    cold = SharedFeatureRegressor(alpha=0.05, penalty=penalty, task_column=0, tol=1e-10).fit(Xl, y)
    warm = SharedFeatureRegressor(alpha=0.06, penalty=penalty, task_column=0, tol=1e-10, warm_start=True)
    warm.fit(Xl, y).set_params(alpha=0.05).fit(Xl, y)
    np.testing.assert_allclose(warm.coef_, cold.coef_, atol=1e-6)
    assert warm.n_iter_ < cold.n_iter_
    # The wide layout cannot warm-start from a different set of tasks.
    rng = np.random.RandomState(0)
    Xw = rng.normal(size=(30, 4))
    model = SharedFeatureRegressor(penalty=penalty, warm_start=True).fit(Xw, rng.normal(size=(30, 3)))
    with pytest.raises(ValueError, match="column"):
        model.fit(Xw, rng.normal(size=(30, 2)))


def test_zero_alpha_is_rejected_and_convergence_warning():
    X, codes, y, sw = _long_problem(seed=11)
    with pytest.raises(ValueError, match="alpha"):
        _fit_long(X, codes, y, sw, alpha=0.0)
    for penalty in ("l21", "trace"):
        with pytest.warns(ConvergenceWarning, match="did not converge"):
            model, _, _ = _fit_long(X, codes, y, sw, alpha=0.01, penalty=penalty, max_iter=1, tol=1e-14)
        assert model.n_iter_ == 1


# ------------------------------------------------------------------- path


@pytest.mark.parametrize("loss", ["squared", "huber"])
@pytest.mark.parametrize("penalty", ["l21", "trace"])
def test_path_starts_at_alpha_max_and_matches_fresh_fits(penalty, loss):
    X, codes, y, sw = _long_problem(seed=12)
    Xl = np.column_stack([codes, X])
    params = dict(penalty=penalty, loss=loss, epsilon=EPSILON, task_column=0, tol=1e-10, max_iter=20_000)
    alphas, coefs, intercepts = shared_feature_path(Xl, y, n_alphas=6, eps=0.05, **params)
    assert np.all(np.diff(alphas) < 0) and coefs.shape == (4, X.shape[1], 6)
    np.testing.assert_allclose(alphas[0], _alpha_max_reference(X, codes, y, penalty, loss), rtol=1e-6)
    # alpha_max is the smallest alpha with W = 0: a little below, W moves.
    # (At alpha_max one row sits on the boundary: rounding may leave ~1e-16.)
    np.testing.assert_allclose(coefs[..., 0], 0, atol=1e-12)
    nudged = SharedFeatureRegressor(alpha=alphas[0] * 0.99, **params).fit(Xl, y)
    assert np.any(nudged.coef_ != 0)
    for k in (1, 5):
        fresh = SharedFeatureRegressor(alpha=alphas[k], **params).fit(Xl, y)
        np.testing.assert_allclose(coefs[..., k], fresh.coef_, atol=1e-6)
        np.testing.assert_allclose(intercepts[:, k], fresh.intercept_, atol=1e-6)
