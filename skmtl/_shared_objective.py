"""SharedObjectiveRegressor: hard sharing with adaptive task weights."""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
from scipy.optimize import line_search
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ._base import Interval, MultiTaskRegressorBase, StrOptions
from ._losses import LOSSES
from ._parallel import TaskWorkers, map_task_chunks, single_blas_thread
from ._tasks import LongTasks, WideTasks

# L-BFGS iterations between two updates of the task weights: short enough
# that the weights follow training, long enough that each update sees the
# effect of the previous one.
_ROUND_ITER = 10

# Uncertainty weights are 1 / sigma_t^2; a task fitted exactly (a constant y)
# would get an infinite weight, so sigma_t^2 is floored relative to the task's
# variance.
_SIGMA2_FLOOR = 1e-6

# No task weight falls below this: GradNorm gives a task fitted exactly a zero
# weight, and the heads are preconditioned by 1 / lambda_t.
_MIN_WEIGHT = 1e-12

# Curvature pairs kept by L-BFGS (scipy's default).
_MEMORY = 10

_DWA_TEMPERATURE = 2.0
_GRADNORM_ASYMMETRY = 1.5


def _activate(Z, activation):
    """``act(Z)``, in place."""
    if activation == "relu":
        # Against a row of zeros, not the scalar 0: numpy's maximum with a
        # scalar took twice as long on the network's (n_components, n_rows).
        return np.maximum(Z, np.zeros(Z.shape[-1]), out=Z)
    if activation == "tanh":
        return np.tanh(Z, out=Z)
    return Z


def _backpropagate(grad_H, H, activation):
    """``grad_H * act'(Z)`` in place, with ``act'`` written in terms of ``H = act(Z)``.

    Both derivatives are functions of the activation's output (``H > 0``,
    ``1 - H^2``), so the forward pass keeps no second ``(n, k)`` array.
    """
    if activation == "relu":
        np.multiply(grad_H, H > 0, out=grad_H)
    elif activation == "tanh":
        derivative = H * H
        np.subtract(1.0, derivative, out=derivative)
        grad_H *= derivative
    return grad_H


class _Network:
    """Shapes of ``U, c, A, b`` and their packing into one parameter vector.

    ``U`` (n_features, n_components), hidden intercept ``c`` (n_components,)
    for the nonlinear activations (with ``'identity'`` it would only shift
    the task intercepts), heads ``A`` (n_tasks, n_components) and task
    intercepts ``b`` (n_tasks,) when ``fit_intercept``.
    """

    def __init__(self, n_features, n_components, n_tasks, activation, fit_intercept):
        self.d, self.k, self.T = n_features, n_components, n_tasks
        self.activation = activation
        self.hidden_intercept = fit_intercept and activation != "identity"
        self.fit_intercept = fit_intercept
        sizes = [n_features * n_components, n_components * self.hidden_intercept,
                 n_tasks * n_components, n_tasks * fit_intercept]
        self.offsets = np.cumsum([0] + sizes)
        self._design = None
        self._labels = None

    def unpack(self, theta):
        o = self.offsets
        U = theta[o[0]:o[1]].reshape(self.d, self.k)
        c = theta[o[1]:o[2]] if self.hidden_intercept else None
        A = theta[o[2]:o[3]].reshape(self.T, self.k)
        b = theta[o[3]:o[4]] if self.fit_intercept else None
        return U, c, A, b

    def pack(self, U, c, A, b):
        parts = [U.ravel(), A.ravel()]
        if self.hidden_intercept:
            parts.insert(1, c)
        if self.fit_intercept:
            parts.append(b)
        return np.concatenate(parts)

    def labels(self, data):
        """``data`` without its features, for the per-task chunks.

        The chunks read the features from :meth:`design`; without ``X`` the
        data sent to worker processes carries no second copy of them. Made
        once per ``data`` and kept for the fit.
        """
        if self._labels is None or self._labels[0] is not data:
            kept = copy.copy(data)
            kept.X = None
            self._labels = (data, kept)
        return self._labels[1]

    def design(self, X):
        """The transposed design ``[X, 1]^T``, C-ordered, one column per row.

        The row of ones is there when there is a hidden intercept: then
        ``first_layer(theta)^T @ design(X)`` is ``(X U + c)^T`` in one matrix
        product, and ``design(X) @ grad_Z^T`` is the gradient of ``[U; c]``
        in one more (on the School data the broadcast addition of ``c``
        cost a third of a product and the column sum for its gradient half
        of one). The network works with one column per row (see
        :func:`_forward`). The copy is made once per ``X`` and kept for
        the fit.
        """
        if self._design is None or self._design[0] is not X:
            XT = np.empty((X.shape[1] + self.hidden_intercept, X.shape[0]))
            # In blocks of rows that stay in cache: the whole transpose at once
            # took 290 ms at 2,000,000 x 20, blocks of 2,048 rows 90 ms.
            for i in range(0, X.shape[0], _BLOCK):
                XT[:X.shape[1], i:i + _BLOCK] = X[i:i + _BLOCK].T
            XT[X.shape[1]:] = 1.0
            self._design = (X, XT)
        return self._design[1]

    def first_layer(self, theta):
        """``[U; c]``: ``U`` and ``c`` are stored one after the other."""
        return theta[:self.offsets[2]].reshape(-1, self.k)

    def hidden(self, X, theta):
        """``act(X U + c)``, with ``X`` holding a column of ones when there is ``c``."""
        return _activate(X @ self.first_layer(theta), self.activation)

    def initialize(self, data, random_state):
        """Glorot-uniform shared layer (as MLPRegressor), zero heads, intercepts at the task means.

        With zero heads every task starts at its intercept-only model, so the
        initial ``D_t`` is the task's (halved, for the squared loss) variance,
        the scale against which GradNorm and the uncertainty weights measure
        training; and a task's start does not depend on which other tasks
        are present. The shared layer still gets a gradient once the heads
        move, which they do in the first step.
        """
        rng = check_random_state(random_state)
        bound = np.sqrt(6.0 / (self.d + self.k))
        U = rng.uniform(-bound, bound, (self.d, self.k))
        c = rng.uniform(-bound, bound, self.k) if self.hidden_intercept else None
        A = np.zeros((self.T, self.k))
        b = data.task_means() if self.fit_intercept else None
        return self.pack(U, c, A, b)


# Columns of the transposed design per matrix product. The network's two
# products, (k, p) @ (p, n) forward and (p, n) @ (n, k) backward, are thin;
# on the School data (n = 11,517, p = 28, k = 10, OpenBLAS on one thread)
# one call each took 300 and 340 us, blocks of 2,048 columns (a block of
# X^T stays in the L2 cache) 140 and 155 us.
_BLOCK = 2048


def _forward(XT, first, activation):
    """``act(first^T XT)``, of shape ``(n_components, n_rows)``."""
    H = np.empty((first.shape[1], XT.shape[1]))
    for i in range(0, XT.shape[1], _BLOCK):
        np.matmul(first.T, XT[:, i:i + _BLOCK], out=H[:, i:i + _BLOCK])
    # On the whole array: per block, on strided views, it was slower.
    return _activate(H, activation)


def _backward(XT, grad_H, H, activation):
    """``XT @ grad_Z^T``, the gradient of ``first``.

    ``grad_Z`` is ``grad_H`` backpropagated through the activation (in place).
    """
    grad_Z = _backpropagate(grad_H, H, activation)
    grad = XT[:, :_BLOCK] @ grad_Z[:, :_BLOCK].T
    for i in range(_BLOCK, XT.shape[1], _BLOCK):
        grad += XT[:, i:i + _BLOCK] @ grad_Z[:, i:i + _BLOCK].T
    return grad


def _head_chunk(start, stop, data, H, A, b, losses, epsilon, weights):
    # ``weights`` multiply the row gradient only (the ``lambda_t / S`` of the caller).
    return data.head_loss_grad(
        start, stop, H[:, data.row_range(start, stop)], A[start:stop],
        None if b is None else b[start:stop], losses[start:stop], epsilon, weights[start:stop],
    )


def _network_chunk(start, stop, data, XT, first, activation, A, b, losses, epsilon, weights):
    """Forward pass, heads and backward pass on the rows of tasks ``[start, stop)``.

    Long layout only, where each row belongs to one task. Returns the heads'
    results and this chunk's share of the gradient of ``[U; c]``. The tasks
    run in blocks of about 4 MB of the design (:meth:`LongTasks.row_blocks`):
    the backward product of a block reads its columns of ``XT`` from cache,
    where a pass over the whole chunk would read them from memory twice.
    """
    parts = [
        _network_block(lo, hi, data, XT, first, activation, A, b, losses, epsilon, weights)
        for lo, hi in data.row_blocks(start, stop, XT.T)
    ]
    if len(parts) == 1:
        return parts[0]
    grad_first = parts[0][3]
    for part in parts[1:]:
        grad_first += part[3]
    return (*(np.concatenate([part[i] for part in parts]) for i in range(3)), grad_first)


def _network_block(start, stop, data, XT, first, activation, A, b, losses, epsilon, weights):
    """:func:`_network_chunk` on one block of tasks."""
    XTc = XT[:, data.row_range(start, stop)]
    H = _forward(XTc, first, activation)
    loss_sums, grad_A, grad_b, grad_H = data.head_loss_grad(
        start, stop, H, A[start:stop], None if b is None else b[start:stop],
        losses[start:stop], epsilon, weights[start:stop],
    )
    return loss_sums, grad_A, grad_b, _backward(XTc, grad_H, H, activation)


def _objective(theta, net, data, losses, epsilon, weights, alpha, n_jobs):
    """Value and gradient of ``sum_t w_t D_t + alpha/2 (||U||^2 + ||A||^2)``.

    Returns ``value, grad, task_losses`` with ``task_losses`` the ``D_t``.
    Each evaluation reads ``X`` twice, once forward and once backward. In
    the long layout every row belongs to one task, so each chunk of tasks
    runs the whole network on its own rows (block by block, the second read
    from cache) and returns its share of the gradient of ``U``: the whole
    evaluation is parallel (with the forward and backward products in the
    parent, 2 threads ran slower than 1). In the
    wide layout every task reads every row: the representation is computed
    once, the heads are per-task blocks, and their row gradients, summed,
    are backpropagated once through ``U``.
    """
    _, c, A, b = net.unpack(theta)
    XT = net.design(data.X)
    S = data.S
    # The row gradient comes back already scaled by lambda_t / S.
    if data.layout == "long":
        results, _ = map_task_chunks(
            _network_chunk, data.n_tasks, net.labels(data), XT, net.first_layer(theta),
            net.activation, A, b, losses, epsilon, weights / S, n_jobs=n_jobs,
            cost=data.n_observed * net.k * (4 * XT.shape[0] + 12),
        )
        grad_first = results[0][3]
        # Added in task order in the parent, so results do not change with n_jobs.
        for r in results[1:]:
            grad_first += r[3]
    else:
        H = _forward(XT, net.first_layer(theta), net.activation)
        results, _ = map_task_chunks(
            _head_chunk, data.n_tasks, net.labels(data), H, A, b, losses, epsilon, weights / S,
            n_jobs=n_jobs, cost=data.n_observed * net.k * 6,
        )
        grad_H = results[0][3]
        for r in results[1:]:
            grad_H += r[3]
        grad_first = _backward(XT, grad_H, H, net.activation)
    o = net.offsets
    grad = np.empty(len(theta))
    grad[:o[2]] = grad_first.ravel()
    grad[:o[1]] += alpha * theta[:o[1]]
    scale = weights / S
    if len(results) == 1:
        loss_sums, grad_A, grad_b = results[0][:3]
    else:
        loss_sums, grad_A, grad_b = (np.concatenate([r[i] for r in results]) for i in range(3))
    grad_heads = grad[o[2]:o[3]].reshape(A.shape)
    np.multiply(grad_A, scale[:, None], out=grad_heads)
    grad_heads += alpha * A
    if b is not None:
        np.multiply(grad_b, scale, out=grad[o[3]:])
    task_losses = loss_sums / S
    value = weights @ task_losses + 0.5 * alpha * _penalized_norm2(theta, net)
    return value, grad, task_losses


def _objective_at_initialization(theta0, net, data, losses, epsilon, alpha, n_jobs):
    """``_objective`` at ``theta0`` for any task weights, from one evaluation.

    The heads start at zero, so no data gradient reaches ``U`` or ``c``,
    and each head's data gradient is ``lambda_t`` times its unweighted one:
    the weights of the first round and the reference of ``tol`` (which
    change with every weight update) cost no pass over ``X``.

    Returns ``at_start, initial_losses``: ``at_start(weights)`` is
    ``(value, grad, initial_losses)``.
    """
    _, unit_grad, initial_losses = _objective(
        theta0, net, data, losses, epsilon, np.ones(net.T), 0.0, n_jobs
    )
    U0, c0, A0, b0 = net.unpack(theta0)
    penalty_grad = alpha * net.pack(
        U0, None if c0 is None else np.zeros_like(c0), A0,
        None if b0 is None else np.zeros_like(b0),
    )
    penalty = 0.5 * alpha * _penalized_norm2(theta0, net)
    U1, c1, A1, b1 = net.unpack(np.ones_like(theta0))

    def at_start(weights):
        per_task = net.pack(U1, c1, A1 * weights[:, None], None if b1 is None else weights)
        value = weights @ initial_losses + penalty
        return value, unit_grad * per_task + penalty_grad, initial_losses

    return at_start, initial_losses


def _penalized_norm2(theta, net):
    """``||U||^2 + ||A||^2``."""
    o = net.offsets
    U, A = theta[o[0]:o[1]], theta[o[2]:o[3]]
    return U @ U + A @ A


def _task_U_grad_norms(start, stop, data, XT, d, H, activation, A, b, losses, epsilon):
    """``||dD_t / dU||_F`` (up to the factor ``1/S``) of tasks ``[start, stop)``.

    ``XT[:d]`` are the rows of ``U`` (not the hidden intercept's).
    """
    norms = np.empty(stop - start)
    ones = np.ones(1)
    for t in range(start, stop):
        rows = data.row_range(t, t + 1)
        grad_H = data.head_loss_grad(
            t, t + 1, H[:, rows], A[t:t + 1], None if b is None else b[t:t + 1],
            losses[t:t + 1], epsilon, ones,
        )[3]
        norms[t - start] = np.linalg.norm(_backward(XT[:d, rows], grad_H, H[:, rows], activation))
    return norms


def _gradient_norms(theta, net, data, losses, epsilon, n_jobs):
    """Norm of the gradient of each task's ``D_t`` with respect to ``U``."""
    _, _, A, b = net.unpack(theta)
    XT = net.design(data.X)
    H = _forward(XT, net.first_layer(theta), net.activation)
    results, _ = map_task_chunks(
        _task_U_grad_norms, data.n_tasks, net.labels(data), XT, net.d, H, net.activation, A,
        b, losses, epsilon, n_jobs=n_jobs,
    )
    return np.concatenate(results) / data.S


def _normalize(weights):
    """Scale positive weights to sum to the number of tasks."""
    return weights * (len(weights) / weights.sum())


def _uncertainty_weights(task_losses, initial_losses, task_sizes, S, n_params):
    """Kendall, Gal & Cipolla (2018): weights ``1 / sigma_t^2``.

    Their objective ``sum_t D_t / (2 sigma_t^2) + log sigma_t`` with ``D_t``
    task ``t``'s mean squared residual is the Gaussian negative
    log-likelihood with per-task noise ``sigma_t``; for a fixed network its
    minimizer is ``sigma_t^2 = `` the mean squared residual (the ``log
    sigma_t`` term keeps ``sigma_t`` from growing without bound), and
    ``lambda_t`` is proportional to ``1 / sigma_t^2``.

    Here ``sigma_t^2 = 2 S D_t / (S_t - n_params)``: the residual sum of
    squares of the task (twice its loss sum for Huber) over its rows less
    the parameters of its own head, as for the unbiased noise variance of a
    regression (``S_t`` is the task's summed sample weight, so weights count
    as repeated rows). Without that correction a task with no more rows than
    its head has parameters is fitted exactly and would take all the weight.
    Such a task, and a constant one, has no noise estimate: it keeps weight
    1 and the others are normalized among themselves. ``sigma_t^2`` is
    floored at ``1e-6`` times the task's variance.
    """
    weights = np.ones_like(task_losses)
    dof = task_sizes - n_params
    variance = 2.0 * S * initial_losses / task_sizes
    estimable = (dof > 0) & (variance > 0)
    if estimable.any():
        sigma2 = 2.0 * S * task_losses[estimable] / dof[estimable]
        sigma2 = np.maximum(sigma2, _SIGMA2_FLOOR * variance[estimable])
        # 1 / sigma2 scaled by the smallest sigma2 first, so that it cannot overflow.
        weights[estimable] = _normalize(sigma2.min() / sigma2)
    return weights


def _dwa_weights(loss_curve):
    """Liu, Johns & Davison (2019), dynamic weight average.

    With ``r_t = D_t(k-1) / D_t(k-2)`` the ratio of task ``t``'s last two
    losses, ``lambda_t = T exp(r_t / 2) / sum_j exp(r_j / 2)`` (temperature
    2): a task whose loss falls slowly gets more weight. All weights are 1
    until two rounds are recorded.
    """
    n_tasks = loss_curve.shape[1]
    if len(loss_curve) < 2:
        return np.ones(n_tasks)
    ratio = loss_curve[-1] / np.maximum(loss_curve[-2], np.finfo(float).tiny)
    z = ratio / _DWA_TEMPERATURE
    return _normalize(np.exp(z - z.max()))


def _gradnorm_weights(weights, grad_norms, task_losses, initial_losses):
    """Chen, Badrinarayanan, Lee & Rabinovich (2018), GradNorm.

    GradNorm wants the gradient norms ``G_t = lambda_t ||dD_t/dU||`` of the
    weighted task losses with respect to the shared layer to be proportional
    to ``r_t^1.5`` (asymmetry 1.5), where ``r_t = L_t / mean_j L_j`` is the
    relative inverse training rate and ``L_t = D_t / D_t(0)`` the loss
    ratio to initialization. GradNorm's loss
    ``sum_t |G_t - mean_j G_j r_t^1.5|`` is zero at
    ``lambda*_t`` proportional to ``r_t^1.5 / ||dD_t/dU||``; instead of the
    paper's gradient step on that loss, each round moves the weights half
    way to it on a log scale, ``lambda_t`` proportional to
    ``sqrt(lambda_t lambda*_t)``, which damps the oscillation that a full
    jump causes.
    """
    ratio = task_losses / np.maximum(initial_losses, np.finfo(float).tiny)
    rate = ratio / ratio.mean() if ratio.mean() > 0 else np.ones_like(ratio)
    norms = np.maximum(grad_norms, np.finfo(float).tiny)
    # 1 / norm scaled by the smallest norm first, so that it cannot overflow:
    # tasks fitted exactly have norms near 0.
    target = rate**_GRADNORM_ASYMMETRY * (norms.min() / norms)
    target = _normalize(np.maximum(target, np.finfo(float).tiny))
    return _normalize(np.sqrt(weights * target))


# ------------------------------------------------------------ early stopping


def _validation_split(data, fraction, random_state):
    """Training and held-out rows of task data, for early stopping.

    Long layout: ``round(fraction * n_t)`` rows of each task ``t`` (half
    up), at most ``n_t - 1``, so that every task keeps a training row; a task
    of fewer than ``0.5 / fraction`` rows keeps them all. Wide layout:
    ``ceil(fraction * n_rows)`` rows, as :func:`~sklearn.model_selection.train_test_split`
    holds out for MLPRegressor; a task whose observed labels would all be
    held out gets its first held-out row (in the random order) back.

    Returns ``train, validation, held``: task data of the same layout, a
    :class:`_Validation` of the held-out rows, and the mask of those rows
    (in the row order of ``data``).
    """
    rng = check_random_state(random_state)
    n = len(data.X)
    sw = data.sample_weight
    if data.layout == "long":
        sizes = data.sizes
        n_held = np.minimum(np.floor(fraction * sizes + 0.5).astype(int), sizes - 1)
        # A random order within each task, drawn for all rows at once.
        order = np.lexsort((rng.uniform(size=n), data.codes))
        position = np.arange(n) - data.bounds[data.codes]
        held = np.zeros(n, dtype=bool)
        held[order[position < n_held[data.codes]]] = True
        keep = ~held
        train = LongTasks(
            data.X[keep], data.y[keep], None if sw is None else sw[keep],
            np.concatenate([[0], np.cumsum(sizes - n_held)]),
        )
        labels, codes = data.y[held], data.codes[held]
    else:
        order = rng.permutation(n)
        candidates = order[:min(int(np.ceil(fraction * n)), n - 1)]
        held = np.zeros(n, dtype=bool)
        held[candidates] = True
        for t in np.flatnonzero(~data.mask[~held].any(axis=0)):
            # A row given back may already have brought this task a label.
            if not data.mask[~held, t].any():
                held[candidates[data.mask[candidates, t]][0]] = False
        keep = ~held
        Y = np.where(data.mask, data.Y, np.nan)
        train = WideTasks(data.X[keep], Y[keep], None if sw is None else sw[keep])
        labels, codes = Y[held], None
    validation = _Validation(
        data.layout, data.X[held], labels, codes, None if sw is None else sw[held], train
    )
    return train, validation, held


class _Validation:
    """Held-out rows and their score: the mean over tasks of a per-task R^2.

    Task ``t`` scores ``1 - MSE_t / Var_t``: ``MSE_t`` the (sample-weighted)
    mean squared error on its held-out labels, ``Var_t`` the weighted
    variance of its training labels. Each task counts once, whatever its
    units: a pooled squared error would be ruled by the task in the largest
    units. The training variance, not the held-out one, is the reference,
    so that a task with one or two held-out labels has a defined and
    steady score. Tasks with no held-out weight or constant training labels
    are left out.
    """

    def __init__(self, layout, X, y, codes, sample_weight, train):
        self.layout, self.X, self.codes = layout, X, codes
        s = np.ones(len(X)) if sample_weight is None else sample_weight
        means = train.task_means()
        if layout == "long":
            self.y, self.s = y, s
            held_weight = np.bincount(codes, s, minlength=train.n_tasks)
            spread = np.bincount(
                train.codes, train.pair_weights() * (train.y - means[train.codes]) ** 2,
                minlength=train.n_tasks,
            )
        else:
            mask = ~np.isnan(y)
            self.Y = np.where(mask, y, 0.0)
            self.W = mask * s[:, None]
            held_weight = self.W.sum(axis=0)
            W = train.mask if train.sample_weight is None else (
                train.mask * train.sample_weight[:, None]
            )
            spread = (W * (train.Y - means) ** 2).sum(axis=0)
        variance = spread / np.maximum(train.task_weight_sums(), np.finfo(float).tiny)
        self.scored = (held_weight > 0) & (variance > 0)
        self.denominator = held_weight * variance
        self._design = None

    def score(self, theta, net):
        """The validation score of the network with parameters ``theta``."""
        _, _, A, b = net.unpack(theta)
        if self._design is None:
            # Not net.design(): its one cached copy is the training X's.
            ones = np.ones((len(self.X), int(net.hidden_intercept)))
            self._design = np.hstack([self.X, ones])
        H = net.hidden(self._design, theta)
        if self.layout == "long":
            pred = np.einsum("ij,ij->i", H, A[self.codes])
            if b is not None:
                pred += b[self.codes]
            sse = np.bincount(self.codes, self.s * (self.y - pred) ** 2, minlength=net.T)
        else:
            pred = H @ A.T
            if b is not None:
                pred += b
            sse = (self.W * (self.Y - pred) ** 2).sum(axis=0)
        scored = self.scored
        return float(np.mean(1.0 - sse[scored] / self.denominator[scored]))


class _EarlyStopping:
    """MLPRegressor's ``early_stopping`` rule over the rounds.

    A round that does not beat the best validation score by at least
    ``tol`` counts as no improvement; training stops when more than
    ``n_iter_no_change`` rounds in a row did not improve (the count and
    comparison of ``MLPRegressor._update_no_improvement_count``). The
    parameters of the round with the best score are kept.
    """

    def __init__(self, validation, net, n_iter_no_change, tol):
        self.validation, self.net = validation, net
        self.n_iter_no_change, self.tol = n_iter_no_change, tol
        self.scores, self.best_score = [], -np.inf
        self.best_theta, self.best_round = None, 0
        self.no_improvement, self.stopped = 0, False

    def update(self, theta, n_round):
        """Score the parameters of round ``n_round``; True when training should stop."""
        score = self.validation.score(theta, self.net)
        self.scores.append(score)
        if score < self.best_score + self.tol:
            self.no_improvement += 1
        else:
            self.no_improvement = 0
        if score > self.best_score:
            self.best_score, self.best_theta, self.best_round = score, theta.copy(), n_round
        self.stopped = self.no_improvement > self.n_iter_no_change
        return self.stopped


class _Cached:
    """``fun(x)`` remembered for the last ``x``: the line search asks for the
    value and the gradient separately at the same point."""

    def __init__(self, fun):
        self.fun, self.x, self.out = fun, None, None

    def __call__(self, x):
        # Not np.array_equal: its checks cost as much as the comparison.
        if self.x is None or not (x == self.x).all():
            self.x, self.out = x.copy(), self.fun(x)
        return self.out


class _Memory:
    """The last ``_MEMORY`` curvature pairs ``(s_i, y_i)`` of L-BFGS.

    The pairs are rows of two arrays (in slots reused oldest first), and
    their inner products ``s_i . y_j`` are kept, one matrix-vector product
    each per new pair. The two-loop recursion (:meth:`direction`) then
    needs one matrix-vector product per loop and a recursion over at most
    ``_MEMORY`` numbers, instead of four vector operations per pair (on the
    School problem's 1,809 parameters, 34 us per direction against 66 us).
    """

    def __init__(self, size):
        self.S, self.Y = np.zeros((_MEMORY, size)), np.zeros((_MEMORY, size))
        self.SY = np.zeros((_MEMORY, _MEMORY))
        self.rho = np.zeros(_MEMORY)
        self.slots = []

    def __len__(self):
        return len(self.slots)

    def clear(self):
        self.slots.clear()
        # Unused slots must not add to the products of the recursion.
        self.S[:] = self.Y[:] = 0.0

    def append(self, s, y, sy):
        slot = self.slots.pop(0) if len(self.slots) == _MEMORY else len(self.slots)
        self.slots.append(slot)
        self.S[slot], self.Y[slot], self.rho[slot] = s, y, 1.0 / sy
        self.SY[slot] = self.Y @ s
        self.SY[:, slot] = self.S @ y

    def direction(self, grad, scaling):
        """``-H grad`` by the L-BFGS two-loop recursion over the pairs.

        The initial inverse Hessian is ``gamma * diag(scaling)`` instead of
        ``gamma * I``: L-BFGS in the variables ``x / sqrt(scaling)``,
        written in the original variables so that the stored pairs stay
        valid when the scaling changes. The first loop's ``s_i . q``, with
        ``q = q0 - sum_(j newer) a_j y_j``, is ``s_i . q0 - sum_j a_j s_i . y_j``;
        the second loop's ``y_i . r`` likewise.
        """
        q = -grad
        if not self.slots:
            q = q * scaling
            return q / max(np.linalg.norm(q / np.sqrt(scaling)), 1.0)
        slots = self.slots
        SY, rho = self.SY.tolist(), self.rho.tolist()
        Sq = (self.S @ q).tolist()
        a = [0.0] * _MEMORY
        for n, i in enumerate(reversed(slots)):
            row = SY[i]
            a[i] = rho[i] * (Sq[i] - sum([a[j] * row[j] for j in slots[len(slots) - n:]]))
        q -= self.Y.T @ a
        y = self.Y[slots[-1]]
        q *= scaling
        q *= SY[slots[-1]][slots[-1]] / (y @ (scaling * y))
        Yq = (self.Y @ q).tolist()
        c = [0.0] * _MEMORY
        for n, i in enumerate(slots):
            c[i] = a[i] - rho[i] * (Yq[i] + sum([c[j] * SY[j][i] for j in slots[:n]]))
        q += self.S.T @ c
        return q


def _lbfgs(fun, x, out, memory, n_iter, gtol, scaling):
    """At most ``n_iter`` L-BFGS iterations from ``x`` with ``out = fun(x)``.

    ``fun`` returns ``(value, gradient, ...)``. ``memory`` (a :class:`_Memory`)
    holds the last curvature pairs and is carried from one round to the next, so that a
    change of the task weights does not throw away what L-BFGS learned
    about the curvature (the pairs of the previous weights are a close
    approximation; a direction that is not a descent one resets them).
    ``scaling`` is a diagonal preconditioner (see :meth:`_Memory.direction`).
    Stops when the largest entry of the scaled gradient
    ``sqrt(scaling) * gradient`` is at most ``gtol``.

    Returns ``x, out, n_done, stalled``; ``stalled`` is True when not even
    a steepest-descent step satisfies the Wolfe conditions.
    """
    cached = _Cached(fun)
    root = np.sqrt(scaling)
    # One warnings context for the round, not one per line search (the
    # context costs as much as a direction). A failed search is reported by
    # its return value.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for n_done in range(n_iter):
            value, grad = out[0], out[1]
            if np.max(np.abs(root * grad), initial=0.0) <= gtol:
                return x, out, n_done, False
            step = None
            for attempt in range(2):
                if attempt or not memory:
                    memory.clear()
                direction = memory.direction(grad, scaling)
                if not grad @ direction < 0:
                    continue
                step = line_search(
                    lambda z: cached(z)[0], lambda z: cached(z)[1], x, direction, grad,
                    value, maxiter=30,
                )[0]
                if step is not None:
                    break
            if step is None:
                return x, out, n_done, True
            x_new = x + step * direction
            out_new = cached(x_new)
            s, y = x_new - x, out_new[1] - grad
            sy = s @ y
            if sy > 1e-10 * np.sqrt((s @ s) * (y @ y)):
                memory.append(s, y, sy)
            x, out = x_new, out_new
    return x, out, n_iter, False


def _train(data, net, theta, losses, epsilon, alpha, strategy, fixed, max_iter, tol,
           n_jobs, verbose, early_stopping=None):
    """Full-batch L-BFGS in rounds of ``_ROUND_ITER`` iterations.

    After each round the task weights are updated by ``strategy``. Stops
    when the largest entry of the scaled gradient is at most ``tol`` times
    its value at initialization (with the current weights) and the weights
    moved by at most ``tol``, or when ``early_stopping`` (an
    :class:`_EarlyStopping`, scored after every round) says so; with it,
    the parameters of its best round are returned.

    The head of task ``t`` (``a_t, b_t``) is preconditioned by
    ``1 / lambda_t``: the curvature of the objective along it is
    ``lambda_t`` times that of ``D_t``, so a task with a small weight (a
    target in large units under ``'uncertainty'``) would otherwise need
    thousands of iterations to reach the size of its head.

    Returns ``theta, weights_history, loss_curve, initial_losses, n_rounds,
    converged, grad_ratio``.
    """
    n_tasks = data.n_tasks
    sizes = data.task_weight_sums()
    # A task whose sample weights are all zero has no data term: the
    # strategies see only the others, and its weight stays 1.
    live = sizes > 0

    def on_live(update, *arrays):
        weights = np.ones(n_tasks)
        # Floored so that the preconditioner 1 / lambda_t stays finite.
        weights[live] = np.maximum(update(*(a[live] for a in arrays)), _MIN_WEIGHT)
        return weights

    weights = on_live(_normalize, fixed) if strategy == "fixed" else np.ones(n_tasks)

    def objective(weights):
        return lambda x: _objective(x, net, data, losses, epsilon, weights, alpha, n_jobs)

    def preconditioner(weights):
        U, c, A, b = net.unpack(np.ones_like(theta))
        inverse = 1.0 / weights
        return net.pack(U, c, A * inverse[:, None], None if b is None else inverse)

    theta0 = theta
    at_start, initial_losses = _objective_at_initialization(
        theta0, net, data, losses, epsilon, alpha, n_jobs
    )

    def gradient_scale(weights, scaling):
        # The scaled gradient at initialization of the objective with these
        # weights: ``tol`` is relative to it, so that it means the same
        # whatever the units of y.
        scale = np.max(np.abs(np.sqrt(scaling) * at_start(weights)[1]), initial=0.0)
        return scale if scale > 0 else 1.0

    if strategy == "uncertainty":
        # The noise estimate of the initial model (each task's variance when
        # the intercepts start at the task means): with equal weights a target
        # in large units would drive the first round on its own.
        weights = on_live(
            lambda d, s: _uncertainty_weights(d, d, s, data.S, net.fit_intercept),
            initial_losses, sizes,
        )
    out = at_start(weights)
    # The parameters of each task's own head.
    n_params = net.k + net.fit_intercept
    scaling = preconditioner(weights)
    scale = gradient_scale(weights, scaling)
    history, curve, memory = [], [], _Memory(len(theta))
    converged, grad_ratio = False, 0.0
    for n_round in range(1, max_iter + 1):
        theta, out, n_done, stalled = _lbfgs(
            objective(weights), theta, out, memory, _ROUND_ITER, tol * scale, scaling
        )
        value, grad, task_losses = out
        grad_ratio = float(np.max(np.abs(np.sqrt(scaling) * grad), initial=0.0)) / scale
        history.append(weights)
        curve.append(task_losses)
        if verbose:
            print(
                f"[SharedObjectiveRegressor] round {n_round}: objective {value:.8g}, "
                f"largest scaled gradient entry {grad_ratio:.3g} x initial, "
                f"{n_done} iterations"
            )
        if early_stopping is not None:
            # Before the weight update: a stopped fit needs no new weights.
            stop = early_stopping.update(theta, n_round)
            if verbose:
                print(
                    f"[SharedObjectiveRegressor] validation score "
                    f"{early_stopping.scores[-1]:.6g}"
                )
            if stop:
                break
        if strategy == "uncertainty":
            new = on_live(
                lambda d, d0, s: _uncertainty_weights(d, d0, s, data.S, n_params),
                task_losses, initial_losses, sizes,
            )
        elif strategy == "dwa":
            new = on_live(lambda c: _dwa_weights(c.T), np.asarray(curve).T)
        elif strategy == "gradnorm":
            norms = _gradient_norms(theta, net, data, losses, epsilon, n_jobs)
            new = on_live(_gradnorm_weights, weights, norms, task_losses, initial_losses)
        else:
            new = weights
        if grad_ratio <= tol and np.max(np.abs(new - weights)) <= tol:
            converged = True
            break
        if stalled and np.array_equal(new, weights):
            break
        if not np.array_equal(new, weights):
            weights = new
            scaling = preconditioner(weights)
            scale = gradient_scale(weights, scaling)
            out = objective(weights)(theta)
    if early_stopping is not None and early_stopping.best_theta is not None:
        theta = early_stopping.best_theta
    return (theta, np.asarray(history), np.asarray(curve), initial_losses, n_round,
            converged, grad_ratio)


class SharedObjectiveRegressor(MultiTaskRegressorBase):
    """Multi-task network with a shared representation and adaptive task weights.

    Every task reads the same learned representation
    :math:`h(x) = \\mathrm{act}(U^\\top x + c)` with :math:`U` of shape
    ``(n_model_features, n_components)`` and has its own linear head,
    :math:`f_t(x) = a_t^\\top h(x) + b_t` (hard parameter sharing). The
    estimator minimizes one joint objective

    .. math::

        \\sum_t \\lambda_t D_t + \\frac{\\alpha}{2} \\left(\\|U\\|^2 + \\|A\\|^2\\right),
        \\qquad
        D_t = \\frac{1}{S} \\sum_{i \\text{ observed in } t} s_i\\, \\ell_t(y_{it} - f_t(x_i))

    with :math:`S = \\sum_i s_i`; the intercepts :math:`b_t, c` are not
    penalized. The task weights :math:`\\lambda_t` (summing to the number of
    tasks) are updated during training by ``task_weights``:

    - ``'equal'``: all 1, the objective of :class:`~sklearn.neural_network.MLPRegressor`.
    - ``'uncertainty'`` (Kendall, Gal & Cipolla, 2018): each task has a
      learned noise :math:`\\sigma_t`, and
      :math:`\\sum_t D_t / (2\\sigma_t^2) + \\log \\sigma_t` is the Gaussian
      negative log-likelihood. For a fixed network its minimizer is
      :math:`\\sigma_t^2 =` the task's mean squared residual (twice its mean
      loss for Huber), and :math:`\\lambda_t \\propto 1/\\sigma_t^2`: a
      target in large units or with large noise no longer drowns the others.
      The residual sum of squares is divided by the task's rows less the
      ``n_components + 1`` parameters of its head (the unbiased noise
      variance); a task with no more rows than that, or a constant one, has
      no noise estimate and keeps weight 1. The first round already uses
      the weights of the initial, intercept-only model.
    - ``'dwa'`` (dynamic weight average, Liu, Johns & Davison, 2019):
      :math:`\\lambda_t \\propto \\exp(r_t / 2)` with
      :math:`r_t = D_t(k-1) / D_t(k-2)` the ratio of the task's last two
      losses (temperature 2); tasks whose loss falls slowly get more weight.
      All 1 for the first two rounds.
    - ``'gradnorm'`` (Chen et al., 2018): the gradient norms
      :math:`G_t = \\lambda_t \\|\\partial D_t / \\partial U\\|` are moved to be
      proportional to :math:`\\tilde r_t^{1.5}` (asymmetry 1.5), the relative
      inverse training rate :math:`\\tilde r_t = L_t / \\mathrm{mean}_j L_j`
      with :math:`L_t = D_t / D_t(0)`: each round sets
      :math:`\\lambda_t \\propto \\tilde r_t^{1.5} / \\|\\partial D_t / \\partial U\\|`,
      where the paper's loss :math:`\\sum_t |G_t - \\bar G \\tilde r_t^{1.5}|`
      is zero, instead of taking a gradient step on it.
    - an array of positive weights: fixed, normalized to sum to the number
      of tasks.

    Training is full-batch L-BFGS in rounds of 10 iterations, with analytic
    gradients; the weights are updated after each round, and L-BFGS keeps
    its curvature memory across rounds. Each task's head is preconditioned
    by :math:`1/\\lambda_t`, so that a task with a small weight still moves.
    The fit is deterministic for a given ``random_state``.

    With ``early_stopping=True`` training stops, as in
    :class:`~sklearn.neural_network.MLPRegressor`, once the score on
    held-out rows has not improved for a while, and the parameters of the
    round with the best score are kept. The validation score is the mean
    over tasks of each task's :math:`R^2` on its held-out labels,
    :math:`1 - \\mathrm{MSE}_t / \\mathrm{Var}_t` with
    :math:`\\mathrm{Var}_t` the variance of the task's training labels
    (sample-weighted): every task counts once whatever its units, where a
    pooled squared error would be ruled by the target in the largest units,
    and a task with a single held-out label still has a score. Tasks with
    no held-out label or constant training labels are left out.

    Parameters
    ----------
    n_components : int, default=10
        Size of the shared representation :math:`h(x)`.
    activation : {'identity', 'relu', 'tanh'}, default='identity'
        Activation of the shared layer. With ``'identity'`` every task is
        linear, :math:`w_t = U a_t`, and ``coef_`` is available; with
        ``task_weights='equal'`` and ``n_components`` at least the rank of
        the solution the objective equals the trace-norm problem
        :math:`D + \\alpha \\|W\\|_*` (variational form of the nuclear norm).
    task_weights : {'equal', 'uncertainty', 'dwa', 'gradnorm'} or array-like \
            of shape (n_tasks,), default='uncertainty'
        How the task weights :math:`\\lambda_t` are set (see above). An array
        gives fixed positive weights, one per task in the order of ``tasks_``.
    loss : {'squared', 'huber'} or list of such str, default='squared'
        Loss of a residual, one name for every task or one name per task (in
        the order of ``tasks_``).
    epsilon : float, default=1.35
        Threshold of the Huber loss, in the units of ``y``.
    alpha : float, default=1e-4
        Penalty :math:`\\alpha/2 (\\|U\\|^2 + \\|A\\|^2)` on the weights.
        The penalty carries no task weight, while the data terms do: under
        ``'uncertainty'`` a target in units :math:`c` times larger gets a
        weight about :math:`c^2` times smaller, so that, measured in that
        target's own units, its head feels a penalty :math:`c^2` times
        stronger than the other heads. With :math:`c = 1000` (and the other
        targets of unit scale) ``alpha=1e-8`` acts on that head like
        ``1e-2`` and it still fits as well as on its own, ``alpha=1e-6``
        acts like 1 and its :math:`R^2` falls to about 0.1, and the default
        acts like 100 and shrinks the head to nothing. Standardize such
        targets or scale ``alpha`` down by :math:`c^2` (with ``alpha=0`` the
        uncertainty-weighted problem does not depend on the units of the
        targets at all).
    fit_intercept : bool, default=True
        Whether to fit the task intercepts :math:`b_t` and, for the
        nonlinear activations, the hidden intercept :math:`c`.
    task_column : int or str, default=None
        ``None``: wide layout, ``y`` has one column per task (NaN marks a
        missing label). Otherwise the column of ``X`` (int position, negative
        allowed, or DataFrame column name) that holds each row's task label:
        long layout, ``y`` is 1-D.
    handle_unknown : {'warn', 'shared', 'error'}, default='warn'
        Long layout: how to predict a task label that fit never saw. It is
        predicted by the mean of the task heads with a ``UserWarning``
        (``'warn'``) or silently (``'shared'``), or refused with a
        ``ValueError`` (``'error'``).
    max_iter : int, default=50
        Maximum number of rounds (of 10 L-BFGS iterations each, so 500
        iterations in all by default).
    tol : float, default=1e-4
        Training stops when the largest entry of the (preconditioned)
        gradient of the objective is at most ``tol`` times its value at
        initialization and no task weight moved by more than ``tol`` in the
        last round. Otherwise a ``ConvergenceWarning`` is raised after
        ``max_iter`` rounds; the ReLU activation, whose objective is not
        smooth, often ends there. With ``early_stopping=True``, ``tol`` is
        also the improvement of the validation score that counts (as in
        MLPRegressor); stopping by that rule is not a convergence failure
        and raises no warning.
    early_stopping : bool, default=False
        Whether to hold out ``validation_fraction`` of the training data and
        stop when the validation score (see above) has not improved by at
        least ``tol`` for more than ``n_iter_no_change`` rounds in a row.
        The fitted parameters are those of the round with the best
        validation score. In the long layout each task holds out its share
        of rows (rounded half up), keeping at least one for training, so a
        task of fewer than ``0.5 / validation_fraction`` rows keeps all
        of them; in the wide layout ``ceil(validation_fraction * n_samples)``
        rows are held out, as MLPRegressor does, and a task whose observed
        labels would all be held out keeps one of those rows. A
        ``ValueError`` is raised when no task can be scored.
    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping, in (0, 1).
        Only used if ``early_stopping`` is True.
    n_iter_no_change : int, default=10
        Maximum number of rounds (of 10 L-BFGS iterations) without an
        improvement of the validation score by at least ``tol``; training
        stops at the next one. Only used if ``early_stopping`` is True. The
        default is MLPRegressor's count of epochs, and measured: on a
        heteroscedastic synthetic set the validation score of a ReLU network
        stayed within 1e-3 for 15 rounds before it rose by 0.012, and
        shorter counts stopped on that plateau, while on the School data
        the count of 10 still stopped after 14 to 36 of the 50 rounds.
    random_state : int, RandomState instance or None, default=None
        Seed of the weight initialization and of the validation split of
        ``early_stopping``. Pass an int for reproducible results; with an
        int the initialization is the same with and without early stopping.
    n_jobs : int, default=None
        Number of jobs for the per-task gradient blocks, through joblib.
        ``None`` means 1 (a plain loop) even inside a
        :func:`joblib.parallel_config` context. ``-1`` means all processors.
    verbose : int, default=0
        Print the objective after every round when positive.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_model_features)
        The shared layer :math:`U^\\top`.
    hidden_intercept_ : ndarray of shape (n_components,)
        The hidden intercept :math:`c` (zeros when not fitted).
    head_coef_ : ndarray of shape (n_tasks, n_components) or (n_components,)
        The task heads :math:`a_t`; 1-D when a 1-D ``y`` was passed in the
        wide layout.
    intercept_ : ndarray of shape (n_tasks,) or float
        Task intercepts :math:`b_t` (0 when ``fit_intercept=False``).
    coef_ : ndarray of shape (n_tasks, n_model_features) or (n_model_features,)
        Task coefficients :math:`w_t = U a_t`; only with
        ``activation='identity'``.
    task_weights_ : ndarray of shape (n_tasks,)
        The weights :math:`\\lambda_t` of the last round: the fitted model
        minimizes the objective with these weights. With
        ``early_stopping=True``, the weights of the best round, whose
        parameters are kept.
    task_weights_history_ : ndarray of shape (n_rounds, n_tasks)
        The weights used in each round.
    loss_curve_ : ndarray of shape (n_rounds, n_tasks)
        Each task's :math:`D_t` at the end of each round (on the training
        rows that ``early_stopping`` leaves).
    initial_loss_ : ndarray of shape (n_tasks,)
        Each task's :math:`D_t` at initialization (GradNorm's reference).
    n_iter_ : int
        Number of rounds run.
    validation_scores_ : ndarray of shape (n_rounds,) or None
        The validation score after each round; ``None`` unless
        ``early_stopping=True``. The kept round is
        ``np.argmax(validation_scores_) + 1``.
    best_validation_score_ : float or None
        The best validation score, that of the kept parameters; ``None``
        unless ``early_stopping=True``.
    tasks_ : ndarray of shape (n_tasks,)
        Task labels in sorted order (column indices in the wide layout).
    n_tasks_ : int
        Number of tasks.
    n_features_in_ : int
        Number of columns of ``X`` seen in fit, task column included.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Column names of ``X`` seen in fit, when they are all strings.

    See Also
    --------
    SharedParamRegressor : Each task is a shared linear model plus a
        task-specific deviation.
    SharedFeatureRegressor : Tasks share a low-dimensional feature subspace
        (trace norm, a convex relative of ``activation='identity'``) or the
        same selected features.
    sklearn.neural_network.MLPRegressor : One network for all targets, with
        equal weights and no missing labels.

    References
    ----------
    A. Kendall, Y. Gal and R. Cipolla, "Multi-task learning using uncertainty
    to weigh losses for scene geometry and semantics", CVPR 2018.

    S. Liu, E. Johns and A. J. Davison, "End-to-end multi-task learning with
    attention", CVPR 2019.

    Z. Chen, V. Badrinarayanan, C.-Y. Lee and A. Rabinovich, "GradNorm:
    gradient normalization for adaptive loss balancing in deep multitask
    networks", ICML 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from skmtl import SharedObjectiveRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 5))
    >>> signal = X[:, 0] - X[:, 1]
    >>> # two targets with the same signal, the second ten times noisier
    >>> y = np.column_stack([signal + 0.1 * rng.normal(size=200),
    ...                      signal + rng.normal(size=200)])
    >>> model = SharedObjectiveRegressor(n_components=2, random_state=0).fit(X, y)
    >>> model.task_weights_.round(2)
    array([1.98, 0.02])
    >>> model.coef_.round(1)
    array([[ 1. , -1. , -0. , -0. ,  0. ],
           [ 1. , -1. ,  0. , -0. ,  0.1]])
    """

    _parameter_constraints = {
        **MultiTaskRegressorBase._parameter_constraints,
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "relu", "tanh"})],
        "task_weights": [StrOptions({"equal", "uncertainty", "dwa", "gradnorm"}), "array-like"],
        "loss": [StrOptions({"squared", "huber"}), list, tuple],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=10,
        *,
        activation="identity",
        task_weights="uncertainty",
        loss="squared",
        epsilon=1.35,
        alpha=1e-4,
        fit_intercept=True,
        task_column=None,
        handle_unknown="warn",
        max_iter=50,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        random_state=None,
        n_jobs=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.activation = activation
        self.task_weights = task_weights
        self.loss = loss
        self.epsilon = epsilon
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.task_column = task_column
        self.handle_unknown = handle_unknown
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    @property
    def _per_task_attributes(self):
        names = ("intercept_", "head_coef_")
        return names + ("coef_",) if self.activation == "identity" else names

    def _task_losses(self, n_tasks):
        names = [self.loss] * n_tasks if isinstance(self.loss, str) else list(self.loss)
        if len(names) != n_tasks:
            raise ValueError(
                f"loss has {len(names)} entries but there are {n_tasks} tasks: pass "
                "one name for all tasks or one per task."
            )
        bad = [name for name in names if name not in LOSSES]
        if bad:
            raise ValueError(
                f"loss entries must be in {sorted(LOSSES)}, got {bad[:5]}."
            )
        return tuple(LOSSES[name] for name in names)

    def _fixed_weights(self, n_tasks):
        if isinstance(self.task_weights, str):
            return None
        weights = np.asarray(self.task_weights, dtype=np.float64)
        if weights.shape != (n_tasks,):
            raise ValueError(
                f"task_weights has shape {weights.shape} but there are {n_tasks} "
                "tasks: pass one weight per task."
            )
        if not (np.all(np.isfinite(weights)) and np.all(weights > 0)):
            raise ValueError("task_weights must be finite and positive.")
        return _normalize(weights)

    def _fit(self, data):
        losses = self._task_losses(data.n_tasks)
        fixed = self._fixed_weights(data.n_tasks)
        strategy = "fixed" if fixed is not None else self.task_weights
        net = _Network(
            data.n_features, self.n_components, data.n_tasks, self.activation,
            self.fit_intercept,
        )
        monitor = None
        if self.early_stopping:
            data, validation, _ = _validation_split(
                data, self.validation_fraction, self.random_state
            )
            if not validation.scored.any():
                raise ValueError(
                    f"The validation set is too small: with validation_fraction="
                    f"{self.validation_fraction:g} no task has a held-out label and "
                    "non-constant training labels to score. Increase validation_fraction "
                    "or the size of your dataset, or set early_stopping=False."
                )
            monitor = _EarlyStopping(validation, net, self.n_iter_no_change, self.tol)
        # With an int random_state the initialization is that of a fit without
        # early stopping on the same training rows.
        theta = net.initialize(data, self.random_state)
        # The solver's work is many small products (dot products of the
        # parameter vector, thin matrix products), for which a BLAS thread
        # pool costs more than it gives: on a busy 2-core machine a dot
        # product of 33,000 entries took 15 ms with 2 BLAS threads, 6 us
        # with one.
        # One set of workers for every evaluation of the objective. In the
        # long layout each chunk runs the whole network on its rows: on two
        # worker processes, with the data mapped once per fit, a fit at
        # 1,000 tasks x 1,000 rows x 20 features ran 1.61x to 1.62x faster
        # than serially, on two threads (which hold the GIL in numpy's
        # smaller steps) 1.09x (benchmarks/README.md, runs N6, N7 and N3).
        prefer = "processes" if data.layout == "long" else "threads"
        with single_blas_thread(), TaskWorkers(self.n_jobs, prefer) as workers:
            # With worker processes these are written once to files they map.
            # (The parent keeps its own design in memory: its products on the
            # mapped file ran 15% slower, 4 kB pages against huge pages.)
            workers.share(net.labels(data), net.design(data.X))
            theta, history, curve, initial, n_rounds, converged, grad_ratio = _train(
                data, net, theta, losses, self.epsilon, self.alpha, strategy, fixed,
                self.max_iter, self.tol, workers, self.verbose, monitor,
            )
        if not (converged or (monitor is not None and monitor.stopped)):
            warnings.warn(
                f"SharedObjectiveRegressor did not converge in {n_rounds} rounds: the "
                f"largest gradient entry is {grad_ratio:.3g} times its initial value "
                f"(tol={self.tol:g}) or the task weights still move. Increase max_iter "
                "or tol, or scale the features.",
                ConvergenceWarning,
            )
        U, c, A, b = net.unpack(theta)
        A, b = A.copy(), np.zeros(net.T) if b is None else b.copy()
        empty = data.task_weight_sums() <= 0
        if empty.any() and not empty.all():
            # No weighted label: predicted like a task that fit never saw.
            A[empty], b[empty] = A[~empty].mean(axis=0), b[~empty].mean()
        # The weights the returned parameters were trained with: the best
        # round's under early stopping.
        best = n_rounds if monitor is None or not monitor.best_round else monitor.best_round
        fitted = {
            "components_": U.T.copy(),
            "hidden_intercept_": np.zeros(net.k) if c is None else c.copy(),
            "head_coef_": A,
            "intercept_": b,
            "task_weights_": history[best - 1].copy(),
            "task_weights_history_": history,
            "loss_curve_": curve,
            "initial_loss_": initial,
            "n_iter_": n_rounds,
            "validation_scores_": None if monitor is None else np.asarray(monitor.scores),
            "best_validation_score_": None if monitor is None else monitor.best_score,
        }
        if self.activation == "identity":
            fitted["coef_"] = A @ U.T
        return fitted

    def _hidden(self, X):
        """The shared representation ``act(X U + c)`` of model features ``X``."""
        Z = X @ self.components_.T + self.hidden_intercept_
        return _activate(Z, self.activation)

    def _task_heads(self):
        return np.atleast_2d(self.head_coef_), np.atleast_1d(self.intercept_)

    def _head_inputs(self, X):
        return self._hidden(X)
