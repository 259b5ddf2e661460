"""The one place that calls joblib for per-task work.

Every per-task step of every estimator (per-task factorizations, per-task
gradient blocks) goes through :func:`map_task_chunks`, so that
``joblib.parallel_config(backend=...)`` moves all of them to another engine
(dask.distributed, ray) without code changes.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
from joblib import effective_n_jobs
from joblib.parallel import BACKENDS, get_active_backend
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController, threadpool_limits

# A few chunks per worker balance uneven tasks without paying joblib's
# per-call overhead once per task.
_CHUNKS_PER_WORKER = 4

# Below this many floating-point operations a call runs serially even with
# n_jobs > 1: dispatching to worker processes costs milliseconds, which is
# more than such a call computes (a REML iteration on 40 tasks ran 60x slower
# through a 2-process pool than serially).
_MIN_PARALLEL_COST = 5e7

# Handing a chunk to a thread of a pool kept open (TaskWorkers) costs tens of
# microseconds, not joblib's milliseconds: the threshold is this much lower.
_POOLED_COST_RATIO = 100.0

# On a pool kept open, each chunk's Python overhead (a few dozen numpy calls
# holding the GIL) is repeated at every evaluation of an objective: two
# chunks per worker, pulled by whichever thread is free, still balance a
# worker slowed down by other processes.
_POOLED_CHUNKS_PER_WORKER = 2


def _is_serial(n_jobs):
    # ``None`` means serial here even inside ``parallel_config(n_jobs=...)``:
    # an outer distributed search then runs its inner per-task steps locally
    # instead of sending each small step back to the scheduler.
    return n_jobs is None or n_jobs == 1


def _min_parallel_cost(workers):
    if workers is not None and workers.pooled_threads:
        return _MIN_PARALLEL_COST / _POOLED_COST_RATIO
    return _MIN_PARALLEL_COST


def task_chunks(n_tasks, n_jobs, per_worker=_CHUNKS_PER_WORKER):
    """Contiguous task ranges ``[(start, stop), ...]`` for ``n_jobs`` workers.

    Serial runs get one range covering every task, so the per-chunk function
    runs fully vectorized.
    """
    if n_tasks == 0:
        return []
    if _is_serial(n_jobs):
        return [(0, n_tasks)]
    n_workers = effective_n_jobs(n_jobs)
    n_chunks = max(1, min(n_tasks, per_worker * n_workers))
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
    """Workers kept open for the many :func:`map_task_chunks` calls of one fit.

    An iterative solver maps its per-task gradient blocks once per
    evaluation of its objective, hundreds of times per fit, each call a few
    milliseconds of work. A fresh ``Parallel`` per call costs more than that:
    joblib 1.6 collects results by polling every 10 ms, so each call took at
    least one 10 ms sleep (a Huber fit on 2,000 tasks, run in parallel
    whatever its cost, took 4x longer with ``n_jobs=2`` than serially). Use
    as a context manager around the solver and pass it as ``n_jobs`` to
    :func:`map_task_chunks`.

    When the active joblib backend is threads (the default, since the
    per-task work prefers threads), the chunks run on one thread pool
    created here, the calling thread working through them beside the pool's
    threads: threads are what joblib would use, minus its polling. Under any other backend
    (``joblib.parallel_config(backend=...)``: loky, dask, ray) one
    ``Parallel`` is kept open for the whole fit and every call goes through
    it, so the work still goes where the user sent it.

    Parameters
    ----------
    n_jobs : int or None
        As for :func:`map_task_chunks`.
    """

    def __init__(self, n_jobs):
        self.n_jobs = n_jobs
        self._executor = self._parallel = self._blas = None

    @property
    def pooled_threads(self):
        """Whether chunks run on this object's own thread pool."""
        return self._executor is not None

    def __enter__(self):
        if _is_serial(self.n_jobs):
            return self
        self.n_workers = effective_n_jobs(self.n_jobs)
        backend, _ = get_active_backend(prefer="threads")
        if isinstance(backend, BACKENDS["threading"]):
            # One controller per fit: building one inspects every loaded
            # library (2.5 ms), switching its limit costs microseconds.
            self._blas = ThreadpoolController()
            self._executor = ThreadPoolExecutor(max(self.n_workers - 1, 1))
        else:
            self._parallel = Parallel(n_jobs=self.n_jobs, prefer="threads").__enter__()
        return self

    def __exit__(self, *exc):
        if self._executor is not None:
            self._executor.shutdown()
        if self._parallel is not None:
            self._parallel.__exit__(*exc)
        self._executor = self._parallel = self._blas = None

    def map(self, func, chunks, args):
        """``func(start, stop, *args)`` for every chunk, results in chunk order."""
        if self._executor is None:
            return _joblib_map(func, chunks, args, self._parallel)
        results = [None] * len(chunks)
        todo = iter(range(len(chunks)))
        lock = threading.Lock()

        def drain():
            # Every thread takes the next chunk when it is done with one: a
            # thread slowed down by another process on its core does less.
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    results[i] = func(*chunks[i], *args)
                except BaseException:
                    with lock:
                        # The other threads stop after their current chunk.
                        for _ in todo:
                            pass
                    raise

        with self._blas.limit(limits=1, user_api="blas"):
            helpers = [self._executor.submit(drain) for _ in range(self.n_workers - 1)]
            try:
                drain()
            finally:
                wait(helpers)
            for helper in helpers:
                helper.result()
        return results


def _joblib_map(func, chunks, args, parallel):
    parent_pid = os.getpid()
    with threadpool_limits(limits=1, user_api="blas"):
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
        inside the workers. A :class:`TaskWorkers` runs them on the workers
        it keeps open.
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
    if cost is not None and cost < _min_parallel_cost(workers):
        n_jobs = None
    pooled = workers is not None and workers.pooled_threads
    chunks = task_chunks(
        n_tasks, n_jobs, _POOLED_CHUNKS_PER_WORKER if pooled else _CHUNKS_PER_WORKER
    )
    if _is_serial(n_jobs) or len(chunks) <= 1:
        return [func(start, stop, *args) for start, stop in chunks], chunks
    if workers is not None:
        return workers.map(func, chunks, args), chunks
    return _joblib_map(func, chunks, args, Parallel(n_jobs=n_jobs, prefer="threads")), chunks
