"""The ``skmtl`` command line, against scikit-learn and the estimators used directly."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skmtl import SharedFeatureRegressor, SharedObjectiveRegressor, SharedParamRegressor
from skmtl._cli import _results_figure, main
from skmtl.datasets import load_school

pd = pytest.importorskip("pandas", reason="pandas is in the [test] extra")
pytest.importorskip("tqdm", reason="tqdm is in the [test] extra")
sio = pytest.importorskip("skops.io", reason="skops is in the [test] extra")
pytest.importorskip("matplotlib", reason="matplotlib is in the [test] extra")

ROOT = Path(__file__).resolve().parents[1]
# The documented protocol of compare (skmtl compare --help).
ALPHAS = np.logspace(-3, 3, 7)
FEATURES = ["a", "b", "c"]


def _long_frame(seed=0, n_tasks=6):
    """Tasks with string labels and slopes around a shared one; 'n' is an int feature."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(15, 40, size=n_tasks)
    task = np.repeat([f"s{t:02d}" for t in range(n_tasks)], sizes)
    codes = np.repeat(np.arange(n_tasks), sizes)
    X = rng.normal(size=(len(task), 3)) * [1.0, 10.0, 0.1]
    slopes = np.array([1.0, 0.1, 5.0]) + 0.5 * rng.normal(size=(n_tasks, 3))
    y = np.einsum("ij,ij->i", X, slopes[codes]) + codes + rng.normal(size=len(task))
    frame = pd.DataFrame(X, columns=FEATURES)
    frame.insert(0, "school", task)
    frame["n"] = rng.integers(0, 5, size=len(task))
    frame["y"] = y
    return frame


def _wide_frame(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(80, 3))
    Y = X @ (1.0 + 0.3 * rng.normal(size=(3, 3))) + rng.normal(size=(80, 3))
    Y[rng.random(Y.shape) < 0.2] = np.nan
    frame = pd.DataFrame(X, columns=FEATURES)
    for t, name in enumerate(["t1", "t2", "t3"]):
        frame[name] = Y[:, t]
    return frame


@pytest.fixture
def long_csv(tmp_path):
    path = tmp_path / "long.csv"
    _long_frame().to_csv(path, index=False)
    return path


@pytest.fixture
def wide_csv(tmp_path):
    path = tmp_path / "wide.csv"
    _wide_frame().to_csv(path, index=False)
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _pooled_ev(y_true, y_pred):
    """R^2 over every observed label, written out (SST about the mean of all of them)."""
    observed = ~np.isnan(y_true)
    y, p = y_true[observed], y_pred[observed]
    return 1.0 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)


def _read_csv_exactly(text):
    """Columns of a CSV text; numbers parsed by float(), which round-trips repr."""
    rows = list(csv.reader(io.StringIO(text)))
    return {name: [r[j] for r in rows[1:]] for j, name in enumerate(rows[0])}


def _table_line(out, label):
    return next(line for line in out.splitlines() if line.startswith(label))


# ------------------------------------------------------------- compare


def test_compare_ridge_baselines_equal_sklearn_on_the_same_folds(long_csv, tmp_path, capsys):
    code, out, err = _run(
        capsys, "compare", "--data", long_csv, "--target", "y", "--task-column", "school",
        "--features", *FEATURES, "--cv", 3, "--models", "pooled-ridge,ridge-per-task",
        "--output", tmp_path / "out",
    )
    assert code == 0, err
    frame = pd.read_csv(long_csv)
    X, y, task = frame[FEATURES].to_numpy(), frame["y"].to_numpy(), frame["school"].to_numpy()
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, task))

    pooled = cross_val_score(make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)), X, y,
                             cv=folds, scoring="r2")
    per_task = []
    for train, test in folds:
        scaler = StandardScaler().fit(X[train])
        pred = np.empty(len(test))
        for t in np.unique(task):
            tr, te = train[task[train] == t], task[test] == t
            model = RidgeCV(alphas=ALPHAS).fit(scaler.transform(X[tr]), y[tr])
            pred[te] = model.predict(scaler.transform(X[test][te]))
        per_task.append(_pooled_ev(y[test], pred))

    report = json.loads((tmp_path / "out" / "results.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    for name, label, expected in [("pooled-ridge", "one pooled RidgeCV", pooled),
                                  ("ridge-per-task", "one RidgeCV per task", per_task)]:
        np.testing.assert_allclose(models[name]["fold_scores"], expected, rtol=1e-10)
        mean, std = np.mean(expected), np.std(expected, ddof=1)
        # stdout, the CSV and the JSON tell the same story.
        assert f"{mean:.3f} ± {std:.3f}" in _table_line(out, label)
        assert float(rows[name]["score_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(rows[name]["score_std"]) == pytest.approx(std, rel=1e-12)
        assert float(rows[name]["fit_time_mean"]) == pytest.approx(
            np.mean(models[name]["fold_fit_times"]))
        assert f"{float(rows[name]['fit_time_mean']):.2f} s" in _table_line(out, label)
    assert report["data"]["n_tasks"] == 6 and report["data"]["features"] == FEATURES
    assert "pooled explained variance" in out
    # The progress bar went to stderr and finished.
    assert "skmtl compare" in err and "6/6" in err
    assert (tmp_path / "out" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_without_arguments_runs_on_school(capsys):
    code, out, err = _run(capsys, "compare", "--models", "pooled-ridge", "--cv", 2)
    assert code == 0, err
    school = load_school()
    X, y = school.data, school.target
    folds = StratifiedKFold(2, shuffle=True, random_state=0).split(X, X[:, 0])
    scores = cross_val_score(make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS)),
                             X[:, 1:], y, cv=list(folds), scoring="r2")
    assert out.startswith("School data")
    assert "15,362 rows, 139 tasks, 27 features" in out
    assert f"{scores.mean():.3f} ± {np.std(scores, ddof=1):.3f}" in _table_line(
        out, "one pooled RidgeCV")


def test_compare_wide_layout_with_missing_labels(wide_csv, tmp_path, capsys):
    code, out, err = _run(
        capsys, "compare", "--data", wide_csv, "--targets", "t1,t2,t3", "--cv", 2,
        "--models", "ridge-per-task,pooled-ridge,shared-param", "--output", tmp_path,
    )
    assert code == 0, err
    frame = pd.read_csv(wide_csv)
    X, Y = frame[FEATURES].to_numpy(), frame[["t1", "t2", "t3"]].to_numpy()
    expected = {"ridge-per-task": [], "pooled-ridge": [], "shared-param": []}
    for train, test in KFold(2, shuffle=True, random_state=0).split(X):
        scaler = StandardScaler().fit(X[train])
        Xtr, Xte = scaler.transform(X[train]), scaler.transform(X[test])
        labelled = ~np.isnan(Y[train])
        per_task = np.column_stack([
            RidgeCV(alphas=ALPHAS).fit(Xtr[labelled[:, t]], Y[train][labelled[:, t], t])
            .predict(Xte) for t in range(3)
        ])
        rows, cols = np.nonzero(~np.isnan(Y[train]))
        pooled = RidgeCV(alphas=ALPHAS).fit(Xtr[rows], Y[train][rows, cols]).predict(Xte)
        auto = SharedParamRegressor(alpha_shared=0.0, alpha_task="auto").fit(Xtr, Y[train])
        expected["ridge-per-task"].append(_pooled_ev(Y[test], per_task))
        expected["pooled-ridge"].append(_pooled_ev(Y[test], np.repeat(pooled[:, None], 3, axis=1)))
        expected["shared-param"].append(_pooled_ev(Y[test], auto.predict(Xte)))
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["data"]["layout"] == "wide" and report["data"]["targets"] == ["t1", "t2", "t3"]
    for model in report["models"]:
        np.testing.assert_allclose(model["fold_scores"], expected[model["name"]], rtol=1e-8)


def test_compare_does_not_depend_on_n_jobs(long_csv, tmp_path, capsys):
    args = ["compare", "--data", long_csv, "--target", "y", "--task-column", "school",
            "--cv", 2, "--models", "ridge-per-task,shared-feature"]
    scores = []
    for n_jobs in (1, 2):
        code, out, err = _run(capsys, *args, "--n-jobs", n_jobs, "--output", tmp_path / str(n_jobs))
        assert code == 0, err
        report = json.loads((tmp_path / str(n_jobs) / "results.json").read_text())
        scores.append([m["fold_scores"] for m in report["models"]])
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-12)


def test_results_figure_shows_the_scores_and_their_std(long_csv):
    summary = [{"label": "one", "score_mean": 0.3, "score_std": 0.02},
               {"label": "two", "score_mean": 0.5, "score_std": 0.01}]
    data = type("D", (), {"describe": lambda self: "data"})()
    fig = _results_figure(data, {"cv": 5}, summary)
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda p: -p.get_y())  # the first model on top
    assert [b.get_width() for b in bars] == [0.3, 0.5]
    ticks = dict(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()]))
    assert [ticks[b.get_y() + b.get_height() / 2] for b in bars] == ["one", "two"]
    # The error bars span mean - std to mean + std.
    segments = ax.collections[0].get_segments()
    spans = sorted((s[0][0], s[1][0]) for s in segments)
    np.testing.assert_allclose(spans, [(0.28, 0.32), (0.49, 0.51)])


# --------------------------------------------------------- fit, predict


# max_iter=3 keeps SharedObjectiveRegressor fast; it warns that it stopped early.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("model_type, params, estimator", [
    ("shared-param", ["alpha_task=0.5", "alpha_shared=0.01"],
     SharedParamRegressor(alpha_task=0.5, alpha_shared=0.01)),
    ("shared-feature", ["penalty=l21", "alpha=0.05"],
     SharedFeatureRegressor(penalty="l21", alpha=0.05)),
    ("shared-objective", ["max_iter=3", "random_state=0", "activation=tanh"],
     SharedObjectiveRegressor(max_iter=3, random_state=0, activation="tanh")),
])
def test_fit_then_predict_equals_the_estimator_fitted_in_python(
    model_type, params, estimator, long_csv, tmp_path, capsys
):
    model_file = tmp_path / "model.skops"
    argv = ["fit", "--data", long_csv, "--target", "y", "--task-column", "school",
            "--model-type", model_type, "--model", model_file]
    for p in params:
        argv += ["--param", p]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    assert f"saved to {model_file}" in out
    if model_type == "shared-objective":
        assert "skmtl: warning: ConvergenceWarning: SharedObjectiveRegressor did not" in err

    new = _long_frame(seed=5).drop(columns="y").sample(frac=1.0, random_state=0)
    new = new[["b", "school", "a", "n", "c"]]  # predict reads the columns by name
    new_csv = tmp_path / "new.csv"
    new.to_csv(new_csv, index=False)
    code, out, err = _run(capsys, "predict", "--model", model_file, "--data", new_csv)
    assert code == 0, err
    assert f"trusting types: {type(estimator).__module__}.{type(estimator).__name__}" in err
    got = _read_csv_exactly(out)

    train = pd.read_csv(long_csv)
    direct = estimator.set_params(task_column="school").fit(
        train.drop(columns="y"), train["y"])
    assert list(got) == ["school", "y"]
    assert got["school"] == list(new["school"])
    expected = direct.predict(new[direct.feature_names_in_])
    np.testing.assert_array_equal(np.array(got["y"], dtype=float), expected)


def test_fit_predict_wide_layout_to_a_file(wide_csv, tmp_path, capsys):
    model_file, out_csv = tmp_path / "wide.skops", tmp_path / "pred.csv"
    code, out, err = _run(capsys, "fit", "--data", wide_csv, "--targets", "t1,t2,t3",
                          "--features", "a", "c", "--param", "alpha_task=auto",
                          "--model", model_file)
    assert code == 0, err
    code, out, err = _run(capsys, "predict", "--model", model_file, "--data", wide_csv,
                          "--output", out_csv)
    assert code == 0, err and out == ""
    frame = pd.read_csv(wide_csv)
    direct = SharedParamRegressor(alpha_task="auto").fit(frame[["a", "c"]],
                                                         frame[["t1", "t2", "t3"]])
    got = _read_csv_exactly(out_csv.read_text())
    assert list(got) == ["t1", "t2", "t3"]
    np.testing.assert_array_equal(np.array(list(got.values()), dtype=float).T,
                                  direct.predict(frame[["a", "c"]]))


def test_predict_reports_unknown_tasks_as_one_warning_line(long_csv, tmp_path, capsys):
    model_file = tmp_path / "m.skops"
    assert _run(capsys, "fit", "--data", long_csv, "--target", "y", "--task-column",
                "school", "--model", model_file)[0] == 0
    new = _long_frame().drop(columns="y").head(3).assign(school="new school")
    new.to_csv(tmp_path / "new.csv", index=False)
    code, out, err = _run(capsys, "predict", "--model", model_file, "--data",
                          tmp_path / "new.csv")
    assert code == 0
    assert [line for line in err.splitlines() if "warning" in line] == [
        line for line in err.splitlines() if line.startswith("skmtl: warning: UserWarning")]
    assert "new school" in err and len(pd.read_csv(io.StringIO(out))) == 3


class _Unknown:
    """A class skops does not know: loading it would run this module's code."""


def test_predict_refuses_types_outside_skmtl_numpy_builtins(long_csv, tmp_path, capsys):
    bundle = {"format": "skmtl-cli-model", "layout": "long", "targets": ["y"],
              "estimator": _Unknown()}
    sio.dump(bundle, tmp_path / "foreign.skops")
    code, out, err = _run(capsys, "predict", "--model", tmp_path / "foreign.skops",
                          "--data", long_csv)
    assert code == 2 and out == ""
    assert err.startswith("skmtl: error: ") and err.count("\n") == 1
    assert "_Unknown" in err and "does not load" in err


def test_predict_refuses_an_estimator_it_did_not_save(long_csv, tmp_path, capsys):
    # skops trusts scikit-learn's classes without listing them.
    from sklearn.linear_model import Ridge

    frame = pd.read_csv(long_csv)
    bundle = {"format": "skmtl-cli-model", "layout": "wide", "targets": ["y"],
              "estimator": Ridge().fit(frame[FEATURES], frame["y"])}
    sio.dump(bundle, tmp_path / "ridge.skops")
    code, out, err = _run(capsys, "predict", "--model", tmp_path / "ridge.skops",
                          "--data", long_csv)
    assert code == 2 and out == "" and err.count("skmtl: error: ") == 1
    assert "is not a model saved by 'skmtl fit'" in err


# ----------------------------------------------------------- bad input


def _write(path, text):
    path.write_text(text)
    return path


def _long_args(path):
    return ["compare", "--data", path, "--target", "y", "--task-column", "school",
            "--models", "pooled-ridge"]


def _fit_args(path, model_dir, *extra):
    return ["fit", "--data", path, "--target", "y", "--task-column", "school", *extra,
            "--model", model_dir / "m.skops"]


BAD_INPUT = {
    "missing file": (lambda d, csv_: _long_args(d / "nope.csv"), "no such file"),
    "empty file": (lambda d, csv_: _long_args(_write(d / "e.csv", "")), "is empty"),
    "header only": (lambda d, csv_: _long_args(_write(d / "h.csv", "school,a,y\n")),
                    "no data rows"),
    "missing target column": (
        lambda d, csv_: ["compare", "--data", csv_, "--target", "score", "--task-column",
                         "school"], "target column 'score' is not in"),
    "missing task column": (
        lambda d, csv_: ["fit", "--data", csv_, "--target", "y", "--task-column", "class",
                         "--model", d / "m.skops"],
        "task column 'class' is not in"),
    "missing feature column": (lambda d, csv_: _long_args(csv_) + ["--features", "a", "zz"],
                               "feature column 'zz' is not in"),
    "non-numeric feature": (
        lambda d, csv_: _long_args(_write(d / "t.csv", "school,a,y\n1,0.5,2\n1,abc,3\n2,1,1\n")),
        "feature column 'a' of"),
    "missing feature value": (
        lambda d, csv_: _long_args(_write(d / "m.csv", "school,a,y\n1,0.5,2\n1,,3\n2,1,1\n")),
        "1 missing value(s), the first on data row 2"),
    "missing target value": (
        lambda d, csv_: _long_args(_write(d / "m.csv", "school,a,y\n1,0.5,2\n1,1,\n2,1,1\n")),
        "target column 'y'"),
    "unknown model": (lambda d, csv_: ["compare", "--models", "shared-param,lasso"],
                      "unknown model 'lasso'"),
    "cv of 1": (lambda d, csv_: ["compare", "--cv", "1"], "--cv must be at least 2"),
    "wide and long together": (
        lambda d, csv_: ["compare", "--data", csv_, "--targets", "y", "--task-column", "school"],
        "--targets"),
    "column option without data": (lambda d, csv_: ["compare", "--target", "y"],
                                   "--target goes with --data"),
    "param without =": (
        lambda d, csv_: _fit_args(csv_, d, "--param", "alpha"),
        "--param 'alpha' is not of the form key=value"),
    "unknown param": (
        lambda d, csv_: _fit_args(csv_, d, "--param", "depth=3"),
        "has no parameter 'depth'"),
    "bad param value": (
        lambda d, csv_: _fit_args(csv_, d, "--param", "alpha_task=-1"),
        "'alpha_task' parameter of SharedParamRegressor"),
    "missing model file": (
        lambda d, csv_: ["predict", "--model", d / "none.skops", "--data", csv_],
        "no such model file"),
    "not a model file": (
        lambda d, csv_: ["predict", "--model", csv_, "--data", csv_],
        "is not a model saved by 'skmtl fit'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_code_2(case, long_csv, tmp_path, capsys):
    make_argv, expected = BAD_INPUT[case]
    code, out, err = _run(capsys, *make_argv(tmp_path, long_csv))
    assert code == 2
    assert err.startswith("skmtl: error: ") and err.count("\n") == 1, err
    assert expected in err


def test_predict_names_the_missing_and_non_numeric_columns(long_csv, tmp_path, capsys):
    model_file = tmp_path / "m.skops"
    assert _run(capsys, "fit", "--data", long_csv, "--target", "y", "--task-column",
                "school", "--features", "a", "b", "--model", model_file)[0] == 0
    _write(tmp_path / "new.csv", "school,a\ns00,1\n")
    code, _, err = _run(capsys, "predict", "--model", model_file, "--data", tmp_path / "new.csv")
    assert code == 2 and "model column 'b' is not in" in err
    _write(tmp_path / "new.csv", "school,a,b\ns00,1,x\n")
    code, _, err = _run(capsys, "predict", "--model", model_file, "--data", tmp_path / "new.csv")
    assert code == 2 and "feature column 'b'" in err and "'x'" in err and "Traceback" not in err


def test_argparse_errors_exit_2(capsys):
    assert main(["fit", "--model-type", "forest"]) == 2
    assert "invalid choice: 'forest'" in capsys.readouterr().err
    assert main([]) == 2


@pytest.mark.parametrize("module, argv", [
    ("tqdm", ["compare", "--models", "pooled-ridge"]),
    ("skops", ["predict", "--model", "m.skops", "--data", "x.csv"]),
])
def test_missing_optional_package_names_it_and_the_extra(module, argv, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1
    assert f"'{module}' is not installed" in err and 'pip install "skmtl[cli]"' in err


# ---------------------------------------------------------- subprocess


def _python_m_skmtl(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "skmtl", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_python_m_skmtl(long_csv, tmp_path):
    ok = _python_m_skmtl("compare", "--data", long_csv, "--target", "y", "--task-column",
                         "school", "--models", "pooled-ridge", "--cv", "2", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "one pooled RidgeCV" in ok.stdout and "skmtl compare" in ok.stderr
    bad = _python_m_skmtl("compare", "--data", "missing.csv", "--target", "y",
                          "--task-column", "school", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr == "skmtl: error: no such file: missing.csv\n"


def test_import_skmtl_leaves_the_cli_extras_unimported(tmp_path):
    # pandas is left out: scikit-learn imports it when it is installed.
    code = ("import sys, skmtl, skmtl._cli; "
            "print(sorted(m for m in ('tqdm', 'skops', 'matplotlib') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
