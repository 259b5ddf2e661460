"""SharedParamRegressor(loss='huber'): Newton's method against L-BFGS, same data, same process.

``solver='newton'`` (the default for Huber since the sixth session) and
``solver='lbfgs'`` (the default before) minimize the same objective from the
same start (the exact squared-loss solution). For each data set and each
``tol`` the table gives the median fit time of each solver, its ``n_iter_``,
and how close it got: the largest absolute entry of the gradient of the
written objective (SPEC section 3) and the objective's excess over the
lowest value either solver reached, both computed here with plain numpy
from the fitted coefficients, not read from the solvers.

Data:

- synthetic long layout (``bench_shared_param.make_synthetic``, Student-t
  noise with 3 degrees of freedom added for outliers), 1,000 tasks of 200
  and of 2,000 rows, 20 features, at ``alpha_task`` 0.01 and 1;
- the School data (139 schools of 22 to 251 students, 27 features, exam
  scores with a standard deviation of about 13, so that most residuals lie
  in Huber's linear region at ``epsilon=1.35``): many task sizes, the
  row-wise form of the long layout;
- a wide layout: 5,000 rows, 50 features, 20 targets, 10% of the labels
  missing.

Every fit runs with BLAS held to one thread (threadpoolctl), ``n_jobs=None``;
times are medians of ``--repeats`` runs taken round-robin after one untimed
warm-up each.

Run from the repository root::

    python benchmarks/bench_huber_solvers.py               # about a minute
    python benchmarks/bench_huber_solvers.py --repeats 3   # faster
"""

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from bench_shared_param import (
    BLAS_THREADS, REPO, SCHOOL_PATH, environment, load_school, make_synthetic,
)
from skmtl import SharedParamRegressor

SOLVERS = ("newton", "lbfgs")
TOLS = (1e-4, 1e-8)
EPSILON = 1.35


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per fit (default 5)")
    parser.add_argument("--school", type=Path, default=SCHOOL_PATH, help="path to school.mat")
    parser.add_argument(
        "--output", type=Path, default=REPO / "benchmarks" / "results" / "bench_huber_solvers.json",
        help="results JSON path",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


# --------------------------------------------------------------------- data


def datasets(school_path):
    """(name, X, y, params) of each problem; long layouts have the task in column 0."""
    out = []
    for rows in (200, 2000):
        X, _, y, _ = make_synthetic(1000, rows, 20, shuffle=False)
        y = y + np.random.default_rng(1).standard_t(3, len(y))
        for alpha_task in (0.01, 1.0):
            out.append((f"1,000 x {rows:,} x 20, alpha_task={alpha_task:g}", X, y,
                        {"task_column": 0, "alpha_task": alpha_task}))
    Xs, ys, school = load_school(school_path)
    out.append(("School (139 tasks, 27 features)", np.column_stack([school, Xs[:, :-1]]), ys,
                {"task_column": 0, "alpha_task": 0.1}))
    rng = np.random.default_rng(2)
    Xw = rng.standard_normal((5000, 50))
    W = rng.standard_normal(50) + 0.3 * rng.standard_normal((20, 50))
    Y = Xw @ W.T + rng.standard_t(3, (5000, 20))
    Y[rng.uniform(size=Y.shape) < 0.1] = np.nan
    out.append(("wide 5,000 x 50, 20 targets", Xw, Y, {"alpha_task": 0.1}))
    return out


def pairs(X, y, task_column):
    """Observed (row features, task index, label) triples, and S."""
    if task_column is None:
        rows, tasks = np.nonzero(~np.isnan(y))
        return X[rows], tasks, y[rows, tasks], float(len(y))
    _, tasks = np.unique(X[:, task_column], return_inverse=True)
    return np.delete(X, task_column, axis=1), tasks, y, float(len(y))


def objective(model, Xp, tp, yp, S):
    """The written objective and its gradient in (w_0, b_0, v_t, c_t), plain numpy."""
    a_s, a_t = model.alpha_shared, model.alpha_task
    r = yp - np.einsum("ij,ij->i", Xp, model.coef_[tp]) - model.intercept_[tp]
    inside = np.abs(r) <= EPSILON
    rho = np.where(inside, 0.5 * r * r, EPSILON * np.abs(r) - 0.5 * EPSILON**2)
    psi = np.clip(r, -EPSILON, EPSILON)
    n_tasks = len(model.coef_)
    g_coef = -np.stack([np.bincount(tp, psi * Xp[:, j], n_tasks) for j in range(Xp.shape[1])], 1)
    g_int = -np.bincount(tp, psi, n_tasks)
    value = (rho.sum() / S + 0.5 * a_s * model.shared_coef_ @ model.shared_coef_
             + 0.5 * a_t * (np.sum(model.task_coef_**2) + np.sum(model.task_intercept_**2)))
    g_w0 = g_coef.sum(0) / S + a_s * model.shared_coef_
    g_b0 = g_int.sum() / S
    g_v = g_coef / S + a_t * model.task_coef_
    g_c = g_int / S + a_t * model.task_intercept_
    grad = np.concatenate([g_w0, [g_b0], g_v.ravel(), g_c])
    return value, float(np.abs(grad).max())


# --------------------------------------------------------------------- runs


def run_one(name, X, y, params, repeats):
    Xp, tp, yp, S = pairs(X, y, params.get("task_column"))
    models = {(solver, tol): SharedParamRegressor(loss="huber", epsilon=EPSILON, solver=solver,
                                                  tol=tol, **params)
              for tol in TOLS for solver in SOLVERS}
    times = {key: [] for key in models}
    warned = {}
    for key, model in models.items():  # warm-up, and the fitted models kept
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X, y)
        warned[key] = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(repeats):
            for key, model in models.items():
                gc.collect()
                tic = time.perf_counter()
                model.fit(X, y)
                times[key].append(time.perf_counter() - tic)
    measured = {key: objective(model, Xp, tp, yp, S) for key, model in models.items()}
    best = min(v for v, _ in measured.values())
    rows = []
    for (solver, tol), model in models.items():
        value, grad = measured[solver, tol]
        rows.append({"data": name, "solver": solver, "tol": tol,
                     "median_s": statistics.median(times[solver, tol]),
                     "times_s": times[solver, tol], "n_iter": int(model.n_iter_),
                     "largest_gradient": grad, "objective_excess": (value - best) / abs(best),
                     "convergence_warning": warned[solver, tol]})
    for tol in TOLS:
        newton, lbfgs = (next(r for r in rows if r["solver"] == s and r["tol"] == tol)
                         for s in SOLVERS)
        print(f"{name:40s} tol={tol:g}: newton {newton['median_s']:.3f} s ({newton['n_iter']} it, "
              f"grad {newton['largest_gradient']:.1e}), lbfgs {lbfgs['median_s']:.3f} s "
              f"({lbfgs['n_iter']} it, grad {lbfgs['largest_gradient']:.1e}), "
              f"lbfgs / newton {lbfgs['median_s'] / newton['median_s']:.2f}x", flush=True)
    return rows


def table(rows):
    lines = ["| data | tol | Newton | L-BFGS | L-BFGS / Newton | Newton: iterations, "
             "largest gradient | L-BFGS: iterations, largest gradient |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name in dict.fromkeys(r["data"] for r in rows):
        for tol in TOLS:
            n, lb = (next(r for r in rows if r["data"] == name and r["solver"] == s
                          and r["tol"] == tol) for s in SOLVERS)

            def cell(r):
                warn = ", ConvergenceWarning" if r["convergence_warning"] else ""
                return f"{r['n_iter']}, {r['largest_gradient']:.1e}{warn}"

            lines.append(f"| {name} | {tol:g} | {n['median_s'] * 1e3:.0f} ms | "
                         f"{lb['median_s'] * 1e3:.0f} ms | **{lb['median_s'] / n['median_s']:.2f}x** "
                         f"| {cell(n)} | {cell(lb)} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    results = {**environment(), "pinned": f"threadpoolctl.threadpool_limits({BLAS_THREADS})",
               "repeats": args.repeats, "epsilon": EPSILON, "rows": []}
    tic = time.perf_counter()
    with threadpool_limits(BLAS_THREADS):
        for name, X, y, params in datasets(args.school):
            results["rows"] += run_one(name, X, y, params, args.repeats)
    results["wall_time_s"] = time.perf_counter() - tic
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(table(results["rows"]))
    print(f"wrote {args.output} (measured in {results['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
