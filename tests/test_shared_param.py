"""SharedParamRegressor against its written objective (SPEC section 3).

The reference solutions come from ``tests/conftest.py``: the stacked normal
equations of the objective (squared loss) and a trust-region Newton solve of it
(Huber), built from the pairs of each problem without any skmtl code.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, Ridge

import skmtl._shared_param
from skmtl import SharedParamRegressor
from skmtl._tasks import make_long_tasks, make_wide_tasks

ALPHA_SHARED, ALPHA_TASK = 0.3, 0.7


def _fit(prob, **params):
    model = SharedParamRegressor(task_column=prob.task_column, **params)
    return model.fit(prob.X, prob.y, sample_weight=prob.sample_weight)


def _assert_matches(model, ref, atol=1e-6):
    assert_allclose(model.coef_, ref.coef, rtol=0, atol=atol)
    assert_allclose(model.intercept_, ref.intercept, rtol=0, atol=atol)
    assert_allclose(model.shared_coef_, ref.shared_coef, rtol=0, atol=atol)
    assert_allclose(model.shared_intercept_, ref.shared_intercept, rtol=0, atol=atol)
    assert_allclose(model.task_coef_, model.coef_ - model.shared_coef_, rtol=0, atol=1e-12)
    assert_allclose(
        model.task_intercept_, model.intercept_ - model.shared_intercept_, rtol=0, atol=1e-12
    )


def _unknowns(model):
    """A fit with intercepts as the reference's unknowns (theta_0, u_1, ..., u_T)."""
    return np.concatenate(
        [model.shared_coef_, [model.shared_intercept_],
         np.column_stack([model.task_coef_, model.task_intercept_]).ravel()]
    )


# ----------------------------------------------------------------- exactness


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize(
    "loss, solver",
    [("squared", "auto"), ("huber", "auto"), ("huber", "newton"), ("huber", "lbfgs")],
    ids=["squared", "huber-auto", "huber-newton", "huber-lbfgs"],
)
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_matches_written_objective(
    problem_factory, reference, layout, loss, solver, fit_intercept, weights
):
    # Wide problems have missing labels and a row with no label at all, which
    # counts in S: the reference reads S from SPEC, not from skmtl.
    prob = problem_factory(layout, weights=weights, outliers=True)
    ref = reference(
        prob, alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK,
        fit_intercept=fit_intercept, loss=loss,
    )
    with warnings.catch_warnings():
        # A line search on objective values cannot push the gradient much below
        # sqrt(machine eps * objective), about 3e-8 here, so L-BFGS may stop a
        # little short of tol=1e-8 and say so; the coefficients are then still
        # within 1e-7 of the optimum, which is what this test checks.
        # test_huber_stops_on_the_gradient checks the warning-free path.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _fit(
            prob, alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK, loss=loss,
            fit_intercept=fit_intercept, tol=1e-8, solver=solver,
        )
    _assert_matches(model, ref)
    assert_allclose(model.tasks_, prob.tasks)
    if not fit_intercept:
        assert model.shared_intercept_ == 0.0
        assert np.all(model.intercept_ == 0.0)


def test_huber_differs_from_squared_on_these_problems(problem_factory, reference):
    # Guards the Huber cases above: with outliers the two losses must give
    # different solutions, else matching the Huber reference proves nothing.
    prob = problem_factory("long", outliers=True)
    kw = dict(alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK)
    huber = reference(prob, loss="huber", **kw)
    squared = reference(prob, loss="squared", **kw)
    assert np.max(np.abs(huber.coef - squared.coef)) > 1e-2


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_unpenalized_shared_part(problem_factory, reference, layout):
    prob = problem_factory(layout, weights=True)
    ref = reference(prob, alpha_shared=0.0, alpha_task=ALPHA_TASK)
    _assert_matches(_fit(prob, alpha_shared=0.0, alpha_task=ALPHA_TASK), ref)


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_lbfgs_solver_on_squared_loss_matches(problem_factory, reference, layout):
    prob = problem_factory(layout, weights=True)
    ref = reference(prob, alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK)
    model = _fit(prob, alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK, solver="lbfgs", tol=1e-8)
    _assert_matches(model, ref)


def test_squared_loss_is_a_direct_solve(problem_factory, objective):
    prob = problem_factory("long", weights=True)
    model = _fit(prob, alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK)
    assert model.n_iter_ == 1
    beta = _unknowns(model)
    _, grad = objective(prob, beta, alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK)
    # Exact to floating point, not to a solver tolerance.
    assert np.max(np.abs(grad)) < 1e-12


# ------------------------------------------------------------ huber convergence


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_huber_stops_on_the_gradient(problem_factory, objective, layout, solver):
    prob = problem_factory(layout, weights=True, outliers=True)
    tol = 1e-6
    kw = dict(alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = _fit(prob, loss="huber", tol=tol, solver=solver, **kw)
    assert 2 <= model.n_iter_ <= model.max_iter
    beta = _unknowns(model)
    # The optimality measure, recomputed from the written objective.
    _, grad = objective(prob, beta, loss="huber", **kw)
    assert np.max(np.abs(grad)) <= tol
    # The count is real: one iteration fewer does not get there.
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        _fit(prob, loss="huber", tol=tol, solver=solver, max_iter=model.n_iter_ - 1, **kw)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_huber_warns_when_max_iter_is_too_small(problem_factory, layout, solver):
    prob = problem_factory(layout, outliers=True)
    with pytest.warns(ConvergenceWarning, match="did not converge in 1 iteration"):
        model = _fit(prob, loss="huber", max_iter=1, tol=1e-8, solver=solver)
    assert model.n_iter_ == 1


# -------------------------------------------------------------------- limits


def _pooled(prob):
    """Every observed pair as one row of a single regression."""
    return prob.Xp, prob.yp, prob.sp


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_huge_alpha_task_is_one_pooled_ridge(problem_factory, layout, fit_intercept, weights):
    prob = problem_factory(layout, weights=weights)
    model = _fit(prob, alpha_shared=ALPHA_SHARED, alpha_task=1e8, fit_intercept=fit_intercept)
    # (1/S) sum s r^2/2 + a/2 ||w||^2, times 2S, is Ridge's sum s r^2 + S a ||w||^2.
    Xp, yp, sp = _pooled(prob)
    ridge = Ridge(alpha=prob.S * ALPHA_SHARED, fit_intercept=fit_intercept)
    ridge.fit(Xp, yp, sample_weight=sp)
    for k in range(prob.n_tasks):
        assert_allclose(model.coef_[k], ridge.coef_, rtol=0, atol=1e-6)
        assert_allclose(model.intercept_[k], ridge.intercept_, rtol=0, atol=1e-6)
    assert_allclose(model.shared_coef_, ridge.coef_, rtol=0, atol=1e-6)
    assert_allclose(model.shared_intercept_, ridge.intercept_, rtol=0, atol=1e-6)


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_tiny_alphas_fit_tasks_independently(problem_factory, layout, fit_intercept, weights):
    prob = problem_factory(layout, weights=weights)
    model = _fit(prob, alpha_shared=1e-8, alpha_task=1e-8, fit_intercept=fit_intercept)
    for k in range(prob.n_tasks):
        rows = prob.tp == k
        ols = LinearRegression(fit_intercept=fit_intercept)
        ols.fit(prob.Xp[rows], prob.yp[rows], sample_weight=prob.sp[rows])
        assert_allclose(model.coef_[k], ols.coef_, rtol=0, atol=1e-5)
        assert_allclose(model.intercept_[k], ols.intercept_, rtol=0, atol=1e-5)


def test_alpha_task_moves_between_the_limits(problem_factory):
    # Between the limits the task models spread less as alpha_task grows.
    prob = problem_factory("long")
    spread = [
        _fit(prob, alpha_task=a).task_coef_.std(axis=0).sum() for a in (1e-3, 1e-1, 1e1, 1e3)
    ]
    assert np.all(np.diff(spread) < 0)


# ------------------------------------------------------------ the scale S


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
def test_unlabelled_wide_rows_count_in_S(problem_factory, weights):
    # Rows with no label add nothing to the data sum but do add to S, so
    # dropping them equals rescaling both alphas by S_all / S_labelled.
    prob = problem_factory("wide", unlabelled_rows=5, weights=weights)
    labelled = ~np.isnan(prob.y).all(axis=1)
    s = np.ones(len(prob.y)) if prob.sample_weight is None else prob.sample_weight
    ratio = s.sum() / s[labelled].sum()
    assert ratio > 1.05
    full = _fit(prob, alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK)
    dropped = SharedParamRegressor(ALPHA_SHARED * ratio, alpha_task=ALPHA_TASK * ratio).fit(
        prob.X[labelled], prob.y[labelled],
        sample_weight=None if prob.sample_weight is None else s[labelled],
    )
    assert_allclose(full.coef_, dropped.coef_, rtol=1e-10, atol=1e-12)
    assert_allclose(full.intercept_, dropped.intercept_, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ newton
#
# solver='newton' (the default for Huber) against the written objective, the
# reference solutions and L-BFGS, and its hand-over to L-BFGS on each of the
# ways it can give up.

HUBER = dict(alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK, loss="huber")
HANDS_OVER = "L-BFGS goes on from here."


def _largest_gradient(objective, prob, model, **kw):
    return np.max(np.abs(objective(prob, _unknowns(model), **kw)[1]))


def _task_data(prob):
    """The data object fit builds for ``prob``."""
    if prob.layout == "wide":
        return make_wide_tasks(prob.X, prob.y, prob.sample_weight)
    data, tasks = make_long_tasks(prob.X[:, 1:], prob.X[:, 0], prob.y, prob.sample_weight)
    assert_allclose(tasks, prob.tasks)
    return data


# ------------------------------------------------------------- hand-over


def test_shared_step_is_none_only_when_the_system_is_inconsistent():
    A = np.diag([2.0, 0.0, 4.0])
    # Singular but consistent (no gradient along the flat direction): the
    # least-squares step solves it.
    assert_allclose(skmtl._shared_param._newton_shared_step(A, np.array([1.0, 0.0, 2.0])),
                    [0.5, 0.0, 0.5], atol=1e-15)
    # A gradient along a direction without curvature: no Newton step.
    assert skmtl._shared_param._newton_shared_step(A, np.array([1.0, 1e-3, 2.0])) is None
    B = np.array([[2.0, 1.0], [1.0, 3.0]])
    assert_allclose(skmtl._shared_param._newton_shared_step(B, np.array([1.0, 2.0])),
                    np.linalg.solve(B, [1.0, 2.0]), rtol=1e-14)


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_singular_shared_hessian_hands_over_to_lbfgs(
    problem_factory, reference, objective, capsys, layout
):
    # With epsilon=1e-6 every residual of the squared-loss start is in Huber's
    # linear region: the loss has no curvature, and with alpha_shared=0
    # nothing else curves the shared part, while its gradient is not zero.
    prob = problem_factory(layout, weights=True, outliers=True)
    epsilon, tol = 1e-6, 1e-7
    kw = dict(alpha_shared=0.0, alpha_task=ALPHA_TASK)
    start = reference(prob, **kw)
    r = prob.yp - np.einsum("ij,ij->i", prob.Xp, start.coef[prob.tp]) - start.intercept[prob.tp]
    assert np.abs(r).min() > epsilon
    start_grad = objective(prob, start.beta, loss="huber", epsilon=epsilon, **kw)[1]
    assert np.abs(start_grad).max() > 1e3 * tol  # the fit has work to do
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = _fit(prob, loss="huber", epsilon=epsilon, solver="newton", tol=tol,
                     verbose=1, **kw)
    out = capsys.readouterr().out
    assert f"the Hessian of the shared part is singular along the gradient: {HANDS_OVER}" in out
    assert "Newton iteration" not in out  # handed over before the first step
    assert _largest_gradient(objective, prob, model, loss="huber", epsilon=epsilon, **kw) <= tol


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_singular_but_consistent_shared_hessian_keeps_newton(
    problem_factory, objective, capsys, layout
):
    # A duplicated feature with alpha_shared=0: the shared Hessian is singular
    # along (1, -1), but so is the gradient, and the least-squares step is a
    # Newton step. No hand-over, and Newton's few steps reach tol.
    prob = problem_factory(layout, weights=True, outliers=True)
    prob.X = np.column_stack([prob.X, prob.X[:, -1]])
    prob.Xp = np.column_stack([prob.Xp, prob.Xp[:, -1]])
    kw = dict(alpha_shared=0.0, alpha_task=ALPHA_TASK, loss="huber")
    tol = 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = _fit(prob, solver="newton", tol=tol, verbose=1, **kw)
    out = capsys.readouterr().out
    assert HANDS_OVER not in out
    assert model.n_iter_ <= 5
    assert _largest_gradient(objective, prob, model, **kw) <= tol


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_failed_line_search_hands_over_to_lbfgs(
    problem_factory, reference, capsys, monkeypatch, layout
):
    prob = problem_factory(layout, weights=True, outliers=True)
    ref = reference(prob, **HUBER)
    monkeypatch.setattr(skmtl._shared_param, "_sufficient_decrease", lambda *args: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = _fit(prob, solver="newton", tol=1e-8, verbose=1, **HUBER)
        out = capsys.readouterr().out
        lbfgs = _fit(prob, solver="lbfgs", tol=1e-8, **HUBER)
    assert (
        f"the line search found no decrease in {skmtl._shared_param._MAX_HALVINGS} "
        f"halvings: {HANDS_OVER}" in out
    )
    assert "Newton iteration" not in out
    _assert_matches(model, ref)
    # Handed over at the start, L-BFGS runs from the same point as
    # solver='lbfgs' with the same budget: the same fit.
    assert model.n_iter_ == lbfgs.n_iter_
    assert_allclose(model.coef_, lbfgs.coef_, rtol=0, atol=1e-12)
    assert_allclose(model.intercept_, lbfgs.intercept_, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_rejected_full_step_is_halved(problem_factory, reference, capsys, monkeypatch, layout):
    # The first Armijo test fails: the line search evaluates half the step,
    # and Newton goes on from there without a hand-over.
    prob = problem_factory(layout, weights=True, outliers=True)
    ref = reference(prob, **HUBER)
    armijo = skmtl._shared_param._sufficient_decrease
    calls = []

    def first_fails(*args):
        calls.append(args)
        return len(calls) > 1 and armijo(*args)

    monkeypatch.setattr(skmtl._shared_param, "_sufficient_decrease", first_fails)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = _fit(prob, solver="newton", tol=1e-10, verbose=1, **HUBER)
    out = capsys.readouterr().out
    assert len(calls) >= 2
    assert HANDS_OVER not in out
    lines = [line for line in out.splitlines() if "Newton iteration" in line]
    assert lines[0].endswith("step 0.5")
    assert len(lines) == model.n_iter_
    # The Armijo test that passed judged the point taken: its new value (the
    # objective times S) is the objective printed after the first step.
    printed = float(lines[0].split("objective ")[1].split(",")[0])
    assert_allclose(calls[1][1] / prob.S, printed, rtol=1e-9)
    _assert_matches(model, ref, atol=1e-9)


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_hand_over_keeps_to_max_iter(problem_factory, capsys, monkeypatch, layout):
    # One Newton step, then a failed line search: L-BFGS gets the iterations
    # Newton left, so n_iter_ stays within max_iter, and the fit warns as one
    # that ran out.
    prob = problem_factory(layout, weights=True, outliers=True)
    armijo = skmtl._shared_param._sufficient_decrease
    calls = []

    def first_passes(*args):
        calls.append(args)
        return len(calls) == 1 and armijo(*args)

    monkeypatch.setattr(skmtl._shared_param, "_sufficient_decrease", first_passes)
    with pytest.warns(ConvergenceWarning, match="Newton's method did not converge"):
        model = _fit(prob, solver="newton", tol=1e-10, max_iter=3, verbose=1, **HUBER)
    out = capsys.readouterr().out
    assert "Newton iteration 1:" in out and "Newton iteration 2:" not in out
    assert HANDS_OVER in out
    assert 2 <= model.n_iter_ <= 3


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_max_iter_in_newton_steps_does_not_hand_over(problem_factory, capsys, layout):
    prob = problem_factory(layout, weights=True, outliers=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        n_iter = _fit(prob, solver="newton", tol=1e-10, **HUBER).n_iter_
    assert n_iter >= 2
    with pytest.warns(ConvergenceWarning,
                      match=f"Newton's method did not converge in {n_iter - 1} iteration"):
        model = _fit(prob, solver="newton", tol=1e-10, max_iter=n_iter - 1, verbose=1, **HUBER)
    out = capsys.readouterr().out
    assert HANDS_OVER not in out
    assert model.n_iter_ == n_iter - 1
    assert sum("Newton iteration" in line for line in out.splitlines()) == n_iter - 1


# ------------------------------------------------------------- convergence


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_newton_converges_in_few_iterations(problem_factory, objective, layout, weights):
    # The objective is piecewise quadratic: once the residuals within epsilon
    # stop changing a Newton step is exact, so a few steps reach 1e-10, where
    # L-BFGS takes many (and may stop short of it: its warning is ignored).
    prob = problem_factory(layout, weights=weights, outliers=True)
    tol = 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        newton = _fit(prob, solver="newton", tol=tol, **HUBER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lbfgs = _fit(prob, solver="lbfgs", tol=tol, **HUBER)
    assert newton.n_iter_ <= 5
    assert 3 * newton.n_iter_ <= lbfgs.n_iter_
    assert _largest_gradient(objective, prob, newton, **HUBER) <= tol


@pytest.mark.parametrize("layout", ["wide", "long"])
def test_one_newton_step_is_exact_on_a_fixed_active_set(problem_factory, reference, objective,
                                                        layout):
    # From a point near the optimum with the same residuals within epsilon,
    # the objective is one quadratic between there and the optimum: one full
    # Newton step lands on it.
    prob = problem_factory(layout, weights=True, outliers=True)
    ref = reference(prob, **HUBER)
    rng = np.random.RandomState(0)
    theta = np.append(ref.shared_coef, ref.shared_intercept)
    beta = np.column_stack([ref.coef, ref.intercept])
    theta0, beta0 = theta + 1e-4 * rng.normal(size=theta.shape), beta + 1e-4 * rng.normal(
        size=beta.shape)

    def inside(b):
        r = prob.yp - np.einsum("ij,ij->i", prob.Xp, b[prob.tp, :-1]) - b[prob.tp, -1]
        return np.abs(r) <= 1.35

    assert np.array_equal(inside(beta0), inside(beta))
    assert 0 < inside(beta).sum() < len(prob.yp)
    th, b, n_iter, grad_norm = skmtl._shared_param._solve_newton(
        _task_data(prob), ALPHA_SHARED, ALPHA_TASK, "huber", 1.35, True, 10, 1e-12,
        None, 0, theta0, beta0,
    )
    assert n_iter == 1
    assert grad_norm <= 1e-12
    assert_allclose(b, beta, rtol=0, atol=1e-10)
    assert_allclose(th, theta, rtol=0, atol=1e-10)


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_newton_and_lbfgs_agree(problem_factory, objective, layout, fit_intercept):
    prob = problem_factory(layout, weights=True, outliers=True)
    kw = dict(HUBER, fit_intercept=fit_intercept)
    with warnings.catch_warnings():
        # L-BFGS may stop a little short of tol=1e-8 (see test_shared_param).
        warnings.simplefilter("ignore", ConvergenceWarning)
        lbfgs = _fit(prob, solver="lbfgs", tol=1e-8, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        newton = _fit(prob, solver="newton", tol=1e-8, **kw)
    for name in ("coef_", "intercept_", "shared_coef_", "shared_intercept_"):
        assert_allclose(getattr(newton, name), getattr(lbfgs, name), rtol=0, atol=1e-6)

    def value(model):
        beta = _unknowns(model)
        if not fit_intercept:  # drop the intercepts, all 0
            p = prob.Xp.shape[1] + 1
            beta = np.delete(beta, np.arange(p - 1, len(beta), p))
        return objective(prob, beta, **kw)[0]

    assert value(newton) <= value(lbfgs) + 1e-12


# ------------------------------------------------------------- squared loss


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("layout", ["wide", "long"])
def test_newton_on_squared_loss_is_exact(problem_factory, layout, fit_intercept):
    prob = problem_factory(layout, weights=True)
    kw = dict(alpha_shared=ALPHA_SHARED, alpha_task=ALPHA_TASK, fit_intercept=fit_intercept)
    cholesky = _fit(prob, solver="cholesky", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        newton = _fit(prob, solver="newton", loss="squared", tol=1e-10, **kw)
    for name in ("coef_", "intercept_", "shared_coef_", "shared_intercept_"):
        assert_allclose(getattr(newton, name), getattr(cholesky, name), rtol=0, atol=1e-10)
    # fit starts Newton at the exact solution; from zero, Newton's step on a
    # quadratic is the exact solution too: its block elimination of the
    # Hessian is exact.
    p = prob.Xp.shape[1] + int(fit_intercept)
    th, beta, n_iter, grad_norm = skmtl._shared_param._solve_newton(
        _task_data(prob), ALPHA_SHARED, ALPHA_TASK, "squared", 1.35, fit_intercept, 10,
        1e-10, None, 0, np.zeros(p), np.zeros((prob.n_tasks, p)),
    )
    assert n_iter == 1
    assert grad_norm <= 1e-10
    assert_allclose(beta[:, :prob.Xp.shape[1]], cholesky.coef_, rtol=0, atol=1e-10)
    assert_allclose(th[:prob.Xp.shape[1]], cholesky.shared_coef_, rtol=0, atol=1e-10)
    if fit_intercept:
        assert_allclose(beta[:, -1], cholesky.intercept_, rtol=0, atol=1e-10)
