"""Fit time of every skmtl estimator against rows, tasks and n_jobs.

Three parts, written to one JSON file and one log-log chart:

1. **rows**: fit time against the number of rows (10^4 to 10^7) at a fixed
   number of tasks (100) and features (10), long layout;
2. **tasks**: fit time against the number of tasks (10 to 10^5) at a fixed
   20 rows per task and 10 features, long layout;
3. **n_jobs**: ``n_jobs=1`` against ``n_jobs=2`` on 2,000 tasks of 50 rows
   and 20 features, on 1,000 tasks of 200 to 4,000 rows and 20 features,
   and on 1,000 tasks of 1,000 and 2,000 rows and 50 features, for the
   iterative fits whose per-task steps are parallel:
   ``SharedParamRegressor(loss='huber')`` and ``SharedObjectiveRegressor``.

In the rows and tasks parts, iterative solvers run a fixed number of
iterations (``tol=0`` and a small ``max_iter``, the ConvergenceWarning
silenced), so that a larger problem is not also asked for more iterations:
the time then grows with the cost of one iteration (plus the one-off setup),
which is what the slope measures. Huber runs that way with L-BFGS, and
also with its default solver, Newton's method, to the default ``tol``
(Newton's method with ``tol=0`` would go on past the optimum into failed
line searches), which takes 2 to 4 steps. In the n_jobs part Huber runs
Newton's method to the default ``tol`` (both ``n_jobs`` take the same
steps).
``n_iter_`` is recorded with every fit, and the table shows the time per
iteration as well. The closed-form fits (squared loss) have no iterations.

A log-log slope is fitted per estimator and axis over the sizes run, and the
local slope between neighbouring sizes is recorded: a local slope above
1.15 is flagged as super-linear.

Every fit runs with BLAS held to **one thread** by
``threadpoolctl.threadpool_limits(1)`` (n_jobs=2 runs two workers of one
BLAS thread each). Times are medians of ``--repeats`` runs, taken
round-robin (for the n_jobs part, n_jobs=1 and 2 alternate), with the
CPU time (of this process and its worker processes, with psutil) and the
load average recorded beside every wall time:
on a machine shared with others, the ratio of CPU time to wall time of the
n_jobs=2 fit shows how much of two cores it got, and a probe (the same
matrix products on one thread and on two, just before each n_jobs pair)
shows how much the machine had to give at that moment.

Run from the repository root::

    python benchmarks/bench_scaling.py            # about 25 minutes on 2 quiet cores (n_jobs: 24)
    python benchmarks/bench_scaling.py --quick    # under a minute
    python benchmarks/bench_scaling.py --only njobs --repeats 9
    python benchmarks/bench_scaling.py --render benchmarks/results/scaling.json  # tables only
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from bench_shared_param import BLAS_THREADS, REPO, environment, make_synthetic
from run_all import alpha_max_shared_feature
from skmtl import SharedFeatureRegressor, SharedObjectiveRegressor, SharedParamRegressor

SUPER_LINEAR = 1.15
SPEED_UP_TARGET = 1.6
N_FEATURES = 10
ROWS_TASKS = 100
TASKS_ROWS = 20

# Iterations of the iterative fits (tol=0): see the module docstring.
ITERATIONS = {
    "param_auto": 20,  # REML iterations
    "param_huber": 20,  # L-BFGS iterations
    "param_huber_newton": None,  # Newton's method to the default tol
    "feature_l21": 20,  # block coordinate descent epochs
    "feature_trace": 20,  # FISTA iterations
    "objective": 2,  # rounds of 10 L-BFGS iterations
}

ESTIMATORS = {
    "param_squared": "SharedParamRegressor (squared, float alpha_task)",
    "param_auto": "SharedParamRegressor (alpha_task='auto')",
    "param_huber": "SharedParamRegressor (loss='huber')",
    "param_huber_newton": "SharedParamRegressor (loss='huber', Newton to tol=1e-4)",
    "feature_l21": "SharedFeatureRegressor (l21)",
    "feature_trace": "SharedFeatureRegressor (trace)",
    "objective": "SharedObjectiveRegressor (relu, 10 components)",
}

# Sizes per axis, and the largest run per estimator where it is smaller: the
# per-iteration fits cost 10 to 25 passes over X, about 0.1 s each at 10^7
# rows, so 10^7 rows is run only for the fits that pass over X once or twice
# (Gram matrices), to keep the default run near 10 minutes; REML
# ('auto') costs O(p^3) per task and iteration, about 0.3 s per iteration
# at 10^4 tasks, so 10^5 tasks would take minutes per fit.
FULL_SIZES = {"rows": [10**4, 10**5, 10**6, 10**7], "tasks": [10, 100, 1000, 10**4, 10**5]}
QUICK_SIZES = {"rows": [10**4, 10**5, 3 * 10**5], "tasks": [10, 100, 1000, 10**4]}
MAX_SIZE = {
    "rows": {"param_huber": 10**6, "objective": 10**6},
    "tasks": {"param_auto": 10**4},
}
QUICK_MAX_SIZE = {"rows": {}, "tasks": {"param_auto": 1000}}

# (n_tasks, rows per task, n_features) of the n_jobs part: at least 1,000
# tasks (issue 8), from short tasks (50 rows) to long ones (4,000 rows), so
# that the work of one evaluation of the objective, which decides what two
# workers can gain over joblib's per-call costs, spans 50x. The L-BFGS step
# itself (O(n_tasks n_features) per iteration) is serial. At 2,000 rows
# SharedObjectiveRegressor's worker process keeps the data mapped; at 4,000
# it maps it at every call (skmtl._parallel._KEEP_MAPPED_BYTES).
# Two shapes have 50 features (sixth session): the work per row grows with
# them (Newton's Hessians for Huber: p^2 per row; the network's first layer)
# while the input check and the memory-bound reads of X grow with p, so they
# show how the speed-up depends on the work per row.
FULL_NJOBS = [(2000, 50, 20), (1000, 200, 20), (1000, 1000, 20), (1000, 2000, 20),
              (1000, 4000, 20), (1000, 1000, 50), (1000, 2000, 50)]
QUICK_NJOBS = [(1000, 50, 20)]
# Huber runs its default solver (Newton's method) to the default tol at
# alpha_task=0.01, where the tasks differ most from the squared-loss start,
# so that the fit takes more than one or two Newton steps; both n_jobs take
# the same steps (n_iter_ is recorded). Until the sixth session it ran 25
# L-BFGS iterations with tol=0 (L-BFGS needs 30 to 50 iterations there; at
# 40, fits of 1,000 x 4,000 x 20 converged after 30 to 35 and the line
# search then spent 33 to 62 evaluations at the floating-point floor, a
# different number for each n_jobs).
# SharedObjectiveRegressor runs 5 rounds (3 before the fourth session): a fit
# has one-off costs that n_jobs=2 adds (writing the design for the worker
# processes, each worker's first mapping of it: about 0.23 s at 1,000 x
# 2,000 x 20), a smaller share of a longer fit, as of a real one (default
# max_iter=50 rounds).
NJOBS_ITERATIONS = {"param_huber": None, "objective": 5}
NJOBS_PARAMS = {"param_huber": {"alpha_task": 0.01}, "objective": {}}


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"expected TASKSxROWSxFEATURES with positive integers, got {text!r}"
        )
    return shape


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes and fewer repeats, under a minute")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per size (default 3, 1 with --quick); "
                             "the n_jobs part takes twice as many (default 7, 3 with --quick)")
    parser.add_argument("--only", choices=["rows", "tasks", "njobs"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON path; the chart goes next to it as .png "
                             "(default: benchmarks/results/scaling.json, or "
                             "scaling_njobs.json with --only njobs alone, so that an "
                             "n_jobs run does not replace the rows and tasks run)")
    parser.add_argument("--render", type=Path, default=None,
                        help="recompute slopes, tables and chart from this JSON, no fits")
    parser.add_argument("--njobs-shape", type=_shape, action="append", default=None,
                        metavar="TASKSxROWSxFEATURES",
                        help="shape of the n_jobs part instead of the default ones "
                             "(repeatable), e.g. 1000x4000x20")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.only = args.only or ["rows", "tasks", "njobs"]
    if args.output is None:
        name = "scaling_njobs.json" if set(args.only) == {"njobs"} else "scaling.json"
        args.output = REPO / "benchmarks" / "results" / name
    return args


# ---------------------------------------------------------------- models


def make_estimator(name, X_long, y, n_jobs=None, iterations=None, **params):
    """The estimator ``name`` at its benchmark settings (long layout, task in column 0)."""
    n_iter = (iterations or ITERATIONS).get(name)
    common = dict(task_column=0, n_jobs=n_jobs, **params)
    if name == "param_squared":
        return SharedParamRegressor(**{"alpha_task": 1.0, **common})
    if name == "param_auto":
        return SharedParamRegressor(alpha_task="auto", max_iter=n_iter, tol=0.0, **common)
    if name == "param_huber_newton":
        return SharedParamRegressor(loss="huber", **common)
    if name == "param_huber":
        if n_iter is None:
            # Newton's method (the default solver) to the default tol.
            return SharedParamRegressor(loss="huber", **common)
        # A fixed number of iterations needs L-BFGS: Newton's method with
        # tol=0 would go on past its optimum into failed line searches.
        return SharedParamRegressor(loss="huber", solver="lbfgs", max_iter=n_iter, tol=0.0,
                                    **common)
    if name.startswith("feature_"):
        penalty = name.removeprefix("feature_")
        # Not timed. A tenth of alpha_max keeps some rows (l21) or directions
        # (trace) non-zero, as a tuned model would.
        alpha = 0.1 * alpha_max_shared_feature(X_long, y, penalty)
        return SharedFeatureRegressor(alpha, penalty=penalty, max_iter=n_iter, tol=0.0, **common)
    if name == "objective":
        return SharedObjectiveRegressor(n_components=10, activation="relu", max_iter=n_iter,
                                        tol=0.0, random_state=0, **common)
    raise ValueError(name)


def cpu_seconds():
    """CPU seconds of this process and of its live child processes.

    The children are joblib's worker processes (SharedObjectiveRegressor's
    long layout runs its chunks on them); without psutil only this process
    is counted.
    """
    total = time.process_time()
    try:
        import psutil
    except ImportError:
        return total
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def timed_fit(model, X, y):
    """Wall and CPU seconds (with worker processes) of one fit, its n_iter_ and the load."""
    with warnings.catch_warnings():
        # tol=0: the fixed iteration budget always ends with this warning.
        warnings.simplefilter("ignore", ConvergenceWarning)
        cpu, tic = cpu_seconds(), time.perf_counter()
        model.fit(X, y)
        wall = time.perf_counter() - tic
        cpu = cpu_seconds() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "n_iter": int(getattr(model, "n_iter_", 1)),
            "load_1min": os.getloadavg()[0]}


def summarize_runs(runs):
    wall = statistics.median(r["wall_s"] for r in runs)
    n_iter = statistics.median(r["n_iter"] for r in runs)
    return {"wall_s": wall, "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "n_iter": n_iter, "wall_per_iter_s": wall / max(n_iter, 1),
            "load_1min": [min(r["load_1min"] for r in runs), max(r["load_1min"] for r in runs)],
            "runs": runs}


# ---------------------------------------------------------------- scaling


def bench_axis(axis, sizes, max_size, repeats):
    """Fit time of every estimator along ``axis`` ('rows' or 'tasks')."""
    out = {name: [] for name in ESTIMATORS}
    for size in sizes:
        if axis == "rows":
            n_tasks, per_task = ROWS_TASKS, size // ROWS_TASKS
        else:
            n_tasks, per_task = size, TASKS_ROWS
        names = [n for n in ESTIMATORS if size <= max_size.get(n, size)]
        if not names:
            continue
        X_long, _, y, _ = make_synthetic(n_tasks, per_task, N_FEATURES, shuffle=False)
        models = {n: make_estimator(n, X_long, y) for n in names}
        runs = {n: [] for n in names}
        for _ in range(repeats):
            # Round-robin, so that a change in load hits every estimator alike.
            for name in names:
                runs[name].append(timed_fit(models[name], X_long, y))
        for name in names:
            row = {"size": size, "n_tasks": n_tasks, "rows_per_task": per_task,
                   "n_rows": n_tasks * per_task, **summarize_runs(runs[name])}
            out[name].append(row)
            print(f"{axis:5s} {size:>10,} {name:14s} {row['wall_s']:9.3f} s "
                  f"({row['n_iter']:g} iterations, load {row['load_1min'][1]:.1f})", flush=True)
        del X_long, y, models
    return out


def slopes(points, key):
    """Least-squares log-log slope and the local slopes between neighbouring sizes."""
    x = np.log10([p["size"] for p in points])
    t = np.log10([p[key] for p in points])
    local = [{"from": int(points[i]["size"]), "to": int(points[i + 1]["size"]),
              "slope": float((t[i + 1] - t[i]) / (x[i + 1] - x[i]))}
             for i in range(len(points) - 1)]
    return {"slope": float(np.polyfit(x, t, 1)[0]), "local": local,
            "super_linear": [s for s in local if s["slope"] > SUPER_LINEAR]}


# ---------------------------------------------------------------- n_jobs


def capacity_probe(executor, size=200, n=40):
    """Speed-up of 2 threads over 1 on GIL-free matrix products, right now.

    2.0 on an idle 2-core machine; less when other processes hold a core.
    """
    A = np.random.default_rng(0).standard_normal((size, size))

    def work():
        for _ in range(n):
            A @ A

    tic = time.perf_counter()
    work()
    work()
    one = time.perf_counter() - tic
    tic = time.perf_counter()
    other = executor.submit(work)
    work()
    other.result()
    return one / (time.perf_counter() - tic)


def bench_njobs(shape, repeats):
    n_tasks, per_task, n_features = shape
    X_long, _, y, _ = make_synthetic(n_tasks, per_task, n_features, shuffle=False)
    y = y + np.random.default_rng(1).standard_t(3, len(y))  # outliers for Huber
    out = {"n_tasks": n_tasks, "rows_per_task": per_task, "n_features": n_features,
           "iterations": NJOBS_ITERATIONS, "params": NJOBS_PARAMS, "estimators": {}}
    with ThreadPoolExecutor(1) as executor:
        for name in NJOBS_ITERATIONS:
            models = {j: make_estimator(name, X_long, y, n_jobs=j, iterations=NJOBS_ITERATIONS,
                                        **NJOBS_PARAMS[name])
                      for j in (1, 2)}
            for model in models.values():  # warm-up
                timed_fit(model, X_long, y)
            runs, probes = {1: [], 2: []}, []
            for _ in range(repeats):
                probes.append(capacity_probe(executor))
                for j in (1, 2):
                    runs[j].append(timed_fit(models[j], X_long, y))
            one, two = summarize_runs(runs[1]), summarize_runs(runs[2])
            pairs = [a["wall_s"] / b["wall_s"] for a, b in zip(runs[1], runs[2])]
            res = {"n_jobs_1": one, "n_jobs_2": two,
                   "speed_up": one["wall_s"] / two["wall_s"],
                   "speed_up_paired_median": statistics.median(pairs),
                   "cpu_over_wall_n_jobs_2": two["cpu_s"] / two["wall_s"],
                   "capacity_probe_median": statistics.median(probes),
                   "capacity_probes": probes,
                   "target_met": one["wall_s"] / two["wall_s"] >= SPEED_UP_TARGET}
            out["estimators"][name] = res
            print(f"n_jobs {name:12s} 1: {one['wall_s']:.3f} s, 2: {two['wall_s']:.3f} s, "
                  f"speed-up {res['speed_up']:.2f}x (paired {res['speed_up_paired_median']:.2f}x, "
                  f"CPU/wall {res['cpu_over_wall_n_jobs_2']:.2f}, machine probe "
                  f"{res['capacity_probe_median']:.2f}x, load {two['load_1min'][1]:.1f})",
                  flush=True)
    return out


# ---------------------------------------------------------------- report


def table(results):
    lines = []
    for axis in ("rows", "tasks"):
        if axis not in results:
            continue
        sizes = sorted({p["size"] for pts in results[axis].values() for p in pts})
        lines += [f"### Fit time against {axis}", "",
                  "| estimator | " + " | ".join(f"{s:,}" for s in sizes)
                  + " | slope (wall) | slope (CPU) | local slopes > 1.15 |",
                  "|---|" + "---:|" * (len(sizes) + 2) + "---|"]
        for name, pts in results[axis].items():
            by = {p["size"]: p for p in pts}
            cells = []
            for s in sizes:
                p = by.get(s)
                if p is None:
                    cells.append("not run")
                elif p["n_iter"] > 1:
                    cells.append(f"{_t(p['wall_s'])} ({_t(p['wall_per_iter_s'])}/it)")
                else:
                    cells.append(_t(p["wall_s"]))
            sl = results["slopes"][axis].get(name)
            if not sl:
                lines.append(f"| {_label(name, ITERATIONS.get(name))} | " + " | ".join(cells) + " | | | |")
                continue
            sup = "; ".join(
                f"{kind}: " + ", ".join(f"{s['from']:,}->{s['to']:,} {s['slope']:.2f}"
                                        for s in sl[kind]["super_linear"])
                for kind in ("wall", "cpu") if sl[kind]["super_linear"])
            lines.append(f"| {_label(name, ITERATIONS.get(name))} | " + " | ".join(cells)
                         + f" | {sl['wall']['slope']:.2f} | {sl['cpu']['slope']:.2f} | "
                         + f"{sup or 'none'} |")
        lines.append("")
    if results.get("njobs"):
        lines += ["### n_jobs=2 against n_jobs=1", "",
                  "| estimator | tasks x rows x features | n_jobs=1 | n_jobs=2 | speed-up "
                  "(target 1.6) | paired | CPU / wall (n_jobs=2) | machine probe | load |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for nj in results.get("njobs", []):
        shape = f"{nj['n_tasks']:,} x {nj['rows_per_task']:,} x {nj['n_features']}"
        for name, r in nj["estimators"].items():
            load = r["n_jobs_2"]["load_1min"]
            lines.append(f"| {_label(name, nj['iterations'].get(name))} | {shape} | "
                         f"{_t(r['n_jobs_1']['wall_s'])} | "
                         f"{_t(r['n_jobs_2']['wall_s'])} | **{r['speed_up']:.2f}x** | "
                         f"{r['speed_up_paired_median']:.2f}x | "
                         f"{r['cpu_over_wall_n_jobs_2']:.2f} | "
                         f"{r['capacity_probe_median']:.2f}x | {load[0]:.1f} to {load[1]:.1f} |")
    return "\n".join(lines + [""])


def _label(name, iterations):
    """The estimator ``name``, with Huber's solver (``iterations``: None means Newton to tol)."""
    if name != "param_huber":
        return ESTIMATORS[name]
    if iterations is None:
        return ESTIMATORS[name][:-1] + ", Newton to tol=1e-4)"
    return ESTIMATORS[name][:-1] + f", L-BFGS {iterations} iterations)"


def _t(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_run = [a for a in ("rows", "tasks") if a in results]
    if not axes_run:
        return
    fig, axes = plt.subplots(1, len(axes_run), figsize=(6 * len(axes_run), 4.5), squeeze=False)
    for ax, axis in zip(axes[0], axes_run):
        for name, pts in results[axis].items():
            if pts:
                ax.loglog([p["size"] for p in pts], [p["wall_s"] for p in pts], "o-",
                          label=ESTIMATORS[name], markersize=4)
        sizes = [p["size"] for pts in results[axis].values() for p in pts]
        times = [p["wall_s"] for pts in results[axis].values() for p in pts]
        lo, hi = min(sizes), max(sizes)
        # Slope-1 guide through the smallest time at the smallest size.
        base = min(t for s, t in zip(sizes, times) if s == lo)
        ax.loglog([lo, hi], [base, base * hi / lo], "k:", label="slope 1 (linear)")
        ax.set_xlabel("rows (100 tasks)" if axis == "rows" else f"tasks ({TASKS_ROWS} rows each)")
        ax.set_ylabel("fit time (s), median")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"fit time against {axis}, BLAS 1 thread", fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.render is not None:
        report(json.loads(args.render.read_text()), args.output)
        return
    results = {**environment(), "args": {k: str(v) if isinstance(v, Path) else v
                                         for k, v in vars(args).items()}}
    results["pinned"] = (f"threadpoolctl.threadpool_limits({BLAS_THREADS}) around every fit; "
                         "n_jobs=2 runs 2 workers with one BLAS thread each")
    results["machine"]["python_implementation"] = platform.python_implementation()
    tic = time.perf_counter()
    with threadpool_limits(BLAS_THREADS):
        for axis in ("rows", "tasks"):
            if axis in args.only:
                sizes = (QUICK_SIZES if args.quick else FULL_SIZES)[axis]
                cap = {**MAX_SIZE[axis], **(QUICK_MAX_SIZE[axis] if args.quick else {})}
                results[axis] = bench_axis(axis, sizes, cap, args.repeats)
        if "njobs" in args.only:
            shapes = args.njobs_shape or (QUICK_NJOBS if args.quick else FULL_NJOBS)
            results["njobs"] = [bench_njobs(shape, 3 if args.quick else 2 * args.repeats + 1)
                                for shape in shapes]
    results["wall_time_s"] = time.perf_counter() - tic
    results["load_average_at_end"] = os.getloadavg()
    report(results, args.output)


def report(results, output):
    """Slopes from the recorded times; write the JSON and the chart, print the tables."""
    # CPU time as well as wall time: on a loaded machine the wall time of
    # a long fit also counts the waits for a core.
    results["slopes"] = {
        axis: {name: {"wall": slopes(pts, "wall_s"), "cpu": slopes(pts, "cpu_s")}
               if len(pts) > 1 else None for name, pts in results[axis].items()}
        for axis in ("rows", "tasks") if axis in results}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1, default=float) + "\n")
    plot(results, output.with_suffix(".png"))
    print(table(results))
    print(f"wrote {output} and {output.with_suffix('.png')} "
          f"(measured in {results['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
