"""The per-task Hessians of the data layouts, which SharedParamRegressor's Newton solver reads.

They are checked against ``Z_t^T diag(s_i loss''(r_i)) Z_t`` written out task
by task from the raw arrays, and against finite differences of the gradient
(the solver itself: tests/test_shared_param.py).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import skmtl._tasks
from skmtl._losses import CURVATURES, LOSSES
from skmtl._tasks import make_long_tasks, make_wide_tasks


# ------------------------------------------------------------ layout Hessians
#
# Each case is a data object built by skmtl._tasks from raw arrays, and the
# same data as one (X_t, y_t, s_t) per task in tasks_ order, read from the raw
# arrays with plain numpy (no skmtl code), which is all the formula reads.


def _long_case(sizes, weights, seed=0):
    rng = np.random.RandomState(seed)
    sizes = np.asarray(sizes)
    n_tasks, d = len(sizes), 3
    # Shuffled rows with spaced labels: the data object sorts them by task.
    codes = rng.permutation(np.repeat(np.arange(n_tasks), sizes))
    labels = 10 * codes - 15
    X = rng.normal(size=(len(codes), d))
    true_coef = rng.normal(size=(n_tasks, d))
    y = np.einsum("ij,ij->i", X, true_coef[codes]) + rng.standard_t(2, size=len(codes))
    sw = rng.uniform(0.2, 3.0, size=len(codes)) if weights else None
    s = np.ones(len(codes)) if sw is None else sw
    data, tasks = make_long_tasks(X, labels, y, sw)
    assert np.array_equal(tasks, 10 * np.arange(n_tasks) - 15)
    parts = [(X[labels == lab], y[labels == lab], s[labels == lab]) for lab in tasks]
    return data, parts, true_coef


def _wide_case(weights, seed=0):
    rng = np.random.RandomState(seed)
    n, d, n_tasks = 40, 3, 5
    X = rng.normal(size=(n, d))
    true_coef = rng.normal(size=(n_tasks, d))
    Y = X @ true_coef.T + rng.standard_t(2, size=(n, n_tasks))
    # Missing labels everywhere but in the first column (a complete column
    # takes another branch of WideTasks), and a row with no label at all.
    missing = rng.uniform(size=Y.shape) < 0.3
    missing[:, 0] = False
    missing[0] = True
    Y[missing] = np.nan
    sw = rng.uniform(0.2, 3.0, size=n) if weights else None
    s = np.ones(n) if sw is None else sw
    data = make_wide_tasks(X, Y, sw)
    parts = [(X[~missing[:, t]], Y[~missing[:, t], t], s[~missing[:, t]]) for t in range(n_tasks)]
    return data, parts, true_coef


# Which products the long layout runs (see LongTasks._batch_groups): one
# batched product per group of equal-size tasks, rows as a slice (consecutive
# tasks), as gathered index arrays (scattered tasks), or as runs of large
# tasks (never gathered); many sizes take the row-wise form.
LAYOUT_CASES = {
    "long-equal": (lambda w: _long_case([6] * 5, w), "batched"),
    "long-two-sizes": (lambda w: _long_case([8, 5, 8, 5, 8], w), "batched"),
    "long-large-tasks": (lambda w: _long_case([64, 3, 64, 3], w), "batched"),
    "long-many-sizes": (lambda w: _long_case(np.arange(1, 13), w), "rowwise"),
    "wide": (_wide_case, None),
}


def _check_path(data, path):
    if path is None:
        return
    groups = data._batch_groups(0, data.n_tasks, skmtl._tasks._block_rows(data.X))
    assert (groups is None) == (path == "rowwise")


def _by_formula(parts, coef, intercept, loss, epsilon):
    """Loss sum, per-task gradients, Hessians and all residuals, task by task."""
    value, grads, hessians, residuals = 0.0, [], [], []
    for t, (Xt, yt, st) in enumerate(parts):
        if intercept is None:
            Z, b = Xt, coef[t]
        else:
            Z, b = np.column_stack([Xt, np.ones(len(yt))]), np.append(coef[t], intercept[t])
        r = yt - Z @ b
        if loss == "squared":
            rho, psi, curv = 0.5 * r**2, r, np.ones_like(r)
        else:
            inside = np.abs(r) <= epsilon
            rho = np.where(inside, 0.5 * r**2, epsilon * np.abs(r) - 0.5 * epsilon**2)
            psi, curv = np.clip(r, -epsilon, epsilon), inside.astype(float)
        value += st @ rho
        grads.append(-(Z.T @ (st * psi)))
        # A sum of per-row outer products, not the layouts' matrix products.
        hessians.append(np.einsum("i,ij,ik->jk", st * curv, Z, Z))
        residuals.append(r)
    return value, np.array(grads), np.array(hessians), np.concatenate(residuals)


def _epsilon_in_a_gap(residuals):
    """A Huber threshold between two residual sizes, and its distance to the nearer.

    Chosen among the middle half of the sizes, so that both of Huber's regions
    hold many residuals, and in the widest gap there, so that rounding in the
    residuals cannot move one across the threshold.
    """
    a = np.sort(np.abs(residuals))
    lo, hi = len(a) // 4, 3 * len(a) // 4
    i = lo + np.argmax(np.diff(a[lo:hi + 1]))
    return 0.5 * (a[i] + a[i + 1]), 0.5 * (a[i + 1] - a[i])


def _point(parts, true_coef, fit_intercept, seed=1):
    """Coefficients to evaluate at: near the truth, but not at it."""
    rng = np.random.RandomState(seed)
    coef = true_coef + 0.3 * rng.normal(size=true_coef.shape)
    intercept = rng.normal(size=len(coef)) if fit_intercept else None
    return coef, intercept


def _pass(data, start, stop, coef, intercept, loss, epsilon, hess=None, prev=None):
    """One Newton pass's data: ``linear_loss_grad_curv``, then ``task_hessians``.

    Returns the loss sum, the gradients, the Hessians and the curvatures (of
    all rows; the wide layout's are per task) for tasks ``[start, stop)``.
    """
    value, grad_coef, grad_intercept, curv = data.linear_loss_grad_curv(
        start, stop, coef, intercept, LOSSES[loss], CURVATURES[loss], epsilon
    )
    # task_hessians reads the curvatures of all rows (all tasks when wide).
    if data.layout == "wide":
        full = np.zeros((data.n_tasks, len(data.X)), dtype=bool)
        full[start:stop] = curv
    else:
        full = np.zeros(len(data.y), dtype=bool)
        full[data.row_range(start, stop)] = curv
    hessians = data.task_hessians(start, stop, full, prev, hess, intercept is not None)
    return value, grad_coef, grad_intercept, hessians, full


def _stacked(grad_coef, grad_intercept, intercept):
    return grad_coef if intercept is None else np.column_stack([grad_coef, grad_intercept])


# The long layout also in blocks of 7 rows (groups split in pieces, row-wise
# blocks of few tasks); the wide layout has no row blocks.
BLOCK_CASES = [
    pytest.param(case, blocks, id=f"{case}-{blocks}")
    for case in LAYOUT_CASES
    for blocks in ("default-blocks", "small-blocks")
    if case.startswith("long") or blocks == "default-blocks"
]


@pytest.mark.parametrize("loss", ["squared", "huber"])
@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("case, blocks", BLOCK_CASES)
def test_hessians_match_the_written_formula(
    monkeypatch, case, blocks, fit_intercept, weights, loss
):
    build, path = LAYOUT_CASES[case]
    if blocks == "small-blocks":
        monkeypatch.setattr(skmtl._tasks, "_BLOCK_BYTES", 7 * 3 * 8)
    data, parts, true_coef = build(weights)
    _check_path(data, path)
    if blocks == "small-blocks":
        assert len(list(data.row_blocks(0, data.n_tasks, data.X))) > 1
    coef, intercept = _point(parts, true_coef, fit_intercept)
    epsilon, _ = _epsilon_in_a_gap(_by_formula(parts, coef, intercept, "squared", 1.0)[3])
    value, grads, hessians, r = _by_formula(parts, coef, intercept, loss, epsilon)
    if loss == "huber":
        # Guard: both of Huber's regions hold residuals, so the Hessian is
        # neither the squared loss's nor zero.
        assert 0 < np.sum(np.abs(r) <= epsilon) < len(r)

    n_tasks = data.n_tasks
    # The whole range, and one inside it: a task's results do not depend on
    # which others share the range.
    for start, stop in [(0, n_tasks), (1, n_tasks - 1)]:
        sl = slice(start, stop)
        b_int = None if intercept is None else intercept[sl]
        got = _pass(data, start, stop, coef[sl], b_int, loss, epsilon)
        value_t = _by_formula(parts[sl], coef[sl], b_int, loss, epsilon)[0]
        assert_allclose(got[0], value_t, rtol=1e-12)
        assert_allclose(_stacked(got[1], got[2], b_int), grads[sl], rtol=1e-12, atol=1e-12)
        assert got[3].shape == hessians[sl].shape
        assert_allclose(got[3], hessians[sl], rtol=1e-12, atol=1e-12)
        assert np.array_equal(got[3], got[3].transpose(0, 2, 1))
        # The same loss and gradient as the gradient-only call.
        plain = data.linear_loss_grad(start, stop, coef[sl], b_int, LOSSES[loss], epsilon)
        assert_allclose(got[0], plain[0], rtol=1e-13)
        assert_allclose(got[1], plain[1], rtol=1e-13, atol=1e-13)
        if intercept is not None:
            assert_allclose(got[2], plain[2], rtol=1e-13, atol=1e-13)
    assert_allclose(value, _pass(data, 0, n_tasks, coef, intercept, loss, epsilon)[0],
                    rtol=1e-12)


@pytest.mark.parametrize("loss", ["squared", "huber"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_hessian_is_the_derivative_of_the_gradient(case, fit_intercept, loss):
    # Central differences of linear_loss_grad, one coefficient of one task at
    # a time. Huber's gradient is piecewise linear: the differences are exact
    # (to rounding) where no residual crosses +-epsilon within the step.
    build, path = LAYOUT_CASES[case]
    data, parts, true_coef = build(True)
    _check_path(data, path)
    coef, intercept = _point(parts, true_coef, fit_intercept)
    epsilon, gap = _epsilon_in_a_gap(_by_formula(parts, coef, intercept, "squared", 1.0)[3])
    h = 1e-5
    z_max = max(np.abs(Xt).max() for Xt, _, _ in parts) + 1.0
    assert h * z_max < gap  # no residual crosses the threshold
    hess = _pass(data, 0, data.n_tasks, coef, intercept, loss, epsilon)[3]

    def grad(c, b):
        _, gc, gb = data.linear_loss_grad(0, data.n_tasks, c, b, LOSSES[loss], epsilon)
        return _stacked(gc, gb, b)

    d, p = coef.shape[1], hess.shape[1]
    base = grad(coef, intercept)
    for t in range(data.n_tasks):
        for j in range(p):
            moved = []
            for sign in (1, -1):
                c = coef.copy()
                b = None if intercept is None else intercept.copy()
                if j < d:
                    c[t, j] += sign * h
                else:
                    b[t] += sign * h
                moved.append(grad(c, b))
            fd = (moved[0] - moved[1]) / (2 * h)
            assert_allclose(fd[t], hess[t, :, j], rtol=1e-6, atol=1e-6 * np.abs(hess[t]).max())
            # The Hessian is block diagonal: no other task's gradient moves.
            others = np.arange(data.n_tasks) != t
            assert np.array_equal(moved[0][others], base[others])


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("case, blocks", [c for c in BLOCK_CASES if c.values[0] != "wide"])
def test_hessians_updated_from_an_earlier_point(monkeypatch, case, blocks, fit_intercept, weights):
    # Newton's later passes add or remove only the rows whose curvature
    # changed since the last one (or, per task, form the Hessian anew from
    # its rows within epsilon when those are fewer): the result must still
    # be the written Hessian at the new point. From the squared loss's
    # Hessians (curvature 1 everywhere), as the first Newton pass starts.
    build, path = LAYOUT_CASES[case]
    if blocks == "small-blocks":
        monkeypatch.setattr(skmtl._tasks, "_BLOCK_BYTES", 7 * 3 * 8)
    data, parts, true_coef = build(weights)
    _check_path(data, path)
    coef, intercept = _point(parts, true_coef, fit_intercept)
    epsilon, _ = _epsilon_in_a_gap(_by_formula(parts, coef, intercept, "squared", 1.0)[3])
    n_tasks = data.n_tasks
    squared = _pass(data, 0, n_tasks, coef, intercept, "squared", epsilon)
    assert squared[4].all()
    # A second point: task 0 moves far (most of its rows change region, so
    # it is formed anew), the others a little (a few rows change).
    coef2 = coef + 0.05 * np.random.RandomState(3).normal(size=coef.shape)
    coef2[0] += 3.0
    intercept2 = None if intercept is None else intercept + 0.05
    chain = [(coef, intercept, squared), (coef2, intercept2, None), (coef, intercept, None)]
    changed = []
    for k in (1, 2):
        prev_coef, prev_intercept, prev = chain[k - 1]
        c, b = chain[k][0], chain[k][1]
        got = _pass(data, 0, n_tasks, c, b, "huber", epsilon, hess=prev[3], prev=prev[4])
        _, _, hessians, r = _by_formula(parts, c, b, "huber", epsilon)
        assert_allclose(got[3], hessians, rtol=1e-10, atol=1e-10 * np.abs(hessians).max())
        assert np.array_equal(got[3], got[3].transpose(0, 2, 1))
        # curv is each row's region, in the data object's order: by task,
        # each task's rows in their order in X (a stable sort), as in parts.
        assert np.array_equal(got[4], np.abs(r) <= epsilon)
        changed.append(np.sum(got[4] != prev[4]))
        chain[k] = (c, b, got)
    # Guard: the updates had rows to add and remove.
    assert min(changed) > 0


