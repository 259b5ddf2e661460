"""SharedParamRegressor: soft parameter sharing (Evgeniou & Pontil, 2004)."""

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.linalg
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning

from ._base import Interval, MultiTaskRegressorBase, StrOptions
from ._losses import CURVATURES, LOSSES
from ._parallel import TaskWorkers, map_task_chunks, single_blas_thread
from ._reml import REMLProblem


def _eliminate_tasks(start, stop, data, lam, fit_intercept, keep_gram=False):
    """Eliminate the task blocks ``u_t`` of tasks ``[start, stop)``.

    With ``M_t = G_t + lam I`` the task block's optimality condition gives
    ``u_t = a_t - B_t theta_0`` with ``a_t = M_t^-1 g_t``, ``B_t = M_t^-1 G_t``.
    One stacked LU solve of size ``p = d + 1`` per task returns both, and
    the Gram matrices ``G_t`` when ``keep_gram``.
    """
    G, g, _, _ = data.gram(start, stop, fit_intercept)
    a, B = _eliminate(G, g, lam)
    return a, B, G if keep_gram else None


def _eliminate(H, rhs, lam):
    """``M^-1 rhs`` and ``M^-1 H`` with ``M = H + lam I``, per task: one stacked LU solve."""
    M = H.copy()
    diag = np.arange(H.shape[1])
    M[:, diag, diag] += lam
    sol = np.linalg.solve(M, np.concatenate([H, rhs[..., None]], axis=2))
    return sol[..., -1], sol[..., :-1]


def _solve_shared(A, rhs):
    """Solve the symmetric positive semi-definite shared system.

    Singular systems arise when the features are collinear across every task
    (one-hot blocks next to an intercept with ``alpha_shared=0``): the shared
    part is then not unique, and the least-squares minimum-norm solution is one
    optimum among equals.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
            return scipy.linalg.solve(A, rhs, assume_a="pos")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgWarning):
        return scipy.linalg.lstsq(A, rhs)[0]


def _solve_cholesky(data, alpha_shared, alpha_task, fit_intercept, n_jobs, keep_gram=False):
    """Exact solve of the squared-loss problem by block elimination.

    Returns ``theta_0`` of shape (p,) and the task coefficients ``beta``
    of shape (n_tasks, p), intercept last when ``fit_intercept``, and the
    per-task Gram matrices (or None) when ``keep_gram``.

    Multiplying the objective by ``S`` gives, with ``lam = S * alpha_task``,
    the normal equations ``(G_t + lam I) u_t = g_t - G_t theta_0`` for each
    task and ``P theta_0 = lam * sum_t u_t`` for the shared part, where ``P``
    is ``S * alpha_shared`` on the weights and 0 on the (unpenalized) shared
    intercept. Eliminating ``u_t`` leaves one ``p x p`` system
    ``(P + lam sum_t B_t) theta_0 = lam sum_t a_t``. Cost: one pass over the
    rows for the Gram matrices, O(n_tasks p^3) for the eliminations.
    """
    d = data.n_features
    lam = alpha_task * data.S
    p = d + int(fit_intercept)
    results, _ = map_task_chunks(
        _eliminate_tasks, data.n_tasks, data, lam, fit_intercept, keep_gram, n_jobs=n_jobs,
        cost=data.n_observed * p * p + 2 * data.n_tasks * p**3,
    )
    a = np.concatenate([r[0] for r in results])
    B = np.concatenate([r[1] for r in results])
    # Summed in the parent in task order, so results do not change with n_jobs.
    A = lam * B.sum(axis=0)
    A = 0.5 * (A + A.T)
    A[np.arange(d), np.arange(d)] += alpha_shared * data.S
    theta0 = _solve_shared(A, lam * a.sum(axis=0))
    # beta_t = theta_0 + u_t, and u_t = a_t - B_t theta_0.
    beta = theta0 + a - B @ theta0
    if keep_gram:
        return theta0, beta, np.concatenate([r[2] for r in results])
    return theta0, beta


def _gram_chunk(start, stop, data, fit_intercept):
    return data.gram(start, stop, fit_intercept)


def _solve_reml(data, alpha_shared, fit_intercept, max_iter, tol, n_jobs, verbose):
    """``alpha_task='auto'``: REML variance components, then posterior means.

    Returns ``theta0, beta, Sigma, sigma2, log_likelihood, n_iter, grad_norm,
    message``.
    """
    p = data.n_features + int(fit_intercept)
    results, _ = map_task_chunks(
        _gram_chunk, data.n_tasks, data, fit_intercept, n_jobs=n_jobs,
        cost=data.n_observed * p * p,
    )
    G, g, yy = (np.concatenate([r[i] for r in results]) for i in range(3))
    # Sample weights are precision weights here: row i has noise variance
    # sigma^2 / s_i, and a zero weight carries no observation.
    n_obs, log_weights = data.positive_weight_stats()
    problem = REMLProblem(G, g, yy, n_obs, log_weights, n_jobs, fit_intercept)
    # Each iteration is hundreds of p x p products: a multi-threaded BLAS
    # spends more on waking threads than it saves (20x slower measured on 2
    # cores), so the REML iterations run with one BLAS thread.
    with single_blas_thread():
        L, n_iter, grad_norm, message = problem.fit(max_iter, tol, verbose)
    res = problem.evaluate(L, gradient=False)
    sigma2 = res["rss"] / problem.dof
    d = data.n_features
    if alpha_shared > 0:
        C = res["W"].sum(axis=0)
        C[np.arange(d), np.arange(d)] += alpha_shared * data.S
        theta0 = _solve_shared(C, res["w"].sum(axis=0))
    else:
        theta0 = res["theta"]
    U = problem.posterior_means(L, theta0)
    log_lik = problem.log_likelihood(res["deviance"])
    return theta0, theta0 + U, sigma2 * (L @ L.T), sigma2, log_lik, n_iter, grad_norm, message


def _task_loss_grad(start, stop, data, beta, loss, epsilon, fit_intercept, curvature=False):
    """Loss sum and gradient with respect to ``beta_t`` for tasks [start, stop).

    With ``curvature``, also where each label's loss has curvature (for
    Newton's method, :meth:`skmtl._tasks.LongTasks.linear_loss_grad_curv`).
    """
    d = data.n_features
    b = beta[start:stop]
    args = (start, stop, b[:, :d], b[:, d] if fit_intercept else None, LOSSES[loss])
    if curvature:
        value, grad_coef, grad_intercept, curv = data.linear_loss_grad_curv(
            *args, CURVATURES[loss], epsilon
        )
    else:
        value, grad_coef, grad_intercept = data.linear_loss_grad(*args, epsilon)
    grad = np.hstack([grad_coef, grad_intercept[:, None]]) if fit_intercept else grad_coef
    return (value, grad, curv) if curvature else (value, grad)


def _solve_lbfgs(
    data, alpha_shared, alpha_task, loss, epsilon, fit_intercept, max_iter, tol,
    n_jobs, verbose, theta0, beta,
):
    """L-BFGS on the joint objective in ``(theta_0, u_1, ..., u_T)``.

    Stops when the largest absolute entry of the gradient is below ``tol``.
    Returns ``theta0, beta, n_iter, grad_norm``.
    """
    n_tasks, p = beta.shape
    d = data.n_features
    S = data.S

    def objective(x):
        th, U = x[:p], x[p:].reshape(n_tasks, p)
        results, _ = map_task_chunks(
            _task_loss_grad, n_tasks, data, th + U, loss, epsilon, fit_intercept,
            n_jobs=n_jobs, cost=6 * data.n_observed * p,
        )
        value = sum(r[0] for r in results) / S
        grad_beta = np.concatenate([r[1] for r in results]) / S
        value += 0.5 * alpha_shared * th[:d] @ th[:d] + 0.5 * alpha_task * np.sum(U * U)
        grad_th = grad_beta.sum(axis=0)
        grad_th[:d] += alpha_shared * th[:d]
        grad_U = grad_beta + alpha_task * U
        return value, np.concatenate([grad_th, grad_U.ravel()])

    callback = None
    if verbose:
        def callback(intermediate_result):
            print(f"[SharedParamRegressor] objective {intermediate_result.fun:.10g}")

    x0 = np.concatenate([theta0, (beta - theta0).ravel()])
    res = minimize(
        objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        # Stop on the gradient only: ftol=0 turns off the relative-decrease test.
        options={"maxiter": max_iter, "gtol": tol, "ftol": 0.0},
    )
    grad_norm = float(np.max(np.abs(res.jac))) if res.jac.size else 0.0
    th = res.x[:p]
    return th, th + res.x[p:].reshape(n_tasks, p), int(max(res.nit, 1)), grad_norm


def _newton_system_chunk(start, stop, data, curv, prev, hess, grad_U, lam, fit_intercept):
    """The task blocks of the Newton system for tasks ``[start, stop)``.

    With ``H_t`` task ``t``'s Hessian of the loss sum (from the curvatures
    ``curv``, updated from ``prev`` and ``hess`` when given: see
    :meth:`skmtl._tasks.LongTasks.task_hessians`), ``M_t = H_t + lam I`` and
    ``grad_U[t]`` the gradient in ``u_t`` of the objective times ``S``,
    returns ``H_t``, ``a_t = M_t^-1 grad_U[t]`` and ``B_t = M_t^-1 H_t``
    (:func:`_eliminate`, as for the squared loss).
    """
    H = data.task_hessians(start, stop, curv, prev, hess, fit_intercept)
    return H, *_eliminate(H, grad_U[start:stop], lam)


def _newton_shared_step(A, rhs):
    """Shared part of the Newton step, or None when it has no finite solution.

    ``A`` is singular when some direction of the shared part has no
    curvature. If the gradient has no component there either (features
    collinear across every task, as in :func:`_solve_shared`), the
    least-squares solution is a Newton step; if it does (every residual in
    Huber's linear region along that direction, e.g. ``alpha_shared=0`` and
    a tiny ``epsilon``), no Newton step exists.
    """
    step = _solve_shared(A, rhs)
    scale = np.abs(rhs).max() + np.abs(A).max() * np.abs(step).max()
    if np.abs(A @ step - rhs).max() > 1e-8 * scale:
        return None
    return step


def _solve_newton(
    data, alpha_shared, alpha_task, loss, epsilon, fit_intercept, max_iter, tol,
    n_jobs, verbose, theta0, beta, gram=None,
):
    """Semi-smooth Newton's method on the joint objective in ``(theta_0, u_1, ..., u_T)``.

    Huber's loss has a second derivative everywhere but at ``|r| =
    epsilon``, so Newton's method with its generalized Hessian converges
    locally in a few steps (the Hessian is exact once the set of residuals
    in the quadratic region stops changing). The Hessian of the objective
    times ``S`` has ``H_t + lam I`` on task block ``t``, ``H_t`` beside it,
    and ``sum_t H_t + P`` on the shared block: eliminating the task blocks,
    as :func:`_solve_cholesky` does, leaves one ``p x p`` system, ``(P + lam
    sum_t B_t) d_theta = -grad_theta + sum_t B_t grad_u_t``, and then
    ``d_u_t = -a_t - B_t d_theta``. A step costs one pass over the rows for
    the loss, the gradient and where each label's loss has curvature (the
    line search's evaluation), then the Hessians ``H_t`` and ``n_tasks``
    small solves; in the long layout the Hessians are updated with the rows
    whose curvature changed (see :meth:`skmtl._tasks.LongTasks.task_hessians`),
    from ``gram``, the Gram matrices of the squared-loss start, when given.
    The last evaluation, which finds the gradient below ``tol``, forms no
    Hessian.

    The step length comes from a backtracking line search on the Armijo
    condition. As in scikit-learn's Newton solver for GLMs, a line search
    that fails, or a step that does not exist, hands the fit over to L-BFGS
    (:func:`_solve_lbfgs`) from the current point, for the iterations left.

    Stops when the largest absolute entry of the gradient is below ``tol``.
    Returns ``theta0, beta, n_iter, grad_norm``.
    """
    n_tasks, p = beta.shape
    d = data.n_features
    S = data.S
    lam = alpha_task * S
    pen = np.zeros(p)
    pen[:d] = alpha_shared * S
    theta, U = theta0, beta - theta0

    def penalty(theta, U):
        return 0.5 * pen @ (theta * theta) + 0.5 * lam * np.sum(U * U)

    # The curvatures and Hessians of the latest Newton system, which the
    # next one updates: the Gram matrices of the squared-loss start are the
    # Hessians at curvature 1 on every row.
    latest = {"hess": gram, "curv": None if gram is None else np.ones(data.n_observed, bool)}

    def evaluate(theta, U):
        # Objective, gradients (times S) and curvatures at (theta, U).
        results, _ = map_task_chunks(
            _task_loss_grad, n_tasks, data, theta + U, loss, epsilon, fit_intercept, True,
            n_jobs=n_jobs, cost=6 * data.n_observed * p,
        )
        value = sum(r[0] for r in results) + penalty(theta, U)
        grad = np.concatenate([r[1] for r in results])
        curv = np.concatenate([r[2] for r in results])
        return value, grad.sum(axis=0) + pen * theta, grad + lam * U, curv

    def task_blocks(curv, grad_U):
        # a_t and B_t of the Newton system at the point of curv and grad_U.
        results, _ = map_task_chunks(
            _newton_system_chunk, n_tasks, data, curv, latest["curv"], latest["hess"],
            grad_U, lam, fit_intercept,
            n_jobs=n_jobs, cost=data.n_observed * p * p + 2 * n_tasks * p**3,
        )
        latest.update(hess=np.concatenate([r[0] for r in results]), curv=curv)
        return (np.concatenate([r[1] for r in results]),
                np.concatenate([r[2] for r in results]))

    def sup_norm(grad_theta, grad_U):
        return max(np.abs(grad_theta).max(initial=0.0), np.abs(grad_U).max(initial=0.0)) / S

    value, grad_theta, grad_U, curv = evaluate(theta, U)
    grad_norm = sup_norm(grad_theta, grad_U)
    n_iter, fallback = 0, None
    diag = np.arange(p)
    while grad_norm > tol and n_iter < max_iter:
        a, B = task_blocks(curv, grad_U)
        A = lam * B.sum(axis=0)
        A = 0.5 * (A + A.T)
        A[diag, diag] += pen
        d_theta = _newton_shared_step(A, -grad_theta + np.einsum("tij,tj->i", B, grad_U))
        if d_theta is None:
            fallback = "the Hessian of the shared part is singular along the gradient"
            break
        d_U = -a - B @ d_theta
        slope = grad_theta @ d_theta + np.sum(grad_U * d_U)
        if not slope < 0:
            fallback = "the Newton direction is not a descent direction"
            break
        step = 1.0
        new = evaluate(theta + d_theta, U + d_U)
        for _ in range(_MAX_HALVINGS):
            if _sufficient_decrease(value, new[0], step * slope, grad_norm, sup_norm(*new[1:3])):
                break
            step *= 0.5
            new = evaluate(theta + step * d_theta, U + step * d_U)
        else:
            fallback = f"the line search found no decrease in {_MAX_HALVINGS} halvings"
            break
        theta, U = theta + step * d_theta, U + step * d_U
        value, grad_theta, grad_U, curv = new
        grad_norm = sup_norm(grad_theta, grad_U)
        n_iter += 1
        if verbose:
            print(
                f"[SharedParamRegressor] Newton iteration {n_iter}: objective "
                f"{value / S:.10g}, largest gradient entry {grad_norm:.3g}, step {step:g}"
            )
    if fallback is None:
        return theta, theta + U, max(n_iter, 1), grad_norm
    if verbose:
        print(f"[SharedParamRegressor] {fallback}: L-BFGS goes on from here.")
    theta, beta, lbfgs_iter, grad_norm = _solve_lbfgs(
        data, alpha_shared, alpha_task, loss, epsilon, fit_intercept, max_iter - n_iter,
        tol, n_jobs, verbose, theta, theta + U,
    )
    return theta, beta, n_iter + lbfgs_iter, grad_norm


# Halvings of the Newton step before the line search gives up (2^-20 ~ 1e-6),
# as in scikit-learn's Newton solver for GLMs.
_MAX_HALVINGS = 21


def _sufficient_decrease(old, new, decrease, old_grad_norm, new_grad_norm):
    """Armijo's condition, or a smaller gradient when values tie to rounding.

    Near the optimum the objective changes in its last bits, where Armijo's
    test compares rounding errors; a step that keeps the objective within
    them and lowers the gradient is then taken (scikit-learn's Newton solver
    for GLMs does the same).
    """
    if new - old <= 1e-4 * decrease:
        return True
    tiny = 16 * np.finfo(float).eps * abs(old)
    return abs(new - old) <= tiny and new_grad_norm < old_grad_norm


class SharedParamRegressor(MultiTaskRegressorBase):
    """Multi-task linear regression with soft parameter sharing.

    Each task's weights are a shared part plus a task-specific part,
    ``w_t = w_0 + v_t`` and ``b_t = b_0 + c_t`` (Evgeniou & Pontil, 2004).
    The estimator minimizes

    .. math::

        \\frac{1}{S} \\sum_{(i, t) \\text{ observed}} s_i\\, \\ell(y_{it} - x_i^\\top w_t - b_t)
        + \\frac{\\alpha_{shared}}{2} \\|w_0\\|^2
        + \\frac{\\alpha_{task}}{2} \\sum_t \\left(\\|v_t\\|^2 + c_t^2\\right)

    with :math:`S = \\sum_i s_i` and :math:`\\ell(r) = r^2 / 2` (``loss='squared'``)
    or Huber's loss. The shared intercept :math:`b_0` is not penalized; each
    task's intercept is pulled towards it like a random intercept in a mixed
    model, so small tasks borrow their level from the others. A large
    ``alpha_task`` pulls every task onto one pooled model; a small one lets the
    tasks fit independently.

    With the squared loss the problem is a linear system and is solved
    exactly: each task's block is eliminated with one small factorization,
    then one system gives the shared part. The Huber loss is minimized by
    Newton's method on the same block structure (or L-BFGS).

    Parameters
    ----------
    alpha_shared : float, default=1.0
        Ridge penalty on the shared weights :math:`w_0`. ``0`` leaves them
        unpenalized.
    alpha_task : float or 'auto', default=1.0
        Penalty on the task deviations :math:`(v_t, c_t)`. Must be positive.
        ``'auto'`` (squared loss) learns how much the tasks differ instead:
        the deviations are random effects with a learned covariance
        :math:`\\Sigma` and noise variance :math:`\\sigma^2` (the linear mixed
        model with random intercepts and random slopes), estimated by
        restricted maximum likelihood (REML), and the coefficients are the
        posterior means. That is the objective above with the task penalty
        :math:`\\frac{1}{2 S} \\sum_t u_t^\\top \\sigma^2 \\Sigma^{-1} u_t`,
        :math:`u_t = (v_t, c_t)`; with ``alpha_shared=0`` the coefficients are
        the mixed model's fixed effects plus predicted random effects. Sample
        weights are then precision weights (row :math:`i` has noise variance
        :math:`\\sigma^2 / s_i`). REML needs more observed labels than
        independent columns of ``[X, 1]``, since it estimates
        :math:`\\sigma^2` from the residual degrees of freedom; with fewer
        ``fit`` raises a ``ValueError`` (use a float ``alpha_task`` there).
    loss : {'squared', 'huber'}, default='squared'
        Loss of a residual.
    epsilon : float, default=1.35
        Threshold of the Huber loss, in the units of ``y``.
    fit_intercept : bool, default=True
        Whether to fit intercepts :math:`b_t = b_0 + c_t`.
    task_column : int or str, default=None
        ``None``: wide layout, ``y`` has one column per task (NaN marks a
        missing label). Otherwise the column of ``X`` (int position, negative
        allowed, or DataFrame column name) that holds each row's task label:
        long layout, ``y`` is 1-D.
    handle_unknown : {'warn', 'shared', 'error'}, default='warn'
        Long layout: how to predict a task label that fit never saw. It is
        predicted by the shared model (``shared_coef_``,
        ``shared_intercept_``) with a ``UserWarning`` (``'warn'``) or silently
        (``'shared'``), or refused with a ``ValueError`` (``'error'``).
    solver : {'auto', 'cholesky', 'newton', 'lbfgs'}, default='auto'
        ``'cholesky'``: exact block elimination (squared loss only).
        ``'newton'``: semi-smooth Newton's method from the squared-loss
        solution, each step one pass over the rows and the block elimination
        of ``'cholesky'`` with each task's Hessian, the step length from a
        backtracking line search; should the line search fail (or the
        Hessian be singular along the gradient: every residual in Huber's
        linear region along some direction), L-BFGS goes on from there, as in
        scikit-learn's Newton solver for GLMs. Its few steps (2 to 4 on the
        benchmarks' data) depend little on the conditioning. ``'lbfgs'``:
        L-BFGS on the joint objective; its steps are cheaper, and on
        well-conditioned problems (few iterations) it can be faster.
        ``'auto'``: ``'cholesky'`` for the squared loss, ``'newton'`` for
        Huber.
    max_iter : int, default=1000
        Maximum number of iterations of ``'newton'`` and ``'lbfgs'`` (Newton
        iterations of REML with ``alpha_task='auto'``).
    tol : float, default=1e-4
        ``'newton'`` and ``'lbfgs'`` stop when the largest absolute entry of
        the gradient of the objective is below ``tol``. With
        ``alpha_task='auto'``: when the largest absolute entry of the
        gradient of the REML deviance in the Cholesky factor of
        :math:`\\Sigma / \\sigma^2`, and the most negative eigenvalue of its
        gradient in :math:`\\Sigma / \\sigma^2` (a variance that would still
        lower the deviance), divided by the number of observed labels, are
        below ``tol``.
    n_jobs : int, default=None
        Number of jobs for the per-task steps, through joblib. ``None`` means
        1 (a plain loop) even inside a :func:`joblib.parallel_config` context.
        ``-1`` means all processors.
    verbose : int, default=0
        Print the objective at every iteration of the iterative solvers when
        positive.

    Attributes
    ----------
    coef_ : ndarray of shape (n_tasks, n_model_features) or (n_model_features,)
        Task coefficients :math:`w_t`; row ``k`` belongs to ``tasks_[k]``.
        1-D when a 1-D ``y`` was passed in the wide layout.
    intercept_ : ndarray of shape (n_tasks,) or float
        Task intercepts :math:`b_t` (0 when ``fit_intercept=False``).
    shared_coef_ : ndarray of shape (n_model_features,)
        Shared weights :math:`w_0`.
    shared_intercept_ : float
        Shared intercept :math:`b_0`.
    task_coef_ : ndarray of the shape of ``coef_``
        Task deviations :math:`v_t = w_t - w_0`.
    task_intercept_ : ndarray of shape (n_tasks,) or float
        Intercept deviations :math:`c_t = b_t - b_0`.
    tasks_ : ndarray of shape (n_tasks,)
        Task labels in sorted order (column indices in the wide layout).
    n_tasks_ : int
        Number of tasks.
    task_covariance_ : ndarray of shape (n_model_features + 1, n_model_features + 1)
        Only with ``alpha_task='auto'``: the covariance :math:`\\Sigma` of the
        task deviations :math:`(v_t, c_t)`, intercept last (without the
        intercept row and column when ``fit_intercept=False``).
    noise_variance_ : float
        Only with ``alpha_task='auto'``: the REML estimate of :math:`\\sigma^2`.
    reml_log_likelihood_ : float
        Only with ``alpha_task='auto'``: the maximized REML log-likelihood, in
        the convention of statsmodels' ``MixedLM`` and lme4.
    n_iter_ : int
        Iterations of ``'newton'`` (with those of L-BFGS after a hand-over)
        or ``'lbfgs'``, REML Newton iterations with ``alpha_task='auto'``; 1
        for the direct solve.
    n_features_in_ : int
        Number of columns of ``X`` seen in fit, task column included.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names of ``X`` seen in fit, when they are all strings.

    See Also
    --------
    SharedFeatureRegressor : Tasks share a low-dimensional feature subspace
        or the same selected features.
    SharedObjectiveRegressor : Tasks share a learned representation, with
        task weights that adapt during training.
    sklearn.linear_model.Ridge : One pooled ridge model (the limit
        ``alpha_task -> inf``).

    References
    ----------
    T. Evgeniou and M. Pontil, "Regularized multi-task learning", KDD 2004.

    D. Bates, M. Maechler, B. Bolker and S. Walker, "Fitting linear
    mixed-effects models using lme4", Journal of Statistical Software, 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl import SharedParamRegressor
    >>> rng = np.random.RandomState(0)
    >>> school = np.repeat([0, 1, 2], 20)
    >>> hours = rng.uniform(0, 10, size=60)
    >>> score = 50 + 3 * hours + 2 * school + rng.normal(size=60)
    >>> X = np.column_stack([school, hours])
    >>> model = SharedParamRegressor(alpha_task=0.01, task_column=0).fit(X, score)
    >>> model.tasks_
    array([0., 1., 2.])
    >>> model.predict([[1, 5.0]]).round(1)
    array([67.1])

    Let the data say how much the schools differ (REML):

    >>> auto = SharedParamRegressor(alpha_task="auto", task_column=0).fit(X, score)
    >>> auto.task_covariance_.shape
    (2, 2)
    """

    _per_task_attributes = ("coef_", "intercept_", "task_coef_", "task_intercept_")
    _fits_from_statistics = True

    _parameter_constraints = {
        **MultiTaskRegressorBase._parameter_constraints,
        "alpha_shared": [Interval(Real, 0, None, closed="left")],
        "alpha_task": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "loss": [StrOptions({"squared", "huber"})],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "solver": [StrOptions({"auto", "cholesky", "newton", "lbfgs"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        alpha_shared=1.0,
        *,
        alpha_task=1.0,
        loss="squared",
        epsilon=1.35,
        fit_intercept=True,
        task_column=None,
        handle_unknown="warn",
        solver="auto",
        max_iter=1000,
        tol=1e-4,
        n_jobs=None,
        verbose=0,
    ):
        self.alpha_shared = alpha_shared
        self.alpha_task = alpha_task
        self.loss = loss
        self.epsilon = epsilon
        self.fit_intercept = fit_intercept
        self.task_column = task_column
        self.handle_unknown = handle_unknown
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _resolve_solver(self):
        if self.alpha_task == "auto":
            if self.loss != "squared":
                raise ValueError(
                    f"alpha_task='auto' estimates a linear mixed model and needs "
                    f"loss='squared', got loss={self.loss!r}."
                )
            if self.solver in ("newton", "lbfgs"):
                raise ValueError(
                    f"alpha_task='auto' has its own REML solver, got "
                    f"solver={self.solver!r}; use solver='auto'."
                )
            return "reml"
        if self.solver == "auto":
            return "cholesky" if self.loss == "squared" else "newton"
        if self.solver == "cholesky" and self.loss != "squared":
            raise ValueError(
                f"solver='cholesky' solves the squared loss only, got loss={self.loss!r}; "
                "use solver='newton', 'lbfgs' or 'auto'."
            )
        return self.solver

    def _check_sufficient_stats(self):
        super()._check_sufficient_stats()
        if self.solver in ("newton", "lbfgs"):
            raise ValueError(
                "X is a dask DataFrame, which is fitted from per-task sufficient "
                f"statistics: solver={self.solver!r} reads the rows; use solver='auto' "
                "or 'cholesky'."
            )

    def _fit(self, data):
        solver = self._resolve_solver()
        fit_intercept = self.fit_intercept
        fitted = {}
        if self.alpha_task == "auto":
            theta0, beta, sigma, sigma2, log_lik, n_iter, grad_norm, message = _solve_reml(
                data, self.alpha_shared, fit_intercept, self.max_iter, self.tol,
                self.n_jobs, self.verbose,
            )
            if grad_norm > self.tol:
                warnings.warn(
                    f"REML estimation did not converge in {n_iter} iterations: its "
                    f"optimality measure (gradient of the deviance per observation) "
                    f"is {grad_norm:.3g} > tol={self.tol:g}. Newton's method "
                    f"stopped with: {message}. If it ran out of iterations increase "
                    "max_iter; if it could not decrease further, tol is below what "
                    "floating point resolves on this data.",
                    ConvergenceWarning,
                )
            fitted.update(
                task_covariance_=sigma, noise_variance_=float(sigma2),
                reml_log_likelihood_=float(log_lik),
            )
        else:
            # One set of workers for every per-task step of the fit: the
            # iterative solvers map the per-task work at every evaluation.
            with TaskWorkers(self.n_jobs) as workers:
                workers.share(data)
                # The exact squared-loss solution is a cheap, good starting
                # point of the iterative solvers; its Gram matrices are
                # Newton's first Hessians (long layout).
                keep_gram = solver == "newton" and data.layout == "long"
                theta0, beta, *gram = _solve_cholesky(
                    data, self.alpha_shared, self.alpha_task, fit_intercept, workers,
                    keep_gram=keep_gram,
                )
                n_iter = 1
                if solver == "newton":
                    theta0, beta, n_iter, grad_norm = _solve_newton(
                        data, self.alpha_shared, self.alpha_task, self.loss, self.epsilon,
                        fit_intercept, self.max_iter, self.tol, workers, self.verbose,
                        theta0, beta, *gram,
                    )
                elif solver == "lbfgs":
                    theta0, beta, n_iter, grad_norm = _solve_lbfgs(
                        data, self.alpha_shared, self.alpha_task, self.loss, self.epsilon,
                        fit_intercept, self.max_iter, self.tol, workers, self.verbose,
                        theta0, beta,
                    )
        if solver in ("newton", "lbfgs") and grad_norm > self.tol:
            name = "Newton's method" if solver == "newton" else "L-BFGS"
            warnings.warn(
                f"{name} did not converge in {n_iter} iterations: the largest "
                f"gradient entry is {grad_norm:.3g} > tol={self.tol:g}. Increase "
                "max_iter or tol, or scale the features.",
                ConvergenceWarning,
            )
        d = data.n_features
        coef, intercept = beta[:, :d], beta[:, d] if fit_intercept else np.zeros(len(beta))
        shared_coef = theta0[:d]
        shared_intercept = float(theta0[d]) if fit_intercept else 0.0
        fitted.update({
            "coef_": coef,
            "intercept_": intercept,
            "shared_coef_": shared_coef,
            "shared_intercept_": shared_intercept,
            "task_coef_": coef - shared_coef,
            "task_intercept_": intercept - shared_intercept,
            "n_iter_": n_iter,
        })
        return fitted

    def _shared_model(self):
        return self.shared_coef_, self.shared_intercept_
