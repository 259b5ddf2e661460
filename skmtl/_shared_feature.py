"""SharedFeatureRegressor: tasks share features (Argyriou, Evgeniou & Pontil, 2008).

Two penalties on the ``(n_model_features, n_tasks)`` coefficient matrix ``W``:
the L2,1 norm (tasks select the same features) and the trace norm (tasks share
a low-dimensional subspace). Solvers, chosen by ``_resolve_solver``:

- ``'bcd'``: squared loss, L2,1. The intercepts are eliminated by centering
  each task, the problem is reduced once to per-task Gram matrices (one shared
  matrix in the complete wide layout), and block coordinate descent over the
  rows of ``W`` runs on them with gap-safe screening.
- ``'fista'``: accelerated proximal gradient (singular value thresholding for
  the trace norm). Squared loss on the Gram matrices, Huber loss on the data
  through the per-task gradient blocks.
- ``'factorized'``: trace norm with ``n_components=k``: ``W = U V^T`` and
  ``||W||_* = min (||U||^2 + ||V||^2) / 2``, minimized by L-BFGS, then checked
  against the convex optimality condition.

Squared-loss solvers stop on the duality gap (the dual point is the residual
rescaled into the dual-norm ball), Huber solvers on the norm of the
prox-gradient mapping.
"""

import math
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.linalg.blas import dger
from scipy.optimize import minimize
from sklearn.base import TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from ._base import Interval, MultiTaskRegressorBase, StrOptions
from ._losses import LOSSES
from ._parallel import map_task_chunks

# --------------------------------------------------------------- penalties
# Each penalty: its norm, the dual norm, and the proximal operator of
# ``threshold * norm``, which also returns the norm of its result (free for
# the trace norm, whose singular values it computes anyway). ``W`` has one row
# per feature and one column per task.


def _l21_norm(W):
    return float(np.sqrt(np.einsum("jt,jt->j", W, W)).sum())


def _l21_dual_norm(G):
    return float(np.sqrt(np.einsum("jt,jt->j", G, G)).max(initial=0.0))


def _l21_prox(W, threshold):
    norms = np.sqrt(np.einsum("jt,jt->j", W, W))
    scale = np.zeros_like(norms)
    keep = norms > threshold
    scale[keep] = 1.0 - threshold / norms[keep]
    return W * scale[:, None], float((norms * scale).sum())


def _trace_norm(W):
    if W.size == 0:
        return 0.0
    return float(np.linalg.svd(W, compute_uv=False).sum())


def _trace_dual_norm(G):
    if G.size == 0:
        return 0.0
    # The top eigenvalue of the smaller Gram matrix is accurate to relative
    # rounding, and much cheaper than an SVD of G.
    small = G.T @ G if G.shape[0] >= G.shape[1] else G @ G.T
    return float(np.sqrt(max(np.linalg.eigvalsh(small)[-1], 0.0)))


def _trace_prox(W, threshold):
    if W.size == 0:
        return W.copy(), 0.0
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    s = s - threshold
    rank = int(np.count_nonzero(s > 0))
    return (U[:, :rank] * s[:rank]) @ Vt[:rank], float(s[:rank].sum())


_PENALTIES = {
    "l21": (_l21_norm, _l21_dual_norm, _l21_prox),
    "trace": (_trace_norm, _trace_dual_norm, _trace_prox),
}


# ------------------------------------------------------ squared loss, Gram


class _GramProblem:
    """The squared-loss data term reduced to centered per-task Gram matrices.

    With the intercepts eliminated (each task centered with its own weighted
    means), ``D(W) = (1 / S) sum_t (yy_t / 2 - c_t . w_t + w_t . C_t w_t / 2)``.

    Attributes
    ----------
    C : ndarray of shape (d, d) or (n_tasks, d, d)
        One matrix shared by all tasks (complete wide layout) or one per task.
    c : ndarray of shape (d, n_tasks)
        Centered ``X_t^T S_t y_t``.
    yy : ndarray of shape (n_tasks,)
        Centered ``y_t^T S_t y_t``.
    x_mean : ndarray of shape (d, n_tasks)
    y_mean : ndarray of shape (n_tasks,)
        Weighted means that give the intercepts ``b_t = y_mean_t - x_mean_t . w_t``.
    S : float
    """

    def __init__(self, C, c, yy, x_mean, y_mean, S):
        self.C, self.c, self.yy = C, c, np.maximum(yy, 0.0)
        self.x_mean, self.y_mean, self.S = x_mean, y_mean, S
        self.shared = C.ndim == 2

    def matvec(self, W, n_jobs=None):
        """``Q[:, t] = C_t w_t``."""
        if self.shared:
            return self.C @ W
        results, _ = map_task_chunks(_task_matvec, W.shape[1], self.C, W, n_jobs=n_jobs)
        return np.hstack(results) if results else np.zeros_like(W)

    def value(self, W, Q):
        """Data term ``D(W)`` given ``Q = matvec(W)``."""
        return float(self.yy.sum() / 2 - np.vdot(self.c, W) + np.vdot(W, Q) / 2) / self.S

    def diagonal(self):
        """Largest ``C_t[j, j]`` over tasks, per feature."""
        if self.shared:
            return np.diag(self.C).copy()
        return np.einsum("tjj->tj", self.C).max(axis=0, initial=0.0)

    def lipschitz(self):
        """Lipschitz constant of the gradient of ``D``."""
        top = float(np.max(np.linalg.eigvalsh(self.C)[..., -1], initial=0.0)) if self.C.size else 0.0
        # D does not depend on W when C = 0 (one row per task): any step works.
        return top / self.S if top > 0 else 1.0

    def intercepts(self, W):
        return self.y_mean - np.einsum("jt,jt->t", self.x_mean, W)


def _task_matvec(start, stop, C, W):
    return np.matmul(C[start:stop], W[:, start:stop].T[..., None])[..., 0].T


def _centered_gram(start, stop, data, fit_intercept):
    """Per-task centered Gram statistics of tasks ``[start, stop)``."""
    G, g, yy, sw = data.gram(start, stop, fit_intercept)
    d = data.n_features
    if not fit_intercept:
        return G, g, yy, np.zeros_like(g), np.zeros(stop - start)
    # A task whose rows all have weight 0 has zero statistics: any mean works.
    safe = np.where(sw > 0, sw, 1.0)
    x1, y1 = G[:, :d, d], g[:, d]
    x_mean, y_mean = x1 / safe[:, None], y1 / safe
    C = G[:, :d, :d] - x1[:, :, None] * x_mean[:, None, :]
    return C, g[:, :d] - x1 * y_mean[:, None], yy - y1 * y_mean, x_mean, y_mean


def _gram_problem(data, fit_intercept, n_jobs):
    """Build the :class:`_GramProblem` of ``data``."""
    if data.layout == "wide" and data.complete.all():
        # Every task has the same rows: one Gram matrix, formed from centered
        # data (no cancellation), serves all of them.
        X, Y, s = data.X, data.Y, data.sample_weight
        T = Y.shape[1]
        if fit_intercept:
            x_mean = np.average(X, axis=0, weights=s)
            y_mean = np.average(Y, axis=0, weights=s)
            X, Y = X - x_mean, Y - y_mean
        else:
            x_mean, y_mean = np.zeros(X.shape[1]), np.zeros(T)
        if s is None:
            C, Ys = X.T @ X, Y
        else:
            Xs = X * s[:, None]
            C = Xs.T @ X
            C = 0.5 * (C + C.T)
            Ys = Y * s[:, None]
        c = X.T @ Ys
        yy = np.einsum("nt,nt->t", Ys, Y)
        x_mean = np.repeat(x_mean[:, None], T, axis=1)
        return _GramProblem(C, c, yy, x_mean, y_mean, data.S)
    results, _ = map_task_chunks(_centered_gram, data.n_tasks, data, fit_intercept, n_jobs=n_jobs)
    C, c, yy, x_mean, y_mean = (np.concatenate(parts) for parts in zip(*results))
    return _GramProblem(C, c.T, yy, x_mean.T, y_mean, data.S)


def _squared_gap(prob, W, Q, alpha, penalty, norm_W=None):
    """Primal objective and duality gap of the squared-loss problem.

    ``norm_W`` is the penalty norm of ``W`` when already known.

    The dual point is the residual matrix rescaled so that ``X^T`` of it lies
    in the ``alpha`` ball of the dual norm, as scikit-learn's coordinate
    descent does for the lasso.
    """
    norm, dual_norm, _ = _PENALTIES[penalty]
    S = prob.S
    yy = prob.yy.sum()
    cw = np.vdot(prob.c, W)
    r_y = yy - cw
    r_r = max(yy - 2 * cw + np.vdot(W, Q), 0.0)
    primal = r_r / (2 * S) + alpha * (norm(W) if norm_W is None else norm_W)
    dn = dual_norm((prob.c - Q) / S)
    scale = 1.0 if dn <= alpha else alpha / dn
    dual = scale * r_y / S - scale**2 * r_r / (2 * S)
    return primal, max(primal - dual, 0.0)


def _row_minimizer(a, b, lam):
    """``argmin_v sum_t (a_t v_t^2 / 2 - b_t v_t) + lam ||v||`` for ``||b|| > lam``.

    The minimizer is ``v_t = b_t rho / (a_t rho + lam)`` where ``rho = ||v||``
    solves ``sum_t b_t^2 / (a_t rho + lam)^2 = 1``, a convex decreasing
    equation: Newton's method from a point left of the root climbs to it
    monotonically. ``rho_0 = (||b|| - lam) / max(a)`` is such a point, and
    the root itself when all ``a_t`` are equal.
    """
    b2 = b * b
    rho = (math.sqrt(b2.sum()) - lam) / a.max()
    for _ in range(100):
        den = a * rho + lam
        ratio = b2 / (den * den)
        f = ratio.sum() - 1.0
        slope = -2.0 * (ratio * a / den).sum()
        if f <= 0.0 or slope == 0.0:
            break
        step = f / slope
        rho -= step
        if -step <= 1e-15 * rho:
            break
    return b * (rho / (a * rho + lam))


def _bcd_l21(prob, alpha, W, max_iter, tol, verbose):
    """Block coordinate descent over the rows of ``W`` on the Gram problem.

    Each row update is the exact minimization over that row: the Hessian of
    a row is diagonal (``C_t[j, j]`` for task ``t``), closed form when the
    Gram matrix is shared, one scalar equation otherwise. Rows that are zero
    and whose gradient is inside the ``alpha`` ball are skipped in a sweep;
    rows that the gap-safe rule (Ndiaye et al., 2015) proves zero are
    dropped for good. Stops when the duality gap is below ``tol`` times the
    data term at ``W = 0``. Returns ``W, n_iter, gap, threshold``.
    """
    d, T = W.shape
    S = prob.S
    lam = alpha * S
    c = prob.c
    Q = prob.matvec(W)
    L = prob.diagonal()
    # Per-task row curvatures C_t[j, j], one (n_tasks,) vector per row.
    curv = None if prob.shared else np.ascontiguousarray(np.einsum("tjj->jt", prob.C))
    # Row j of C_t is column j (C_t is symmetric); in the per-task case lay
    # them out so that the update of row j reads one contiguous (d, T) block.
    cols = prob.C if prob.shared else np.ascontiguousarray(prob.C.transpose(1, 2, 0))
    threshold = tol * prob.yy.sum() / (2 * S)
    alive = L > 0
    W[~alive] = 0.0
    inv_L = np.divide(1.0, L, out=np.zeros_like(L), where=alive)
    gap = np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        residual_corr = c - Q
        moving = np.any(W != 0, axis=1) | (np.einsum("jt,jt->j", residual_corr, residual_corr) > lam**2)
        # The shared update Q += C[j] delta^T is a rank-one BLAS update of
        # Q's (Fortran-ordered) transpose, in place.
        Q_T = Q.T
        for j in np.flatnonzero(alive & moving):
            w_j = W[j]
            if prob.shared:
                z = w_j + (c[j] - Q[j]) * inv_L[j]
                norm_z = math.sqrt(z.dot(z))
                moves = norm_z * L[j] > lam
                if moves:
                    new = z * (1.0 - lam * inv_L[j] / norm_z)
            else:
                lin = curv[j] * w_j + c[j] - Q[j]
                moves = lin.dot(lin) > lam * lam
                if moves:
                    new = _row_minimizer(curv[j], lin, lam)
            if not moves:
                if not w_j.any():
                    continue
                new = np.zeros(T)
            delta = new - w_j
            W[j] = new
            if prob.shared:
                dger(1.0, delta, cols[j], a=Q_T, overwrite_a=1)
            else:
                Q += cols[j] * delta
        if n_iter % 10 == 0:
            # Incremental updates drift: recompute from scratch now and then.
            Q = prob.matvec(W)
        _, gap = _squared_gap(prob, W, Q, alpha, "l21")
        if verbose:
            print(f"[SharedFeatureRegressor] epoch {n_iter}: duality gap {gap:.4g}")
        if gap <= threshold:
            break
        corr_norms = np.sqrt(np.einsum("jt,jt->j", c - Q, c - Q))
        top = corr_norms.max(initial=0.0)
        dual_scale = lam / top if top > lam else 1.0
        radius = np.sqrt(2 * gap * S) / lam
        screened = alive & (dual_scale * corr_norms / lam + radius * np.sqrt(L) < 1.0)
        for j in np.flatnonzero(screened & np.any(W != 0, axis=1)):
            Q -= cols[j][:, None] * W[j] if prob.shared else cols[j] * W[j]
            W[j] = 0.0
        alive &= ~screened
    return W, n_iter, gap, threshold


# ------------------------------------------------------------- data terms


def _loss_grad_chunk(start, stop, data, W, b, loss, epsilon):
    return data.linear_loss_grad(
        start, stop, W[:, start:stop].T, None if b is None else b[start:stop],
        LOSSES[loss], epsilon,
    )


def _data_loss_grad(data, W, b, loss, epsilon, n_jobs):
    """``D(W, b)`` and its gradients, from the per-task gradient blocks."""
    results, _ = map_task_chunks(
        _loss_grad_chunk, data.n_tasks, data, W, b, loss, epsilon, n_jobs=n_jobs
    )
    value = sum(r[0] for r in results) / data.S
    grad_W = np.vstack([r[1] for r in results]).T / data.S
    grad_b = np.concatenate([r[2] for r in results]) / data.S
    return value, grad_W, grad_b


def _max_eig_chunk(start, stop, data, fit_intercept):
    G = data.gram(start, stop, fit_intercept)[0]
    if G.shape[-1] == 0:
        return 0.0
    return float(np.linalg.eigvalsh(G)[:, -1].max(initial=0.0))


def _data_lipschitz(data, fit_intercept, n_jobs):
    """Lipschitz constant of the gradient of the squared data term in ``(W, b)``.

    It bounds Huber's too, whose second derivative is at most 1.
    """
    if data.layout == "wide" and data.complete.all():
        Z = data.X if not fit_intercept else np.column_stack([data.X, np.ones(len(data.X))])
        if data.sample_weight is not None:
            Z = Z * np.sqrt(data.sample_weight)[:, None]
        top = float(np.linalg.eigvalsh(Z.T @ Z)[-1]) if Z.size else 0.0
    else:
        results, _ = map_task_chunks(_max_eig_chunk, data.n_tasks, data, fit_intercept, n_jobs=n_jobs)
        top = max(results, default=0.0)
    return top / data.S if top > 0 else 1.0


def _start_intercepts(data, loss, epsilon, n_jobs):
    """Intercepts minimizing the data term at ``W = 0``, per task.

    Squared loss: the weighted means. Huber: the zero of the monotone
    derivative, found by bisection between the smallest and largest label.
    """
    d, T = data.n_features, data.n_tasks
    zeros = np.zeros((d, T))
    _, _, grad_b = _data_loss_grad(data, zeros, np.zeros(T), "squared", None, n_jobs)
    mean = -grad_b * data.S / np.maximum(data.task_weight_sums(), np.finfo(float).tiny)
    if loss == "squared":
        return mean
    labels = data.y if data.layout == "long" else data.Y[data.mask]
    lo, hi = np.full(T, labels.min()), np.full(T, labels.max())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        _, _, grad_b = _data_loss_grad(data, zeros, mid, loss, epsilon, n_jobs)
        up = grad_b < 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------ FISTA


def _fista(smooth, measure, prox, W, b, L, alpha, max_iter, verbose):
    """Accelerated proximal gradient with adaptive restart.

    ``smooth(W, b) -> (value, grad_W, grad_b)`` (``b`` and ``grad_b`` are
    ``None`` when the intercepts are eliminated); ``measure(W, b, value,
    grad_W, grad_b, norm_W) -> (stop_value, threshold)`` is evaluated at every
    iterate (``norm_W``: the penalty norm of ``W`` when known, else None).
    Restarts the momentum when it points uphill (O'Donoghue & Candes, 2015).
    Returns ``W, b, n_iter, stop_value, threshold``.
    """
    x_W, x_b = W, b
    y_W, y_b = W, b
    t = 1.0
    value, g_W, g_b = smooth(x_W, x_b)
    stop, threshold = measure(x_W, x_b, value, g_W, g_b, None)
    n_iter = 0
    if stop <= threshold:
        return x_W, x_b, n_iter, stop, threshold
    yg_W, yg_b = g_W, g_b
    for n_iter in range(1, max_iter + 1):
        new_W, new_norm = prox(y_W - yg_W / L, alpha / L)
        new_b = None if y_b is None else y_b - yg_b / L
        value, g_W, g_b = smooth(new_W, new_b)
        stop, threshold = measure(new_W, new_b, value, g_W, g_b, new_norm)
        if verbose:
            print(f"[SharedFeatureRegressor] iteration {n_iter}: optimality {stop:.4g}")
        if stop <= threshold:
            x_W, x_b = new_W, new_b
            break
        uphill = np.vdot(y_W - new_W, new_W - x_W)
        if y_b is not None:
            uphill += np.vdot(y_b - new_b, new_b - x_b)
        if uphill > 0:
            t = 1.0
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_next
        y_W = new_W + beta * (new_W - x_W)
        y_b = None if new_b is None else new_b + beta * (new_b - x_b)
        x_W, x_b, t = new_W, new_b, t_next
        if beta == 0.0:
            yg_W, yg_b = g_W, g_b
        else:
            _, yg_W, yg_b = smooth(y_W, y_b)
    return x_W, x_b, n_iter, stop, threshold


# ------------------------------------------------------------- factorized


def _shared_gram_factored(prob, alpha, d, T, k):
    """Factored objective and gradient on one shared Gram matrix.

    Never forms ``W = U V^T``: with ``tr(W^T C W) = <U^T C U, V^T V>`` and
    ``<c, W> = <c V, U>`` an evaluation costs ``O(d^2 k + d T k)`` instead of
    the ``O(d^2 T)`` of ``C W``.
    """
    C, c, S, yy = prob.C, prob.c, prob.S, prob.yy.sum()

    def objective(x):
        U, V = x[:d * k].reshape(d, k), x[d * k:].reshape(T, k)
        CU, cV = C @ U, c @ V
        UCU, VV = U.T @ CU, V.T @ V
        value = (yy / 2 - np.vdot(cV, U) + np.vdot(UCU, VV) / 2) / S
        value += 0.5 * alpha * (np.vdot(U, U) + np.vdot(V, V))
        grad_U = (CU @ VV - cV) / S + alpha * U
        grad_V = (V @ UCU - c.T @ U) / S + alpha * V
        return value, np.concatenate([grad_U.ravel(), grad_V.ravel()])

    return objective


def _factorized(smooth, W, b, k, alpha, max_iter, tol, prob=None):
    """Minimize ``D(U V^T, b) + alpha / 2 (||U||^2 + ||V||^2)`` by L-BFGS.

    The start is the balanced factorization of ``W``'s top ``k`` singular
    pairs, completed by small deterministic columns (``U = V = 0`` is a
    stationary point). ``prob``: the squared loss's Gram problem, used
    directly when its Gram matrix is shared. Returns ``W, b, n_iter``.
    """
    d, T = W.shape
    Us, s, Vts = np.linalg.svd(W, full_matrices=False)
    r = min(k, len(s))
    root = np.sqrt(s[:r])
    U0, V0 = np.zeros((d, k)), np.zeros((T, k))
    U0[:, :r], V0[:, :r] = Us[:, :r] * root, Vts[:r].T * root
    fill = 1e-3 * max(float(root.max(initial=0.0)), 1.0)
    rng = np.random.RandomState(0)
    weak = np.flatnonzero(np.linalg.norm(U0, axis=0) < fill)
    U0[:, weak] = fill * rng.standard_normal((d, len(weak))) / np.sqrt(max(d, 1))
    V0[:, weak] = fill * rng.standard_normal((T, len(weak))) / np.sqrt(max(T, 1))
    n_u, n_v = d * k, T * k

    def objective(x):
        U, V = x[:n_u].reshape(d, k), x[n_u:n_u + n_v].reshape(T, k)
        value, g_W, g_b = smooth(U @ V.T, None if b is None else x[n_u + n_v:])
        value += 0.5 * alpha * (np.vdot(U, U) + np.vdot(V, V))
        grad = [(g_W @ V + alpha * U).ravel(), (g_W.T @ U + alpha * V).ravel()]
        if b is not None:
            grad.append(g_b)
        return value, np.concatenate(grad)

    if prob is not None and prob.shared:
        fun = _shared_gram_factored(prob, alpha, d, T, k)
    else:
        fun = objective
    x0 = np.concatenate([U0.ravel(), V0.ravel()] + ([] if b is None else [b]))
    res = minimize(
        fun, x0, jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol * 1e-3, "ftol": 0.0},
    )
    U, V = res.x[:n_u].reshape(d, k), res.x[n_u:n_u + n_v].reshape(T, k)
    return U @ V.T, None if b is None else res.x[n_u + n_v:], int(max(res.nit, 1))


# ------------------------------------------------------------------ solve


def _resolve_solver(penalty, loss, n_components):
    # n_components bounds a rank; the L2,1 penalty has no rank to bound.
    if penalty == "trace" and n_components is not None:
        return "factorized"
    if penalty == "l21" and loss == "squared":
        return "bcd"
    return "fista"


def _solve(data, params, W, b, cache):
    """Minimize the objective of SPEC section 3 from ``(W, b)``.

    Parameters
    ----------
    data : LongTasks or WideTasks
    params : dict
        ``alpha, penalty, loss, epsilon, fit_intercept, n_components,
        max_iter, tol, n_jobs, verbose``.
    W : ndarray of shape (n_model_features, n_tasks)
        Start point, overwritten.
    b : ndarray of shape (n_tasks,)
        Start intercepts (used by the Huber loss).
    cache : dict
        Data-dependent quantities reused along a regularization path.

    Returns
    -------
    W, b, n_iter
    """
    alpha, penalty, loss = params["alpha"], params["penalty"], params["loss"]
    fit_intercept, n_jobs, tol = params["fit_intercept"], params["n_jobs"], params["tol"]
    max_iter, verbose = params["max_iter"], params["verbose"]
    solver = _resolve_solver(penalty, loss, params["n_components"])
    prox = _PENALTIES[penalty][2]
    if loss == "squared":
        if "gram" not in cache:
            cache["gram"] = _gram_problem(data, fit_intercept, n_jobs)
        prob = cache["gram"]

        def smooth(W, b):
            Q = prob.matvec(W, n_jobs)
            return prob.value(W, Q), (Q - prob.c) / prob.S, None

        def measure(W, b, value, g_W, g_b, norm_W):
            # Q = S * grad + c; the gap needs it, the gradient has it.
            _, gap = _squared_gap(prob, W, g_W * prob.S + prob.c, alpha, penalty, norm_W)
            return gap, tol * prob.yy.sum() / (2 * prob.S)

        b = None
        if solver == "bcd":
            W, n_iter, stop, threshold = _bcd_l21(prob, alpha, W, max_iter, tol, verbose)
    else:
        def smooth(W, b):
            return _data_loss_grad(
                data, W, b if fit_intercept else None, loss, params["epsilon"], n_jobs
            )

        def measure(W, b, value, g_W, g_b, norm_W):
            # Norm of the prox-gradient mapping: zero exactly at the optimum.
            mapping = cache["L"] * (W - prox(W - g_W / cache["L"], alpha / cache["L"])[0])
            stop = float(np.abs(mapping).max(initial=0.0))
            if fit_intercept:
                stop = max(stop, float(np.abs(g_b).max(initial=0.0)))
            return stop, tol

        if not fit_intercept:
            b = None
    if solver != "bcd" and "L" not in cache:
        cache["L"] = (
            prob.lipschitz() if loss == "squared"
            else _data_lipschitz(data, fit_intercept, n_jobs)
        )
    L = cache.get("L")
    if solver == "fista":
        W, b, n_iter, stop, threshold = _fista(
            smooth, measure, prox, W, b, L, alpha, max_iter, verbose
        )
    elif solver == "factorized":
        W, b, n_iter = _factorized(
            smooth, W, b, params["n_components"], alpha, max_iter, tol,
            prob if loss == "squared" else None,
        )
        value, g_W, g_b = smooth(W, b)
        spectral = _trace_dual_norm(g_W)
        # One proximal step from the factored optimum: a fixed point there,
        # and it sets the singular values that only tend to zero exactly to 0.
        W, norm_W = prox(W - g_W / L, alpha / L)
        if b is not None:
            b = b - g_b / L
        stop, threshold = measure(W, b, *smooth(W, b), norm_W)
        k = params["n_components"]
        if stop > threshold and spectral <= alpha * (1 + 1e-6):
            # Large enough k, but L-BFGS stalls on the last digits of a
            # nearly flat objective: polish by proximal gradient, whose
            # iterates stay close to this low-rank point.
            W, b, more, stop, threshold = _fista(
                smooth, measure, prox, W, b, L, alpha, max_iter, verbose
            )
            n_iter += more
        elif stop > threshold and np.linalg.matrix_rank(W) >= k:
            warnings.warn(
                f"n_components={k} is too small: at the optimum of the factored "
                f"problem the gradient's spectral norm {spectral:.6g} exceeds "
                f"alpha={alpha:g}, so the convex optimum has rank above {k}. "
                "Increase n_components or alpha.",
                ConvergenceWarning,
            )
            stop = threshold = 0.0
    if stop > threshold:
        warnings.warn(
            f"The {solver} solver did not converge in {n_iter} iterations: "
            f"optimality measure {stop:.3g} > {threshold:.3g}. Increase max_iter "
            "or tol, or scale the features.",
            ConvergenceWarning,
        )
    if loss == "squared":
        b = prob.intercepts(W)
    elif b is None:
        b = np.zeros(data.n_tasks)
    # A start that is already optimal still cost one optimality check; count
    # it, as scikit-learn's solvers report at least one iteration.
    return W, b, max(n_iter, 1)


def _components(W, penalty):
    """Shared feature directions of ``W`` (one per row of the result)."""
    d, T = W.shape
    if penalty == "l21":
        return np.eye(d)[np.any(W != 0, axis=1)]
    if W.size == 0:
        return np.zeros((0, d))
    U, s, _ = np.linalg.svd(W, full_matrices=False)
    rank = int(np.count_nonzero(s > s[0] * max(d, T) * np.finfo(float).eps)) if s[0] > 0 else 0
    return np.ascontiguousarray(U[:, :rank].T)


class SharedFeatureRegressor(TransformerMixin, MultiTaskRegressorBase):
    """Multi-task linear regression whose tasks share features.

    With ``W`` the ``(n_model_features, n_tasks)`` matrix of task coefficients
    (Argyriou, Evgeniou & Pontil, 2008), the estimator minimizes

    .. math::

        \\frac{1}{S} \\sum_{(i, t) \\text{ observed}} s_i\\, \\ell(y_{it} - x_i^\\top w_t - b_t)
        + \\alpha\\, \\Omega(W)

    with :math:`S = \\sum_i s_i`, :math:`\\ell(r) = r^2 / 2` (``loss='squared'``)
    or Huber's loss, unpenalized intercepts :math:`b_t`, and

    - ``penalty='trace'``: :math:`\\Omega(W) = \\|W\\|_*`, the sum of singular
      values: the tasks share a low-dimensional subspace of the features;
    - ``penalty='l21'``: :math:`\\Omega(W) = \\sum_j \\|W_{j,:}\\|_2`: the tasks
      select the same features. With a complete wide ``y`` and the squared
      loss this is :class:`sklearn.linear_model.MultiTaskLasso`.

    It is also a transformer: ``transform`` projects the model features on
    the shared directions ``components_``.

    Parameters
    ----------
    alpha : float, default=1.0
        Strength of the penalty. Must be positive.
    penalty : {'trace', 'l21'}, default='trace'
        The shared structure: a low-dimensional subspace (``'trace'``) or a
        common set of selected features (``'l21'``).
    n_components : int, default=None
        ``penalty='trace'`` only (ignored by ``'l21'``): an upper bound ``k``
        on the rank of ``W``,
        for a faster factorized solver (``W = U V^T``) on large problems. At
        the end the solver checks the convex optimality condition and warns
        when ``k`` was too small. ``None`` uses proximal gradient with singular
        value thresholding.
    loss : {'squared', 'huber'}, default='squared'
        Loss of a residual.
    epsilon : float, default=1.35
        Threshold of the Huber loss, in the units of ``y``.
    fit_intercept : bool, default=True
        Whether to fit an unpenalized intercept per task.
    task_column : int or str, default=None
        ``None``: wide layout, ``y`` has one column per task (NaN marks a
        missing label). Otherwise the column of ``X`` (int position, negative
        allowed, or DataFrame column name) that holds each row's task label:
        long layout, ``y`` is 1-D.
    handle_unknown : {'warn', 'shared', 'error'}, default='warn'
        Long layout: how to predict a task label that fit never saw. It is
        predicted by the mean of the task coefficients and intercepts with a
        ``UserWarning`` (``'warn'``) or silently (``'shared'``), or refused
        with a ``ValueError`` (``'error'``).
    max_iter : int, default=1000
        Maximum number of iterations (epochs of block coordinate descent,
        proximal gradient steps, or L-BFGS iterations).
    tol : float, default=1e-4
        Squared loss: stop when the duality gap is below ``tol`` times the
        data term at ``W = 0``. Huber loss: stop when the largest entry of
        the prox-gradient mapping is below ``tol``.
    warm_start : bool, default=False
        Start from the previous solution (tasks matched by label in the long
        layout) instead of zero.
    n_jobs : int, default=None
        Number of jobs for the per-task steps (Gram matrices, gradient
        blocks), through joblib. ``None`` means 1 (a plain loop) even inside a
        :func:`joblib.parallel_config` context. ``-1`` means all processors.
    verbose : int, default=0
        Print the optimality measure at every iteration when positive.

    Attributes
    ----------
    coef_ : ndarray of shape (n_tasks, n_model_features) or (n_model_features,)
        Task coefficients :math:`w_t` (the columns of ``W``); row ``k``
        belongs to ``tasks_[k]``. 1-D when a 1-D ``y`` was passed in the wide
        layout.
    intercept_ : ndarray of shape (n_tasks,) or float
        Task intercepts :math:`b_t` (0 when ``fit_intercept=False``).
    components_ : ndarray of shape (`n_components_`, n_model_features)
        Shared feature directions: the left singular vectors of ``W`` with
        non-zero singular value (``'trace'``), or one unit row per selected
        feature (``'l21'``).
    n_components_ : int
        Number of shared directions.
    tasks_ : ndarray of shape (n_tasks,)
        Task labels in sorted order (column indices in the wide layout).
    n_tasks_ : int
        Number of tasks.
    n_iter_ : int
        Number of iterations run by the solver.
    n_features_in_ : int
        Number of columns of ``X`` seen in fit, task column included.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names of ``X`` seen in fit, when they are all strings.

    See Also
    --------
    shared_feature_path : The whole regularization path, with warm starts.
    SharedParamRegressor : Task models pulled towards a shared model.
    SharedObjectiveRegressor : Tasks share a learned representation, with
        task weights that adapt during training.
    sklearn.linear_model.MultiTaskLasso : ``penalty='l21'`` for a complete
        wide ``y``.

    Notes
    -----
    Solvers. Squared loss: the data are reduced once to centered Gram
    matrices (``O(n d^2)``), after which every iteration costs ``O(d^2 T)``
    at most, independent of the number of rows; ``'l21'`` runs block
    coordinate descent over the rows of ``W`` with gap-safe screening,
    ``'trace'`` runs accelerated proximal gradient with singular value
    thresholding, both stopped by the duality gap. With ``n_components`` the
    trace norm is minimized in factored form by L-BFGS and the result is
    checked against the convex optimality condition. Huber loss: accelerated
    proximal gradient on the data, stopped by the prox-gradient mapping.

    Memory. In the long layout, or with missing labels, the squared loss keeps
    one ``d x d`` Gram matrix per task (``8 n_tasks d^2`` bytes); the complete
    wide layout keeps one in total.

    References
    ----------
    A. Argyriou, T. Evgeniou and M. Pontil, "Convex multi-task feature
    learning", Machine Learning 73(3), 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl import SharedFeatureRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(100, 5))
    >>> Y = X[:, :2] @ rng.normal(size=(2, 3)) + 0.1 * rng.normal(size=(100, 3))
    >>> model = SharedFeatureRegressor(alpha=0.1, penalty="l21").fit(X, Y)
    >>> model.n_components_
    2
    >>> model.transform(X).shape
    (100, 2)
    """

    _fits_from_statistics = True

    _parameter_constraints = {
        **MultiTaskRegressorBase._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "penalty": [StrOptions({"trace", "l21"})],
        "n_components": [None, Interval(Integral, 1, None, closed="left")],
        "loss": [StrOptions({"squared", "huber"})],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        alpha=1.0,
        *,
        penalty="trace",
        n_components=None,
        loss="squared",
        epsilon=1.35,
        fit_intercept=True,
        task_column=None,
        handle_unknown="warn",
        max_iter=1000,
        tol=1e-4,
        warm_start=False,
        n_jobs=None,
        verbose=0,
    ):
        self.alpha = alpha
        self.penalty = penalty
        self.n_components = n_components
        self.loss = loss
        self.epsilon = epsilon
        self.fit_intercept = fit_intercept
        self.task_column = task_column
        self.handle_unknown = handle_unknown
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _validate_fit_input(self, X, y, sample_weight):
        data, fitted = super()._validate_fit_input(X, y, sample_weight)
        if (
            self.warm_start
            and hasattr(self, "coef_")
            and self.task_column is None
            and data.n_tasks != self.n_tasks_
        ):
            raise ValueError(
                f"y has {data.n_tasks} column(s) but the previous fit had "
                f"{self.n_tasks_}: with warm_start=True the wide layout needs the "
                "same tasks. Set warm_start=False to fit new tasks."
            )
        # The warm start matches tasks by label, which only fit knows.
        data.task_labels = fitted["tasks_"]
        return data, fitted

    def _params(self):
        return {
            "alpha": self.alpha, "penalty": self.penalty, "loss": self.loss,
            "epsilon": self.epsilon, "fit_intercept": self.fit_intercept,
            "n_components": self.n_components, "max_iter": self.max_iter,
            "tol": self.tol, "n_jobs": self.n_jobs, "verbose": self.verbose,
        }

    def _start(self, data):
        """Start point: the previous solution with ``warm_start``, else zero."""
        d, T = data.n_features, data.n_tasks
        W, b = np.zeros((d, T)), None
        if self.warm_start and hasattr(self, "coef_"):
            old_coef = np.atleast_2d(self.coef_)
            old_b = np.atleast_1d(self.intercept_)
            labels = data.task_labels
            if old_coef.shape[1] == d and (self.tasks_.dtype.kind == "O") == (labels.dtype.kind == "O"):
                pos = np.minimum(np.searchsorted(self.tasks_, labels), len(self.tasks_) - 1)
                found = self.tasks_[pos] == labels
                W[:, found] = old_coef[pos[found]].T
                b = np.zeros(T)
                b[found] = old_b[pos[found]]
        return W, b

    def _fit(self, data, cache=None):
        W, b = self._start(data)
        if b is None and self.loss == "huber" and self.fit_intercept:
            b = _start_intercepts(data, self.loss, self.epsilon, self.n_jobs)
        W, b, n_iter = _solve(data, self._params(), W, b, {} if cache is None else cache)
        components = _components(W, self.penalty)
        coef = np.ascontiguousarray(W.T)
        intercept = b if self.fit_intercept else np.zeros(data.n_tasks)
        weightless = data.task_weight_sums() <= 0
        if weightless.any() and not weightless.all():
            # A task whose rows all weigh 0 is absent from the objective (its
            # column of W stays 0): predict it like an unknown task, so that a
            # zero weight means the same as removing the rows.
            coef[weightless] = coef[~weightless].mean(axis=0)
            intercept[weightless] = intercept[~weightless].mean()
        return {
            "coef_": coef,
            "intercept_": intercept,
            "components_": components,
            "n_components_": len(components),
            "n_iter_": n_iter,
        }

    def transform(self, X):
        """Project the model features of ``X`` on the shared directions.

        Parameters
        ----------
        X : {array-like, DataFrame} of shape (n_samples, n_features)
            Samples, with the task column in the long layout (it is dropped).

        Returns
        -------
        X_new : ndarray of shape (n_samples, `n_components_`)
            ``X_model @ components_.T``.
        """
        check_is_fitted(self)
        if self.task_column is None:
            Xf = validate_data(self, X, reset=False, dtype=np.float64)
        else:
            _, Xf = self._validate_long_X(X, reset=False)
        return Xf @ self.components_.T

    def get_feature_names_out(self, input_features=None):
        """Get the names of the outputs of ``transform``.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Input feature names; ``None`` uses ``feature_names_in_`` if set,
            else ``x0, x1, ...``.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``penalty='l21'``: the names of the selected features.
            ``penalty='trace'``: ``sharedfeatureregressor0``, ... one per
            component.
        """
        check_is_fitted(self)
        if self.penalty == "trace":
            prefix = type(self).__name__.lower()
            return np.asarray([f"{prefix}{i}" for i in range(self.n_components_)], dtype=object)
        names = getattr(self, "feature_names_in_", None)
        if input_features is not None:
            input_features = np.asarray(input_features, dtype=object)
            if len(input_features) != self.n_features_in_ or (
                names is not None and not np.array_equal(input_features, names)
            ):
                raise ValueError(
                    "input_features is not equal to feature_names_in_ or does not "
                    f"have n_features_in_={self.n_features_in_} entries."
                )
            names = input_features
        if names is None:
            names = np.asarray([f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        if self.task_column is not None:
            pos = (
                list(names).index(self.task_column)
                if isinstance(self.task_column, str)
                else self.task_column % self.n_features_in_
            )
            names = np.delete(names, pos)
        selected = np.flatnonzero(self.components_.any(axis=0))
        return np.asarray(names, dtype=object)[selected]


def _alpha_max(data, penalty, loss, epsilon, fit_intercept, n_jobs):
    """Smallest ``alpha`` whose solution is ``W = 0``: the dual norm of the
    data term's gradient at ``W = 0`` with the intercepts at their optimum."""
    T = data.n_tasks
    b = _start_intercepts(data, loss, epsilon, n_jobs) if fit_intercept else None
    _, grad_W, _ = _data_loss_grad(data, np.zeros((data.n_features, T)), b, loss, epsilon, n_jobs)
    return _PENALTIES[penalty][1](grad_W)


def shared_feature_path(
    X, y, alphas=None, *, n_alphas=100, eps=1e-3, sample_weight=None, **params
):
    """Compute the solutions of :class:`SharedFeatureRegressor` along a path of ``alpha``.

    Like :func:`sklearn.linear_model.lasso_path`: the path starts at the
    smallest ``alpha`` whose solution is ``W = 0`` and goes down, each fit
    warm-started from the previous one. The data are validated, and the Gram
    matrices formed, once.

    Parameters
    ----------
    X : {array-like, DataFrame} of shape (n_samples, n_features)
        Training data (with the task column in the long layout).
    y : array-like of shape (n_samples,) or (n_samples, n_tasks)
        Targets, as in :meth:`SharedFeatureRegressor.fit`.
    alphas : array-like of float, default=None
        The values of ``alpha``, fitted in decreasing order. ``None``:
        ``n_alphas`` values log-spaced from ``alpha_max`` down to
        ``eps * alpha_max``.
    n_alphas : int, default=100
        Number of values when ``alphas`` is None.
    eps : float, default=1e-3
        ``alpha_min / alpha_max`` when ``alphas`` is None.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights.
    **params
        Other parameters of :class:`SharedFeatureRegressor` (``penalty``,
        ``loss``, ``task_column``, ``tol``, ...); ``alpha`` and ``warm_start``
        are set by the path.

    Returns
    -------
    alphas : ndarray of shape (n_alphas,)
        The values of ``alpha``, decreasing.
    coefs : ndarray of shape (n_tasks, n_model_features, n_alphas)
        Coefficients along the path ((n_model_features, n_alphas) for a 1-D
        wide ``y``), tasks in the order of ``tasks_``.
    intercepts : ndarray of shape (n_tasks, n_alphas)
        Intercepts along the path ((n_alphas,) for a 1-D wide ``y``).

    See Also
    --------
    SharedFeatureRegressor : One fit at one ``alpha``.
    sklearn.linear_model.lasso_path : The same for the lasso.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl import shared_feature_path
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(50, 4))
    >>> Y = X[:, :1] @ rng.normal(size=(1, 3)) + 0.1 * rng.normal(size=(50, 3))
    >>> alphas, coefs, intercepts = shared_feature_path(X, Y, n_alphas=5, penalty="l21")
    >>> coefs.shape
    (3, 4, 5)
    >>> bool(np.all(coefs[:, :, 0] == 0))
    True
    """
    if "alpha" in params or "warm_start" in params:
        raise ValueError("shared_feature_path sets alpha and warm_start: do not pass them.")
    model = SharedFeatureRegressor(warm_start=True, **params)
    model._validate_params()
    data, fitted = model._validate_fit_input(X, y, sample_weight)
    if alphas is None:
        alpha_max = _alpha_max(
            data, model.penalty, model.loss, model.epsilon, model.fit_intercept, model.n_jobs
        )
        # At alpha_max itself W = 0; a zero gradient (constant y) gives a path
        # of zeros at any positive alpha.
        alpha_max = max(alpha_max, np.finfo(float).tiny)
        alphas = alpha_max * np.logspace(0, np.log10(eps), n_alphas)
    else:
        alphas = np.sort(np.asarray(alphas, dtype=np.float64).ravel())[::-1]
        if not np.all(alphas > 0):
            raise ValueError(f"alphas must be positive, got {alphas.min()}.")
    cache = {}
    coefs, intercepts = [], []
    for alpha in alphas:
        model.alpha = float(alpha)
        result = model._fit(data, cache)
        model.coef_, model.intercept_ = result["coef_"], result["intercept_"]
        model.tasks_, model.n_tasks_ = fitted["tasks_"], fitted["n_tasks_"]
        coefs.append(result["coef_"])
        intercepts.append(result["intercept_"])
    coefs, intercepts = np.stack(coefs, axis=-1), np.stack(intercepts, axis=-1)
    if fitted["_single_task"]:
        coefs, intercepts = coefs[0], intercepts[0]
    return alphas, coefs, intercepts
