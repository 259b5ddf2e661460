"""Fit time of SharedParamRegressor against its peers, measured in one run.

Two parts, each printed as a table of ratios and written to one JSON file:

1. Synthetic long layout (task label in column 0): ``SharedParamRegressor(
   task_column=0)`` (``alpha_shared=1``, ``alpha_task=1``, squared loss)
   against one :class:`sklearn.linear_model.Ridge` on all rows pooled (the
   floor: both form ``X^T X``; Ridge gets the features without the task
   column) and against a loop of one Ridge per task. Rows grouped by task,
   as grouped data usually arrives, and shuffled.
2. The School data (139 schools, 15,362 students): SharedParamRegressor
   against statsmodels ``MixedLM`` (REML) with a random intercept and random
   slopes, and with a random intercept only. MixedLM runs in a child process
   that is killed at ``--mixedlm-timeout``.

Every contender runs with BLAS (and OpenMP) held to one thread by
``threadpoolctl.threadpool_limits(1)``, including the MixedLM child process;
``n_jobs=2`` is reported for information only. Times are medians over
``--repeats`` runs, taken round-robin over the contenders after one untimed
warm-up each, so that load from other users of the machine hits them alike.

Run from the repository root::

    python benchmarks/bench_shared_param.py
    python benchmarks/bench_shared_param.py --quick   # smaller, a minute or two
"""

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy
import scipy.io
import sklearn
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_info, threadpool_limits

from skmtl import SharedParamRegressor

REPO = Path(__file__).resolve().parent.parent
SCHOOL_PATH = Path("/work/shared/data/school.mat")
BLAS_THREADS = 1
TARGET_VS_POOLED = 1.3
TARGET_VS_MIXEDLM = 100.0

# (n_tasks, rows per task, n_features)
FULL_SIZES = [(200, 1000, 50), (5000, 10, 10)]
QUICK_SIZES = [(50, 1000, 50), (1000, 10, 10)]

# Column blocks of school.mat's X{t} (28 columns): Argyriou, Evgeniou &
# Pontil (2008) one-hot encode every categorical attribute and append a bias.
SCHOOL_BLOCKS = {
    "year": [0, 1, 2],
    "free_meals_pct": [3],
    "vr_band1_pct": [4],
    "gender": [5, 6],
    "vr_band": [7, 8, 9],
    "ethnic_group": list(range(10, 21)),
    "school_gender": [21, 22, 23],
    "school_denomination": [24, 25, 26],
    "bias": [27],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="timed runs per contender (default 7, 3 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smaller synthetic problems, fewer repeats, 60 s MixedLM cap",
    )
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_shared_param.json",
        help="results JSON path (default: benchmarks/results/bench_shared_param.json)",
    )
    parser.add_argument(
        "--mixedlm-timeout", type=float, default=None,
        help="seconds before a MixedLM fit is killed (default 600, 60 with --quick)",
    )
    parser.add_argument(
        "--school", type=Path, default=SCHOOL_PATH, help="path to school.mat",
    )
    parser.add_argument(
        "--skip-school", action="store_true", help="run the synthetic part only",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.mixedlm_timeout is None:
        args.mixedlm_timeout = 60.0 if args.quick else 600.0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


# --------------------------------------------------------------- timing


def time_round_robin(contenders, repeats):
    """Run each ``func`` once untimed, then ``repeats`` timed rounds.

    Parameters
    ----------
    contenders : dict of str to callable
    repeats : int

    Returns
    -------
    times : dict of str to list of float
        Wall-clock seconds of every timed run.
    cpu_times : dict of str to list of float
        CPU seconds of this process (all its threads) in every timed run: on
        a machine shared with others it leaves out the waits for a free core.
    """
    for func in contenders.values():
        func()
    times = {name: [] for name in contenders}
    cpu_times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, func in contenders.items():
            gc.collect()
            cpu = time.process_time()
            tic = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - tic)
            cpu_times[name].append(time.process_time() - cpu)
    return times, cpu_times


def medians(times):
    return {name: statistics.median(ts) for name, ts in times.items()}


def skmtl_contenders(X_long, y):
    """The measured configuration (serial) and ``n_jobs=2``, for information."""
    def fit(n_jobs):
        return SharedParamRegressor(
            alpha_shared=1.0, alpha_task=1.0, task_column=0, n_jobs=n_jobs
        ).fit(X_long, y)

    return {"skmtl": lambda: fit(None), "skmtl_n_jobs2": lambda: fit(2)}


# ------------------------------------------------------------ synthetic


def make_synthetic(n_tasks, rows_per_task, n_features, shuffle, seed=0):
    """Long-layout data from ``w_t = w_0 + v_t``, task label in column 0.

    Returns ``X_long`` (task column first), ``X_features`` (the same rows
    without it), ``y`` and the integer task label of each row.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_tasks), rows_per_task)
    if shuffle:
        labels = rng.permutation(labels)
    X = rng.standard_normal((len(labels), n_features))
    w0 = rng.standard_normal(n_features)
    W = w0 + 0.3 * rng.standard_normal((n_tasks, n_features))
    b = 1.0 + 0.3 * rng.standard_normal(n_tasks)
    y = np.einsum("ij,ij->i", X, W[labels]) + b[labels] + rng.standard_normal(len(labels))
    X_long = np.column_stack([labels.astype(np.float64), X])
    return X_long, X, y, labels


def ridge_per_task(X, y, labels):
    """One Ridge per task; grouping the rows is part of the cost."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return [
        Ridge(alpha=1.0).fit(X[idx], y[idx])
        for idx in np.split(order, bounds)
    ]


def bench_synthetic(sizes, repeats):
    rows = []
    for n_tasks, rows_per_task, n_features in sizes:
        for order in ("grouped", "shuffled"):
            X_long, X, y, labels = make_synthetic(
                n_tasks, rows_per_task, n_features, shuffle=order == "shuffled"
            )
            contenders = {
                **skmtl_contenders(X_long, y),
                "ridge_pooled": lambda: Ridge(alpha=1.0).fit(X, y),
                "ridge_per_task": lambda: ridge_per_task(X, y, labels),
            }
            times, cpu_times = time_round_robin(contenders, repeats)
            med, cpu = medians(times), medians(cpu_times)
            row = {
                "n_tasks": n_tasks,
                "rows_per_task": rows_per_task,
                "n_features": n_features,
                "n_rows": len(y),
                "order": order,
                "times_s": times,
                "median_s": med,
                "cpu_times_s": cpu_times,
                "median_cpu_s": cpu,
                "ratio_vs_ridge_pooled": med["skmtl"] / med["ridge_pooled"],
                "cpu_ratio_vs_ridge_pooled": cpu["skmtl"] / cpu["ridge_pooled"],
                "ratio_vs_ridge_per_task": med["skmtl"] / med["ridge_per_task"],
                "ratio_n_jobs2_vs_ridge_pooled": med["skmtl_n_jobs2"] / med["ridge_pooled"],
                "target_vs_ridge_pooled": TARGET_VS_POOLED,
            }
            row["target_met"] = row["ratio_vs_ridge_pooled"] <= TARGET_VS_POOLED
            rows.append(row)
            print(
                f"  T={n_tasks} x {rows_per_task} rows, d={n_features}, {order}: "
                f"skmtl {med['skmtl'] * 1e3:.1f} ms, pooled Ridge "
                f"{med['ridge_pooled'] * 1e3:.1f} ms",
                flush=True,
            )
            del X_long, X, y, labels, contenders
    return rows


# --------------------------------------------------------------- School


def load_school(path):
    """Long layout of school.mat: features (28 columns), y, school index."""
    mat = scipy.io.loadmat(path)
    Xs = [np.asarray(x, dtype=np.float64) for x in mat["X"].ravel()]
    ys = [np.asarray(v, dtype=np.float64).ravel() for v in mat["Y"].ravel()]
    school = np.repeat(np.arange(len(Xs)), [len(x) for x in Xs])
    return np.vstack(Xs), np.concatenate(ys), school


def school_design(X, school):
    """Split the columns by level and make MixedLM's design matrices full rank.

    A column constant within every school is school-level (it can have no
    random slope); the others get one. A one-hot block whose columns sum to 1
    on every row ("complete") is collinear with the intercept, so MixedLM
    loses one column of it, in the fixed part and in the random part alike.
    """
    bounds = np.flatnonzero(np.diff(school)) + 1
    within_constant = np.array([
        all(np.ptp(part[:, j]) == 0 for part in np.split(X, bounds))
        for j in range(X.shape[1])
    ])
    bias = [j for j in range(X.shape[1]) if np.ptp(X[:, j]) == 0]
    dropped = []
    blocks = {}
    for name, cols in SCHOOL_BLOCKS.items():
        if len(cols) < 2 or cols == bias:
            continue
        complete = bool(np.all(X[:, cols].sum(axis=1) == 1))
        blocks[name] = {"columns": cols, "complete": complete}
        if complete:
            dropped.append(cols[0])
    features = [j for j in range(X.shape[1]) if j not in bias]
    fixed = [j for j in features if j not in dropped]
    slopes = [j for j in fixed if not within_constant[j]]
    return {
        "n_columns": X.shape[1],
        "constant_columns": bias,
        "school_level_columns": [j for j in features if within_constant[j]],
        "student_level_columns": [j for j in features if not within_constant[j]],
        "one_hot_blocks": blocks,
        "dropped_for_mixedlm": dropped,
        "skmtl_features": features,
        "mixedlm_fixed_columns": fixed,
        "mixedlm_random_slope_columns": slopes,
    }


def _mixedlm_child(conn, y, exog, school, exog_re):
    """Fit MixedLM (REML) under one BLAS thread; send back time and status."""
    from statsmodels.regression.mixed_linear_model import MixedLM
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with threadpool_limits(BLAS_THREADS), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The parent starts the timeout clock here, after the imports.
        conn.send("fitting")
        cpu = time.process_time()
        tic = time.perf_counter()
        result = MixedLM(y, exog, groups=school, exog_re=exog_re).fit(reml=True)
        elapsed = time.perf_counter() - tic
        cpu = time.process_time() - cpu
    messages = sorted({
        f"{w.category.__name__}: {str(w.message).splitlines()[0][:200]}" for w in caught
    })
    conn.send({
        "status": "finished",
        "fit_time_s": elapsed,
        "fit_cpu_time_s": cpu,
        "converged": bool(result.converged),
        "convergence_warnings": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
        "warnings": messages,
        "method": str(getattr(result, "method", "")),
        "llf_reml": float(result.llf),
    })
    conn.close()


def run_mixedlm(y, exog, school, exog_re, timeout):
    """Time one MixedLM fit in a child process killed after ``timeout`` s."""
    # The child's CPU time (imports included) shows how much of the cap it got
    # on a machine shared with others.
    cpu_before = _children_cpu_time()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_mixedlm_child, args=(child, y, exog, school, exog_re))
    proc.start()
    child.close()
    try:
        # The cap counts from the start of the fit, not from the child's imports.
        if parent.poll(120) and parent.recv() == "fitting" and parent.poll(timeout):
            out = parent.recv()
        else:
            proc.kill()
            out = {"status": "timeout", "fit_time_s": None, "timeout_s": timeout}
    except EOFError:
        proc.join()
        raise RuntimeError(f"the MixedLM child process died (exit code {proc.exitcode})")
    proc.join()
    out["child_cpu_time_s"] = _children_cpu_time() - cpu_before
    return out


def _children_cpu_time():
    """User + system CPU seconds of the waited-for child processes."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_school(path, repeats, timeout):
    X, y, school = load_school(path)
    design = school_design(X, school)
    X_long = np.column_stack([school.astype(np.float64), X[:, design["skmtl_features"]]])

    # alpha_task='auto' (REML, the model MixedLM fits) has its own benchmark,
    # bench_shared_param_auto.py.
    times, cpu_times = time_round_robin(skmtl_contenders(X_long, y), repeats)
    med = medians(times)
    print(f"  School: skmtl {med['skmtl'] * 1e3:.1f} ms", flush=True)

    intercept = np.ones((len(y), 1))
    exog = np.hstack([intercept, X[:, design["mixedlm_fixed_columns"]]])
    exog_re = np.hstack([intercept, X[:, design["mixedlm_random_slope_columns"]]])
    mixedlm = {}
    for name, re in (("random_intercept", intercept), ("random_slopes", exog_re)):
        print(f"  School: MixedLM {name} ({re.shape[1]} random effects) ...", flush=True)
        mixedlm[name] = run_mixedlm(y, exog, school, re, timeout)
        mixedlm[name]["n_random_effects"] = re.shape[1]
        print(f"    {mixedlm[name]}", flush=True)

    ratios = {}
    for name, res in mixedlm.items():
        if res["status"] == "finished":
            ratios[name] = {"ratio": res["fit_time_s"] / med["skmtl"], "lower_bound": False}
        else:
            ratios[name] = {"ratio": timeout / med["skmtl"], "lower_bound": True}
    return {
        "n_rows": len(y),
        "n_tasks": int(school.max() + 1),
        "design": design,
        "mixedlm_fixed_effects": exog.shape[1],
        "times_s": times,
        "median_s": med,
        "cpu_times_s": cpu_times,
        "median_cpu_s": medians(cpu_times),
        "mixedlm": mixedlm,
        "ratios_mixedlm_over_skmtl": ratios,
        "target_mixedlm_over_skmtl": TARGET_VS_MIXEDLM,
        "target_met": ratios["random_slopes"]["ratio"] >= TARGET_VS_MIXEDLM,
    }


# --------------------------------------------------------------- report


def _git(*args):
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment():
    import statsmodels

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "skmtl_uncommitted_changes": bool(_git("status", "--porcelain", "skmtl")),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": _cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "sklearn": sklearn.__version__,
            "statsmodels": statsmodels.__version__,
            "skmtl": __import__("skmtl").__version__,
        },
        "pinned": (
            f"threadpoolctl.threadpool_limits({BLAS_THREADS}) (BLAS and OpenMP) around "
            "every contender, MixedLM child process included"
        ),
        "blas": [
            {k: lib.get(k) for k in ("internal_api", "version", "architecture")}
            for lib in threadpool_info() if lib["user_api"] == "blas"
        ],
    }


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _ms(seconds):
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def synthetic_table(rows):
    lines = [
        "| tasks x rows, d | rows | skmtl | Ridge pooled | Ridge per task | skmtl / pooled "
        f"(target <= {TARGET_VS_POOLED}) | same, CPU time | skmtl / per task | skmtl n_jobs=2 "
        "| n_jobs=2 / pooled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["median_s"]
        lines.append(
            f"| {r['n_tasks']} x {r['rows_per_task']}, d={r['n_features']}, {r['order']} "
            f"| {r['n_rows']:,} | {_ms(m['skmtl'])} | {_ms(m['ridge_pooled'])} "
            f"| {_ms(m['ridge_per_task'])} "
            f"| **{r['ratio_vs_ridge_pooled']:.2f}** {'met' if r['target_met'] else 'MISSED'} "
            f"| {r['cpu_ratio_vs_ridge_pooled']:.2f} | {r['ratio_vs_ridge_per_task']:.3f} | {_ms(m['skmtl_n_jobs2'])} "
            f"| {r['ratio_n_jobs2_vs_ridge_pooled']:.2f} |"
        )
    return "\n".join(lines)


def school_table(res):
    med = res["median_s"]
    lines = [
        "| contender | fit time | MixedLM / skmtl | converged |",
        "|---|---|---|---|",
        f"| skmtl SharedParamRegressor (alpha_task=1) | {_ms(med['skmtl'])} | | exact solve |",
        f"| skmtl, n_jobs=2 | {_ms(med['skmtl_n_jobs2'])} | | exact solve |",
    ]
    labels = {
        "random_intercept": "MixedLM REML, random intercept only",
        "random_slopes": "MixedLM REML, random intercept + slopes",
    }
    for name, out in res["mixedlm"].items():
        label = f"{labels[name]} ({out['n_random_effects']} random effects)"
        ratio = res["ratios_mixedlm_over_skmtl"][name]
        if out["status"] == "finished":
            conv = "yes" if out["converged"] else "no"
            if out["convergence_warnings"]:
                conv += f" ({out['convergence_warnings']} ConvergenceWarning)"
            lines.append(
                f"| {label} | {_ms(out['fit_time_s'])} ({_ms(out['fit_cpu_time_s'])} CPU) "
                f"| **{ratio['ratio']:,.0f}** | {conv} |"
            )
        else:
            cap = out["timeout_s"]
            cap_txt = f"{cap / 60:g} min" if cap >= 60 else f"{cap:g} s"
            lines.append(
                f"| {label} | > {cap_txt} (killed; {out['child_cpu_time_s']:,.0f} s CPU) "
                f"| **> {ratio['ratio']:,.0f}** | did not finish |"
            )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    env = environment()
    print(
        f"skmtl {env['versions']['skmtl']} at {(env['git_commit'] or '?')[:10]}"
        f"{' + uncommitted changes' if env['skmtl_uncommitted_changes'] else ''}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"sklearn {sklearn.__version__}, statsmodels {env['versions']['statsmodels']}; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; BLAS pinned to "
        f"{BLAS_THREADS} thread; median of {args.repeats} runs",
        flush=True,
    )
    out = {**env, "repeats": args.repeats, "quick": args.quick}
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    with threadpool_limits(BLAS_THREADS):
        print("Synthetic long layout:", flush=True)
        out["synthetic"] = bench_synthetic(sizes, args.repeats)
        if not args.skip_school:
            print("School data:", flush=True)
            out["school"] = bench_school(args.school, args.repeats, args.mixedlm_timeout)

    # Other users' load inflates the times; the ratios less so (round-robin).
    out["machine"]["load_average_at_end"] = os.getloadavg()

    print("\nSharedParamRegressor(task_column=0) fit time, synthetic long layout:")
    print(synthetic_table(out["synthetic"]))
    if "school" in out:
        print("\nSchool data (139 schools, 15,362 students), long layout:")
        print(school_table(out["school"]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
