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
import scipy.linalg
from scipy.optimize import minimize

from ._linalg import spd_solve_stacked
from ._parallel import map_task_chunks

# Restarts from a boundary point where a zero variance should become positive.
_MAX_RESTARTS = 10
# The gradient in L is 2 (df/dPsi) L: small where L is small, even when the
# deviance still falls steeply along a direction L hardly spans. L-BFGS-B
# therefore runs to a tighter tolerance in L than the one required of the
# optimality measure in Psi.
_INNER_TOL = 1e-2


def _task_terms(start, stop, G, g, yy, L):
    """``log|A_t|``, ``W_t``, ``w_t``, ``e_t``, ``A_t^-1 L^T [G_t, g_t]`` for tasks [start, stop)."""
    G, g, yy = G[start:stop], g[start:stop], yy[start:stop]
    GL = G @ L
    A = np.matmul(L.T, GL)
    diag = np.arange(A.shape[1])
    A[:, diag, diag] += 1.0
    Lg = g @ L
    rhs = np.concatenate([GL.transpose(0, 2, 1), Lg[..., None]], axis=2)
    sol, logdet = spd_solve_stacked(A, rhs)
    P, pv = sol[..., :-1], sol[..., -1]
    W = G - GL @ P
    W = 0.5 * (W + W.transpose(0, 2, 1))
    w = g - np.einsum("kpq,kq->kp", GL, pv)
    e = yy - np.einsum("kq,kq->k", Lg, pv)
    return logdet, W, w, e, P, pv


def _all_task_terms(G, g, yy, L, n_jobs):
    p = G.shape[1]
    results, _ = map_task_chunks(
        _task_terms, len(G), G, g, yy, L, n_jobs=n_jobs, cost=8 * len(G) * p**3
    )
    return [np.concatenate([r[i] for r in results]) for i in range(6)]


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
        logdet, W, w, e, P, pv = _all_task_terms(self.G, self.g, self.yy, L, self.n_jobs)
        Qb = self.basis
        C = Qb.T @ W.sum(axis=0) @ Qb
        c = Qb.T @ w.sum(axis=0)
        chol = scipy.linalg.cho_factor(C)
        beta = scipy.linalg.cho_solve(chol, c)
        theta = Qb @ beta
        rss = e.sum() - c @ beta
        if not rss > 0:
            raise ValueError(
                "alpha_task='auto': the residual sum of squares is zero (the fixed "
                "part fits y exactly), so the noise variance cannot be estimated."
            )
        logdet_C = 2.0 * np.log(np.diag(chol[0])).sum()
        dev = logdet.sum() + logdet_C + self.dof * np.log(rss)
        out = {"deviance": dev, "rss": rss, "theta": theta, "P": P, "pv": pv, "W": W, "w": w}
        if gradient:
            K = Qb @ scipy.linalg.cho_solve(chol, Qb.T)
            h = w - W @ theta
            p = self.p
            WK = W @ K
            # sum_t W_t K W_t as one (p, T p) x (T p, p) product.
            WKW = WK.transpose(1, 0, 2).reshape(p, -1) @ W.reshape(-1, p)
            dPsi = W.sum(axis=0) - WKW
            dPsi -= self.dof / rss * (h.T @ h)
            out["grad_psi"] = dPsi
            out["grad"] = 2.0 * (dPsi @ L)
        return out

    def log_likelihood(self, deviance):
        """REML log-likelihood at a profiled deviance (statsmodels' and lme4's convention)."""
        n = self.dof
        return -0.5 * (deviance + n * (1.0 + np.log(2.0 * np.pi / n))) + 0.5 * self.log_weights

    def fit(self, max_iter, tol, verbose=0):
        """Minimize the deviance over ``L`` with L-BFGS-B, diagonal of ``L`` >= 0.

        The optimization runs on standardized columns (centered when there is
        an intercept, unit variance): ``Z' = Z T`` leaves the likelihood
        unchanged with ``L = T L'`` and makes the entries of ``L'``
        comparable.

        Optimality is checked over covariance matrices, not only over ``L``:
        a zero column of ``L`` is a stationary point of the deviance in ``L``
        whatever the gradient in ``Psi = L L^T`` says, so at the end the
        gradient in ``Psi`` must be positive semi-definite (no added variance
        in any direction lowers the deviance). When it is not, the fit steps
        along the offending direction and restarts.

        The deviance is a sum over the ``N`` observed labels; the fit stops
        when the projected gradient in ``L`` and the most negative eigenvalue
        of the gradient in ``Psi``, divided by ``N``, are below ``tol``.

        Returns
        -------
        L : ndarray of shape (p, p)
        n_iter : int
        kkt : float
            The larger of the two optimality measures, divided by ``N``.
        message : str
            Why L-BFGS-B stopped last.
        """
        T = self._standardizer()
        inner = REMLProblem(
            T.T @ self.G @ T, self.g @ T, self.yy, self.n_obs, self.log_weights,
            self.n_jobs, self.has_intercept,
        )
        abs_tol = tol * self.n_obs
        L = np.diag(np.full(self.p, np.sqrt(0.1)))
        n_iter = 0
        for _ in range(_MAX_RESTARTS):
            L, nit, pg, message = inner._fit(L, max(max_iter - n_iter, 1), abs_tol * _INNER_TOL, verbose)
            n_iter += nit
            violation, direction = inner._cone_violation(L)
            if violation <= abs_tol or n_iter >= max_iter:
                break
            L = inner._step_off_boundary(L, direction)
        return T @ L, n_iter, max(pg, violation) / self.n_obs, message

    def _cone_violation(self, L):
        """How much adding variance along some direction would lower the deviance.

        Over positive semi-definite ``Psi`` every direction ``v v^T`` is
        feasible, so at the optimum ``df/dPsi`` must be positive
        semi-definite; its most negative eigenvalue, if any, is the slope of
        the deviance along ``Psi + eps v v^T``.
        """
        curv, vecs = np.linalg.eigh(self.evaluate(L)["grad_psi"])
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

    def _fit(self, L0, max_iter, tol, verbose):
        rows, cols = self.tril
        bounds = [(0.0, None) if i == j else (None, None) for i, j in zip(rows, cols)]

        def fun(params):
            res = self.evaluate(self.factor(params))
            return res["deviance"], res["grad"][self.tril]

        callback = None
        if verbose:
            def callback(intermediate_result):
                print(f"[REML] deviance {intermediate_result.fun:.10g}")

        res = minimize(
            fun,
            L0[self.tril],
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=callback,
            options={"maxiter": max_iter, "gtol": tol, "ftol": 0.0, "maxcor": 20},
        )
        # L-BFGS-B's projected gradient x - clip(x - g): next to the bound
        # 0 a positive slope counts only as far as the bound.
        lower = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
        pg = res.x - np.clip(res.x - res.jac, lower, np.inf)
        return self.factor(res.x), int(max(res.nit, 1)), float(np.max(np.abs(pg))), str(res.message)
