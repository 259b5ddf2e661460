"""The ``skmtl`` command line: ``compare``, ``fit`` and ``predict``.

Run ``skmtl --help`` (or ``python -m skmtl --help``). pandas, tqdm, skops and
matplotlib come with the extra ``[cli]`` and are imported inside the commands
that need them, so ``import skmtl`` stays light and a missing one is reported
in one line instead of a traceback.
"""

import argparse
import ast
import csv
import importlib
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import sklearn
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.parallel import Parallel, delayed
from threadpoolctl import threadpool_limits

from . import (
    SharedFeatureRegressor,
    SharedObjectiveRegressor,
    SharedParamRegressor,
    __version__,
    shared_feature_path,
)
from .metrics import get_scorer, pooled_explained_variance_score

EXIT_ERROR = 2
INSTALL_HINT = 'pip install "skmtl[cli]"'
# The Ridge baselines pick their alpha per fit by efficient leave-one-out
# (RidgeCV's default), from the grid examples/quickstart.py uses.
RIDGE_ALPHAS = np.logspace(-3, 3, 7)
# Tuned models choose alpha on one 80/20 split of each training part: a full
# inner 3-fold search of SharedObjectiveRegressor alone took 7 s per outer fold
# on School, against under 3 s for the split, which chose the same alpha.
# SharedObjectiveRegressor's grid spans two decades around School's choice
# (0.1); 1e-3 scored 0.20 there against 0.36 and would add a quarter to the
# run time of the default compare, which that model dominates.
TUNING_HOLDOUT_FOLDS = 5
SHARED_FEATURE_ALPHA_RATIOS = (0.3, 0.1, 0.03, 0.01)
SHARED_OBJECTIVE_ALPHAS = (1e-2, 1e-1, 1.0)
SCORE_NAME = "pooled explained variance (R^2 over all held-out labels)"
MODEL_FORMAT = "skmtl-cli-model"
# skops.io.get_untrusted_types lists the types in a file that skops does not
# trust by default; in a model saved by ``skmtl fit`` these are skmtl's own
# estimators, so any type there from outside these modules is refused.
TRUSTED_MODULES = ("skmtl", "numpy", "builtins")


class CLIError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


def _require(module):
    """Import an optional dependency of the command line, or explain how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise CLIError(f"the package {package!r} is not installed; the command line needs "
                       f"it: {INSTALL_HINT}") from None


def _one_line(message):
    return " ".join(str(message).split())


# ------------------------------------------------------------------ data


class _Data:
    """A table read for the command line: numeric features, targets, tasks.

    ``task`` holds each row's task label in the long layout and is None in the
    wide one (one target column per task). ``frame`` is the task column and
    the features as a DataFrame and ``target_frame`` the target column(s),
    what ``fit`` trains on (None for School).
    """

    def __init__(self, source, X, y, task, *, features, targets, task_column, frame=None,
                 target_frame=None):
        self.source, self.X, self.y, self.task = source, X, y, task
        self.features, self.targets, self.task_column = features, targets, task_column
        self.frame, self.target_frame = frame, target_frame

    @property
    def layout(self):
        return "wide" if self.task is None else "long"

    @property
    def n_tasks(self):
        return len(self.targets) if self.task is None else len(np.unique(self.task))

    def describe(self):
        return (f"{self.source}: {len(self.X):,} rows, {self.n_tasks:,} tasks, "
                f"{len(self.features)} features, {self.layout} layout")


def _load_school():
    from .datasets import load_school

    school = load_school()
    return _Data("School data (skmtl.datasets.load_school)", school.data[:, 1:],
                 school.target, school.data[:, 0], features=school.feature_names[1:],
                 targets=school.target_names, task_column=school.feature_names[0])


def _read_frame(path):
    """The CSV file at ``path`` as a DataFrame with at least one row."""
    pd = _require("pandas")
    path = Path(path)
    if not path.exists():
        raise CLIError(f"no such file: {path}")
    if path.is_dir():
        raise CLIError(f"{path} is a directory, not a CSV file")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CLIError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CLIError(f"{path} is not a readable CSV file: {_one_line(exc)}") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(frame) == 0:
        raise CLIError(f"{path} has no data rows, only a header")
    return frame


def _check_columns(frame, names, path, what):
    columns = [str(c) for c in frame.columns]
    for name in names:
        if name not in frame.columns:
            shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
            raise CLIError(f"{what} column {name!r} is not in {path}; its columns are: {shown}")


def _numeric(frame, name, path, what, *, allow_missing=False):
    """Column ``name`` as float64; a non-number or a missing value is bad input."""
    pd = _require("pandas")
    column = frame[name]
    if column.dtype == bool:
        column = column.astype(np.float64)
    if not pd.api.types.is_numeric_dtype(column):
        converted = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero(converted.isna().to_numpy() & column.notna().to_numpy())
        if len(bad):
            raise CLIError(f"{what} column {name!r} of {path} is not numeric: data row "
                           f"{bad[0] + 1} holds {column.iloc[bad[0]]!r}")
        column = converted
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    missing = np.flatnonzero(np.isnan(values))
    if len(missing) and not allow_missing:
        raise CLIError(f"{what} column {name!r} of {path} has {len(missing)} missing value(s), "
                       f"the first on data row {missing[0] + 1}: fill or drop them")
    if np.isinf(values).any():
        row = np.flatnonzero(np.isinf(values))[0]
        raise CLIError(f"{what} column {name!r} of {path} holds infinity on data row {row + 1}")
    return values


def _read_data(args):
    """``--data`` with its column options, in the long or the wide layout."""
    path = args.data
    if args.targets is not None:
        if args.target is not None or args.task_column is not None:
            raise CLIError("--targets (wide layout, one column per task) goes without "
                           "--target and --task-column (long layout)")
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        if not targets:
            raise CLIError("--targets is empty: name the target columns, e.g. --targets a,b")
        task_column = None
    elif args.target is not None and args.task_column is not None:
        targets, task_column = [args.target], args.task_column
    else:
        raise CLIError("--data needs --target COL --task-column COL (long layout) or "
                       "--targets A,B,... (wide layout)")
    frame = _read_frame(path)
    used = targets + ([task_column] if task_column is not None else [])
    _check_columns(frame, targets, path, "target")
    if task_column is not None:
        _check_columns(frame, [task_column], path, "task")
    if args.features is None:
        features = [c for c in frame.columns if c not in used]
    else:
        features = list(args.features)
        _check_columns(frame, features, path, "feature")
        for name in features:
            if name in used:
                raise CLIError(f"column {name!r} is a target or the task column, not a feature")
    if not features:
        raise CLIError(f"{path} has no feature columns besides the target and task columns")
    X = np.column_stack([_numeric(frame, f, path, "feature") for f in features])
    Y = np.column_stack([_numeric(frame, t, path, "target", allow_missing=task_column is None)
                         for t in targets])
    if task_column is None:
        empty = [t for t, column in zip(targets, Y.T) if np.isnan(column).all()]
        if empty:
            raise CLIError(f"target column {empty[0]!r} of {path} has no value: every task "
                           "needs at least one label")
        task, y = None, Y
    else:
        labels = frame[task_column]
        if labels.isna().any():
            row = np.flatnonzero(labels.isna().to_numpy())[0]
            raise CLIError(f"task column {task_column!r} of {path} has a missing label on "
                           f"data row {row + 1}")
        task, y = labels.to_numpy(), Y[:, 0]
    # What fit trains on: the checked columns as they were read, as a user
    # would pass them in Python (the same array layouts, so the same bits).
    model_frame = frame[([] if task_column is None else [task_column]) + features]
    return _Data(str(path), X, y, task, features=[str(f) for f in features],
                 targets=[str(t) for t in targets], task_column=task_column, frame=model_frame,
                 target_frame=frame[targets] if task_column is None else frame[targets[0]])


# -------------------------------------------------------- compare: models


def _ridge(X, y):
    # RidgeCV's leave-one-out needs two rows; on one row every Ridge predicts that label.
    return (RidgeCV(alphas=RIDGE_ALPHAS) if len(y) >= 2 else Ridge()).fit(X, y)


class _RidgeBaseline(RegressorMixin, BaseEstimator):
    """What users fit today: one RidgeCV per task, or one pooled RidgeCV.

    Long layout (``task_column`` an int position): per task, a RidgeCV on
    that task's rows; a task that fit did not see is predicted by a RidgeCV on
    all rows, which is also the pooled model. Wide layout (``task_column``
    None, ``y`` with one column per task, NaN for a missing label): per task,
    a RidgeCV on the task's observed rows; pooled, one RidgeCV on every
    observed (row, task) pair, which predicts the same value for every task.

    Parameters
    ----------
    per_task : bool, default=True
        One model per task (True) or one pooled model (False).
    task_column : int or None, default=None
        Column of ``X`` holding the task label (long layout), or None.
    """

    def __init__(self, *, per_task=True, task_column=None):
        self.per_task = per_task
        self.task_column = task_column

    def fit(self, X, y):
        """Fit the Ridge models.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Training data, with the task column in the long layout.
        y : ndarray of shape (n_samples,) or (n_samples, n_tasks)
            Targets; NaN marks a missing label in the wide layout.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if self.task_column is None:
            Y = y.reshape(len(y), -1)
            observed = ~np.isnan(Y)
            rows, cols = np.nonzero(observed)
            self.pooled_ = _ridge(X[rows], Y[rows, cols])
            if self.per_task:
                self.models_ = [_ridge(X[observed[:, t]], Y[observed[:, t], t])
                                for t in range(Y.shape[1])]
            self.n_outputs_ = Y.shape[1]
            return self
        task, Xf = X[:, self.task_column], np.delete(X, self.task_column, axis=1)
        self.pooled_ = _ridge(Xf, y)
        if self.per_task:
            self.models_ = {t: _ridge(Xf[task == t], y[task == t]) for t in np.unique(task)}
        return self

    def predict(self, X):
        """Predict with each task's Ridge (or the pooled one).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Samples, with the task column in the long layout.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_tasks)
            Long layout: one prediction per row; wide: one column per task.
        """
        X = np.asarray(X, dtype=np.float64)
        if self.task_column is None:
            if not self.per_task:
                return np.repeat(self.pooled_.predict(X)[:, None], self.n_outputs_, axis=1)
            return np.column_stack([m.predict(X) for m in self.models_])
        task, Xf = X[:, self.task_column], np.delete(X, self.task_column, axis=1)
        pred = self.pooled_.predict(Xf)
        if self.per_task:
            for t in np.unique(task):
                if t in self.models_:
                    rows = task == t
                    pred[rows] = self.models_[t].predict(Xf[rows])
        return pred


def _splits(X, task, n_splits, random_state):
    """K folds of the rows, stratified by task in the long layout.

    Stratifying keeps every task in every training part (when it has at
    least ``n_splits`` rows), so the comparison is about predicting new rows
    of known tasks, the question of one model per task versus sharing.
    """
    if task is None:
        return list(KFold(n_splits, shuffle=True, random_state=random_state).split(X))
    with warnings.catch_warnings():
        # Small tasks are reported by compare itself.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(StratifiedKFold(n_splits, shuffle=True, random_state=random_state)
                    .split(X, task))


def _tune(estimator, grid, X, y, task_column, random_state):
    """GridSearchCV of ``grid`` on one 80/20 split of the training rows."""
    task = None if task_column is None else X[:, task_column]
    holdout = _splits(X, task, TUNING_HOLDOUT_FOLDS, random_state)[:1]
    search = GridSearchCV(estimator, grid, cv=holdout,
                          scoring=get_scorer("pooled_explained_variance"))
    return search.fit(X, y)


def _fit_shared_param(X, y, task_column, random_state):
    # REML learns how much the tasks differ: no grid search needed.
    model = SharedParamRegressor(alpha_shared=0.0, alpha_task="auto", task_column=task_column,
                                 handle_unknown="shared")
    return model.fit(X, y), {}


def _fit_shared_feature(X, y, task_column, random_state):
    # alpha scales with y: the grid is relative to alpha_max, where W = 0.
    alpha_max = float(shared_feature_path(X, y, n_alphas=1, penalty="trace",
                                          task_column=task_column)[0][0])
    model = SharedFeatureRegressor(penalty="trace", task_column=task_column,
                                   handle_unknown="shared")
    grid = {"alpha": [alpha_max * r for r in SHARED_FEATURE_ALPHA_RATIOS]}
    search = _tune(model, grid, X, y, task_column, random_state)
    return search, {"alpha": float(search.best_params_["alpha"]),
                    "alpha / alpha_max": float(search.best_params_["alpha"] / alpha_max)}


def _fit_shared_objective(X, y, task_column, random_state):
    # Stops on a held-out tenth of each training part, as MLPRegressor's
    # early_stopping does: the default 50 rounds end with a ConvergenceWarning
    # on School although the score settles within a few rounds.
    model = SharedObjectiveRegressor(n_components=10, activation="relu", task_column=task_column,
                                     handle_unknown="shared", random_state=random_state,
                                     early_stopping=True)
    search = _tune(model, {"alpha": list(SHARED_OBJECTIVE_ALPHAS)}, X, y, task_column,
                   random_state)
    return search, {"alpha": float(search.best_params_["alpha"])}


def _fit_ridge_per_task(X, y, task_column, random_state):
    return _RidgeBaseline(per_task=True, task_column=task_column).fit(X, y), {}


def _fit_pooled_ridge(X, y, task_column, random_state):
    return _RidgeBaseline(per_task=False, task_column=task_column).fit(X, y), {}


# name -> (label in the table, fit function)
MODELS = {
    "shared-param": ("SharedParamRegressor(alpha_task='auto')", _fit_shared_param),
    "shared-feature": ("SharedFeatureRegressor(penalty='trace'), alpha tuned",
                       _fit_shared_feature),
    "shared-objective": ("SharedObjectiveRegressor(relu, 10 units, early stopping), alpha tuned",
                         _fit_shared_objective),
    "ridge-per-task": ("one RidgeCV per task", _fit_ridge_per_task),
    "pooled-ridge": ("one pooled RidgeCV", _fit_pooled_ridge),
}


def _run_fold(name, X, y, train, test, task_column, random_state):
    """Fit model ``name`` on one training part and score it on the held-out part."""
    scaler = StandardScaler()
    X = X.copy()
    features = [j for j in range(X.shape[1]) if j != task_column]
    X[np.ix_(train, features)] = scaler.fit_transform(X[np.ix_(train, features)])
    X[np.ix_(test, features)] = scaler.transform(X[np.ix_(test, features)])
    # One BLAS thread per fit: these are small solves, and on a shared or
    # busy machine a multi-threaded BLAS spends more on waking threads than
    # it saves (the benchmarks hold every contender to one thread as well).
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("always")
        tic = time.perf_counter()
        try:
            model, params = MODELS[name][1](X[train], y[train], task_column, random_state)
        except ValueError as exc:
            return {"error": _one_line(exc)}
        fit_time = time.perf_counter() - tic
        pred = model.predict(X[test])
    return {"score": pooled_explained_variance_score(y[test], pred), "fit_time": fit_time,
            "params": params, "warnings": sorted({w.category.__name__ for w in caught})}


def _parse_models(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CLIError(f"--models is empty; choose from: {', '.join(MODELS)}")
    for name in names:
        if name not in MODELS:
            raise CLIError(f"unknown model {name!r} in --models; choose from: "
                           f"{', '.join(MODELS)}")
    return list(dict.fromkeys(names))


# ------------------------------------------------------- compare: command


def _compare(args):
    models = _parse_models(args.models)
    if args.cv < 2:
        raise CLIError(f"--cv must be at least 2, got {args.cv}")
    if args.n_jobs == 0:
        raise CLIError("--n-jobs must not be 0: use 1 for no parallelism or -1 for all cores")
    if args.random_state < 0:
        raise CLIError(f"--random-state must be 0 or more, got {args.random_state}")
    tqdm = _require("tqdm").tqdm
    if args.output is not None:
        _require("matplotlib")
    if args.data is None:
        given = [opt for opt, value in [("--target", args.target), ("--targets", args.targets),
                                        ("--task-column", args.task_column),
                                        ("--features", args.features)] if value is not None]
        if given:
            raise CLIError(f"{given[0]} goes with --data FILE.csv; without --data compare "
                           "runs on the bundled School data")
        data = _load_school()
    else:
        data = _read_data(args)
    if data.task is None:
        X, task_column = data.X, None
    else:
        # Integer codes: the estimators take the task in a float array, and
        # the labels may be strings.
        codes = np.unique(data.task, return_inverse=True)[1].reshape(-1)
        X, task_column = np.column_stack([codes, data.X]), 0
    try:
        folds = _splits(X, data.task, args.cv, args.random_state)
    except ValueError as exc:
        raise CLIError(f"cannot make {args.cv} folds (--cv) of {data.source}: "
                       f"{_one_line(exc)}") from None

    if data.task is not None:
        _, counts = np.unique(data.task, return_counts=True)
        small = int((counts < args.cv).sum())
        if small:
            print(f"skmtl: note: {small} task(s) have fewer than {args.cv} rows, so some "
                  "folds hold out all of their rows: there the skmtl models predict them "
                  "by the shared model, and one RidgeCV per task by the pooled one",
                  file=sys.stderr)

    jobs = [(name, k) for name in models for k in range(len(folds))]
    runs = {name: [None] * len(folds) for name in models}
    with tqdm(total=len(jobs), file=sys.stderr, desc="skmtl compare", unit="fit") as bar:
        results = Parallel(n_jobs=args.n_jobs, return_as="generator")(
            delayed(_run_fold)(name, X, data.y, *folds[k], task_column, args.random_state)
            for name, k in jobs
        )
        for (name, k), result in zip(jobs, results):
            if "error" in result:
                raise CLIError(f"{name} failed on fold {k + 1}: {result['error']}")
            runs[name][k] = result
            bar.set_postfix_str(name)
            bar.update()

    summary = _summarize(runs)
    for row in summary:
        for kind, count in row["warnings"].items():
            print(f"skmtl: note: {row['name']}: {kind} in {count} of {args.cv} folds",
                  file=sys.stderr)
    protocol = {
        "cv": args.cv,
        "splitter": ("StratifiedKFold on the task labels" if data.task is not None
                     else "KFold on the rows"),
        "random_state": args.random_state,
    }
    print(_table(data, protocol, summary))
    if args.output is not None:
        _write_results(Path(args.output), data, protocol, summary)
    return 0


def _summarize(runs):
    summary = []
    for name, folds in runs.items():
        scores = [r["score"] for r in folds]
        warned = {}
        for r in folds:
            for kind in r["warnings"]:
                warned[kind] = warned.get(kind, 0) + 1
        summary.append({
            "name": name,
            "label": MODELS[name][0],
            "score_mean": float(np.mean(scores)),
            "score_std": float(np.std(scores, ddof=1)),
            "fit_time_mean": float(np.mean([r["fit_time"] for r in folds])),
            "fold_scores": [float(s) for s in scores],
            "fold_fit_times": [float(r["fit_time"]) for r in folds],
            "fold_params": [r["params"] for r in folds],
            "warnings": warned,
        })
    return summary


def _table(data, protocol, summary):
    width = max(len("model"), *(len(r["label"]) for r in summary))
    lines = [
        data.describe(),
        f"{protocol['cv']}-fold cross-validation ({protocol['splitter']}, random_state="
        f"{protocol['random_state']}); features standardized on each training part",
        f"score: {SCORE_NAME}, mean ± std over the folds",
        "fit time: mean per fold, tuning included",
        "",
        f"{'model':<{width}}  {'score':>15}  {'fit time':>9}",
    ]
    for r in summary:
        score = f"{r['score_mean']:.3f} ± {r['score_std']:.3f}"
        lines.append(f"{r['label']:<{width}}  {score:>15}  {r['fit_time_mean']:>7.2f} s")
    return "\n".join(lines)


CSV_COLUMNS = ["model", "label", "score_mean", "score_std", "fit_time_mean"]


def _write_results(directory, data, protocol, summary):
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "results.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for r in summary:
                writer.writerow([r["name"], r["label"], repr(r["score_mean"]),
                                 repr(r["score_std"]), repr(r["fit_time_mean"])])
        report = {
            "data": {"source": data.source, "layout": data.layout, "n_rows": len(data.X),
                     "n_tasks": data.n_tasks, "features": data.features,
                     "targets": data.targets, "task_column": data.task_column},
            "protocol": {**protocol, "score": SCORE_NAME,
                         "standardized": "features, on each training part",
                         "tuning": "GridSearchCV on one 80/20 split of the training part"},
            "models": summary,
            "versions": {"skmtl": __version__, "numpy": np.__version__,
                         "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
                         "python": platform.python_version()},
        }
        (directory / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        _results_figure(data, protocol, summary).savefig(directory / "results.png", dpi=120)
    except OSError as exc:
        raise CLIError(f"cannot write to {directory}: {exc.strerror or exc}") from None
    print(f"skmtl: wrote results.csv, results.json and results.png to {directory}",
          file=sys.stderr)


def _results_figure(data, protocol, summary):
    """Horizontal bars of the mean scores with their std as error bars."""
    # A Figure without pyplot draws with the non-interactive Agg canvas and
    # leaves matplotlib's global backend alone.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 1.8 + 0.5 * len(summary)), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(len(summary))[::-1]
    means = [r["score_mean"] for r in summary]
    bars = ax.barh(positions, means, xerr=[r["score_std"] for r in summary], capsize=4,
                   color="tab:blue")
    ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], label_type="center", color="white")
    ax.set_yticks(positions, [r["label"] for r in summary])
    ax.set_xlabel(f"{SCORE_NAME}\nmean ± std over {protocol['cv']} folds")
    ax.set_title(data.describe().replace(": ", ":\n", 1), fontsize="medium")
    return fig


# ------------------------------------------------------ fit and predict


MODEL_TYPES = {
    "shared-param": SharedParamRegressor,
    "shared-feature": SharedFeatureRegressor,
    "shared-objective": SharedObjectiveRegressor,
}


def _parse_params(items, estimator):
    """``--param key=value`` pairs; values are Python literals, else strings."""
    valid = estimator.get_params()
    params = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--param {item!r} is not of the form key=value")
        if key == "task_column":
            raise CLIError("--param task_column: the task column is set by --task-column")
        if key not in valid:
            raise CLIError(f"--param {key}: {type(estimator).__name__} has no parameter "
                           f"{key!r}; its parameters are: {', '.join(sorted(valid))}")
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[key] = text  # a bare word such as auto or relu
    return params


def _report_warnings(caught):
    for message in dict.fromkeys(f"{w.category.__name__}: {_one_line(w.message)}"
                                 for w in caught):
        print(f"skmtl: warning: {message}", file=sys.stderr)


def _fit(args):
    sio = _require("skops.io")
    data = _read_data(args)
    estimator = MODEL_TYPES[args.model_type]()
    params = _parse_params(args.param, estimator)
    estimator.set_params(task_column=data.task_column, **params)
    y = data.target_frame
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(data.frame, y)
        except (ValueError, TypeError) as exc:
            raise CLIError(_one_line(exc)) from None
    _report_warnings(caught)
    bundle = {"format": MODEL_FORMAT, "skmtl_version": __version__, "layout": data.layout,
              "targets": data.targets, "estimator": estimator}
    try:
        sio.dump(bundle, args.model)
    except OSError as exc:
        raise CLIError(f"cannot write {args.model}: {exc.strerror or exc}") from None
    print(f"fitted {estimator!r}\non {data.describe()}\ntraining R^2 "
          f"{estimator.score(data.frame, y):.4f}\nsaved to {args.model}")
    return 0


def _load_model(path):
    """The bundle saved by ``skmtl fit``, loading only types skmtl trusts."""
    sio = _require("skops.io")
    path = Path(path)
    if not path.is_file():
        raise CLIError(f"no such model file: {path}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises zip, JSON and key errors on a foreign file
        raise CLIError(f"{path} is not a model saved by 'skmtl fit' ({type(exc).__name__}: "
                       f"{_one_line(exc)})") from None
    refused = [t for t in untrusted if t.split(".")[0] not in TRUSTED_MODULES]
    if refused:
        raise CLIError(f"{path} holds types that skmtl does not load: {', '.join(refused)}; "
                       "only skmtl's estimators, numpy and builtins are trusted")
    print(f"skmtl: trusting types: {', '.join(untrusted) or '(none)'}", file=sys.stderr)
    bundle = sio.load(path, trusted=untrusted)
    # skops trusts scikit-learn's own classes without listing them: check
    # what was loaded as well.
    if (not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT
            or not isinstance(bundle.get("estimator"), tuple(MODEL_TYPES.values()))):
        raise CLIError(f"{path} is not a model saved by 'skmtl fit'")
    return bundle


def _predict(args):
    pd = _require("pandas")
    bundle = _load_model(args.model)
    estimator = bundle["estimator"]
    frame = _read_frame(args.data)
    columns = [str(c) for c in estimator.feature_names_in_]
    _check_columns(frame, columns, args.data, "model")
    task_column = estimator.task_column
    for c in columns:
        if c != task_column:
            _numeric(frame, c, args.data, "feature")
    X = frame[columns]
    if task_column is not None and frame[task_column].isna().any():
        row = np.flatnonzero(frame[task_column].isna().to_numpy())[0]
        raise CLIError(f"task column {task_column!r} of {args.data} has a missing label on "
                       f"data row {row + 1}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pred = estimator.predict(X)
        except (ValueError, TypeError) as exc:
            raise CLIError(_one_line(exc)) from None
    _report_warnings(caught)
    if task_column is None:
        out = pd.DataFrame(pred.reshape(len(pred), -1), columns=bundle["targets"])
    else:
        out = pd.DataFrame({task_column: frame[task_column], bundle["targets"][0]: pred})
    if args.output is None:
        out.to_csv(sys.stdout, index=False)
    else:
        try:
            out.to_csv(args.output, index=False)
        except OSError as exc:
            raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        print(f"skmtl: wrote {len(out)} predictions to {args.output}", file=sys.stderr)
    return 0


# --------------------------------------------------------------- parser


def _add_data_options(parser, *, required):
    group = parser.add_argument_group("data")
    group.add_argument("--data", metavar="FILE.csv", required=required,
                       help="a CSV file with a header row")
    group.add_argument("--target", metavar="COL",
                       help="long layout: the target column (with --task-column)")
    group.add_argument("--task-column", metavar="COL",
                       help="long layout: the column holding each row's task label")
    group.add_argument("--targets", metavar="A,B,...",
                       help="wide layout: one target column per task, comma separated; an "
                            "empty cell is a missing label")
    group.add_argument("--features", nargs="+", metavar="COL",
                       help="feature columns (default: every other column)")


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="skmtl", description="Multi-task learning for scikit-learn users.")
    parser.add_argument("--version", action="version", version=f"skmtl {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    compare = commands.add_parser(
        "compare", help="cross-validate the skmtl estimators against Ridge baselines",
        description=(
            "Cross-validated comparison of SharedParamRegressor, SharedFeatureRegressor "
            "and SharedObjectiveRegressor against one Ridge per task and one pooled "
            "Ridge. Without --data it runs on the bundled School data."),
        epilog=(
            "Protocol: K folds of the rows (stratified by task in the long layout, so "
            "every task is in every training part when it has K rows or more); features "
            "standardized on each training part; score: the pooled explained variance "
            "(skmtl.metrics.pooled_explained_variance_score, R^2 over every held-out "
            "label). Models: shared-param: alpha_task='auto' (REML), alpha_shared=0; "
            "shared-feature: penalty='trace', alpha from alpha_max x (0.3, 0.1, 0.03, "
            "0.01); shared-objective: 10 relu units, alpha from (0.01, 0.1, 1); the "
            "alphas are chosen by GridSearchCV on one 80/20 split of each training part. "
            "ridge-per-task and pooled-ridge: RidgeCV, alpha from logspace(-3, 3, 7) by "
            "leave-one-out."))
    _add_data_options(compare, required=False)
    compare.add_argument("--cv", type=int, default=5, metavar="K",
                         help="number of folds (default: 5)")
    compare.add_argument("--models", default=",".join(MODELS), metavar="LIST",
                         help=f"comma-separated models (default: {','.join(MODELS)})")
    compare.add_argument("--n-jobs", type=int, default=None, metavar="N",
                         help="fits run in parallel (joblib; -1: all cores; default: 1)")
    compare.add_argument("--output", metavar="DIR",
                         help="write results.csv, results.json and results.png to DIR")
    compare.add_argument("--random-state", type=int, default=0, metavar="SEED",
                         help="seed of the folds and of SharedObjectiveRegressor (default: 0)")
    compare.set_defaults(func=_compare)

    fit = commands.add_parser(
        "fit", help="fit one estimator on a CSV file and save it with skops",
        description=(
            "Fit one skmtl estimator on a CSV file and save it with skops, which never "
            "executes code on load. The features are used as they are (not "
            "standardized); the estimator's defaults apply unless set with --param."))
    _add_data_options(fit, required=True)
    fit.add_argument("--model-type", choices=list(MODEL_TYPES), default="shared-param",
                     help="the estimator (default: shared-param)")
    fit.add_argument("--param", action="append", metavar="KEY=VALUE",
                     help="an estimator parameter, e.g. --param alpha_task=auto; repeatable")
    fit.add_argument("--model", required=True, metavar="FILE.skops",
                     help="where to save the fitted model")
    fit.set_defaults(func=_fit)

    predict = commands.add_parser(
        "predict", help="predict a CSV file with a model saved by 'skmtl fit'",
        description=(
            "Predict the rows of a CSV file with a model saved by 'skmtl fit'. Loading "
            "prints the types skops had to trust, and refuses any type outside skmtl, "
            "numpy and builtins. Writes the task column (long layout) and the "
            "predictions, named after the target(s), as CSV."))
    predict.add_argument("--model", required=True, metavar="FILE.skops")
    predict.add_argument("--data", required=True, metavar="FILE.csv",
                         help="rows to predict: the feature columns and the task column")
    predict.add_argument("--output", metavar="FILE.csv",
                         help="write the predictions here (default: stdout)")
    predict.set_defaults(func=_predict)
    return parser


def main(argv=None):
    """Run the ``skmtl`` command line.

    Commands: ``compare`` (cross-validated comparison of the skmtl estimators
    against Ridge baselines; on the bundled School data without ``--data``),
    ``fit`` (fit one estimator on a CSV file and save it with skops) and
    ``predict`` (predict a CSV file with a saved model). Bad input is
    reported as one line on stderr, ``skmtl: error: ...``.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    exit_code : int
        0 on success, 2 on bad input or a missing optional dependency
        (as argparse's own usage errors).

    See Also
    --------
    skmtl.datasets.load_school : The data compare runs on by default.
    skmtl.metrics.pooled_explained_variance_score : The score compare reports.

    Examples
    --------
    >>> from skmtl._cli import main
    >>> main(["compare", "--models", "ridge"])
    2
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors, --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"skmtl: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
