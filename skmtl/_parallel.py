"""The one place that calls joblib for per-task work.

Every per-task step of every estimator (per-task factorizations, per-task
gradient blocks) goes through :func:`map_task_chunks`, so that
``joblib.parallel_config(backend=...)`` moves all of them to another engine
(dask.distributed, ray) without code changes.
"""

import copy
import os
import shutil
import tempfile
import uuid
import warnings

import numpy as np
from joblib import effective_n_jobs
from joblib._parallel_backends import LokyBackend, MultiprocessingBackend
from joblib.parallel import get_active_backend
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import ThreadpoolController

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

# The same on worker processes (TaskWorkers sharing the data): a worker that
# finishes after the parent is collected at the next 10 ms poll, which a
# small call cannot absorb. SharedObjectiveRegressor's objective at 1,000
# tasks x 20 features: 300 rows (cost 2.9e8) 20 ms per evaluation serially,
# 22.5 ms on two processes; 500 rows (4.8e8) 35 against 20.5 ms.
_MIN_PROCESS_COST = 4e8


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


# Extra share of the tasks the parent computes, relative to a worker's, when
# the workers keep the data mapped and when they map it at every call. The
# parent starts its chunk only after sending the others', and a worker that
# finishes after the parent is collected at joblib's next 10 ms poll. Measured
# on SharedObjectiveRegressor's objective at 1,000 tasks x 2,000 rows x 20
# features (kept): 81, 74 and 72 ms per evaluation with 0, 0.08 and 0.16,
# 135 ms serially; at 4,000 rows (mapped per call): 189 and 160 ms with 0
# and 0.4, 290 ms serially.
_PARENT_EXTRA = {True: 0.15, False: 0.4}


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
    temporary folder on the first call that passes them, and sent as
    :class:`_SharedObject` stand-ins from then on. The folder follows
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
        # id -> (argument, stand-in or None until first passed); the argument
        # is kept so that its id is not reused within the fit.
        self._stand_ins = {}
        self.keep = None

    def _path(self):
        return os.path.join(self.folder, f"{len(os.listdir(self.folder))}.npy")

    def share(self, values):
        """Make ``values`` fixed arguments of the fit's calls."""
        for value in values:
            self._stand_ins[id(value)] = (value, None)

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
        """``value``'s stand-in if it is one of the fixed arguments, else ``value``."""
        hit = self._stand_ins.get(id(value))
        if hit is None or hit[0] is not value:
            return value
        if hit[1] is not None:
            return hit[1]
        arrays = _large_arrays(value)
        if not arrays:
            self._stand_ins[id(value)] = (value, value)
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
        shared = _SharedObject(self.folder, uuid.uuid4().hex, kept, paths, self.decide_keep())
        self._stand_ins[id(value)] = (value, shared)
        return shared

    def close(self):
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


class TaskWorkers:
    """One joblib ``Parallel`` kept open for the many calls of one fit.

    An iterative solver maps its per-task gradient blocks once per
    evaluation of its objective, hundreds of times per fit. Keeping one
    :class:`sklearn.utils.parallel.Parallel` open for the whole fit reuses
    its workers instead of starting them for every call (whatever backend
    ``joblib.parallel_config`` selects). Each call still costs joblib's
    result polling (10 ms in joblib 1.6), so calls cheaper than
    ``_MIN_PARALLEL_COST`` (on processes ``_MIN_PROCESS_COST``) run serially.
    Use as a context manager around the solver and pass it as ``n_jobs`` to
    :func:`map_task_chunks`.

    The ``Parallel`` starts at the first call that runs in parallel, so a fit
    whose calls are all cheap starts no workers.

    When joblib runs the calls in local worker processes (``prefer=
    "processes"``, or a ``parallel_config`` asking for loky or
    multiprocessing), the tasks are cut in one chunk per worker (with loky
    the parent computes the first chunk while the workers compute the
    others), and the arguments named by :meth:`share` are written to
    memory-mapped files once for the whole fit (:class:`_SharedData`).

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
        self._overlap = False

    def __enter__(self):
        self._open = True
        if not _is_serial(self.n_jobs):
            # Which backend the calls will run on; no worker starts here.
            backend, _ = get_active_backend(prefer=self.prefer)
            if isinstance(backend, (LokyBackend, MultiprocessingBackend)):
                # The parent computes a chunk while the workers compute the
                # others where joblib can hand back results as they come
                # (loky; not multiprocessing).
                self._overlap = backend.supports_return_generator
                n_workers = effective_n_jobs(self.n_jobs)
                remote_fraction = 1 - 1 / n_workers if self._overlap else 1.0
                self._shared = _SharedData(remote_fraction)
        return self

    def __exit__(self, *exc):
        self._open = False
        if self._parallel is not None:
            self._parallel.__exit__(*exc)
        self._parallel = None
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
        self._parallel = Parallel(
            n_jobs=self.n_jobs, prefer=self.prefer,
            return_as="generator" if self._overlap else "list",
        ).__enter__()

    def map_tasks(self, func, n_tasks, args):
        """``func(start, stop, *args)`` on task chunks: results and chunks, in task order."""
        if not self._open:
            # Used outside its ``with`` block: a Parallel for this call only.
            chunks = task_chunks(n_tasks, self.n_jobs)
            parallel = Parallel(n_jobs=self.n_jobs, prefer=self.prefer)
            return _joblib_map(func, chunks, args, parallel), chunks
        if self._serial:
            return [func(0, n_tasks, *args)], [(0, n_tasks)]
        if self._parallel is None:
            self._start()
        if self._shared is None:
            chunks = task_chunks(n_tasks, self.n_jobs)
            if len(chunks) <= 1:
                return [func(start, stop, *args) for start, stop in chunks], chunks
            return _joblib_map(func, chunks, args, self._parallel), chunks
        # Worker processes. One chunk per worker: each further chunk costs a
        # round trip to a process (8 chunks on 2 processes: 54 ms per
        # evaluation of SharedObjectiveRegressor's objective at 1,000 tasks x
        # 1,000 rows x 20 features, 2 chunks: 44 ms). With loky the parent,
        # which would otherwise wait, computes the first chunk on its own
        # copy of the data, and needs no result polling (10 ms steps) for it.
        keep = self._shared.decide_keep()
        if self._overlap:
            chunks = _parent_first_chunks(
                n_tasks, effective_n_jobs(self.n_jobs), _PARENT_EXTRA[keep]
            )
        else:
            chunks = task_chunks(n_tasks, self.n_jobs, per_worker=1)
        if len(chunks) <= 1:
            return [func(start, stop, *args) for start, stop in chunks], chunks
        try:
            remote = tuple(self._shared.stand_in(a) for a in args)
        except OSError as exc:
            # No room for the data (a full temporary folder): the fit goes on
            # in this process rather than failing.
            warnings.warn(
                f"Could not write the fit's data for the worker processes to "
                f"{self._shared.folder!r} ({exc}); the rest of this fit runs in "
                "one process. Set JOBLIB_TEMP_FOLDER to a folder with room for "
                "a copy of the data to use n_jobs here.",
                UserWarning,
            )
            self._serial = True
            return [func(0, n_tasks, *args)], [(0, n_tasks)]
        if not self._overlap:
            return _joblib_map(func, chunks, remote, self._parallel), chunks
        parent_pid = os.getpid()
        with single_blas_thread():
            # Dispatched now, collected below.
            outputs = self._parallel(
                delayed(_run_chunk)(func, start, stop, remote, parent_pid)
                for start, stop in chunks[1:]
            )
            try:
                first = func(*chunks[0], *args)
            finally:
                # Also when the parent's chunk failed: no worker is left
                # running into the next call.
                rest = list(outputs)
        return [first, *rest], chunks


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
