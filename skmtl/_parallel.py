"""The one place that calls joblib for per-task work.

Every per-task step of every estimator (per-task factorizations, per-task
gradient blocks) goes through :func:`map_task_chunks`, so that
``joblib.parallel_config(backend=...)`` moves all of them to another engine
(dask.distributed, ray) without code changes.
"""

import concurrent.futures
import copy
import itertools
import os
import shutil
import tempfile
import threading
import uuid
import warnings

import numpy as np
from joblib import effective_n_jobs
from joblib._parallel_backends import LokyBackend, MultiprocessingBackend, ThreadingBackend
from joblib.parallel import get_active_backend
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController

# A few chunks per worker balance uneven tasks without paying joblib's
# per-call overhead once per task.
_CHUNKS_PER_WORKER = 4

# Below this many floating-point operations a call runs serially even with
# n_jobs > 1: dispatching to worker processes costs milliseconds, which is
# more than such a call computes (a REML iteration on 40 tasks ran 60x slower
# through a 2-process pool than serially), and two threads contend for the
# GIL between numpy's steps. A Huber evaluation at 1,000 tasks x 1,000 rows x
# 20 features (cost 1.3e8) takes 13 ms serially, 21 ms on two threads through
# Parallel, and 15 to 18 ms on the parent and one pool thread (TaskWorkers).
_MIN_PARALLEL_COST = 2e8

# The same on worker processes (TaskWorkers sharing the data). With results
# collected through Parallel (10 ms steps) SharedObjectiveRegressor's
# objective at 1,000 tasks x 300 rows x 20 features (cost 2.9e8) took 20 ms
# per evaluation serially and 22.5 ms on two processes; on loky's executor
# directly the fit ran 1.14x to 1.32x faster than serially (three fits).
_MIN_PROCESS_COST = 2e8


def _is_serial(n_jobs):
    # ``None`` means serial here even inside ``parallel_config(n_jobs=...)``:
    # an outer distributed search then runs its inner per-task steps locally
    # instead of sending each small step back to the scheduler.
    return n_jobs is None or n_jobs == 1


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


# Extra share of the tasks the parent computes, relative to a worker's: with
# pool threads, with worker processes that keep the data mapped, and with
# worker processes that map it at every call (which they do first). A loky
# worker starts its chunk about 1.3 ms after the parent. Measured with
# SharedObjectiveRegressor (5 rounds) at 1,000 tasks x 2,000 rows x 20
# features (kept): 0, 0.02 and 0.05 within the noise (fits 1.60x to 1.76x
# faster than serially); at 4,000 rows (mapped per call), three fits each,
# 0.2: 1.57x and 1.55x, 0.3: 1.63x and 1.38x, 0.4: 1.56x and 1.27x. With
# threads (Huber evaluations) 0, 0.04 and 0.1 were within the noise.
_PARENT_EXTRA = {"threads": 0.0, "kept": 0.02, "mapped": 0.2}


def _parent_first_chunks(n_tasks, n_workers, extra):
    """``n_workers`` contiguous task ranges, the first ``1 + extra`` times the others."""
    if n_tasks == 0:
        return []
    shares = np.ones(n_workers)
    shares[0] += extra
    bounds = np.concatenate([[0], np.cumsum(shares)]) / shares.sum() * n_tasks
    bounds = np.unique(bounds.round().astype(int))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _run_chunk(func, start, stop, args, parent_pid):
    if os.getpid() == parent_pid:
        # Thread-based backends share the parent's process: the parent already
        # holds BLAS to one thread around the whole Parallel call, and a
        # per-thread threadpool_limits would race on that process-wide setting.
        return func(start, stop, *args)
    shared = [a for a in args if isinstance(a, _SharedObject)]
    args = tuple(a.attach() if isinstance(a, _SharedObject) else a for a in args)
    try:
        # The libraries found once per worker process: a fresh
        # threadpool_limits scans them at every call (about 3 ms).
        with single_blas_thread():
            return func(start, stop, *args)
    finally:
        if not all(a.keep for a in shared):
            _ATTACHED.update(arrays={}, objects={})


# Arrays from this size on are written once per fit for worker processes to
# map (joblib's own threshold for memory-mapping an argument).
_SHARE_MIN_BYTES = 1_000_000

# /dev/shm is used when it has this much free space (joblib's own rule).
_SHM_MIN_BYTES = 2e9

# A worker process keeps the fit's arrays mapped between calls while the
# part of them it may touch stays below this. loky replaces a worker whose
# memory grew by 300 MB since its first call, as a leak, and mapped pages
# count: a worker touching 336 MB was replaced every second or so, and the
# fit ran 2x slower than serially. Above it, each call maps the arrays anew
# and unmaps them (about 40 ms per call for 336 MB on this machine).
_KEEP_MAPPED_BYTES = 200_000_000

# What this worker process has mapped for the current fit: the fit's folder,
# its arrays by path, its objects by token.
_ATTACHED = {"folder": None, "arrays": {}, "objects": {}}


class _SharedObject:
    """Stand-in sent to worker processes for one argument of a fit's calls.

    The parent writes the argument's large arrays to files once per fit
    (:class:`_SharedData`); a worker process maps each file and rebuilds the
    argument around the mapped arrays. With ``keep`` it keeps them for the
    later calls of the same fit. joblib alone writes (after hashing) every
    large argument of every call, and each call maps the files anew and pays
    a page fault per 4 kB page touched: at 1,000 tasks x 1,000 rows x 20
    features an evaluation of SharedObjectiveRegressor's objective took 125
    ms on two worker processes that way, 64 ms serially.
    """

    def __init__(self, folder, token, value, paths, keep):
        self.folder = folder
        self.token = token
        # ``value`` with every large array left out; ``paths`` says where they are.
        self.value = value
        self.paths = paths
        self.keep = keep

    def attach(self):
        if _ATTACHED["folder"] != self.folder:
            _start_worker_fit(self.folder)
        value = _ATTACHED["objects"].get(self.token)
        if value is None:
            value = _ATTACHED["objects"][self.token] = self._rebuild()
        return value

    def _rebuild(self):
        arrays = {}
        for name, path in self.paths.items():
            if path not in _ATTACHED["arrays"]:
                # A plain ndarray over the mapping (read only), not np.memmap.
                _ATTACHED["arrays"][path] = np.asarray(np.load(path, mmap_mode="r"))
            arrays[name] = _ATTACHED["arrays"][path]
        if None in arrays:
            return arrays[None]
        value = copy.copy(self.value)
        vars(value).update(arrays)
        return value


def _start_worker_fit(folder):
    _ATTACHED.update(folder=folder, arrays={}, objects={})
    keep_freed_memory()


_MALLOC_RAISED = []


def keep_freed_memory():
    """Keep this process's freed blocks of up to 32 MB for reuse (once per process).

    glibc's malloc starts by handing blocks above 128 kB to the system when
    they are freed and by trimming the top of its heap, so a solver that
    allocates arrays of a few MB at every step faults their pages in again
    at every step. glibc raises both thresholds when a block it had mapped
    is freed, up to 32 MB: freeing one block just under that size makes it
    keep freed blocks instead. Measured with SharedObjectiveRegressor's
    objective at 1,000 tasks x 300 rows x 20 features: 53 ms per evaluation
    in a fresh process, 20 ms after this; a fresh worker process ran its
    chunk 2.5x slower than the parent before it. Elsewhere than glibc this
    is one allocation.
    """
    if not _MALLOC_RAISED:
        block = np.empty(31_000_000, dtype=np.uint8)
        del block
        _MALLOC_RAISED.append(True)


def _large_arrays(value):
    """``{name: array}`` of ``value``'s arrays to write (name ``None``: ``value`` itself)."""
    if isinstance(value, np.ndarray):
        return {None: value} if value.nbytes >= _SHARE_MIN_BYTES else {}
    if hasattr(value, "__dict__") and not callable(value):
        return {
            name: a for name, a in vars(value).items()
            if isinstance(a, np.ndarray) and a.nbytes >= _SHARE_MIN_BYTES
        }
    return {}


class _SharedData:
    """The large arguments of one fit, written once for worker processes.

    Used by :class:`TaskWorkers` when joblib runs the calls in local worker
    processes (loky, multiprocessing): of the shared arguments (:meth:`share`),
    arrays of at least ``_SHARE_MIN_BYTES`` and objects (such as
    :class:`~skmtl._tasks.LongTasks`) holding such arrays are saved to a
    temporary folder by a background thread, and sent as
    :class:`_SharedObject` stand-ins once written. The folder follows
    joblib's choice for its own memory maps: ``JOBLIB_TEMP_FOLDER``, else
    ``/dev/shm`` (memory) when it has 2 GB free, else the system's temporary
    folder. It is removed when the fit ends.

    Parameters
    ----------
    remote_fraction : float
        Share of the tasks that worker processes compute (the parent
        computes the rest): how much of the arrays one worker may touch.
    """

    def __init__(self, remote_fraction):
        self.folder = tempfile.mkdtemp(prefix="skmtl-", dir=_temp_root())
        self.remote_fraction = remote_fraction
        # id -> (argument, stand-in or None until written); the argument is
        # kept so that its id is not reused within the fit.
        self._stand_ins = {}
        self.keep = None
        self._names = itertools.count()
        self._writers = []
        self._error = None

    def _path(self):
        return os.path.join(self.folder, f"{next(self._names)}.npy")

    def share(self, values):
        """Make ``values`` fixed arguments of the fit's calls and start writing them.

        The files are written by a thread (the writes release the GIL) while
        the fit goes on; calls made before they are written run in the
        parent (:meth:`ready`). Writing 320 MB to ``/dev/shm`` takes 0.12 s
        on this machine; with the writing beside it, the first evaluation of
        SharedObjectiveRegressor's fit at 1,000 tasks x 2,000 rows x 20
        features took 0.146 s instead of 0.27 s.
        """
        for value in values:
            self._stand_ins[id(value)] = (value, None)
        writer = threading.Thread(target=self._write, args=(values,), daemon=True)
        self._writers.append(writer)
        writer.start()

    def _write(self, values):
        try:
            for value in values:
                self._stand_ins[id(value)] = (value, self._make_stand_in(value))
        except Exception as exc:  # raised to the fit by ready()
            self._error = exc

    def ready(self):
        """Whether the shared arguments are written; raises what writing them raised."""
        if any(writer.is_alive() for writer in self._writers):
            return False
        if self._error is not None:
            raise self._error
        return True

    def decide_keep(self):
        """Whether workers keep the arrays mapped (decided at the first parallel call)."""
        if self.keep is None:
            touched = self.remote_fraction * sum(
                a.nbytes for value, _ in self._stand_ins.values()
                for a in _large_arrays(value).values()
            )
            self.keep = bool(touched < _KEEP_MAPPED_BYTES)
        return self.keep

    def stand_in(self, value):
        """``value``'s stand-in if it is one of the fixed arguments, else ``value``.

        Call once :meth:`ready` is true.
        """
        hit = self._stand_ins.get(id(value))
        if hit is None or hit[0] is not value:
            return value
        if isinstance(hit[1], _SharedObject):
            # Decided at the first parallel call, after the backend is known.
            hit[1].keep = self.decide_keep()
        return hit[1]

    def _make_stand_in(self, value):
        arrays = _large_arrays(value)
        if not arrays:
            return value
        kept = None
        if None not in arrays:
            # ``copy`` drops what the object's ``__getstate__`` leaves out
            # (caches a worker rebuilds for itself).
            kept = copy.copy(value)
            for name in arrays:
                setattr(kept, name, None)
        paths = {}
        for name, a in arrays.items():
            paths[name] = self._path()
            np.save(paths[name], a, allow_pickle=False)
        return _SharedObject(self.folder, uuid.uuid4().hex, kept, paths, keep=None)

    def wait(self):
        """Wait until the shared arguments are written."""
        for writer in self._writers:
            writer.join()

    def close(self):
        self.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._stand_ins = {}


def _temp_root():
    """Where a fit's files go: joblib's rule for its own memory maps."""
    root = os.environ.get("JOBLIB_TEMP_FOLDER")
    if root is None and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        # As joblib: a small /dev/shm (64 MB in a default Docker container)
        # would fill up; then the system's temporary folder.
        stats = os.statvfs("/dev/shm")
        if stats.f_bsize * stats.f_bavail >= _SHM_MIN_BYTES:
            root = "/dev/shm"
    return root


class _Interrupted(Exception):
    """Carries a ``KeyboardInterrupt`` (or other non-``Exception``) out of a pool.

    multiprocessing's pools, also the threading backend's, catch only
    ``Exception``: a ``KeyboardInterrupt`` raised in a chunk would end the
    pool's thread and leave the parent waiting forever.
    """


def _run_pooled(func, start, stop, args, parent_pid):
    try:
        return _run_chunk(func, start, stop, args, parent_pid)
    except Exception:
        raise
    except BaseException as exc:
        raise _Interrupted(exc) from None


class _Pending:
    """A chunk handed to a joblib pool directly: a future (loky) or an AsyncResult."""

    def __init__(self, handle):
        self.handle = handle

    def wait(self):
        if isinstance(self.handle, concurrent.futures.Future):
            concurrent.futures.wait([self.handle])
        else:
            self.handle.wait()

    def get(self):
        try:
            if isinstance(self.handle, concurrent.futures.Future):
                return self.handle.result()
            return self.handle.get()
        except _Interrupted as exc:
            raise exc.args[0] from None


# joblib's own local backends. Exact types: other engines subclass them (ray's
# joblib backend is a MultiprocessingBackend whose pool runs on a cluster,
# where neither the parent's files nor its pool's internals apply).
_LOCAL_BACKENDS = (ThreadingBackend, LokyBackend, MultiprocessingBackend)
_PROCESS_BACKENDS = (LokyBackend, MultiprocessingBackend)


def _direct_submit(backend):
    """``submit(func, *args) -> _Pending`` on the pool of a local joblib backend, or None.

    loky's executor (``_workers``) and the pools of the threading and
    multiprocessing backends (``_get_pool()``), as opened by
    :class:`~joblib.Parallel` with joblib's settings; None for any other
    backend (dask, ray), which keeps going through ``Parallel``.
    """
    if type(backend) not in _LOCAL_BACKENDS:
        return None
    executor = getattr(backend, "_workers", None)
    if callable(getattr(executor, "submit", None)):
        return lambda func, *args: _Pending(executor.submit(func, *args))
    get_pool = getattr(backend, "_get_pool", None)
    if callable(get_pool):
        pool = get_pool()
        if callable(getattr(pool, "apply_async", None)):
            return lambda func, *args: _Pending(pool.apply_async(func, args))
    return None


class TaskWorkers:
    """One joblib ``Parallel`` kept open for the many calls of one fit.

    An iterative solver maps its per-task gradient blocks once per
    evaluation of its objective, hundreds of times per fit. Keeping one
    :class:`sklearn.utils.parallel.Parallel` open for the whole fit reuses
    its workers instead of starting them for every call (whatever backend
    ``joblib.parallel_config`` selects). Calls cheaper than
    ``_MIN_PARALLEL_COST`` (on processes ``_MIN_PROCESS_COST``) run serially.
    Use as a context manager around the solver and pass it as ``n_jobs`` to
    :func:`map_task_chunks`.

    The ``Parallel`` starts at the first call that runs in parallel, so a fit
    whose calls are all cheap starts no workers.

    On joblib's local backends (threading, loky, multiprocessing) the tasks
    are cut in one chunk per worker, the parent computes the first chunk, and
    the others go straight to the pool that ``Parallel`` opened: ``Parallel``
    itself collects results on a 10 ms grid (joblib 1.6 sleeps 10 ms while
    the next result is pending), a large part of a call of 10 to 100 ms, and
    takes 3 to 6 ms to hand a call to a loky worker, against about 1.3 ms
    for loky's executor. One Huber evaluation at 1,000 tasks x 2,000 rows x
    20 features took 25 ms serially, 34 ms on two threads through
    ``Parallel`` and 17 to 25 ms (from run to run) on the parent and one
    pool thread. Other backends
    (dask, ray) get a few chunks per worker through ``Parallel``.

    On local worker processes (``prefer="processes"``, or a
    ``parallel_config`` asking for loky or multiprocessing), the arguments
    named by :meth:`share` are also written to memory-mapped files once for
    the whole fit (:class:`_SharedData`).

    Parameters
    ----------
    n_jobs : int or None
        As for :func:`map_task_chunks`.
    prefer : {"threads", "processes"}, default="threads"
        joblib's soft hint; ``joblib.parallel_config(backend=...)`` wins.
    """

    def __init__(self, n_jobs, prefer="threads"):
        self.n_jobs = n_jobs
        self.prefer = prefer
        self._open = False
        self._parallel = None
        self._shared = None
        # Set when the data could not be written for the worker processes.
        self._serial = False
        # The pool of a local backend, which the calls go to directly.
        self._submit = None

    def __enter__(self):
        self._open = True
        if not _is_serial(self.n_jobs):
            # Which backend the calls will run on; no worker starts here.
            backend, _ = get_active_backend(prefer=self.prefer)
            if type(backend) in _PROCESS_BACKENDS:
                n_workers = effective_n_jobs(self.n_jobs)
                self._shared = _SharedData(remote_fraction=1 - 1 / n_workers)
        return self

    def __exit__(self, *exc):
        self._open = False
        if self._parallel is not None:
            self._parallel.__exit__(*exc)
        self._parallel = None
        self._submit = None
        if self._shared is not None:
            self._shared.close()
        self._shared = None

    @property
    def processes(self):
        """Whether the calls run on local worker processes (known inside ``with``)."""
        return self._shared is not None

    def share(self, *values):
        """Name arguments that every call of the fit passes unchanged (the data)."""
        if self._shared is not None:
            self._shared.share(values)

    def _start(self):
        self._parallel = Parallel(n_jobs=self.n_jobs, prefer=self.prefer).__enter__()
        self._submit = _direct_submit(self._parallel._backend)
        if self._submit is None and self._shared is not None:
            # Every chunk goes to a worker.
            self._shared.remote_fraction = 1.0

    def map_tasks(self, func, n_tasks, args):
        """``func(start, stop, *args)`` on task chunks: results and chunks, in task order."""
        if not self._open:
            # Used outside its ``with`` block: a Parallel for this call only.
            chunks = task_chunks(n_tasks, self.n_jobs)
            parallel = Parallel(n_jobs=self.n_jobs, prefer=self.prefer)
            return _joblib_map(func, chunks, args, parallel), chunks
        if self._serial:
            return _in_parent(func, n_tasks, args)
        if self._parallel is None:
            self._start()
        remote, extra = args, _PARENT_EXTRA["threads"]
        if self._shared is not None:
            # Worker processes. One chunk per worker: each further chunk
            # costs a round trip to a process (8 chunks on 2 processes: 54 ms
            # per evaluation of SharedObjectiveRegressor's objective at 1,000
            # tasks x 1,000 rows x 20 features, 2 chunks: 44 ms).
            try:
                if not self._shared.ready():
                    # The data is still being written for the workers.
                    return _in_parent(func, n_tasks, args)
            except OSError as exc:
                # No room for the data (a full temporary folder): the fit goes
                # on in this process rather than failing.
                warnings.warn(
                    f"Could not write the fit's data for the worker processes to "
                    f"{self._shared.folder!r} ({exc}); the rest of this fit runs in "
                    "one process. Set JOBLIB_TEMP_FOLDER to a folder with room for "
                    "a copy of the data to use n_jobs here.",
                    UserWarning,
                )
                self._serial = True
                return _in_parent(func, n_tasks, args)
            remote = tuple(self._shared.stand_in(a) for a in args)
            extra = _PARENT_EXTRA["kept" if self._shared.decide_keep() else "mapped"]
            if self._submit is None:
                chunks = task_chunks(n_tasks, self.n_jobs, per_worker=1)
                return _joblib_map(func, chunks, remote, self._parallel), chunks
        if self._submit is None:
            chunks = task_chunks(n_tasks, self.n_jobs)
            if len(chunks) <= 1:
                return [func(start, stop, *args) for start, stop in chunks], chunks
            return _joblib_map(func, chunks, args, self._parallel), chunks
        chunks = _parent_first_chunks(n_tasks, effective_n_jobs(self.n_jobs), extra)
        parent_pid = os.getpid()
        with single_blas_thread():
            pending = [
                self._submit(_run_pooled, func, start, stop, remote, parent_pid)
                for start, stop in chunks[1:]
            ]
            try:
                first = func(*chunks[0], *args)
            finally:
                # Also when the parent's chunk failed: no worker is left
                # running into the next call.
                for p in pending:
                    p.wait()
        return [first, *(p.get() for p in pending)], chunks


def _in_parent(func, n_tasks, args):
    """One plain call over every task, in the calling process: results and chunks."""
    return [func(0, n_tasks, *args)], [(0, n_tasks)]


def _joblib_map(func, chunks, args, parallel):
    parent_pid = os.getpid()
    with single_blas_thread():
        # Threads by default: the per-task work is numpy and LAPACK, which
        # release the GIL, and threads share the data instead of copying it
        # to every worker (processes, with joblib hashing and writing the
        # data at every call, made a 200,000-row fit 4x slower than serial;
        # TaskWorkers writes it once per fit). "prefer" is a soft hint:
        # parallel_config(backend=...) wins.
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
    floor = _MIN_PROCESS_COST if workers is not None and workers.processes else _MIN_PARALLEL_COST
    if cost is not None and cost < floor:
        n_jobs = None
    if workers is not None and not _is_serial(n_jobs) and n_tasks > 1:
        return workers.map_tasks(func, n_tasks, args)
    chunks = task_chunks(n_tasks, n_jobs)
    if _is_serial(n_jobs) or len(chunks) <= 1:
        return [func(start, stop, *args) for start, stop in chunks], chunks
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
