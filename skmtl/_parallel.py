"""The one place that calls joblib for per-task work.

Every per-task step of every estimator (per-task factorizations, per-task
gradient blocks) goes through :func:`map_task_chunks`, so that
``joblib.parallel_config(backend=...)`` moves all of them to another engine
(dask.distributed, ray) without code changes.
"""

import os

import numpy as np
from joblib import effective_n_jobs
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController, threadpool_limits

# A few chunks per worker balance uneven tasks without paying joblib's
# per-call overhead once per task.
_CHUNKS_PER_WORKER = 4

# Below this many floating-point operations a call runs serially even with
# n_jobs > 1: dispatching to worker processes costs milliseconds, which is
# more than such a call computes (a REML iteration on 40 tasks ran 60x slower
# through a 2-process pool than serially), and joblib collects results on a
# 10 ms grid. A Huber evaluation at 1,000 tasks x 1,000 rows x 20 features
# (cost 1.3e8) takes 14 ms serially and 21 ms on two threads.
_MIN_PARALLEL_COST = 2e8


def _is_serial(n_jobs):
    # ``None`` means serial here even inside ``parallel_config(n_jobs=...)``:
    # an outer distributed search then runs its inner per-task steps locally
    # instead of sending each small step back to the scheduler.
    return n_jobs is None or n_jobs == 1


def task_chunks(n_tasks, n_jobs):
    """Contiguous task ranges ``[(start, stop), ...]`` for ``n_jobs`` workers.

    Serial runs get one range covering every task, so the per-chunk function
    runs fully vectorized.
    """
    if n_tasks == 0:
        return []
    if _is_serial(n_jobs):
        return [(0, n_tasks)]
    n_workers = effective_n_jobs(n_jobs)
    n_chunks = max(1, min(n_tasks, _CHUNKS_PER_WORKER * n_workers))
    bounds = np.unique(np.linspace(0, n_tasks, n_chunks + 1).round().astype(int))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _run_chunk(func, start, stop, args, parent_pid):
    if os.getpid() == parent_pid:
        # Thread-based backends share the parent's process: the parent already
        # holds BLAS to one thread around the whole Parallel call, and a
        # per-thread threadpool_limits would race on that process-wide setting.
        return func(start, stop, *args)
    with threadpool_limits(limits=1, user_api="blas"):
        return func(start, stop, *args)


class TaskWorkers:
    """One joblib ``Parallel`` kept open for the many calls of one fit.

    An iterative solver maps its per-task gradient blocks once per
    evaluation of its objective, hundreds of times per fit. Keeping one
    :class:`sklearn.utils.parallel.Parallel` open for the whole fit reuses
    its workers instead of starting them for every call (whatever backend
    ``joblib.parallel_config`` selects). Each call still costs joblib's
    result polling (10 ms in joblib 1.6), so calls cheaper than
    ``_MIN_PARALLEL_COST`` run serially. Use as a context manager around the
    solver and pass it as ``n_jobs`` to :func:`map_task_chunks`.

    Parameters
    ----------
    n_jobs : int or None
        As for :func:`map_task_chunks`.
    """

    def __init__(self, n_jobs):
        self.n_jobs = n_jobs
        self._parallel = None

    def __enter__(self):
        if not _is_serial(self.n_jobs):
            self._parallel = Parallel(n_jobs=self.n_jobs, prefer="threads").__enter__()
        return self

    def __exit__(self, *exc):
        if self._parallel is not None:
            self._parallel.__exit__(*exc)
        self._parallel = None

    def map(self, func, chunks, args):
        """``func(start, stop, *args)`` for every chunk, results in chunk order."""
        parallel = self._parallel
        if parallel is None:
            # Used outside its ``with`` block: a Parallel for this call only.
            parallel = Parallel(n_jobs=self.n_jobs, prefer="threads")
        return _joblib_map(func, chunks, args, parallel)


def _joblib_map(func, chunks, args, parallel):
    parent_pid = os.getpid()
    with single_blas_thread():
        # Threads by default: the per-task work is numpy and LAPACK, which
        # release the GIL, and threads share the data instead of copying it
        # to every worker (processes made a 200,000-row fit 4x slower than
        # serial). "prefer" is a soft hint: parallel_config(backend=...) wins.
        return list(parallel(
            delayed(_run_chunk)(func, start, stop, args, parent_pid) for start, stop in chunks
        ))


def map_task_chunks(func, n_tasks, *args, n_jobs=None, cost=None):
    """Call ``func(start, stop, *args)`` on contiguous task ranges.

    Parameters
    ----------
    func : callable
        Module-level function (picklable) computing the per-task work for
        tasks ``start, ..., stop - 1``. Per-task results must not depend on
        which other tasks share the chunk, so that results do not change
        with ``n_jobs``.
    n_tasks : int
        Number of tasks.
    *args
        Extra positional arguments passed to ``func``.
    n_jobs : int, None or TaskWorkers, default=None
        ``None`` or ``1`` runs one plain call with no joblib overhead.
        Otherwise the tasks are split in a few chunks per worker and run by
        :class:`sklearn.utils.parallel.Parallel`, with BLAS held to one thread
        inside the workers. A :class:`TaskWorkers` runs them on the
        ``Parallel`` it keeps open.
    cost : float, default=None
        Estimated floating-point operations of the whole call. Calls cheaper
        than the cost of dispatching them run serially whatever ``n_jobs``.

    Returns
    -------
    results : list
        ``func``'s return values, in task order, and the ranges they cover.
    """
    workers = n_jobs if isinstance(n_jobs, TaskWorkers) else None
    if workers is not None:
        n_jobs = workers.n_jobs
    if cost is not None and cost < _MIN_PARALLEL_COST:
        n_jobs = None
    chunks = task_chunks(n_tasks, n_jobs)
    if _is_serial(n_jobs) or len(chunks) <= 1:
        return [func(start, stop, *args) for start, stop in chunks], chunks
    if workers is not None:
        return workers.map(func, chunks, args), chunks
    return _joblib_map(func, chunks, args, Parallel(n_jobs=n_jobs, prefer="threads")), chunks


_BLAS_CONTROLLER = None


def single_blas_thread():
    """Context manager holding BLAS to one thread.

    ``threadpool_limits`` scans the process's loaded libraries on every call
    (about 3 ms, measured); the libraries found once are reused here, which
    matters for fits that take a few milliseconds.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")
