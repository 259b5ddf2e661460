"""REML estimation of the task covariance for ``SharedParamRegressor(alpha_task='auto')``.

The model is the linear mixed model with random intercepts and random slopes,

    y_t = Z_t (theta_0 + u_t) + e_t,   u_t ~ N(0, Sigma),   e_t ~ N(0, sigma^2 S_t^-1),

with ``Z_t = [X_t, 1]`` and ``S_t`` the task's sample weights (precision
weights). Write ``Sigma = sigma^2 L L^T`` with ``L`` lower triangular (the
relative covariance factor of Bates et al., lme4). Everything the restricted
likelihood needs comes from the per-task sufficient statistics
``G_t = Z_t^T S_t Z_t``, ``g_t = Z_t^T S_t y_t``, ``y_t^T S_t y_t``: with
``A_t = I + L^T G_t L`` (always positive definite, also when ``L`` is
singular) Woodbury's identity gives, for ``V_t = S_t^-1 + Z_t L L^T Z_t^T``,

    W_t = Z_t^T V_t^-1 Z_t = G_t - G_t L A_t^-1 L^T G_t
    w_t = Z_t^T V_t^-1 y_t = g_t - G_t L A_t^-1 L^T g_t
    e_t = y_t^T V_t^-1 y_t = y_t^T S_t y_t - g_t^T L A_t^-1 L^T g_t
    log|V_t| = log|A_t| - sum log s_i.

With ``C = sum_t W_t``, ``c = sum_t w_t``, ``theta = C^-1 c`` and the
residual quadratic form ``Q = sum_t e_t - c^T theta``, the profiled REML
deviance (``sigma^2 = Q / (N - r)`` profiled out, ``r`` the rank of the fixed
design) is

    f(L) = sum_t log|A_t| + log|C| + (N - r) log Q

and its gradient with respect to ``Psi = L L^T`` is

    df/dPsi = sum_t (W_t - W_t C^-1 W_t) - (N - r) / Q * sum_t h_t h_t^T,
    h_t = w_t - W_t theta,

so ``df/dL = 2 (df/dPsi) L``. One pass over the rows forms the statistics;
each evaluation then costs O(n_tasks p^3), with the per-task part run through
the joblib helper. The diagonal of ``L`` is bounded below by 0, so a variance
that is truly zero is reached on the boundary, where ``A_t`` stays well
conditioned (no NaN).
"""

import numpy as np
from scipy.linalg import lapack

from ._linalg import spd_back_stacked, spd_forward_stacked
from ._parallel import map_task_chunks

# Restarts from a boundary point where a zero variance should become positive.
_MAX_RESTARTS = 10

# Variances below this fraction of the largest, which the gradient pushes
# towards zero, are tried at exactly zero (:meth:`REMLProblem._snap_to_boundary`).
_SNAP_RATIO = 1e-2


def _task_terms(start, stop, G, g, yy, L, posterior_at=None):
    """``log|A_t|``, ``W_t``, ``w_t``, ``e_t`` for tasks [start, stop).

    With ``A_t = C_t C_t^T`` and ``[Y_t, y_t] = C_t^-1 L^T [G_t, g_t]``, the
    Woodbury terms are ``W_t = G_t - Y_t^T Y_t``, ``w_t = g_t - Y_t^T y_t``
    and ``e_t = y_t^T S_t y_t - |y_t|^2``: one forward substitution, no full
    solve. With ``posterior_at`` (the fixed effects ``theta``), the posterior
    means ``L A_t^-1 L^T (g_t - G_t theta)`` of the task deviations instead.
    """
    G, g, yy = G[start:stop], g[start:stop], yy[start:stop]
    GL = G @ L
    A = np.matmul(L.T, GL)
    diag = np.arange(A.shape[1])
    A[:, diag, diag] += 1.0
    rhs = np.concatenate([GL.transpose(0, 2, 1), (g @ L)[..., None]], axis=2)
    Y, logdet, factor = spd_forward_stacked(A, rhs)
    YG, yg = Y[..., :-1], Y[..., -1]
    if posterior_at is not None:
        z = spd_back_stacked(factor, (yg - YG @ posterior_at)[..., None])[..., 0]
        return (z @ L.T,)
    W = G - YG.transpose(0, 2, 1) @ YG
    W = 0.5 * (W + W.transpose(0, 2, 1))
    w = g - np.einsum("krp,kr->kp", YG, yg)
    e = yy - np.einsum("kr,kr->k", yg, yg)
    return logdet, W, w, e


def _all_task_terms(G, g, yy, L, n_jobs, posterior_at=None):
    p = G.shape[1]
    results, _ = map_task_chunks(
        _task_terms, len(G), G, g, yy, L, posterior_at, n_jobs=n_jobs, cost=8 * len(G) * p**3
    )
    return [np.concatenate([r[i] for r in results]) for i in range(len(results[0]))]


def _fixed_basis(G_pooled):
    """Orthonormal basis of the column space of the pooled fixed design.

    Collinear fixed effects (a complete one-hot block next to the intercept)
    make ``C`` singular; the restricted likelihood is then defined on a
    full-rank basis of the same column space.
    """
    evals, evecs = np.linalg.eigh(G_pooled)
    keep = evals > evals.max() * len(evals) * np.finfo(float).eps
    return evecs[:, keep]


class REMLProblem:
    """Profiled REML deviance of the random-intercept, random-slope model."""

    def __init__(self, G, g, yy, n_obs, log_weights, n_jobs=None, has_intercept=True):
        self.G, self.g, self.yy = G, g, yy
        self.has_intercept = has_intercept
        self.p = G.shape[1]
        self.basis = _fixed_basis(G.sum(axis=0))
        self.rank = self.basis.shape[1]
        self.n_obs = n_obs
        self.dof = n_obs - self.rank
        if self.dof <= 0:
            raise ValueError(
                f"alpha_task='auto' needs more observed labels ({n_obs}) than "
                f"independent fixed effects ({self.rank}) to estimate the noise variance."
            )
        self.log_weights = log_weights
        self.n_jobs = n_jobs
        self.tril = np.tril_indices(self.p)

    def factor(self, params):
        L = np.zeros((self.p, self.p))
        L[self.tril] = params
        return L

    def evaluate(self, L, gradient=True):
        """Deviance, its gradient in ``L`` and the profiled estimates."""
        logdet, W, w, e = _all_task_terms(self.G, self.g, self.yy, L, self.n_jobs)
        Qb = self.basis
        C = Qb.T @ W.sum(axis=0) @ Qb
        c = Qb.T @ w.sum(axis=0)
        # C = U^T U and K = C^-1 = M M^T with M = U^-1 (on the basis Qb). LAPACK
        # directly: these evaluations take a millisecond, and scipy's
        # wrappers add a good part of that.
        U, info = lapack.dpotrf(C, lower=0, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError("the fixed-part matrix is not positive definite")
        Uinv, _ = lapack.dtrtri(U, lower=0)
        M = Qb @ Uinv
        beta = Uinv @ (Uinv.T @ c)
        theta = Qb @ beta
        rss = e.sum() - c @ beta
        if not rss > 0:
            raise ValueError(
                "alpha_task='auto': the residual sum of squares is zero (the fixed "
                "part fits y exactly), so the noise variance cannot be estimated."
            )
        logdet_C = 2.0 * np.log(np.diag(U)).sum()
        dev = logdet.sum() + logdet_C + self.dof * np.log(rss)
        out = {"deviance": dev, "rss": rss, "theta": theta, "W": W, "w": w}
        if gradient:
            h = w - W @ theta
            p = self.p
            WM = W @ M
            # sum_t W_t K W_t as one (p, T r) x (T r, p) product.
            WMf = WM.transpose(1, 0, 2).reshape(p, -1)
            dPsi = W.sum(axis=0) - WMf @ WMf.T
            dPsi -= self.dof / rss * (h.T @ h)
            out["grad_psi"] = dPsi
            out["grad"] = 2.0 * (dPsi @ L)
            out.update(K_factor=M, WM=WM, h=h)
        return out

    def posterior_means(self, L, theta):
        """Posterior means ``u_t = L A_t^-1 L^T (g_t - G_t theta)`` of the task deviations."""
        return _all_task_terms(self.G, self.g, self.yy, L, self.n_jobs, posterior_at=theta)[0]

    def hessian(self, out, L):
        """Hessian of the deviance in the entries of ``L`` (lower triangle).

        ``out`` is :meth:`evaluate`'s result at ``L`` with the gradient. With
        ``M_E = sum_t W_t E W_t``, ``K`` the inverse of the fixed-part matrix
        ``C`` (on its column space), ``m`` the degrees of freedom and ``Q``
        the residual quadratic form, the second derivative of the deviance in
        ``Psi`` along symmetric directions ``E``, ``F`` is

            - sum_t tr(W_t F W_t E) - tr(K M_F K M_E)
            + sum_t [tr(K W_t F W_t E W_t) + tr(K W_t E W_t F W_t)]
            + 2 m / Q [sum_t h_t^T E W_t F h_t - (sum_t W_t E h_t)^T K (sum_t W_t F h_t)]
            - m / Q^2 (sum_t h_t^T E h_t) (sum_t h_t^T F h_t),

        from ``dW_t = -W_t E W_t``, ``dw_t = -W_t E w_t``, ``de_t = -w_t^T E
        w_t``. The chain rule through ``Psi = L L^T`` adds
        ``tr(df/dPsi (dL dL'^T + dL' dL^T))``. Every term is a handful of
        ``(p^2, n_tasks) x (n_tasks, p^2)`` products plus one ``p^6`` product
        for the fixed part, independent of the number of rows.
        """
        W, h, M = out["W"], out["h"], out["K_factor"]
        n_tasks, p, _ = W.shape
        pp = p * p
        m, Q = self.dof, out["rss"]
        rows, cols = self.tril

        def along_l(T):
            # T[..., c, d] is linear in F_cd; contract with the direction
            # dPsi / dL_kl = e_k L_l^T + L_l e_k^T of every (k, l).
            return ((T + T.swapaxes(-1, -2)) @ L)[..., rows, cols]

        Wf = W.reshape(n_tasks, pp)
        WW = Wf.T @ Wf
        WM = out["WM"]
        Rf = (WM @ WM.transpose(0, 2, 1)).reshape(n_tasks, pp)
        Hf = (h[:, :, None] * h[:, None, :]).reshape(n_tasks, pp)
        # Terms whose coefficient of E_ab F_cd is a sum over tasks of
        # X_t[a, d] Y_t[b, c]: indexed ((a, d), (b, c)), reordered to (a, b, c, d).
        X = (Rf + (2.0 * m / Q) * Hf).T @ Wf + Wf.T @ Rf - WW
        XJ = along_l(X.reshape(p, p, p, p).transpose(0, 2, 3, 1))
        HL = along_l(np.moveaxis(XJ, -1, 0)).T
        # The fixed part, -tr(K M_F K M_E) with K = M M^T, as -Y^T Y where
        # Y_E = M^T M_E M and M_E = sum_t W_t E W_t; N[i, j, a, b] = (M_E)_ij
        # for E = e_a e_b^T.
        N = WW.reshape(p, p, p, p).transpose(0, 3, 1, 2)
        Y = (M.T @ np.moveaxis(along_l(N), -1, 0) @ M).reshape(len(rows), -1)
        HL -= Y @ Y.T
        B = M.T @ along_l((W.transpose(1, 2, 0).reshape(pp, n_tasks) @ h).reshape(p, p, p))
        HL -= (2.0 * m / Q) * (B.T @ B)
        v = 2.0 * (h.T @ h @ L)[rows, cols]
        HL -= (m / Q**2) * np.outer(v, v)
        # Second derivative of Psi = L L^T itself, against df/dPsi.
        HL += 2.0 * out["grad_psi"][np.ix_(rows, rows)] * (cols[:, None] == cols[None, :])
        return 0.5 * (HL + HL.T)

    def log_likelihood(self, deviance):
        """REML log-likelihood at a profiled deviance (statsmodels' and lme4's convention)."""
        n = self.dof
        return -0.5 * (deviance + n * (1.0 + np.log(2.0 * np.pi / n))) + 0.5 * self.log_weights

    def fit(self, max_iter, tol, verbose=0):
        """Minimize the deviance over ``L`` by Newton's method.

        The optimization runs on an orthonormal basis of the standardized
        columns (centered when there is an intercept, unit variance, then
        rotated onto the column space of the pooled design): ``Z' = Z B``
        leaves the likelihood unchanged with ``L = B L'``, makes the entries
        of ``L'`` comparable, and drops the directions no task's design
        reaches (a complete one-hot block next to the intercept), along which
        the deviance is flat and Newton's system singular.

        Newton's method runs on the lower triangle of ``L'`` with the exact
        Hessian (:meth:`hessian`), damped Levenberg-Marquardt style (the
        Hessian is shifted towards the identity, more after a step that did
        not lower the deviance, less after one that did; :meth:`_newton`).
        ``Psi = L L^T`` is positive semi-definite for every ``L``, so no step
        leaves the feasible set and a variance that is truly zero is reached
        as a zero column of ``L``: after each step, small variances that the
        gradient pushes towards zero are tried at exactly zero
        (:meth:`_snap_to_boundary`), since Newton's method in ``L`` only
        approaches them linearly.

        Optimality is checked over covariance matrices, not only over ``L``:
        a zero column of ``L`` is a stationary point of the deviance in ``L``
        whatever the gradient in ``Psi`` says, so at the end the gradient in
        ``Psi`` must be positive semi-definite (no added variance in any
        direction lowers the deviance). When it is not, the fit steps along
        the offending direction and restarts.

        The deviance is a sum over the ``N`` observed labels; the fit stops
        when the gradient in ``L`` and the most negative eigenvalue of the
        gradient in ``Psi``, divided by ``N``, are below ``tol``.

        Returns
        -------
        L : ndarray of shape (p, r)
            ``Psi = L L^T``; ``r`` is the rank of the pooled design.
        n_iter : int
            Newton iterations, over all restarts.
        kkt : float
            The larger of the two optimality measures, divided by ``N``.
        message : str
            Why the last Newton run stopped.
        """
        T = self._standardizer()
        B = T @ _fixed_basis(T.T @ self.G.sum(axis=0) @ T)
        inner = REMLProblem(
            B.T @ self.G @ B, self.g @ B, self.yy, self.n_obs, self.log_weights,
            self.n_jobs, self.has_intercept,
        )
        abs_tol = tol * self.n_obs
        L = np.diag(np.full(inner.p, np.sqrt(0.1)))
        n_iter = 0
        for _ in range(_MAX_RESTARTS):
            L, nit, grad_norm, message, out = inner._newton(
                L, max_iter - n_iter, abs_tol, verbose
            )
            n_iter += nit
            violation, direction = inner._cone_violation(out["grad_psi"])
            if violation <= abs_tol or n_iter >= max_iter:
                break
            L = inner._step_off_boundary(L, direction)
        return B @ L, max(n_iter, 1), max(grad_norm, violation) / self.n_obs, message

    def _newton(self, L, max_iter, tol, verbose):
        """Levenberg-Marquardt-damped Newton on the lower triangle of ``L``.

        Stops when ``max|grad| <= tol``. The damping ``mu`` (the step solves
        ``(H + mu I) s = -grad``) follows Nielsen's rule from the ratio of the
        actual to the predicted decrease: it falls towards 0 (pure Newton,
        quadratic convergence) near the optimum and rises where the
        quadratic model is poor or ``H`` is indefinite.
        """
        out = self.evaluate(L)
        x = L[self.tril]
        grad = out["grad"][self.tril]
        H = None
        mu, nu = 0.0, 2.0
        n_iter = 0
        message = "maximum number of iterations reached"
        while n_iter < max_iter:
            if np.max(np.abs(grad)) <= tol:
                message = "gradient below tolerance"
                break
            n_iter += 1
            if H is None:
                H = self.hessian(out, L)
                # Damping restarts from this scale when a step fails.
                mu_scale = 1e-4 * max(np.abs(np.diag(H)).max(initial=0.0), 1e-12)
            step, mu = _damped_step(H, grad, mu)
            predicted = -(grad @ step + 0.5 * step @ H @ step)
            new = self.evaluate(self.factor(x + step))
            actual = out["deviance"] - new["deviance"]
            rho = actual / predicted if predicted > 0 else -1.0
            if rho > 0:
                L, out = self._snap_to_boundary(self.factor(x + step), new)
                x, H = L[self.tril], None
                grad = out["grad"][self.tril]
                mu *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                nu = 2.0
                if verbose:
                    print(f"[REML] iteration {n_iter}: deviance {out['deviance']:.10g}")
            else:
                mu = max(mu * nu, mu_scale)
                nu *= 2.0
                if not np.isfinite(mu) or mu > 1e30:
                    message = (
                        "no step decreases the deviance (it is flat to "
                        "floating-point resolution)"
                    )
                    break
        return L, n_iter, float(np.max(np.abs(grad))), message, out

    def _snap_to_boundary(self, L, out):
        """``L`` with the variances the fit drives to zero set to zero, if that lowers the deviance.

        Where the optimum has a zero variance, the deviance along the
        corresponding column ``l`` of ``L`` behaves like ``|l|^4``: Newton's
        method in ``L`` then shrinks that column by a constant factor per
        iteration instead of converging quadratically (a dozen iterations on
        data with two or three zero variances, measured). An eigenvalue of
        ``Psi = L L^T`` below ``_SNAP_RATIO`` of the largest whose direction
        ``v`` has ``v^T (df/dPsi) v > 0`` (less variance lowers the deviance)
        is therefore tried at exactly zero, all such eigenvalues at once. The
        candidate is kept only if its deviance is lower, so the deviance
        still decreases at every iteration, and a zero variance that should
        not be is caught by the cone check of :meth:`fit`.

        Returns
        -------
        L, out : the candidate and its evaluation, or the inputs unchanged.
        """
        lam, V = np.linalg.eigh(L @ L.T)
        top = lam[-1]
        if not top > 0:
            return L, out
        slope = np.einsum("pi,pq,qi->i", V, out["grad_psi"], V)
        zero = lam <= 1e-12 * top
        drop = (lam < _SNAP_RATIO * top) & ~zero & (slope > 0)
        if not drop.any():
            return L, out
        keep = ~(drop | zero)
        candidate = _psd_factor((V[:, keep] * lam[keep]) @ V[:, keep].T)
        new = self.evaluate(candidate)
        if new["deviance"] < out["deviance"]:
            return candidate, new
        return L, out

    def _cone_violation(self, grad_psi):
        """How much adding variance along some direction would lower the deviance.

        Over positive semi-definite ``Psi`` every direction ``v v^T`` is
        feasible, so at the optimum ``df/dPsi`` (``grad_psi``) must be positive
        semi-definite; its most negative eigenvalue, if any, is the slope of
        the deviance along ``Psi + eps v v^T``.
        """
        curv, vecs = np.linalg.eigh(grad_psi)
        return max(-curv[0], 0.0), vecs[:, 0]

    def _step_off_boundary(self, L, direction):
        """Best of a few steps ``Psi + eps d d^T``, as a new Cholesky factor."""
        psi = L @ L.T
        jitter = 1e-10 * np.eye(self.p)
        candidates = [
            np.linalg.cholesky(psi + eps * np.outer(direction, direction) + jitter)
            for eps in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
        ]
        devs = [self.evaluate(c, gradient=False)["deviance"] for c in candidates]
        return candidates[int(np.argmin(devs))]

    def _standardizer(self):
        """``T`` with ``Z T`` = centered (with an intercept) and scaled columns."""
        G = self.G.sum(axis=0)
        p = self.p
        T = np.eye(p)
        if self.has_intercept:
            n = G[-1, -1]
            mean = G[:-1, -1] / n
            var = np.diag(G)[:-1] / n - mean**2
            T[-1, :-1] = -mean
        else:
            var = np.diag(G) / self.n_obs
        # Constant columns (variance 0 after centering) keep their scale.
        top = var.max(initial=0.0)
        scale = np.sqrt(np.where(var > 1e-12 * top, var, 1.0)) if top > 0 else np.ones_like(var)
        d = len(scale)
        T[:, :d] /= scale
        return T


def _psd_factor(psi):
    """Lower-triangular ``L`` with ``L L^T = psi`` for a positive semi-definite ``psi``.

    Cholesky's algorithm with the columns of (numerically) zero pivots set
    to zero, so that a singular ``psi`` gets the exact zero columns that
    LAPACK's factorization refuses.
    """
    p = len(psi)
    L = np.zeros_like(psi)
    rest = psi.copy()
    floor = 1e-12 * max(np.diag(psi).max(initial=0.0), np.finfo(float).tiny)
    for j in range(p):
        pivot = rest[j, j]
        if pivot > floor:
            col = rest[j:, j] / np.sqrt(pivot)
            L[j:, j] = col
            rest[j:, j:] -= np.outer(col, col)
    return L


def _damped_step(H, grad, mu):
    """``-(H + mu I)^-1 grad`` and the ``mu`` used: doubled until ``H + mu I`` is positive definite."""
    diag = np.arange(len(H))
    floor = 1e-12 * max(np.abs(H[diag, diag]).max(initial=0.0), 1.0)
    while True:
        shifted = H.copy()
        shifted[diag, diag] += mu
        # LAPACK directly: scipy's wrappers cost more than these small
        # factorizations on problems with few random effects.
        chol, info = lapack.dpotrf(shifted, lower=1, clean=0)
        if info != 0:
            mu = max(2.0 * mu, floor)
            continue
        step, _ = lapack.dpotrs(chol, grad, lower=1)
        return -step, mu
