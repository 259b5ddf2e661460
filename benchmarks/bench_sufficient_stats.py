"""Fitting a dask DataFrame larger than a process's memory from per-task sufficient statistics.

A lazily generated long-layout frame (``--partitions`` x ``--rows-per-partition``
rows, ``--features`` features, ``--tasks`` tasks; 100 x 100,000 x 20 x 1,000
by default: 10 million rows, 1.76 GB of float64 and int64 columns) is never
held anywhere: each partition is generated from its seed on a worker, reduced
to per-task ``X^T X``, ``X^T y``, ``y^T y`` and counts, and dropped. It is
fitted on a ``dask.distributed.LocalCluster`` (two worker processes, one
thread each, on 127.0.0.1) by

- ``SharedParamRegressor(alpha_task=1.0)`` (exact block elimination),
- ``SharedParamRegressor(alpha_task='auto')`` (REML),
- ``SharedFeatureRegressor(penalty='l21')`` (block coordinate descent),

and for each fit the script reports the wall time (median of ``--repeat``
runs), the client process's peak memory (the growth of its resident set
size during the fit, sampled every 5 ms) and the workers' peak resident set
size (sampled every 5 ms in each worker during the fit, next to its size at
the start of the fit).

For comparison the same estimators are fitted in memory on the first
``--sample-partitions`` partitions (1 million rows by default), built as one
pandas DataFrame, and on the dask frame of the same rows: their coefficients
must agree (the largest relative difference is reported), and their times
and peak memory show what the out-of-core path costs and saves.

BLAS and OpenMP are held to one thread in every process (threadpoolctl in the
client, ``*_NUM_THREADS=1`` in the workers' environment).

Run from the repository root (needs ``pip install -e .[distributed]``)::

    python benchmarks/bench_sufficient_stats.py            # a few minutes on 2 cores
    python benchmarks/bench_sufficient_stats.py --quick    # 100,000 rows, under a minute

Writes JSON to ``--out`` (default ``benchmarks/results/bench_sufficient_stats.json``,
``..._quick.json`` with ``--quick``).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    # Before numpy is imported, and inherited by the worker processes.
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402  (a dependency of dask.distributed)
from threadpoolctl import threadpool_limits  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BLAS_THREADS = 1
# Coefficients of the generating model are drawn from this seed in every
# partition, so that all partitions follow the same tasks.
MODEL_SEED = 12345
# Features whose shared coefficient is non-zero, with task deviations of std
# 0.3; the others deviate by 0.05 only, for the L2,1 penalty to drop, yet
# with a positive variance (a REML optimum on the boundary of the covariance
# cone converges slowly).
N_INFORMATIVE = 10


def _task_model(n_tasks, n_features):
    rng = np.random.default_rng(MODEL_SEED)
    shared = np.zeros(n_features)
    shared[:N_INFORMATIVE] = rng.normal(size=N_INFORMATIVE)
    coef = shared + np.where(shared != 0, 0.3, 0.05) * rng.normal(size=(n_tasks, n_features))
    return coef, 1.0 + rng.normal(size=n_tasks)


def make_partition(seed, n_rows, n_tasks, n_features):
    """One partition of the synthetic long-layout frame, from its seed alone."""
    coef, intercept = _task_model(n_tasks, n_features)
    rng = np.random.default_rng(seed)
    task = rng.integers(0, n_tasks, n_rows)
    X = rng.normal(size=(n_rows, n_features))
    y = np.einsum("ij,ij->i", X, coef[task]) + intercept[task] + rng.normal(size=n_rows)
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(n_features)])
    frame.insert(0, "task", task)
    frame["y"] = y
    return frame


def _models(n_tasks):
    from skmtl import SharedFeatureRegressor, SharedParamRegressor

    return {
        "SharedParamRegressor(alpha_task=1.0)": SharedParamRegressor(
            alpha_task=1.0, task_column="task"
        ),
        "SharedParamRegressor(alpha_task='auto')": SharedParamRegressor(
            alpha_task="auto", task_column="task"
        ),
        # The long layout's gradient rows shrink like 1 / sqrt(n_tasks): this
        # alpha keeps the N_INFORMATIVE features at any n_tasks.
        "SharedFeatureRegressor(penalty='l21')": SharedFeatureRegressor(
            alpha=0.1 / np.sqrt(n_tasks), penalty="l21", task_column="task"
        ),
    }


def _coefficients(model):
    return np.column_stack([model.coef_, model.intercept_])


class _RSSSampler(threading.Thread):
    """Peak resident set size of this process while it runs (sampled every 5 ms).

    ``tracemalloc`` would see numpy's allocations too, but it slows every
    Python call, the dask client's event loop included.
    """

    def __init__(self):
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.start_rss = self.peak = self.process.memory_info().rss
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _measure(fit):
    """Wall time and peak growth of the resident set (bytes) of ``fit()``."""
    with _RSSSampler() as rss:
        start = time.perf_counter()
        result = fit()
        seconds = time.perf_counter() - start
    return result, {"seconds": seconds, "client_peak_rss_growth_bytes": rss.peak - rss.start_rss}


def _start_sampling(dask_worker):
    dask_worker.skmtl_rss_sampler = _RSSSampler().__enter__()


def _stop_sampling(dask_worker):
    sampler = dask_worker.skmtl_rss_sampler
    sampler.__exit__()
    return sampler.start_rss, sampler.peak


def _fit_repeated(client, model, X, y, repeat, warmup):
    """``repeat`` timed fits after a warm-up fit on ``warmup``.

    The workers sample their own resident set during each fit (restarting
    them instead proved unreliable on a loaded machine).
    """
    model.fit(*warmup)
    runs = []
    for _ in range(repeat):
        client.run(_start_sampling)
        fitted, run = _measure(lambda: model.fit(X, y))
        rss = client.run(_stop_sampling).values()
        run["worker_start_rss_bytes"] = max(start for start, _ in rss)
        run["worker_peak_rss_bytes"] = max(peak for _, peak in rss)
        runs.append(run)
    return fitted, runs


def _summary(runs):
    out = {"median_seconds": statistics.median(r["seconds"] for r in runs)}
    for key in runs[0]:
        if key.endswith("bytes"):
            out[key] = max(r[key] for r in runs)
    out["runs"] = runs
    return out


def _frame(dd, seeds, args, n_rows=None):
    meta = make_partition(0, 0, args.tasks, args.features)
    ddf = dd.from_map(
        make_partition, seeds, n_rows=n_rows or args.rows_per_partition, n_tasks=args.tasks,
        n_features=args.features, meta=meta, enforce_metadata=False,
    )
    return ddf.drop(columns="y"), ddf["y"]


def _git_commit():
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--rows-per-partition", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--sample-partitions", type=int, default=10,
                        help="partitions fitted in memory for comparison")
    parser.add_argument("--repeat", type=int, default=3, help="timed fits per contender (median)")
    parser.add_argument("--quick", action="store_true",
                        help="10 partitions of 10,000 rows, 100 tasks, 1 repeat")
    parser.add_argument("--out", default=None, help="JSON output file")
    args = parser.parse_args(argv)
    if args.quick:
        args.partitions, args.rows_per_partition, args.tasks = 10, 10_000, 100
        args.sample_partitions, args.repeat = 2, 1
    out = Path(args.out) if args.out else (
        REPO / "benchmarks" / "results"
        / ("bench_sufficient_stats_quick.json" if args.quick else "bench_sufficient_stats.json")
    )

    import dask
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    n_rows = args.partitions * args.rows_per_partition
    one = make_partition(0, args.rows_per_partition, args.tasks, args.features)
    data_bytes = int(one.memory_usage(deep=True, index=False).sum()) * args.partitions
    del one
    print(f"data: {n_rows:,} rows x {args.features + 2} columns, {data_bytes / 1e9:.2f} GB "
          f"in {args.partitions} partitions, {args.tasks} tasks", flush=True)

    report = {
        "benchmark": "bench_sufficient_stats",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "versions": {"dask": dask.__version__, "numpy": np.__version__, "pandas": pd.__version__},
        "blas_threads": BLAS_THREADS,
        "cluster": "LocalCluster(n_workers=2, threads_per_worker=1, processes=True)",
        "data": {
            "rows": n_rows, "partitions": args.partitions,
            "rows_per_partition": args.rows_per_partition, "features": args.features,
            "tasks": args.tasks, "bytes": data_bytes,
        },
        "sample_rows": args.sample_partitions * args.rows_per_partition,
        "repeat": args.repeat,
        "results": {},
    }
    with threadpool_limits(limits=BLAS_THREADS), LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, Client(cluster) as client:
        X, y = _frame(dd, range(args.partitions), args)
        Xs, ys = _frame(dd, range(args.sample_partitions), args)
        warmup = _frame(dd, [10**6], args, n_rows=20 * args.tasks)
        sample = pd.concat(
            [make_partition(s, args.rows_per_partition, args.tasks, args.features)
             for s in range(args.sample_partitions)],
            ignore_index=True,
        )
        Xm, ym = sample.drop(columns="y"), sample["y"]
        sample_bytes = int(sample.memory_usage(deep=True, index=False).sum())
        report["sample_bytes"] = sample_bytes
        for name, model in _models(args.tasks).items():
            entry = {}
            fitted, runs = _fit_repeated(client, model, X, y, args.repeat, warmup)
            entry["dask_full"] = _summary(runs)
            entry["dask_full"]["n_iter"] = int(fitted.n_iter_)
            if hasattr(fitted, "n_components_"):
                entry["dask_full"]["n_selected_features"] = int(fitted.n_components_)
            small, runs = _fit_repeated(client, model, Xs, ys, args.repeat, warmup)
            on_dask = _coefficients(small)
            entry["dask_sample"] = _summary(runs)
            runs = []
            for _ in range(args.repeat):
                fitted_mem, run = _measure(lambda: model.fit(Xm, ym))
                runs.append(run)
            entry["in_memory_sample"] = _summary(runs)
            reference = _coefficients(fitted_mem)
            entry["sample_max_relative_difference"] = float(
                np.max(np.abs(on_dask - reference)) / np.max(np.abs(reference))
            )
            report["results"][name] = entry
            full, dsk, mem = entry["dask_full"], entry["dask_sample"], entry["in_memory_sample"]
            print(
                f"{name}:\n"
                f"  dask, {n_rows:,} rows: {full['median_seconds']:.1f} s, client peak RSS "
                f"+{full['client_peak_rss_growth_bytes'] / 1e6:.1f} MB, worker peak RSS "
                f"{full['worker_peak_rss_bytes'] / 1e6:.0f} MB "
                f"(at the start {full['worker_start_rss_bytes'] / 1e6:.0f} MB)\n"
                f"  dask, {report['sample_rows']:,} rows: {dsk['median_seconds']:.2f} s, "
                f"worker peak RSS {dsk['worker_peak_rss_bytes'] / 1e6:.0f} MB; in memory: "
                f"{mem['median_seconds']:.2f} s, peak RSS "
                f"+{mem['client_peak_rss_growth_bytes'] / 1e6:.0f} MB (data "
                f"{sample_bytes / 1e6:.0f} MB); "
                f"max relative difference {entry['sample_max_relative_difference']:.1e}",
                flush=True,
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
