"""The two data layouts as one internal form that every solver consumes.

Wide layout: ``X`` is shared by all tasks and ``y`` has one column per task,
NaN marking a missing label. Long layout: one column of ``X`` holds each row's
task label and ``y`` is 1-D. Both become a *task data* object that exposes the
same per-task operations, each on a contiguous range of tasks
``[start, stop)`` (the unit of work of :func:`skmtl._parallel.map_task_chunks`):

- ``gram(start, stop, fit_intercept)``: per-task sufficient statistics
  ``Z_t^T S_t Z_t``, ``Z_t^T S_t y_t``, ``y_t^T S_t y_t`` and the summed
  weights, with ``Z_t = [X_t, 1]`` when ``fit_intercept``;
- ``linear_loss_grad(start, stop, coef, intercept, loss, epsilon)``: the
  weighted loss of task-wise linear models and its gradient per task;
- ``linear_loss_grad_curv(...)``: the same and where each label's loss has
  curvature, and ``task_hessians(...)``: each task's Hessian from those, for
  Newton's method.

Both are *sums* over rows; the estimators divide by ``S = sum_i s_i`` as the
objective in SPEC section 3 does. Per-task results never depend on which
other tasks share the range, so results do not change with ``n_jobs``.
"""

import numbers

import numpy as np

# Tasks of equal size are stacked and handled by one batched matmul; those
# with at least this many rows are never copied to be stacked (their products
# amortize a Python step per run of consecutive tasks).
_LARGE_TASK = 64
# Batched products cost one Python step per group of equal-size tasks; with
# more groups than this fraction of the tasks (School: about 100 sizes among
# 139 tasks) the row-wise form, a few passes over all rows, is faster
# (measured on SharedObjectiveRegressor's head blocks, which then took the
# same two forms, on School: 3.2 s batched, 1.4 s row-wise).
_MAX_GROUP_FRACTION = 0.1
# The long layout's loss and gradient run on pieces of about this many bytes
# of X (whole tasks): the forward product, the loss and the backward product
# of a piece read its rows from cache, and the residual temporaries are
# short, instead of two passes over the whole chunk's X from memory and
# temporaries of its full length. Huber, one thread, per evaluation:
# 1,000 tasks x 1,000 rows x 20 features 21 -> 12.5 ms, 1,000 x 4,000 x 20
# 76 -> 50 ms, 2,000 x 50 x 20 2.4 -> 1.2 ms, row-wise form (1,000 tasks of
# 200 to 600 rows, 10 features) 32 -> 15 ms. Pieces of 1 MB cost more in
# Python steps than they save (1,000 x 4,000 x 20: 63 ms).
_BLOCK_BYTES = 2**22


def check_task_labels(labels, *, where):
    """Validate task labels: ints, floats or strings, not mixed, finite.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
        The labels.
    where : str
        Describes where the labels come from, for error messages.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        Numeric labels as a numeric array, string labels as an object array;
        contiguous.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"Task labels ({where}) must be 1-D, got shape {labels.shape}.")
    # A task column of X is a strided view: every pass over it (this check,
    # the sort check and the task boundaries) would read a cache line per
    # label. One copy costs less than those passes (4,000,000 rows of 21
    # columns: 80 ms -> 31 ms).
    labels = np.ascontiguousarray(labels)
    kind = labels.dtype.kind
    if kind in "biu":
        return labels
    if kind == "f":
        if not np.all(np.isfinite(labels)):
            raise ValueError(
                f"Task labels ({where}) contain NaN or inf; every row needs a "
                "finite task label."
            )
        return labels
    if kind in "US":
        return labels.astype(object)
    if kind != "O":
        raise TypeError(
            f"Task labels ({where}) must be ints, floats or strings, got dtype "
            f"{labels.dtype}."
        )
    is_str = np.fromiter((isinstance(v, str) for v in labels), bool, len(labels))
    if is_str.all():
        return labels
    is_num = np.fromiter(
        (isinstance(v, numbers.Real) and not isinstance(v, bool) for v in labels),
        bool,
        len(labels),
    )
    bad = ~(is_str | is_num)
    if bad.any():
        value = labels[np.flatnonzero(bad)[0]]
        raise TypeError(
            f"Task labels ({where}): argument must be a string or a real number, "
            f"got {value!r} of type {type(value).__name__}."
        )
    if is_str.any():
        if any(v != v for v in labels[is_num]):
            raise ValueError(
                f"Task labels ({where}) contain NaN; every row needs a task label."
            )
        raise ValueError(
            f"Task labels ({where}) mix strings and numbers; use one type for "
            "all labels."
        )
    return check_task_labels(labels.astype(np.float64), where=where)


def _apply_losses(r, losses, epsilon, sizes=None):
    """Value and derivative of each task's loss on residuals ``r``.

    ``r`` is ``(n_tasks, n_rows)`` with one row per task, or 1-D with the
    entries of consecutive tasks of ``sizes`` entries each.
    """
    if len(set(losses)) == 1:
        return losses[0](r, epsilon)
    value, deriv = np.empty_like(r), np.empty_like(r)
    task_of = None if sizes is None else np.repeat(np.arange(len(sizes)), sizes)
    for loss in set(losses):
        tasks = [j for j, f in enumerate(losses) if f is loss]
        where = tasks if task_of is None else np.isin(task_of, tasks)
        value[where], deriv[where] = loss(r[where], epsilon)
    return value, deriv


def _positive_weight_stats(weights):
    """Number of positive weights and the sum of their logs.

    With sample weights as precision weights, a row of weight 0 carries no
    observation; the REML likelihood counts the others and their log weights.
    """
    positive = weights[weights > 0]
    return len(positive), float(np.log(positive).sum())


def _safe_mean(total, weight):
    """``total / weight``, 0 for a task whose sample weights are all zero."""
    return np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)


def _stack(a, js, rows):
    """Rows ``rows`` of ``a`` (from ``LongTasks._task_groups``) as ``(len(js), size, ...)``."""
    # The size is explicit: -1 is ambiguous for arrays without columns.
    return a[rows].reshape(len(js), _group_size(js, rows), *a.shape[1:])


def _group_size(js, rows):
    """Rows per task of a group ``(js, rows)`` of ``LongTasks._task_groups``."""
    return (rows.stop - rows.start) // len(js) if isinstance(rows, slice) else rows.shape[1]


def _block_rows(X):
    """Rows of ``X`` in ``_BLOCK_BYTES``."""
    return max(1, _BLOCK_BYTES // (X.itemsize * max(X.shape[1], 1)))


def _split_group(js, rows, block_rows):
    """A group of :meth:`LongTasks._task_groups` in pieces of ``block_rows`` rows or fewer.

    Every piece holds at least one task.
    """
    size = _group_size(js, rows)
    step = max(1, block_rows // size)
    for i in range(0, len(js), step):
        if isinstance(rows, slice):
            part = slice(rows.start + i * size, rows.start + min(i + step, len(js)) * size)
        else:
            part = rows[i:i + step]
        yield js[i:i + step], part


def _batched_gram(Xb, yb, sb, fit_intercept):
    """Sufficient statistics of stacked tasks ``Xb`` (k, m, d), ``yb`` (k, m)."""
    k, m, d = Xb.shape
    p = d + int(fit_intercept)
    Xw = Xb if sb is None else Xb * sb[..., None]
    yw = yb if sb is None else yb * sb
    G = np.empty((k, p, p))
    g = np.empty((k, p))
    Gxx = np.matmul(Xw.transpose(0, 2, 1), Xb)
    if sb is not None:
        Gxx = 0.5 * (Gxx + Gxx.transpose(0, 2, 1))
    G[:, :d, :d] = Gxx
    g[:, :d] = np.matmul(Xw.transpose(0, 2, 1), yb[..., None])[..., 0]
    sw = np.full(k, float(m)) if sb is None else sb.sum(axis=1)
    if fit_intercept:
        x1 = Xw.sum(axis=1)
        G[:, :d, d] = x1
        G[:, d, :d] = x1
        G[:, d, d] = sw
        g[:, d] = yw.sum(axis=1)
    yy = np.einsum("km,km->k", yw, yb)
    return G, g, yy, sw


def _symmetric(hess):
    """``hess`` made exactly symmetric (products ``(Z h)^T Z`` are so only to rounding)."""
    return 0.5 * (hess + hess.transpose(0, 2, 1))


class LongTasks:
    """Long layout: rows sorted by task, task ``t`` owns rows ``bounds[t]:bounds[t+1]``.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features)
        Model features, rows sorted by task.
    y : ndarray of shape (n_rows,)
    sample_weight : ndarray of shape (n_rows,) or None
        ``None`` means all ones.
    bounds : ndarray of shape (n_tasks + 1,)
    codes : ndarray of shape (n_rows,)
        Task index of each (sorted) row.
    S : float
        Sum of the sample weights.
    """

    layout = "long"

    def __init__(self, X, y, sample_weight, bounds):
        self.X = X
        self.y = y
        self.sample_weight = sample_weight
        self.bounds = bounds
        self.n_tasks = len(bounds) - 1
        self.n_features = X.shape[1]
        self.sizes = np.diff(bounds)
        self.codes = np.repeat(np.arange(self.n_tasks), self.sizes)
        self.S = float(len(y) if sample_weight is None else sample_weight.sum())
        self.n_observed = len(y)
        self._groups = {}

    def __getstate__(self):
        # The task-group cache stays behind: a copy sent to a worker process
        # builds its own for the tasks it gets.
        return {**vars(self), "_groups": {}}

    def pair_weights(self):
        """Sample weight of every observed (row, task) pair."""
        return np.ones(len(self.y)) if self.sample_weight is None else self.sample_weight

    def positive_weight_stats(self):
        """Number of observed labels of positive weight and the sum of their log weights."""
        if self.sample_weight is None:
            return len(self.y), 0.0
        return _positive_weight_stats(self.sample_weight)

    def task_weight_sums(self):
        """Summed sample weight of each task's observed labels."""
        if self.sample_weight is None:
            return self.sizes.astype(np.float64)
        return np.add.reduceat(self.sample_weight, self.bounds[:-1])

    def _task_groups(self, start, stop):
        """Tasks ``[start, stop)`` in groups that one batched product handles.

        Yields ``(js, rows)``: positions in the range of tasks of one size,
        and their rows, a slice when the tasks are consecutive (a reshaped
        view, no gather) or an index array of shape ``(len(js), size)``.
        Tasks with at least ``_LARGE_TASK`` rows are never gathered (a copy
        of their rows costs more than a Python step per run of consecutive
        ones): each run of consecutive tasks of one size is one group.
        """
        b = self.bounds
        sizes = self.sizes[start:stop]
        for m in np.unique(sizes):
            js = np.flatnonzero(sizes == m)
            if js[-1] - js[0] == len(js) - 1:
                yield js, slice(b[start + js[0]], b[start + js[-1] + 1])
            elif m < _LARGE_TASK:
                yield js, b[start + js][:, None] + np.arange(m)
            else:
                for run in np.split(js, np.flatnonzero(np.diff(js) != 1) + 1):
                    yield run, slice(b[start + run[0]], b[start + run[-1] + 1])

    def _batch_groups(self, start, stop, block_rows=None):
        """:meth:`_task_groups` as a list, or None when the row-wise form is faster.

        With ``block_rows``, a group of more rows is split into pieces of
        consecutive members of at most that many rows (at least one task).
        Iterative solvers ask for the same task ranges at every evaluation,
        so the answer is kept.
        """
        key = (start, stop, block_rows)
        if key not in self._groups:
            if block_rows is None:
                groups = list(self._task_groups(start, stop))
                if len(groups) > _MAX_GROUP_FRACTION * (stop - start) + 4:
                    groups = None
            else:
                groups = self._batch_groups(start, stop)
                if groups is not None:
                    groups = [piece for js, rows in groups
                              for piece in _split_group(js, rows, block_rows)]
            self._groups[key] = groups
        return self._groups[key]

    def gram(self, start, stop, fit_intercept):
        """Per-task ``G_t, g_t, y_t^T S_t y_t, sum s`` for tasks ``[start, stop)``."""
        X, y, s = self.X, self.y, self.sample_weight
        p = self.n_features + int(fit_intercept)
        k = stop - start
        groups = self._batch_groups(start, stop)
        if groups is None:
            return self._gram_rowwise(start, stop, fit_intercept)
        G, g = np.empty((k, p, p)), np.empty((k, p))
        yy, sw = np.empty(k), np.empty(k)
        for js, rows in groups:
            G[js], g[js], yy[js], sw[js] = _batched_gram(
                _stack(X, js, rows), _stack(y, js, rows),
                None if s is None else _stack(s, js, rows), fit_intercept,
            )
        return G, g, yy, sw

    def _gram_rowwise(self, start, stop, fit_intercept):
        """:meth:`gram` task by task, for tasks in many sizes.

        One batched product per size costs more Python steps than a plain
        loop over the tasks (School, 139 tasks in about 100 sizes, 28
        columns: 4.0 ms batched, 1.8 ms task by task; sums of per-row outer
        products took 21 ms). The rows go in blocks of whole tasks
        (:meth:`row_blocks`), each copied once with its column of ones.
        """
        p = self.n_features + int(fit_intercept)
        k, b = stop - start, self.bounds
        G, g, yy, sw = np.empty((k, p, p)), np.empty((k, p)), np.empty(k), np.empty(k)
        for lo, hi in self.row_blocks(start, stop, self.X):
            rows = slice(b[lo], b[hi])
            Z = self.X[rows]
            if fit_intercept:
                Z = np.hstack([Z, np.ones((len(Z), 1))])
            y = self.y[rows]
            s = None if self.sample_weight is None else self.sample_weight[rows]
            Zw = Z if s is None else Z * s[:, None]
            for t in range(lo, hi):
                r = slice(b[t] - b[lo], b[t + 1] - b[lo])
                np.matmul(Zw[r].T, Z[r], out=G[t - start])
                np.matmul(Zw[r].T, y[r], out=g[t - start])
            starts = b[lo:hi] - b[lo]
            yw = y if s is None else y * s
            yy[lo - start:hi - start] = np.add.reduceat(yw * y, starts)
            sw[lo - start:hi - start] = (
                np.diff(b[lo:hi + 1]) if s is None else np.add.reduceat(s, starts)
            )
        if self.sample_weight is not None:
            G = 0.5 * (G + G.transpose(0, 2, 1))
        return G, g, yy, sw

    def linear_loss_grad(self, start, stop, coef, intercept, loss, epsilon, X=None):
        """Weighted loss sum and per-task gradient of task-wise linear models.

        Parameters
        ----------
        start, stop : int
            Task range.
        coef : ndarray of shape (stop - start, n_features)
        intercept : ndarray of shape (stop - start,) or None
        loss : callable
            From :mod:`skmtl._losses`.
        epsilon : float
            Huber threshold (ignored by the squared loss).
        X : ndarray of shape (n_rows, n_features), default=None
            Features in the internal row order to use instead of ``self.X``.

        Returns
        -------
        loss_sum : float
            ``sum s_i loss(r_i)`` over the rows of these tasks.
        grad_coef : ndarray of shape (stop - start, n_features)
        grad_intercept : ndarray of shape (stop - start,)
        """
        return self._linear_terms(start, stop, coef, intercept, loss, epsilon, X, None)[:3]

    def linear_loss_grad_curv(self, start, stop, coef, intercept, loss, curvature, epsilon):
        """:meth:`linear_loss_grad`, and where each row's loss has curvature.

        ``curvature`` (from :mod:`skmtl._losses`) says where the loss's second
        derivative is 1 (it is 0 elsewhere). Returns ``loss_sum, grad_coef,
        grad_intercept`` as :meth:`linear_loss_grad` does, and ``curv``, a
        boolean array over the rows of these tasks (``row_range``), in order:
        what :meth:`task_hessians` reads, from the arrays of all chunks
        concatenated in task order.
        """
        return self._linear_terms(start, stop, coef, intercept, loss, epsilon, None, curvature)

    def task_hessians(self, start, stop, curv, prev=None, hess=None, fit_intercept=True):
        """Each task's Hessian of the loss sum, for tasks ``[start, stop)``.

        Parameters
        ----------
        start, stop : int
            Task range.
        curv : ndarray of bool of shape (n_rows,)
            Where each row's loss has curvature 1 (from
            :meth:`linear_loss_grad_curv`), for all rows.
        prev, hess : ndarray, default=None
            The curvatures of all rows, and the Hessians of all tasks of
            shape ``(n_tasks, p, p)``, at an earlier point.
        fit_intercept : bool, default=True

        Returns
        -------
        hess : ndarray of shape (stop - start, p, p)
            Task ``t``'s ``Z_t^T diag(s_i loss''(r_i)) Z_t``, ``Z_t = [X_t, 1]``
            when ``fit_intercept`` (intercept last), else ``X_t``.

        Notes
        -----
        Huber's curvature is 1 or 0, and few rows change between Newton
        steps. With ``hess`` and ``prev``, a task's Hessian is ``hess`` plus
        the rows whose curvature changed, or (if fewer) formed anew from its
        rows of curvature 1: one small product over those rows, not over all
        of them. From the squared-loss Gram matrices (``prev`` all True) the
        first step reads the rows past ``epsilon`` or the rows within it,
        whichever are fewer. Per task, so that results do not depend on the
        chunks.
        """
        rows = self.row_range(start, stop)
        return self._task_hessians(
            start, stop, curv[rows], None if prev is None else prev[rows],
            None if hess is None else hess[start:stop], fit_intercept,
        )

    def _task_hessians(self, start, stop, curv, prev, hess, fit_intercept):
        """:meth:`task_hessians` from the curvatures and Hessians of these tasks only."""
        d = self.n_features
        b = self.bounds
        row0 = b[start]
        if hess is None:
            hess = np.zeros((stop - start, d + int(fit_intercept), d + int(fit_intercept)))
        else:
            hess = hess.copy()
        for lo, hi in self.row_blocks(start, stop, self.X):
            rows = slice(b[lo] - row0, b[hi] - row0)
            starts = b[lo:hi] - b[lo]
            use = curv[rows]
            if prev is not None:
                # Per task, the rows whose curvature changed, or if fewer the
                # rows of curvature 1 (the Hessian formed anew).
                changed = use != prev[rows]
                anew = np.add.reduceat(use, starts) < np.add.reduceat(changed, starts)
                if not anew.any():
                    use = changed
                elif not anew.all():
                    use = np.where(np.repeat(anew, np.diff(b[lo:hi + 1])), use, changed)
                hess[lo - start:hi - start][anew] = 0.0
            else:
                hess[lo - start:hi - start] = 0.0
            idx = np.flatnonzero(use)
            if not len(idx):
                continue
            # np.take gathers rows 2x to 3x faster than fancy indexing, but
            # copies a non-contiguous array whole first (X is often a view
            # that leaves out the task column).
            block = self.X[b[lo]:b[hi]]
            Z = np.take(block, idx, axis=0) if block.flags.c_contiguous else block[idx]
            if fit_intercept:
                Z = np.hstack([Z, np.ones((len(idx), 1))])
            # A row that enters the quadratic region adds z z^T, one that
            # leaves subtracts it; a Hessian formed anew has only the first.
            c = np.where(curv[rows][idx], 1.0, -1.0)
            if self.sample_weight is not None:
                c = c * self.sample_weight[b[lo] + idx]
            # Huber's rows within epsilon, unweighted, need no scaling.
            Zc = Z if np.all(c == 1.0) else Z * c[:, None]
            seg = np.searchsorted(idx, np.append(starts, b[hi] - b[lo]))
            for j in np.flatnonzero(np.diff(seg)):
                part = slice(seg[j], seg[j + 1])
                hess[lo - start + j] += Zc[part].T @ Z[part]
        return _symmetric(hess)

    def _linear_terms(self, start, stop, coef, intercept, loss, epsilon, X, curvature):
        """:meth:`linear_loss_grad`, and each row's ``curvature`` (or None) fourth."""
        X = self.X if X is None else X
        # Batched products per group of equal-size tasks: a few calls that
        # release the GIL, no (n, d) gather of each row's coefficients and
        # no (n, d) temporary (3x to 8x faster than the row-wise form on
        # tasks of 20 to 50 rows, and threads can run them side by side).
        # Each group runs in pieces of about _BLOCK_BYTES of X, the forward
        # product, the loss and the backward product of a piece in a row.
        block_rows = _block_rows(X)
        groups = self._batch_groups(start, stop, block_rows)
        if groups is None:
            return self._linear_terms_rowwise(
                start, stop, coef, intercept, loss, epsilon, X, block_rows, curvature
            )
        s = self.sample_weight
        value = 0.0
        grad_coef = np.empty_like(coef)
        grad_intercept = np.empty(stop - start)
        row0 = self.bounds[start]
        curv = None if curvature is None else np.empty(self.bounds[stop] - row0, dtype=bool)
        for js, rows in groups:
            Xb = _stack(X, js, rows)
            r = _stack(self.y, js, rows) - np.matmul(Xb, coef[js][:, :, None])[:, :, 0]
            if intercept is not None:
                r -= intercept[js][:, None]
            v, deriv = loss(r, epsilon)
            if curv is not None:
                if isinstance(rows, slice):
                    curv[rows.start - row0:rows.stop - row0] = curvature(r, epsilon).ravel()
                else:
                    curv[rows - row0] = curvature(r, epsilon)
            if s is not None:
                sb = _stack(s, js, rows)
                v, deriv = v * sb, deriv * sb
            value += v.sum()
            grad_coef[js] = -np.matmul(deriv[:, None, :], Xb)[:, 0]
            grad_intercept[js] = -deriv.sum(axis=1)
        return value, grad_coef, grad_intercept, curv

    def row_blocks(self, start, stop, X, block_rows=None):
        """Tasks ``[start, stop)`` in ranges of about ``_BLOCK_BYTES`` of ``X``.

        A range ends before the first task that starts at or after the next
        multiple of ``block_rows`` rows (default: the rows of ``X`` in
        ``_BLOCK_BYTES``), counted from the first row of all tasks, so that
        the ranges do not change with ``n_jobs`` but at the chunks' ends; a
        task of more rows is a range of its own.

        Returns
        -------
        blocks : iterable of (int, int)
            ``(start, stop)`` of each range.
        """
        if block_rows is None:
            block_rows = _block_rows(X)
        b = self.bounds
        marks = np.arange(b[start] // block_rows + 1, -(-b[stop] // block_rows)) * block_rows
        cuts = np.searchsorted(b[start:stop], marks) + start
        edges = np.unique(np.concatenate([[start], cuts, [stop]]))
        return zip(edges[:-1].tolist(), edges[1:].tolist())

    def _linear_terms_rowwise(
        self, start, stop, coef, intercept, loss, epsilon, X, block_rows, curvature
    ):
        """:meth:`_linear_terms` with each row's coefficients gathered.

        Block by block of about ``block_rows`` rows, for the same reason as
        the batched form: a block's temporaries stay in cache.
        """
        value = 0.0
        grad_coef = np.empty_like(coef)
        grad_intercept = np.empty(stop - start)
        row0 = self.bounds[start]
        curv = None if curvature is None else np.empty(self.bounds[stop] - row0, dtype=bool)
        for a, b in self.row_blocks(start, stop, X, block_rows):
            lo, hi = self.bounds[a], self.bounds[b]
            Xc = X[lo:hi]
            local = self.codes[lo:hi] - start
            pred = np.einsum("ij,ij->i", Xc, coef[local])
            if intercept is not None:
                pred += intercept[local]
            r = self.y[lo:hi] - pred
            v, deriv = loss(r, epsilon)
            if curv is not None:
                curv[lo - row0:hi - row0] = curvature(r, epsilon)
            if self.sample_weight is not None:
                s = self.sample_weight[lo:hi]
                v, deriv = v * s, deriv * s
            offsets = self.bounds[a:b] - lo
            part = slice(a - start, b - start)
            grad_coef[part] = -np.add.reduceat(Xc * deriv[:, None], offsets, axis=0)
            grad_intercept[part] = -np.add.reduceat(deriv, offsets)
            value += v.sum()
        return value, grad_coef, grad_intercept, curv

    def row_range(self, start, stop):
        """Slice of the rows that hold the labels of tasks ``[start, stop)``."""
        return slice(int(self.bounds[start]), int(self.bounds[stop]))

    def head_loss_grad(self, start, stop, H, coef, intercept, losses, epsilon, weights):
        """Per-task loss, head gradients and row gradient of linear heads on ``H``.

        Task ``t`` predicts ``H[:, i] . coef[t] + intercept[t]`` on its rows;
        this is the per-task block of a network whose last layer is one head
        per task.

        Parameters
        ----------
        start, stop : int
            Task range.
        H : ndarray of shape (n_components, n_chunk_rows)
            Shared representation of the rows ``row_range(start, stop)``, one
            column per row.
        coef : ndarray of shape (stop - start, n_components)
        intercept : ndarray of shape (stop - start,) or None
        losses : sequence of callables of length stop - start
            Each task's loss, from :mod:`skmtl._losses`.
        epsilon : float
            Huber threshold (ignored by the squared loss).
        weights : ndarray of shape (stop - start,)
            Task weights applied to the row gradient only.

        Returns
        -------
        loss_sums : ndarray of shape (stop - start,)
            ``sum s_i loss_t(r_it)`` of each task.
        grad_coef : ndarray of shape (stop - start, n_components)
            Gradient of each task's loss sum with respect to its head.
        grad_intercept : ndarray of shape (stop - start,)
        grad_H : ndarray of shape (n_components, n_chunk_rows)
            Gradient of ``sum_t weights_t * loss_sum_t`` with respect to ``H``.
        """
        lo, hi = self.bounds[start], self.bounds[stop]
        sizes = self.sizes[start:stop]
        offsets = self.bounds[start:stop] - lo
        # With one column per row, each row's head is a run of copies of
        # its task's (the rows are sorted by task) and the per-task sums
        # run over contiguous memory: on the School data (about 100 task
        # sizes) 0.19 ms against 0.48 ms with each row's head gathered.
        row_coef = np.repeat(coef.T, sizes, axis=1)
        pred = np.einsum("ji,ji->i", H, row_coef)
        if intercept is not None:
            pred += np.repeat(intercept, sizes)
        r = np.subtract(self.y[lo:hi], pred, out=pred)
        value, deriv = _apply_losses(r, losses, epsilon, sizes)
        if self.sample_weight is not None:
            # In place: the losses return new arrays (or the residual).
            value *= self.sample_weight[lo:hi]
            deriv *= self.sample_weight[lo:hi]
        grad_coef = -np.add.reduceat(H * deriv, offsets, axis=1).T
        grad_intercept = -np.add.reduceat(deriv, offsets)
        # The row gradient of task t is -lambda_t deriv_i a_t, in place.
        row_coef *= deriv * np.repeat(-weights, sizes)
        return np.add.reduceat(value, offsets), grad_coef, grad_intercept, row_coef

    def task_means(self):
        """Weighted mean label of each task."""
        s = np.ones(len(self.y)) if self.sample_weight is None else self.sample_weight
        return _safe_mean(np.add.reduceat(s * self.y, self.bounds[:-1]), self.task_weight_sums())


class WideTasks:
    """Wide layout: ``X`` shared by all tasks, ``Y[:, t]`` task ``t``'s labels.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features)
    Y : ndarray of shape (n_rows, n_tasks)
        Missing labels are 0 here and ``False`` in ``mask``.
    mask : ndarray of shape (n_rows, n_tasks)
        Observed labels.
    sample_weight : ndarray of shape (n_rows,) or None
        ``None`` means all ones.
    S : float
        Sum of the sample weights over all rows, labelled or not.
    """

    layout = "wide"

    def __init__(self, X, Y, sample_weight):
        self.mask = ~np.isnan(Y)
        self.complete = self.mask.all(axis=0)
        self.Y = np.where(self.mask, Y, 0.0) if not self.complete.all() else Y
        self.X = X
        self.sample_weight = sample_weight
        self.n_tasks = Y.shape[1]
        self.n_features = X.shape[1]
        self.S = float(len(Y) if sample_weight is None else sample_weight.sum())
        self.n_observed = int(self.mask.sum())
        # Formed once: every loss evaluation of the iterative solvers reads it.
        self._weights = self.mask.astype(np.float64)
        if sample_weight is not None:
            self._weights *= sample_weight[:, None]
        self._by_task = None

    def __getstate__(self):
        # The per-task copies of Y stay behind: a worker process makes its own.
        return {**vars(self), "_by_task": None}

    def _row_weights(self, start, stop):
        """(n_rows, k) weights of the observed labels of tasks [start, stop) (a view)."""
        return self._weights[:, start:stop]

    def pair_weights(self):
        """Sample weight of every observed (row, task) pair."""
        return self._weights[self.mask]

    def positive_weight_stats(self):
        """Number of observed labels of positive weight and the sum of their log weights."""
        return _positive_weight_stats(self.pair_weights())

    def task_weight_sums(self):
        """Summed sample weight of each task's observed labels."""
        return self._row_weights(0, self.n_tasks).sum(axis=0)

    def gram(self, start, stop, fit_intercept):
        """Per-task ``G_t, g_t, y_t^T S_t y_t, sum s`` for tasks ``[start, stop)``."""
        X, Y, s = self.X, self.Y[:, start:stop], self.sample_weight
        d, k = self.n_features, stop - start
        p = d + int(fit_intercept)
        W = self._row_weights(start, stop)
        G = np.empty((k, p, p))
        complete = np.flatnonzero(self.complete[start:stop])
        if len(complete):
            # Complete columns share one Gram matrix: form it once.
            G[complete] = _batched_gram(
                X[None], Y[None, :, 0], None if s is None else s[None], fit_intercept
            )[0]
        for j in np.flatnonzero(~self.complete[start:stop]):
            rows = self.mask[:, start + j]
            G[j] = _batched_gram(
                X[rows][None],
                Y[rows, j][None],
                None if s is None else s[rows][None],
                fit_intercept,
            )[0][0]
        WY = W * Y
        g = np.empty((k, p))
        g[:, :d] = WY.T @ X
        if fit_intercept:
            g[:, d] = WY.sum(axis=0)
        return G, g, np.einsum("nk,nk->k", WY, Y), W.sum(axis=0)

    def linear_loss_grad(self, start, stop, coef, intercept, loss, epsilon, X=None):
        """Weighted loss sum and per-task gradient of task-wise linear models.

        Same contract as :meth:`LongTasks.linear_loss_grad`.
        """
        X = self.X if X is None else X
        pred = X @ coef.T
        if intercept is not None:
            pred += intercept
        value, deriv = loss(self.Y[:, start:stop] - pred, epsilon)
        W = self._row_weights(start, stop)
        value, deriv = value * W, deriv * W
        return value.sum(), -(deriv.T @ X), -deriv.sum(axis=0)

    def linear_loss_grad_curv(self, start, stop, coef, intercept, loss, curvature, epsilon):
        """Same contract as :meth:`LongTasks.linear_loss_grad_curv`.

        ``curv`` has one row per task, ``(stop - start, n_rows)``, so that the
        chunks' arrays also concatenate along their first axis.
        """
        X = self.X
        pred = X @ coef.T
        if intercept is not None:
            pred += intercept
        r = self.Y[:, start:stop] - pred
        value, deriv = loss(r, epsilon)
        W = self._row_weights(start, stop)
        value, deriv = value * W, deriv * W
        curv = np.ascontiguousarray(curvature(r, epsilon).T)
        return value.sum(), -(deriv.T @ X), -deriv.sum(axis=0), curv

    def task_hessians(self, start, stop, curv, prev=None, hess=None, fit_intercept=True):
        """Same contract as :meth:`LongTasks.task_hessians`, ``curv`` of shape (n_tasks, n_rows).

        ``prev`` and ``hess`` are not used: each Hessian is formed anew, one
        product over all rows per task (every task weighs the shared rows
        differently).
        """
        X = self.X
        h = curv[start:stop].T * self._row_weights(start, stop)
        d = self.n_features
        p = d + int(fit_intercept)
        out = np.empty((stop - start, p, p))
        for j in range(stop - start):
            np.matmul((X * h[:, j, None]).T, X, out=out[j, :d, :d])
        if fit_intercept:
            out[:, :d, d] = out[:, d, :d] = h.T @ X
            out[:, d, d] = h.sum(axis=0)
        return _symmetric(out)

    def row_range(self, start, stop):
        """Slice of the rows that hold the labels of tasks ``[start, stop)``: all."""
        return slice(0, len(self.Y))

    def head_loss_grad(self, start, stop, H, coef, intercept, losses, epsilon, weights):
        """Per-task loss, head gradients and row gradient of linear heads on ``H``.

        Same contract as :meth:`LongTasks.head_loss_grad`; ``grad_H`` covers
        every row.
        """
        if self._by_task is None:
            # One row per task, kept for the next calls: the sums over rows
            # then run over contiguous memory, where the (n_rows, n_tasks)
            # arrays made them strided column sums.
            self._by_task = np.ascontiguousarray(self.Y.T), np.ascontiguousarray(self._weights.T)
        Y, W = self._by_task[0][start:stop], self._by_task[1][start:stop]
        pred = coef @ H
        if intercept is not None:
            pred += intercept[:, None]
        r = np.subtract(Y, pred, out=pred)
        value, deriv = _apply_losses(r, losses, epsilon)
        # In place: the losses return new arrays (or the residual).
        value *= W
        deriv *= W
        grad_H = (coef * -weights[:, None]).T @ deriv
        return value.sum(axis=1), -(deriv @ H.T), -deriv.sum(axis=1), grad_H

    def task_means(self):
        """Weighted mean label of each task."""
        W = self._row_weights(0, self.n_tasks)
        return _safe_mean((W * self.Y).sum(axis=0), W.sum(axis=0))


class SufficientStatsTasks:
    """Long layout reduced to per-task sufficient statistics, without rows.

    What :mod:`skmtl._dask` builds from a dask DataFrame: the squared-loss
    solvers read nothing but ``gram``, so the rows never need to be in one
    process. The statistics are stored with the intercept column (last) and
    sliced when ``fit_intercept=False``.

    Attributes
    ----------
    G : ndarray of shape (n_tasks, n_features + 1, n_features + 1)
        ``Z_t^T S_t Z_t`` with ``Z_t = [X_t, 1]``.
    g : ndarray of shape (n_tasks, n_features + 1)
        ``Z_t^T S_t y_t``.
    yy : ndarray of shape (n_tasks,)
        ``y_t^T S_t y_t``.
    weight_sums : ndarray of shape (n_tasks,)
        Summed sample weight of each task.
    S : float
        Sum of the sample weights.
    n_observed : int
        Number of rows.
    n_positive, log_weight_sum : int, float
        Rows of positive weight and the sum of their log weights.
    """

    layout = "long"

    def __init__(self, G, g, yy, weight_sums, n_observed, n_positive, log_weight_sum):
        self.G, self.g, self.yy, self.weight_sums = G, g, yy, weight_sums
        self.n_tasks = len(G)
        self.n_features = G.shape[1] - 1
        self.S = float(weight_sums.sum())
        self.n_observed = int(n_observed)
        self.n_positive, self.log_weight_sum = int(n_positive), float(log_weight_sum)

    def gram(self, start, stop, fit_intercept):
        """Per-task ``G_t, g_t, y_t^T S_t y_t, sum s`` for tasks ``[start, stop)``."""
        p = self.n_features + int(fit_intercept)
        return (
            self.G[start:stop, :p, :p].copy(),
            self.g[start:stop, :p].copy(),
            self.yy[start:stop].copy(),
            self.weight_sums[start:stop].copy(),
        )

    def task_weight_sums(self):
        """Summed sample weight of each task's observed labels."""
        return self.weight_sums.copy()

    def positive_weight_stats(self):
        """Number of observed labels of positive weight and the sum of their log weights."""
        return self.n_positive, self.log_weight_sum

    def _needs_rows(self, *args, **kwargs):
        raise TypeError(
            "This solver reads the rows of X, but a fit on a dask DataFrame keeps "
            "only per-task sufficient statistics (squared loss only)."
        )

    linear_loss_grad = linear_loss_grad_curv = task_hessians = head_loss_grad = _needs_rows
    row_range = pair_weights = task_means = _needs_rows


def make_long_tasks(X, labels, y, sample_weight):
    """Sort rows by task and build :class:`LongTasks`.

    Returns
    -------
    data : LongTasks
    tasks : ndarray
        The sorted unique task labels.
    """
    # One stable sort gives the task order, the unique labels and the task
    # boundaries; rows that arrive grouped by task skip it and the copy.
    if len(labels) > 1 and not np.all(labels[1:] >= labels[:-1]):
        order = np.argsort(labels, kind="stable")
        labels = labels[order]
        X, y = np.take(X, order, axis=0), y[order]
        if sample_weight is not None:
            sample_weight = sample_weight[order]
    starts = np.concatenate([[0], np.flatnonzero(labels[1:] != labels[:-1]) + 1])
    bounds = np.append(starts, len(labels))
    return LongTasks(X, y, sample_weight, bounds), labels[starts]


def make_wide_tasks(X, Y, sample_weight):
    """Build :class:`WideTasks`; ``Y`` is 2-D with NaN for missing labels."""
    return WideTasks(X, Y, sample_weight)
