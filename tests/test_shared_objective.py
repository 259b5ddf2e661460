"""SharedObjectiveRegressor against independent references."""

import warnings

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score

from skmtl import SharedObjectiveRegressor
from skmtl._losses import LOSSES
from skmtl._shared_objective import (
    _gradnorm_weights,
    _Network,
    _objective,
    _objective_at_initialization,
    _validation_split,
)
from skmtl._tasks import make_long_tasks, make_wide_tasks

ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "tanh": np.tanh,
}


def _hidden(model, X):
    """The fitted representation, computed here from the public attributes."""
    return ACTIVATIONS[model.activation](X @ model.components_.T + model.hidden_intercept_)


def _task_losses(model, X, Y, U=None):
    """Each task's D_t (squared loss, unit weights) of a fitted wide model."""
    U = model.components_.T if U is None else U
    H = ACTIVATIONS[model.activation](X @ U + model.hidden_intercept_)
    R = Y - (H @ np.atleast_2d(model.head_coef_).T + model.intercept_)
    return np.nansum(0.5 * R**2, axis=0) / len(X)


def _low_rank_tasks(seed, n=200, d=8, noise=(0.2, 0.2, 0.2), k=3):
    """Tasks sharing a k-dimensional nonlinear representation, plus noise."""
    rng = np.random.RandomState(seed)
    T = len(noise)
    B, C = rng.normal(size=(d, k)), rng.normal(size=(k, T))
    X = rng.normal(size=(2 * n, d))
    F = np.tanh(X @ B / np.sqrt(d)) @ C
    Y = F + rng.normal(size=(2 * n, T)) * np.asarray(noise)
    return X[:n], Y[:n], X[n:], Y[n:], F[n:]


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("layout", ["wide", "long"])
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
@pytest.mark.parametrize("loss", ["squared", "huber", "mixed"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_gradient_matches_finite_differences(layout, activation, loss, fit_intercept):
    rng = np.random.RandomState(0)
    n, d, T, k = 40, 4, 3, 5
    X = rng.normal(size=(n, d))
    sw = rng.uniform(0.5, 2.0, n)
    if layout == "wide":
        Y = 2 * rng.normal(size=(n, T))
        Y[rng.rand(n, T) < 0.2] = np.nan
        data = make_wide_tasks(X, Y, sw)
    else:
        data, _ = make_long_tasks(X, rng.randint(0, T, n), 2 * rng.normal(size=n), sw)
    names = ["squared", "huber", "squared"] if loss == "mixed" else [loss] * T
    losses = tuple(LOSSES[name] for name in names)
    net = _Network(d, k, T, activation, fit_intercept=fit_intercept)
    theta = net.initialize(data, 0)
    # Move the zero-initialized heads so that every block has a gradient.
    theta = theta + 0.5 * rng.normal(size=theta.shape)
    weights = np.array([0.5, 1.2, 1.3])

    def value(x):
        return _objective(x, net, data, losses, 0.3, weights, 0.01, None)[0]

    grad = _objective(theta, net, data, losses, 0.3, weights, 0.01, None)[1]
    numeric = approx_fprime(theta, value, 1e-7)
    np.testing.assert_allclose(grad, numeric, rtol=0, atol=1e-5 * np.max(np.abs(numeric)))


def _direct_objective(X, Y, s, U, c, A, b, act, dact, losses, epsilon, weights, alpha):
    """The written objective and its gradient, one task at a time on its own rows.

    ``Y`` is wide with NaN for a missing label (a long problem is written
    wide, each row labelled for its own task only).
    """
    n, T = Y.shape
    S = s.sum()
    Z = X @ U + c
    H = act(Z)
    grad_U, grad_c = alpha * U, np.zeros_like(c)
    grad_A, grad_b = alpha * A, np.zeros_like(b)
    value = 0.5 * alpha * (np.sum(U**2) + np.sum(A**2))
    task_losses = np.empty(T)
    for t in range(T):
        rows = ~np.isnan(Y[:, t])
        r = Y[rows, t] - (H[rows] @ A[t] + b[t])
        loss, deriv = losses[t](r, epsilon)
        task_losses[t] = s[rows] @ loss / S
        value += weights[t] * task_losses[t]
        g = -weights[t] * s[rows] * deriv / S
        grad_A[t] += H[rows].T @ g
        grad_b[t] += g.sum()
        grad_Z = np.outer(g, A[t]) * dact(Z[rows])
        grad_U += X[rows].T @ grad_Z
        grad_c += grad_Z.sum(axis=0)
    return value, grad_U, grad_c, grad_A, grad_b, task_losses


@pytest.mark.parametrize("layout", ["wide", "long"])
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
@pytest.mark.parametrize("block", [7, None])
def test_objective_equals_a_direct_evaluation(layout, activation, block, monkeypatch):
    # The objective runs the network with one column per row, in blocks of
    # columns for the matrix products, with the heads of the long layout
    # repeated over their tasks' rows: compared with a plain evaluation of
    # the written objective and of its gradient, on uneven tasks (one of a
    # single row), missing labels, sample weights and mixed losses; blocks
    # of 7 columns make the blocked products run over several blocks and a
    # last partial one.
    from skmtl import _shared_objective

    if block is not None:
        monkeypatch.setattr(_shared_objective, "_BLOCK", block)
    rng = np.random.RandomState(3)
    d, T, k, epsilon, alpha = 4, 5, 3, 0.5, 0.05
    if layout == "wide":
        n = 45
        X = rng.normal(size=(n, d))
        Y = 2 * rng.normal(size=(n, T))
        Y[rng.rand(n, T) < 0.3] = np.nan
        s = rng.uniform(0.5, 2.0, n)
        data = make_wide_tasks(X, Y, s)
    else:
        sizes = [1, 13, 4, 20, 7]
        labels = rng.permutation(np.repeat(np.arange(T), sizes))
        n = len(labels)
        X, y, s = rng.normal(size=(n, d)), 2 * rng.normal(size=n), rng.uniform(0.5, 2.0, n)
        data, _ = make_long_tasks(X, labels, y, s)
        X, s = data.X, data.sample_weight
        Y = np.full((n, T), np.nan)
        Y[np.arange(n), data.codes] = data.y
    losses = tuple(LOSSES["huber" if t % 2 else "squared"] for t in range(T))
    net = _Network(d, k, T, activation, fit_intercept=True)
    theta = net.initialize(data, 0) + 0.5 * rng.normal(size=net.offsets[-1])
    U, c, A, b = net.unpack(theta)
    c = np.zeros(k) if c is None else c
    weights = rng.uniform(0.2, 2.0, T)
    derivatives = {
        "identity": lambda z: np.ones_like(z),
        "relu": lambda z: (z > 0).astype(float),
        "tanh": lambda z: 1 - np.tanh(z) ** 2,
    }
    value, grad_U, grad_c, grad_A, grad_b, task_losses = _direct_objective(
        X, Y, s, U, c, A, b, ACTIVATIONS[activation], derivatives[activation], losses,
        epsilon, weights, alpha,
    )
    got = _objective(theta, net, data, losses, epsilon, weights, alpha, None)
    expected = net.pack(grad_U, grad_c if net.hidden_intercept else None, grad_A, grad_b)
    np.testing.assert_allclose(got[0], value, rtol=1e-12)
    np.testing.assert_allclose(got[1], expected, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(got[2], task_losses, rtol=1e-12)


@pytest.mark.parametrize("layout", ["wide", "long"])
@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
def test_objective_at_initialization_for_any_weights(layout, activation):
    # The solver reads the objective at initialization for every new set of
    # task weights off one unweighted evaluation; that relies on the heads
    # starting at zero. Compared here with a direct evaluation.
    rng = np.random.RandomState(1)
    n, d, T, k = 50, 4, 3, 5
    X = rng.normal(size=(n, d))
    if layout == "wide":
        Y = rng.normal(size=(n, T))
        Y[rng.rand(n, T) < 0.2] = np.nan
        data = make_wide_tasks(X, Y, rng.uniform(0.5, 2.0, n))
    else:
        data, _ = make_long_tasks(X, rng.randint(0, T, n), rng.normal(size=n), None)
    losses = (LOSSES["squared"], LOSSES["huber"], LOSSES["squared"])
    net = _Network(d, k, T, activation, fit_intercept=True)
    theta0 = net.initialize(data, 0)
    at_start, initial_losses = _objective_at_initialization(
        theta0, net, data, losses, 0.3, 0.01, None
    )
    for weights in [np.ones(T), np.array([0.1, 2.5, 0.4])]:
        direct = _objective(theta0, net, data, losses, 0.3, weights, 0.01, None)
        value, grad, task_losses = at_start(weights)
        np.testing.assert_allclose(value, direct[0], rtol=1e-12)
        np.testing.assert_allclose(grad, direct[1], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(task_losses, direct[2], rtol=1e-12)


# ------------------------------------------------------- trace-norm optimum


def _trace_norm_optimum(X, Y, alpha, n_iter=20000):
    """min_{W, b} 1/(2n) ||Y - X W - b||^2 + alpha ||W||_* by accelerated
    proximal gradient (singular value thresholding), written independently
    of skmtl. The intercepts are unpenalized, so centering removes them."""
    n = len(X)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    step = n / np.linalg.norm(Xc, 2) ** 2

    def objective(W):
        nuclear = np.linalg.svd(W, compute_uv=False).sum()
        return 0.5 * np.sum((Yc - Xc @ W) ** 2) / n + alpha * nuclear

    W = V = np.zeros((X.shape[1], Y.shape[1]))
    t = 1.0
    for _ in range(n_iter):
        G = V - step * (Xc.T @ (Xc @ V - Yc)) / n
        P, s, Qt = np.linalg.svd(G, full_matrices=False)
        W_new = (P * np.maximum(s - step * alpha, 0.0)) @ Qt
        t_new = (1 + np.sqrt(1 + 4 * t * t)) / 2
        V = W_new + (t - 1) / t_new * (W_new - W)
        W, t = W_new, t_new
    return objective(W), W


def test_identity_equal_weights_reach_the_trace_norm_optimum():
    # Variational form of the nuclear norm: min over U A^T = W of
    # (||U||^2 + ||A||^2) / 2 is ||W||_*, so with 'identity', 'equal' and
    # n_components >= rank(W) the optimum of the objective is the trace-norm
    # optimum. The test will also compare against
    # SharedFeatureRegressor(penalty='trace') once that estimator lands.
    rng = np.random.RandomState(0)
    n, d, T = 60, 6, 4
    X = rng.normal(size=(n, d))
    W_true = rng.normal(size=(d, 2)) @ rng.normal(size=(2, T))
    Y = X @ W_true + 3.0 + rng.normal(size=(n, T))
    alpha = 0.1
    reference, W_ref = _trace_norm_optimum(X, Y, alpha)

    with warnings.catch_warnings():
        # tol=1e-10 is below what float64 line searches reach: asking for it
        # runs the solver as far as it goes.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SharedObjectiveRegressor(
            n_components=T, task_weights="equal", alpha=alpha, tol=1e-10, max_iter=2000,
            random_state=0,
        ).fit(X, Y)
    # The estimator's objective, computed here from its public attributes.
    D = 0.5 * np.sum((Y - model.predict(X)) ** 2) / n
    penalty = 0.5 * alpha * (np.sum(model.components_**2) + np.sum(model.head_coef_**2))
    assert (D + penalty - reference) / reference < 1e-4
    assert (reference - (D + penalty)) / reference < 1e-4
    np.testing.assert_allclose(model.coef_, W_ref.T, atol=1e-3 * np.abs(W_ref).max())
    # Its solution is low rank, as the trace norm wants.
    assert np.linalg.matrix_rank(W_ref, tol=1e-6) < T


def test_trace_norm_reference_agrees_with_cvxpy():
    cp = pytest.importorskip("cvxpy", reason="cvxpy (the [test] extra) cross-checks the reference")
    rng = np.random.RandomState(1)
    n, d, T = 30, 5, 3
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, T))
    alpha = 0.1
    reference, _ = _trace_norm_optimum(X, Y, alpha)
    W, b = cp.Variable((d, T)), cp.Variable(T)
    problem = cp.Problem(cp.Minimize(
        cp.sum_squares(Y - X @ W - np.ones((n, 1)) @ cp.reshape(b, (1, T), order="C")) / (2 * n)
        + alpha * cp.normNuc(W)
    ))
    problem.solve(solver=cp.SCS, eps=1e-9, max_iters=200000)
    np.testing.assert_allclose(reference, problem.value, rtol=1e-5)


# ---------------------------------------------------------------- weighting


def test_uncertainty_weights_track_the_noise_and_help_the_clean_tasks():
    noise = np.geomspace(0.1, 1.0, 6)
    X, Y, Xt, _, Ft = _low_rank_tasks(0, n=400, d=20, noise=noise)
    kw = dict(n_components=3, activation="tanh", random_state=0)
    unc = SharedObjectiveRegressor(task_weights="uncertainty", **kw).fit(X, Y)
    equal = SharedObjectiveRegressor(task_weights="equal", **kw).fit(X, Y)
    expected = 1 / noise**2
    expected *= len(noise) / expected.sum()
    np.testing.assert_allclose(unc.task_weights_, expected, rtol=0.25)
    # Test error against the noise-free signal on the two cleanest tasks.
    err_unc = np.mean((unc.predict(Xt) - Ft) ** 2, axis=0)
    err_equal = np.mean((equal.predict(Xt) - Ft) ** 2, axis=0)
    assert np.all(err_unc[:2] < 0.5 * err_equal[:2])


def test_uncertainty_does_not_let_a_target_in_large_units_drown_the_others():
    X, Y, Xt, Yt, _ = _low_rank_tasks(1)
    scale = np.array([1000.0, 1.0, 1.0])
    # A small alpha, not the default: the objective penalizes ||A||^2 with no
    # task weight, while 'uncertainty' gives the target in units 1000x larger
    # a weight about 1e6 times smaller. Measured in that target's own units,
    # its head then feels a penalty 1e6 times stronger than the others':
    # alpha=1e-8 acts on it like 1e-2 and it keeps its single-task R^2
    # (0.91 against 0.90), while alpha=1e-6 (acting like 1) drops it to 0.09
    # and the default 1e-4 to 0.0. See the docstring of alpha.
    kw = dict(n_components=3, activation="tanh", alpha=1e-8, random_state=0)
    with warnings.catch_warnings():
        # 'equal' runs out of rounds on this badly scaled problem.
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = np.array([
            r2_score(Yt[:, t], SharedObjectiveRegressor(**kw).fit(X, Y[:, t]).predict(Xt))
            for t in range(3)
        ])
        scores = {
            strategy: r2_score(
                Yt * scale,
                SharedObjectiveRegressor(task_weights=strategy, **kw).fit(X, Y * scale).predict(Xt),
                multioutput="raw_values",
            )
            for strategy in ["uncertainty", "equal"]
        }
    assert np.all(scores["uncertainty"] > single - 0.05)
    small = scale == 1
    assert np.any(scores["equal"][small] < single[small] - 0.2)


def _recorded_runs(strategy, n_rounds):
    """The same fit stopped after ``n_rounds`` and one round later."""
    X, Y, *_ = _low_rank_tasks(2, noise=(0.1, 0.3, 1.0))
    kw = dict(n_components=3, activation="tanh", task_weights=strategy, random_state=0, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = SharedObjectiveRegressor(max_iter=n_rounds, **kw).fit(X, Y)
        second = SharedObjectiveRegressor(max_iter=n_rounds + 1, **kw).fit(X, Y)
    np.testing.assert_array_equal(first.task_weights_history_, second.task_weights_history_[:-1])
    return X, Y, first, second.task_weights_history_[-1]


def test_dwa_follows_its_formula():
    X, Y, model, _ = _recorded_runs("dwa", 6)
    history, curve = model.task_weights_history_, model.loss_curve_
    np.testing.assert_array_equal(history[:2], 1.0)
    for k in range(2, len(history)):
        e = np.exp(curve[k - 1] / curve[k - 2] / 2.0)
        np.testing.assert_allclose(history[k], 3 * e / e.sum(), rtol=1e-12)
    # loss_curve_ holds each task's D_t: the last one is the fitted model's.
    np.testing.assert_allclose(curve[-1], _task_losses(model, X, Y), rtol=1e-10)


def test_uncertainty_follows_its_formula():
    X, Y, model, next_weights = _recorded_runs("uncertainty", 4)
    mse = np.mean((Y - model.predict(X)) ** 2, axis=0)
    expected = 1 / mse
    np.testing.assert_allclose(next_weights, 3 * expected / expected.sum(), rtol=1e-8)


def test_gradnorm_follows_its_formula():
    X, Y, model, next_weights = _recorded_runs("gradnorm", 4)
    U = model.components_.T
    # ||dD_t / dU|| by finite differences of the loss computed here.
    grads = np.array([
        approx_fprime(U.ravel(), lambda u: _task_losses(model, X, Y, u.reshape(U.shape))[t], 1e-7)
        for t in range(3)
    ])
    norms = np.linalg.norm(grads, axis=1)
    ratio = _task_losses(model, X, Y) / model.initial_loss_
    target = (ratio / ratio.mean()) ** 1.5 / norms
    target *= 3 / target.sum()
    expected = np.sqrt(model.task_weights_ * target)
    np.testing.assert_allclose(next_weights, 3 * expected / expected.sum(), rtol=1e-4)
    # The initial loss is the intercept-only model's: half each task's variance.
    np.testing.assert_allclose(model.initial_loss_, 0.5 * Y.var(axis=0), rtol=1e-12)


def test_gradnorm_weights_of_tasks_fitted_exactly():
    # Regression (found by tests/test_properties.py): one label per task, so
    # every task is fitted exactly and its gradient norm is ~0. 1 / norm was
    # summed before normalizing: overflow (a RuntimeWarning, an error here).
    X = np.array([[1.76405235], [0.40015721]])
    Y = np.array([[np.nan] * 4, [1.30526408, 0.45706876, 0.76864127, 0.12736554]])
    model = SharedObjectiveRegressor(n_components=2, max_iter=3, task_weights="gradnorm",
                                     random_state=0).fit(X, Y)
    assert np.all(np.isfinite(model.predict(X)))
    # The formula, on a log scale where nothing overflows: norms of 1e-300
    # and below next to ordinary ones.
    weights = np.array([0.5, 1.0, 1.5, 1.0])
    norms = np.array([1e-300, 3e-305, 2.0, 0.5])
    losses, initial = np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 1.0, 2.0, 0.5])
    rate = (losses / initial) / np.mean(losses / initial)
    log_target = 1.5 * np.log(rate) - np.log(norms)
    target = np.exp(log_target - log_target.max())
    target /= target.sum()
    log_new = 0.5 * (np.log(weights) + np.log(target))
    expected = np.exp(log_new - log_new.max())
    np.testing.assert_allclose(
        _gradnorm_weights(weights, norms, losses, initial), 4 * expected / expected.sum(),
        rtol=1e-12,
    )


def test_fixed_weights_are_normalized_and_kept():
    X, Y, *_ = _low_rank_tasks(3)
    model = SharedObjectiveRegressor(task_weights=[1.0, 2.0, 5.0], random_state=0).fit(X, Y)
    expected = np.tile([0.375, 0.75, 1.875], (model.n_iter_, 1))
    np.testing.assert_allclose(model.task_weights_history_, expected)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"task_weights": [1.0, 2.0]}, "task_weights has shape"),
        ({"task_weights": [1.0, 0.0, 1.0]}, "finite and positive"),
        ({"loss": ["squared", "huber"]}, "loss has 2 entries"),
        ({"loss": ["squared", "huber", "absolute"]}, "loss entries must be"),
    ],
)
def test_bad_weights_and_losses(params, match):
    X, Y, *_ = _low_rank_tasks(3, n=20)
    with pytest.raises(ValueError, match=match):
        SharedObjectiveRegressor(**params).fit(X, Y)


def test_huber_task_resists_outliers():
    X, Y, Xt, _, Ft = _low_rank_tasks(4, n=300)
    Y = Y.copy()
    rows = np.random.RandomState(0).choice(len(Y), 15, replace=False)
    Y[rows, 0] += 50.0
    kw = dict(n_components=3, activation="tanh", task_weights="equal", random_state=0)
    errors = {}
    for loss in ["squared", ["huber", "squared", "squared"]]:
        model = SharedObjectiveRegressor(loss=loss, epsilon=0.5, **kw).fit(X, Y)
        errors[str(loss)] = np.mean((model.predict(Xt)[:, 0] - Ft[:, 0]) ** 2)
    assert errors["['huber', 'squared', 'squared']"] < 0.2 * errors["squared"]


def test_not_converged_warns():
    X, Y, *_ = _low_rank_tasks(3)
    with pytest.warns(ConvergenceWarning, match="did not converge in 1 rounds"):
        model = SharedObjectiveRegressor(activation="tanh", max_iter=1, random_state=0).fit(X, Y)
    assert model.n_iter_ == 1
    assert model.task_weights_history_.shape == model.loss_curve_.shape == (1, 3)


# ------------------------------------------------------ layouts and weights


def _tight(**params):
    # 'identity': for given weights the optimum is the trace-norm one, unique,
    # so two fits of the same objective agree however their paths differ.
    return SharedObjectiveRegressor(
        n_components=3, tol=1e-8, max_iter=300, random_state=0, **params
    )


def test_missing_labels_wide_equals_long_layout():
    X, Y, Xt, *_ = _low_rank_tasks(5, n=120)
    Y = Y.copy()
    Y[np.random.RandomState(0).rand(*Y.shape) < 0.3] = np.nan
    rows, tasks = np.nonzero(~np.isnan(Y))
    # D divides by S: n rows in the wide layout, one row per observed label
    # in the long one. Scaling alpha by the ratio gives the same objective.
    alpha = 1e-3
    wide = _tight(alpha=alpha).fit(X, Y)
    long = _tight(alpha=alpha * len(X) / len(rows), task_column=0).fit(
        np.column_stack([tasks, X[rows]]), Y[rows, tasks]
    )
    np.testing.assert_allclose(long.task_weights_, wide.task_weights_, rtol=1e-4)
    Xt_long = np.column_stack([np.repeat(np.arange(3), len(Xt)), np.tile(Xt, (3, 1))])
    np.testing.assert_allclose(
        long.predict(Xt_long), wide.predict(Xt).T.ravel(), rtol=1e-4, atol=1e-4
    )


# tol=1e-8 is at the edge of what the uncertainty fixed point reaches in the
# long layout; the two fits still agree to far better than the assertion.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("task_column", [None, 0])
def test_sample_weight_equals_repeated_and_removed_rows(task_column):
    X, Y, Xt, *_ = _low_rank_tasks(6, n=60)
    if task_column is None:
        y = Y
    else:
        X = np.column_stack([np.arange(len(X)) % 3, X])
        Xt = np.column_stack([np.arange(len(Xt)) % 3, Xt])
        y = Y[np.arange(len(Y)), np.arange(len(Y)) % 3]
    sw = np.random.RandomState(0).randint(0, 3, len(X))
    weighted = _tight(task_column=task_column).fit(X, y, sample_weight=sw)
    repeated = _tight(task_column=task_column).fit(
        np.repeat(X, sw, axis=0), np.repeat(y, sw, axis=0)
    )
    np.testing.assert_allclose(weighted.predict(Xt), repeated.predict(Xt), rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unknown_task_is_predicted_by_the_mean_head():
    rng = np.random.RandomState(8)
    X = np.column_stack([rng.randint(0, 3, 90), rng.normal(size=(90, 4))])
    y = X[:, 1] + X[:, 0] + 0.1 * rng.normal(size=90)
    model = SharedObjectiveRegressor(activation="tanh", task_column=0, random_state=0).fit(X, y)
    Xt = np.column_stack([np.full(5, 7), rng.normal(size=(5, 4))])
    H = _hidden(model, Xt[:, 1:])
    expected = H @ model.head_coef_.mean(axis=0) + model.intercept_.mean()
    np.testing.assert_allclose(
        SharedObjectiveRegressor(**{**model.get_params(), "handle_unknown": "shared"})
        .fit(X, y).predict(Xt),
        expected,
    )


def test_uncertainty_ignores_tasks_too_small_to_estimate_their_noise():
    # Task 0 has 3 rows, fewer than its head's n_components + 1 = 4
    # parameters: it is fitted exactly, and without the degrees-of-freedom
    # correction its zero residual would take all the weight.
    rng = np.random.RandomState(10)
    sizes, noise = [3, 150, 150], [0.1, 0.1, 1.0]
    labels = np.repeat([0, 1, 2], sizes)
    Xf = rng.normal(size=(len(labels), 4))
    y = Xf[:, 0] - Xf[:, 1] + rng.normal(size=len(labels)) * np.repeat(noise, sizes)
    model = SharedObjectiveRegressor(n_components=3, task_column=0, random_state=0).fit(
        np.column_stack([labels, Xf]), y
    )
    assert model.task_weights_[0] == 1.0
    # The others share the remaining weight in proportion to 1 / sigma^2.
    ratio = model.task_weights_[1] / model.task_weights_[2]
    assert 100 / 1.5 < ratio < 100 * 1.5
    np.testing.assert_allclose(model.task_weights_[1:].sum(), 2.0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("task_weights", ["uncertainty", "dwa", "gradnorm", "equal"])
def test_degenerate_tasks_fit_without_error(task_weights):
    rng = np.random.RandomState(11)
    # A single-row task, a constant task, more features than rows.
    X = np.column_stack([[0, 1, 1, 1, 2, 2, 2], rng.normal(size=(7, 10))])
    y = np.array([1.0, 2.0, 2.0, 2.0, 3.0, 4.0, 5.0])
    model = SharedObjectiveRegressor(task_column=0, task_weights=task_weights, random_state=0)
    pred = model.fit(X, y).predict(X)
    assert np.all(np.isfinite(pred)) and np.all(model.task_weights_ > 0)
    # Thousands of tasks.
    labels = np.repeat(np.arange(2000), 2)
    X = np.column_stack([labels, rng.normal(size=(len(labels), 3))])
    model = SharedObjectiveRegressor(
        n_components=2, task_column=0, task_weights=task_weights, max_iter=2, random_state=0
    ).fit(X, X[:, 1] + rng.normal(size=len(labels)))
    assert model.task_weights_.shape == (2000,)


# ----------------------------------------------------------- early stopping


def _overfitting_tasks(layout, seed=12, n=100):
    """Noisy tasks and a large unpenalized network: the validation score peaks
    after a few rounds and falls while the training loss keeps falling.
    Long layout rows come grouped by task, so the internal row order is the
    order given here. Returns ``X, y, sample_weight`` and the fit's params."""
    X, Y, *_ = _low_rank_tasks(seed, n=n, noise=(0.5, 0.5, 0.5))
    sw = np.random.RandomState(seed).uniform(0.5, 2.0, n)
    if layout == "long":
        task = np.arange(n) % 3
        order = np.argsort(task, kind="stable")
        X = np.column_stack([task[order], X[order]])
        Y, sw = Y[order, task[order]], sw[order]
    params = dict(
        n_components=10, activation="tanh", alpha=0.0, validation_fraction=0.2,
        n_iter_no_change=3, max_iter=100, random_state=0,
        task_column=0 if layout == "long" else None,
    )
    return X, Y, sw, params


def _split_rows(X, y, sw, params):
    """The rows that early stopping holds out, from the split function."""
    if params["task_column"] is None:
        data = make_wide_tasks(X, y, sw)
    else:
        data, _ = make_long_tasks(X[:, 1:], X[:, 0], y, sw)
    return _validation_split(data, params["validation_fraction"], params["random_state"])[2]


def _validation_score(model, X, y, sw, held, long):
    """The documented validation score, computed here from the predictions:
    the mean over tasks of 1 - (weighted held-out MSE) / (weighted variance
    of the task's training labels)."""
    pred = model.predict(X)
    if long:
        task = X[:, 0]
        columns = [(task == t, y, pred) for t in np.unique(task)]
    else:
        columns = [(~np.isnan(y[:, t]), y[:, t], pred[:, t]) for t in range(y.shape[1])]
    scores = []
    for rows, labels, predicted in columns:
        train, val = rows & ~held, rows & held
        mean = np.average(labels[train], weights=sw[train])
        variance = np.average((labels[train] - mean) ** 2, weights=sw[train])
        mse = np.average((labels[val] - predicted[val]) ** 2, weights=sw[val])
        scores.append(1 - mse / variance)
    return np.mean(scores)


def _stopping_round(scores, n_iter_no_change, tol):
    """MLPRegressor's rule, written out: stop at the first round after more
    than n_iter_no_change rounds in a row that did not beat the best by tol."""
    best, count = -np.inf, 0
    for n_round, score in enumerate(scores, start=1):
        count = count + 1 if score < best + tol else 0
        best = max(best, score)
        if count > n_iter_no_change:
            return n_round
    return None


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_early_stopping_keeps_the_best_round(layout):
    X, y, sw, params = _overfitting_tasks(layout)
    with warnings.catch_warnings():
        # Stopping on the validation score is not a convergence failure.
        warnings.simplefilter("error", ConvergenceWarning)
        model = SharedObjectiveRegressor(early_stopping=True, **params).fit(X, y, sample_weight=sw)
    scores = model.validation_scores_
    best = int(np.argmax(scores)) + 1
    assert len(scores) == model.n_iter_ < params["max_iter"]
    assert _stopping_round(scores, params["n_iter_no_change"], model.tol) == model.n_iter_
    # The score peaked and fell: the kept round is not the last one.
    assert best < model.n_iter_ and scores[-1] < scores[best - 1] - 0.01
    assert model.best_validation_score_ == scores[best - 1]
    np.testing.assert_array_equal(model.task_weights_, model.task_weights_history_[best - 1])

    # The same rounds without early stopping, on the training rows only (the
    # rounds are deterministic and an int random_state gives the same
    # initialization): stopped at the best round they give the kept model,
    # run to the end they give another one.
    held = _split_rows(X, y, sw, params)
    plain = {**params, "validation_fraction": 0.1}
    Xtr, ytr, swtr = X[~held], y[~held], sw[~held]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        at_best = SharedObjectiveRegressor(**{**plain, "max_iter": best}).fit(
            Xtr, ytr, sample_weight=swtr
        )
        at_end = SharedObjectiveRegressor(**{**plain, "max_iter": model.n_iter_}).fit(
            Xtr, ytr, sample_weight=swtr
        )
    assert at_best.n_iter_ == best and at_end.n_iter_ == model.n_iter_
    np.testing.assert_allclose(model.predict(X), at_best.predict(X), rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(model.predict(X) - at_end.predict(X))) > 0.01
    # The score of the kept model on the held-out rows, computed here.
    expected = _validation_score(model, X, y, sw, held, layout == "long")
    np.testing.assert_allclose(model.best_validation_score_, expected, rtol=1e-10)
    assert _validation_score(at_end, X, y, sw, held, layout == "long") < expected - 0.01


def test_without_early_stopping_nothing_is_held_out():
    X, y, sw, params = _overfitting_tasks("wide")
    params = {**params, "max_iter": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SharedObjectiveRegressor(**params).fit(X, y, sample_weight=sw)
        # The early-stopping parameters are then ignored.
        other = SharedObjectiveRegressor(
            **{**params, "validation_fraction": 0.5, "n_iter_no_change": 1}
        ).fit(X, y, sample_weight=sw)
    assert model.validation_scores_ is None and model.best_validation_score_ is None
    np.testing.assert_array_equal(model.predict(X), other.predict(X))
    # The loss curve is over all rows: the last one is the fitted model's.
    np.testing.assert_allclose(
        model.loss_curve_[-1] * sw.sum(),
        [np.sum(sw * 0.5 * (y[:, t] - model.predict(X)[:, t]) ** 2) for t in range(3)],
        rtol=1e-10,
    )


def test_early_stopping_runs_out_of_rounds_with_a_warning():
    X, y, sw, params = _overfitting_tasks("wide")
    params = {**params, "max_iter": 2, "n_iter_no_change": 5}
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 rounds"):
        model = SharedObjectiveRegressor(early_stopping=True, **params).fit(X, y)
    assert model.n_iter_ == 2 and model.validation_scores_.shape == (2,)


def test_validation_split_long_layout():
    # Tasks of 1 to 37 rows: each holds out its share rounded half up, and
    # keeps at least one row for training.
    sizes = np.array([1, 2, 3, 5, 10, 37])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.RandomState(0)
    X, y = rng.normal(size=(len(labels), 2)), rng.normal(size=len(labels))
    data, _ = make_long_tasks(X, labels, y, None)
    train, validation, held = _validation_split(data, 0.25, 0)
    expected = np.minimum(np.floor(0.25 * sizes + 0.5), sizes - 1)  # 0, 1, 1, 1, 3, 9
    np.testing.assert_array_equal(np.bincount(labels[held], minlength=len(sizes)), expected)
    np.testing.assert_array_equal(train.sizes, sizes - expected)
    # The two parts are the rows of the data, each once.
    np.testing.assert_array_equal(train.X, X[~held])
    np.testing.assert_array_equal(validation.X, X[held])
    np.testing.assert_array_equal(train.y, y[~held])
    # Deterministic for an int seed, another seed draws other rows.
    np.testing.assert_array_equal(_validation_split(data, 0.25, 0)[2], held)
    assert not np.array_equal(_validation_split(data, 0.25, 1)[2], held)


def test_validation_split_wide_layout_keeps_a_label_of_every_task():
    rng = np.random.RandomState(1)
    n = 40
    Y = rng.normal(size=(n, 3))
    # Task 1 has one label, task 2 two: the split must leave them in training.
    Y[1:, 1] = np.nan
    Y[np.arange(n) > 1, 2] = np.nan
    data = make_wide_tasks(rng.normal(size=(n, 2)), Y, None)
    counts = set()
    for seed in range(20):
        train, _, held = _validation_split(data, 0.25, seed)
        assert np.all(train.mask.any(axis=0))
        counts.add(int(held.sum()))
    # ceil(0.25 * 40) rows held out, one fewer when a task got its row back;
    # over 20 seeds both happen.
    assert counts == {9, 10}


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_early_stopping_is_deterministic(layout):
    X, y, sw, params = _overfitting_tasks(layout)
    fits = [
        SharedObjectiveRegressor(early_stopping=True, **{**params, "random_state": seed}).fit(X, y)
        for seed in (0, 0, 1)
    ]
    np.testing.assert_array_equal(fits[0].predict(X), fits[1].predict(X))
    np.testing.assert_array_equal(fits[0].validation_scores_, fits[1].validation_scores_)
    assert not np.array_equal(fits[0].validation_scores_[:3], fits[2].validation_scores_[:3])


@pytest.mark.parametrize(
    "params, name",
    [
        ({"early_stopping": "yes"}, "early_stopping"),
        ({"validation_fraction": 0.0}, "validation_fraction"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"n_iter_no_change": 0}, "n_iter_no_change"),
        ({"n_iter_no_change": 2.5}, "n_iter_no_change"),
    ],
)
def test_bad_early_stopping_parameters(params, name):
    X, Y, *_ = _low_rank_tasks(3, n=20)
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        SharedObjectiveRegressor(**params).fit(X, Y)


def test_early_stopping_needs_a_validation_label():
    # Tasks of two rows keep both at validation_fraction=0.1: nothing to score.
    rng = np.random.RandomState(0)
    X = np.column_stack([np.repeat(np.arange(10), 2), rng.normal(size=(20, 3))])
    with pytest.raises(ValueError, match="validation set is too small"):
        SharedObjectiveRegressor(task_column=0, early_stopping=True).fit(X, rng.normal(size=20))


@pytest.mark.parametrize("block_rows", [1, 5, None], ids=lambda b: f"block{b}")
def test_long_layout_network_in_blocks_is_the_written_objective(block_rows, monkeypatch):
    # Each chunk of tasks runs the network in blocks of about _BLOCK_BYTES of
    # the design (LongTasks.row_blocks), and the parent adds the chunks'
    # gradients. Uneven task sizes; blocks of 1 row (every task alone), 5
    # rows, and one block; serial and in chunks: the value is the written
    # objective computed here, and the gradient its finite differences.
    from skmtl import _parallel, _tasks

    # n_jobs=2 below splits the tasks in chunks, however small the problem.
    monkeypatch.setattr(_parallel, "_MIN_PARALLEL_COST", 0)
    rng = np.random.RandomState(3)
    sizes = [1, 4, 4, 9, 2, 7]
    T, d, k, alpha, epsilon = len(sizes), 3, 4, 0.01, 0.3
    labels = np.repeat(np.arange(T), sizes)
    n = len(labels)
    X, y, sw = rng.normal(size=(n, d)), 2 * rng.normal(size=n), rng.uniform(0.5, 2.0, n)
    if block_rows is not None:
        # The network reads the design with a row of ones for the hidden intercept.
        monkeypatch.setattr(_tasks, "_BLOCK_BYTES", block_rows * 8 * (d + 1))
    data, _ = make_long_tasks(X, labels, y, sw)
    names = ["huber" if t % 2 else "squared" for t in range(T)]
    losses = tuple(LOSSES[name] for name in names)
    net = _Network(d, k, T, "tanh", fit_intercept=True)
    theta = net.initialize(data, 0) + 0.5 * rng.normal(size=net.offsets[-1])
    weights = rng.uniform(0.5, 1.5, T)

    def written(x):
        U, c, A, b = net.unpack(x)
        r = y - (np.tanh(X @ U + c) * A[labels]).sum(axis=1) - b[labels]
        huber = np.where(np.abs(r) <= epsilon, r**2 / 2, epsilon * np.abs(r) - epsilon**2 / 2)
        is_huber = np.isin(labels, np.flatnonzero(np.array(names) == "huber"))
        loss = np.where(is_huber, huber, r**2 / 2)
        D = np.bincount(labels, sw * loss) / sw.sum()
        return weights @ D + alpha / 2 * (np.sum(U**2) + np.sum(A**2))

    for n_jobs in (None, 2):
        value, grad, _ = _objective(theta, net, data, losses, epsilon, weights, alpha, n_jobs)
        np.testing.assert_allclose(value, written(theta), rtol=1e-12)
        numeric = approx_fprime(theta, written, 1e-7)
        np.testing.assert_allclose(grad, numeric, rtol=0, atol=1e-5 * np.max(np.abs(numeric)))
