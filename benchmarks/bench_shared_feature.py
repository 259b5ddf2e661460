"""Benchmark SharedFeatureRegressor against its peers, all in one run.

1. ``penalty='l21'`` against scikit-learn's and skglm's ``MultiTaskLasso``
   (skglm optional) on the complete wide layout, at ``0.1`` and
   ``0.01 * alpha_max``. Every contender is timed at *equal final objective*:
   for each, the loosest ``tol`` of a ladder whose objective is within
   ``--accuracy`` (relative) of the reference optimum (our solver at
   ``tol=1e-12``) is the one timed.
2. ``penalty='trace'`` against cvxpy (SCS), timed the same way (SCS's
   ``eps_abs = eps_rel`` ladder).
3. The School data: 10 random 75/25 splits within each school, ``alpha``
   chosen by an inner 3-fold CV on the training part, pooled test explained
   variance (R^2 over all test students) of both penalties.

BLAS is held to ``--threads`` threads (threadpoolctl) for every contender.
Times are medians of ``--repeat`` runs. Prints tables, writes JSON.

Run: ``python benchmarks/bench_shared_feature.py --out bench_shared_feature.json``
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.io
import sklearn
from sklearn.linear_model import MultiTaskLasso
from sklearn.model_selection import GridSearchCV, KFold
from threadpoolctl import threadpool_limits

import skmtl
from skmtl import SharedFeatureRegressor, shared_feature_path

TOLS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]


def make_wide(n, d, T, seed=0, rho=0.5, support=0.1):
    """Correlated Gaussian features (Toeplitz, ``rho``), row-sparse ``W``."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    for j in range(1, d):
        X[:, j] = rho * X[:, j - 1] + np.sqrt(1 - rho**2) * X[:, j]
    W = np.zeros((d, T))
    rows = rng.choice(d, max(1, int(support * d)), replace=False)
    W[rows] = rng.normal(size=(len(rows), T))
    Y = X @ W + rng.normal(size=(n, T)) + rng.normal(size=T)
    return X, Y


def objective(X, Y, coef, intercept, alpha, penalty):
    R = Y - X @ coef.T - intercept
    reg = np.linalg.norm(coef, axis=0).sum() if penalty == "l21" else np.linalg.svd(coef, compute_uv=False).sum()
    return (R**2).sum() / (2 * len(X)) + alpha * reg


def alpha_max(X, Y, penalty):
    G = (X - X.mean(0)).T @ (Y - Y.mean(0)) / len(X)
    return np.linalg.norm(G, axis=1).max() if penalty == "l21" else np.linalg.norm(G, 2)


def median_time(func, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def at_equal_objective(fit, value, target, accuracy, repeat, tols=TOLS):
    """Loosest tol whose objective is within ``accuracy`` of ``target``, timed."""
    for tol in tols:
        result = fit(tol)
        gap = (value(result) - target) / abs(target)
        if gap <= accuracy:
            return {"tol": tol, "rel_excess": gap, "time": median_time(lambda: fit(tol), repeat)}
    return {"tol": None, "rel_excess": gap, "time": None}


# ------------------------------------------------------------------- l21


def bench_l21(args):
    try:
        import skglm
    except ImportError:
        skglm = None
    rows = []
    for n, d, T in [(2000, 200, 20), (20000, 500, 50)]:
        X, Y = make_wide(n, d, T)
        a_max = alpha_max(X, Y, "l21")
        for frac in (0.1, 0.01):
            alpha = frac * a_max
            value = lambda m: objective(X, Y, np.atleast_2d(m.coef_), m.intercept_, alpha, "l21")  # noqa: E731
            ref = SharedFeatureRegressor(alpha=alpha, penalty="l21", tol=1e-12, max_iter=100_000).fit(X, Y)
            target = value(ref)
            row = {"n": n, "d": d, "T": T, "alpha/alpha_max": frac, "objective": target,
                   "n_selected": int(ref.n_components_)}
            contenders = {
                "skmtl": lambda tol: SharedFeatureRegressor(
                    alpha=alpha, penalty="l21", tol=tol, max_iter=100_000).fit(X, Y),
                "sklearn": lambda tol: MultiTaskLasso(alpha=alpha, tol=tol, max_iter=100_000).fit(X, Y),
            }
            if skglm is not None:
                contenders["skglm"] = lambda tol: skglm.MultiTaskLasso(alpha=alpha, tol=tol).fit(X, Y)
                skglm.MultiTaskLasso(alpha=alpha, tol=1e-2).fit(X[:50], Y[:50])  # numba compile, untimed
            for name, fit in contenders.items():
                row[name] = at_equal_objective(fit, value, target, args.accuracy, args.repeat)
            ours = row["skmtl"]["time"]
            for name in contenders:
                if name != "skmtl" and row[name]["time"] and ours:
                    row[f"ratio_skmtl/{name}"] = ours / row[name]["time"]
            rows.append(row)
            print(
                f"l21 n={n:6d} d={d:4d} T={T:3d} alpha={frac:5g}*max | "
                + " | ".join(
                    f"{k} {row[k]['time']:.3f}s (tol {row[k]['tol']:g})" if row[k]["time"] else f"{k} n/a"
                    for k in contenders
                )
                + " | "
                + " ".join(f"{k} {v:.2f}x" for k, v in row.items() if k.startswith("ratio")),
                flush=True,
            )
    return rows


# ----------------------------------------------------------------- trace


def bench_trace(args):
    import cvxpy as cp

    rows = []
    for n, d, T in [(200, 20, 10), (500, 40, 20)]:
        rng = np.random.RandomState(1)
        X = rng.normal(size=(n, d))
        Y = X @ (rng.normal(size=(d, 3)) @ rng.normal(size=(3, T))) + rng.normal(size=(n, T))
        alpha = 0.1 * alpha_max(X, Y, "trace")
        value = lambda m: objective(X, Y, m.coef_, m.intercept_, alpha, "trace")  # noqa: E731
        ref = SharedFeatureRegressor(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, Y)
        target = value(ref)

        W, b = cp.Variable((d, T)), cp.Variable(T)
        problem = cp.Problem(cp.Minimize(
            cp.sum_squares(Y - X @ W - np.ones((n, 1)) @ b[None, :]) / (2 * n) + alpha * cp.normNuc(W)
        ))

        class Solved:  # the objective of a cvxpy solution, in the same numpy formula
            def __init__(self, tol):
                problem.solve(solver="SCS", eps_abs=tol, eps_rel=tol, max_iters=1_000_000)
                self.coef_, self.intercept_ = W.value.T, b.value

        row = {"n": n, "d": d, "T": T, "rank": int(ref.n_components_), "objective": target}
        row["skmtl"] = at_equal_objective(
            lambda tol: SharedFeatureRegressor(alpha=alpha, tol=tol, max_iter=100_000).fit(X, Y),
            value, target, args.accuracy, args.repeat,
        )
        row["cvxpy_scs"] = at_equal_objective(Solved, value, target, args.accuracy, args.repeat)
        if row["skmtl"]["time"] and row["cvxpy_scs"]["time"]:
            row["speedup_vs_cvxpy_scs"] = row["cvxpy_scs"]["time"] / row["skmtl"]["time"]
        rows.append(row)
        speed = row.get("speedup_vs_cvxpy_scs")
        print(
            f"trace n={n} d={d} T={T} | skmtl {row['skmtl']['time']}s | cvxpy SCS "
            f"{row['cvxpy_scs']['time']}s (eps {row['cvxpy_scs']['tol']}) | "
            + (f"skmtl {speed:.1f}x faster" if speed else "SCS did not reach the accuracy"),
            flush=True,
        )
    return rows


# ---------------------------------------------------------------- School


def load_school(path):
    mat = scipy.io.loadmat(path)
    Xs, ys = mat["X"].ravel(), mat["Y"].ravel()
    # The 28th column is a constant 1: the per-school intercepts replace it.
    X = np.vstack([x[:, :27] for x in Xs]).astype(np.float64)
    y = np.concatenate([v.ravel() for v in ys]).astype(np.float64)
    school = np.concatenate([np.full(len(v.ravel()), t) for t, v in enumerate(ys)])
    return X, y, school


def bench_school(args):
    X, y, school = load_school(args.school)
    rng = np.random.RandomState(0)
    results = {"trace": [], "l21": []}
    for split in range(args.splits):
        train = np.zeros(len(y), bool)
        for t in np.unique(school):
            rows = np.flatnonzero(school == t)
            train[rng.choice(rows, int(round(0.75 * len(rows))), replace=False)] = True
        mean, std = X[train].mean(0), X[train].std(0)
        std[std == 0] = 1.0
        Z = np.column_stack([school, (X - mean) / std])
        for penalty in results:
            a_max = shared_feature_path(Z[train], y[train], n_alphas=1, penalty=penalty, task_column=0)[0][0]
            search = GridSearchCV(
                SharedFeatureRegressor(penalty=penalty, task_column=0, tol=1e-4),
                {"alpha": a_max * np.logspace(-0.5, -3, 8)},
                cv=KFold(3, shuffle=True, random_state=split),
            ).fit(Z[train], y[train])
            score = search.score(Z[~train], y[~train])
            results[penalty].append({"split": split, "alpha": search.best_params_["alpha"],
                                     "alpha/alpha_max": search.best_params_["alpha"] / a_max,
                                     "explained_variance": score,
                                     "n_components": int(search.best_estimator_.n_components_)})
        print(
            f"School split {split}: "
            + " ".join(f"{p} {results[p][-1]['explained_variance']:.4f}" for p in results),
            flush=True,
        )
    summary = {
        p: {"mean": float(np.mean([r["explained_variance"] for r in v])),
            "std": float(np.std([r["explained_variance"] for r in v]))}
        for p, v in results.items()
    }
    for p, s in summary.items():
        print(f"School {p}: explained variance {100 * s['mean']:.2f}% +- {100 * s['std']:.2f}")
    return {"splits": results, "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per contender (median)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for every contender")
    parser.add_argument("--accuracy", type=float, default=1e-6,
                        help="relative objective excess that counts as 'equal objective'")
    parser.add_argument("--splits", type=int, default=10, help="School train/test splits")
    parser.add_argument("--school", default=str(Path(__file__).resolve().parents[2] / "shared/data/school.mat"))
    parser.add_argument("--only", choices=["l21", "trace", "school"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--out", default="bench_shared_feature.json", help="JSON output file")
    args = parser.parse_args()
    parts = args.only or ["l21", "trace", "school"]
    report = {
        "versions": {"skmtl": skmtl.__version__, "sklearn": sklearn.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "blas_threads": args.threads, "repeat": args.repeat, "accuracy": args.accuracy,
    }
    with threadpool_limits(limits=args.threads, user_api="blas"):
        if "l21" in parts:
            report["l21"] = bench_l21(args)
        if "trace" in parts:
            report["trace"] = bench_trace(args)
        if "school" in parts:
            report["school"] = bench_school(args)
    Path(args.out).write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
