"""skmtl.inspection: the plotted data against independent computations.

Figures are closed after every test by the autouse fixture of the root
conftest.py.
"""

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402
from sklearn.compose import make_column_transformer  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import MultiTaskLasso, Ridge  # noqa: E402
from sklearn.metrics import mean_squared_error, r2_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder  # noqa: E402

from skmtl import (  # noqa: E402
    SharedFeatureRegressor,
    SharedObjectiveRegressor,
    SharedParamRegressor,
)
from skmtl.datasets import make_multitask_regression  # noqa: E402
from skmtl.inspection import (  # noqa: E402
    PerTaskScoreDisplay,
    TaskSimilarityDisplay,
    TaskWeightsDisplay,
    task_similarity,
)

ROOT = Path(__file__).resolve().parents[1]


def _wide_tasks(coef, n_samples=200, noise=0.05, seed=0):
    """Wide-layout data whose task ``t`` has true coefficients ``coef[t]``."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, coef.shape[1]))
    return X, X @ coef.T + noise * rng.normal(size=(n_samples, len(coef)))


@pytest.fixture(scope="module")
def fitted():
    """One fitted model of each estimator on tasks of three groups."""
    X, y = make_multitask_regression(n_tasks=7, n_samples_per_task=60, n_features=6,
                                     structure="clustered", layout="wide", random_state=0)
    return {
        "param": SharedParamRegressor(alpha_task=0.05).fit(X, y),
        "feature": SharedFeatureRegressor(alpha=0.01).fit(X, y),
        "objective": SharedObjectiveRegressor(n_components=6, task_weights="equal",
                                              max_iter=5, random_state=0).fit(X, y),
    }


def _independent_vectors(model, kind):
    coef = np.asarray(model.coef_)
    if kind == "model":
        return coef
    if isinstance(model, SharedParamRegressor):
        return coef - model.shared_coef_
    return coef - coef.mean(axis=0)


# ----------------------------------------------------------- task_similarity


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", ["param", "feature", "objective"])
@pytest.mark.parametrize("metric", ["cosine", "correlation"])
@pytest.mark.parametrize("kind", ["deviation", "model"])
def test_similarity_is_one_minus_scipy_distance(fitted, name, metric, kind):
    model = fitted[name]
    similarity = task_similarity(model, metric=metric, kind=kind)
    expected = 1.0 - cdist(_independent_vectors(model, kind),
                           _independent_vectors(model, kind), metric)
    np.testing.assert_allclose(similarity, expected, atol=1e-12)
    np.testing.assert_array_equal(similarity, similarity.T)
    np.testing.assert_array_equal(np.diag(similarity), 1.0)
    assert np.all(np.abs(similarity) <= 1.0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["deviation", "model"])
def test_similarity_of_nonlinear_heads(kind):
    X, y = make_multitask_regression(n_tasks=4, n_samples_per_task=40, n_features=3,
                                     layout="wide", random_state=1)
    model = SharedObjectiveRegressor(n_components=3, activation="tanh", max_iter=3,
                                     random_state=0).fit(X, y)
    assert not hasattr(model, "coef_")
    heads = model.head_coef_ - (model.head_coef_.mean(axis=0) if kind == "deviation" else 0)
    np.testing.assert_allclose(task_similarity(model, kind=kind),
                               1.0 - cdist(heads, heads, "cosine"), atol=1e-12)


def test_similarity_of_a_scikit_learn_multi_task_model():
    X, y = make_multitask_regression(n_tasks=5, n_features=6, structure="sparse",
                                     n_informative=3, layout="wide", random_state=0)
    model = MultiTaskLasso(alpha=0.01).fit(X, y)
    deviations = model.coef_ - model.coef_.mean(axis=0)
    np.testing.assert_allclose(task_similarity(model),
                               1.0 - cdist(deviations, deviations, "cosine"), atol=1e-12)


@pytest.mark.parametrize("estimator", [SharedParamRegressor(alpha_task=0.01),
                                       SharedFeatureRegressor(alpha=0.001)])
def test_identical_tasks_are_most_similar_and_adjacent(estimator):
    rng = np.random.RandomState(0)
    coef = rng.normal(size=(6, 20))
    coef[4] = coef[1]
    X, y = _wide_tasks(coef)
    model = estimator.fit(X, y)
    similarity = task_similarity(model)
    off_diagonal = similarity[~np.eye(6, dtype=bool)]
    assert similarity[1, 4] == off_diagonal.max()
    assert similarity[1, 4] > 0.9
    unrelated = np.delete(similarity[1], [1, 4])
    assert unrelated.max() < 0.6
    display = TaskSimilarityDisplay.from_estimator(model)
    position = np.argsort(display.order_)
    assert abs(position[1] - position[4]) == 1


def test_clustering_puts_each_group_in_one_block():
    rng = np.random.RandomState(3)
    centers = rng.normal(size=(3, 15))
    group = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    coef = centers[group] + 0.1 * rng.normal(size=(len(group), 15))
    X, y = _wide_tasks(coef, seed=3)
    model = SharedFeatureRegressor(alpha=0.001).fit(X, y)
    display = TaskSimilarityDisplay.from_estimator(model, kind="model")
    ordered_groups = group[display.order_]
    # Each group occupies one run of consecutive positions.
    changes = np.count_nonzero(np.diff(ordered_groups))
    assert changes == 2, ordered_groups


def test_heat_map_shows_the_reordered_matrix_with_the_task_labels(fitted):
    X, y = make_multitask_regression(n_tasks=5, n_samples_per_task=30, n_features=4,
                                     structure="clustered", random_state=2)
    names = np.array(["north", "south", "east", "west", "centre"])
    frame = pd.DataFrame(X[:, 1:], columns=[f"x{i}" for i in range(4)])
    frame.insert(0, "school", names[X[:, 0].astype(int)])
    model = SharedParamRegressor(alpha_task=0.1, task_column="school").fit(frame, y)
    display = TaskSimilarityDisplay.from_estimator(model, metric="correlation")
    similarity = task_similarity(model, metric="correlation")
    order = display.order_
    assert sorted(order) == list(range(5))
    np.testing.assert_array_equal(display.im_.get_array(), similarity[np.ix_(order, order)])
    np.testing.assert_array_equal(display.ordered_task_labels_, model.tasks_[order])
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == list(model.tasks_[order])
    assert [t.get_text() for t in display.ax_.get_yticklabels()] == list(model.tasks_[order])
    assert display.colorbar_ is not None
    assert "correlation" in display.colorbar_.ax.get_ylabel()
    assert display.figure_ is display.ax_.figure

    unclustered = TaskSimilarityDisplay(similarity=similarity, task_labels=model.tasks_).plot(
        cluster=False, colorbar=False)
    np.testing.assert_array_equal(unclustered.order_, np.arange(5))
    np.testing.assert_array_equal(unclustered.im_.get_array(), similarity)
    assert unclustered.colorbar_ is None


def test_many_tasks_get_every_kth_tick_label():
    rng = np.random.RandomState(0)
    a = rng.normal(size=(10, 3))
    similarity = 1.0 - cdist(a, a, "cosine")
    display = TaskSimilarityDisplay(similarity=similarity).plot(max_tick_labels=3)
    ticks = display.ax_.get_xticks()
    np.testing.assert_array_equal(ticks, [0, 4, 8])
    assert [t.get_text() for t in display.ax_.get_xticklabels()] == [
        str(display.order_[k]) for k in (0, 4, 8)]


def test_a_task_without_direction_is_nan_and_clustered_last():
    X, y = _wide_tasks(np.random.RandomState(0).normal(size=(4, 5)))
    y[:, 2] = 3.0  # a constant task: Ridge's coefficients for it are exactly zero
    model = Ridge(alpha=1.0).fit(X, y)
    assert np.all(model.coef_[2] == 0)
    with pytest.warns(UserWarning, match=r"Task\(s\) \[2\] have a zero model vector"):
        similarity = task_similarity(model, kind="model")
    assert np.all(np.isnan(similarity[2])) and np.all(np.isnan(similarity[:, 2]))
    keep = [0, 1, 3]
    np.testing.assert_allclose(similarity[np.ix_(keep, keep)],
                               1.0 - cdist(model.coef_[keep], model.coef_[keep], "cosine"),
                               atol=1e-12)
    display = TaskSimilarityDisplay(similarity=similarity).plot()
    assert display.order_[0] == 2 or display.order_[-1] == 2


def test_task_similarity_bad_input(fitted):
    model = fitted["param"]
    with pytest.raises(ValueError, match="metric must be one of"):
        task_similarity(model, metric="euclidean")
    with pytest.raises(ValueError, match="kind must be one of"):
        task_similarity(model, kind="coef")
    with pytest.raises(NotFittedError):
        task_similarity(SharedParamRegressor())
    with pytest.raises(TypeError, match="estimator must be a fitted estimator"):
        task_similarity(np.eye(3))
    X, y = make_multitask_regression(n_tasks=1, n_features=3, layout="wide", random_state=0)
    with pytest.raises(ValueError, match="at least 2 tasks"):
        task_similarity(SharedParamRegressor().fit(X, y[:, 0]))
    with pytest.raises(ValueError, match="similarity must be a square matrix"):
        TaskSimilarityDisplay(similarity=np.ones((2, 3))).plot()
    with pytest.raises(ValueError, match="task_labels must have one label per task"):
        TaskSimilarityDisplay(similarity=np.eye(3), task_labels=["a", "b"]).plot()
    with pytest.raises(ValueError, match="max_tick_labels"):
        TaskSimilarityDisplay(similarity=np.eye(3)).plot(max_tick_labels=0)


# ------------------------------------------------------- PerTaskScoreDisplay


def _wide_predictions(seed=0):
    rng = np.random.RandomState(seed)
    y_true = rng.normal(size=(40, 5))
    y_a = y_true + rng.uniform(0.2, 1.0, size=5) * rng.normal(size=(40, 5))
    y_b = y_true + rng.uniform(0.2, 1.0, size=5) * rng.normal(size=(40, 5))
    y_true[rng.uniform(size=y_true.shape) < 0.3] = np.nan
    return y_true, y_a, y_b


def test_per_task_scores_are_each_tasks_r2():
    y_true, y_a, y_b = _wide_predictions()
    display = PerTaskScoreDisplay.from_predictions(y_true, y_a, y_b, name_a="A", name_b="B",
                                                   annotate=2)
    observed = ~np.isnan(y_true)
    by_hand_a = [r2_score(y_true[observed[:, t], t], y_a[observed[:, t], t]) for t in range(5)]
    by_hand_b = [r2_score(y_true[observed[:, t], t], y_b[observed[:, t], t]) for t in range(5)]
    np.testing.assert_allclose(display.scores_a, by_hand_a)
    np.testing.assert_allclose(display.scores_b, by_hand_b)
    np.testing.assert_allclose(display.scatter_.get_offsets(),
                               np.column_stack([by_hand_b, by_hand_a]))
    np.testing.assert_allclose(display.gain_, np.subtract(by_hand_a, by_hand_b))
    np.testing.assert_array_equal(display.n_samples, observed.sum(axis=0))
    np.testing.assert_array_equal(display.task_labels, np.arange(5))
    # Colours say who wins; sizes grow with the number of labels.
    colors = display.scatter_.get_facecolors()
    wins = np.asarray(by_hand_a) > np.asarray(by_hand_b)
    assert wins.any() and not wins.all()
    for color, win in zip(colors, wins):
        np.testing.assert_allclose(color[:3], to_rgba("tab:blue" if win else "tab:orange")[:3])
    sizes = display.scatter_.get_sizes()
    assert np.all(np.diff(sizes[np.argsort(display.n_samples)]) >= 0)
    # The diagonal: y = x.
    assert display.line_.get_xy1() == (0.0, 0.0) and display.line_.get_slope() == 1.0
    assert display.ax_.get_xlabel() == "R² of B" and display.ax_.get_ylabel() == "R² of A"
    legend = [t.get_text() for t in display.ax_.get_legend().get_texts()]
    # The two largest gains and the one loss are labelled at their points.
    gain = np.subtract(by_hand_a, by_hand_b)
    labelled = [*np.argsort(gain)[::-1][:2], np.argmin(gain)]
    assert [a.get_text() for a in display.annotations_] == [str(k) for k in labelled]
    for annotation, k in zip(display.annotations_, labelled):
        np.testing.assert_allclose(annotation.xy, (by_hand_b[k], by_hand_a[k]))
    tasks = {1: "1 task"}
    assert legend == [f"A better ({tasks.get(wins.sum(), f'{wins.sum()} tasks')})",
                      f"B better ({tasks.get((~wins).sum(), f'{(~wins).sum()} tasks')})"]


def test_per_task_error_gain_is_the_decrease():
    y_true, y_a, y_b = _wide_predictions(seed=1)
    display = PerTaskScoreDisplay.from_predictions(y_true, y_a, y_b,
                                                   metric="mean_squared_error")
    observed = ~np.isnan(y_true)
    mse = [[mean_squared_error(y_true[observed[:, t], t], p[observed[:, t], t])
            for t in range(5)] for p in (y_a, y_b)]
    np.testing.assert_allclose(display.scores_a, mse[0])
    np.testing.assert_allclose(display.gain_, np.subtract(mse[1], mse[0]))


def test_per_task_scores_long_layout_with_string_labels():
    rng = np.random.RandomState(0)
    task = rng.choice(["b", "c", "a"], size=60)
    y_true = rng.normal(size=60)
    y_a, y_b = y_true + 0.5 * rng.normal(size=60), y_true + rng.normal(size=60)
    display = PerTaskScoreDisplay.from_predictions(y_true, y_a, y_b, task=task)
    np.testing.assert_array_equal(display.task_labels, ["a", "b", "c"])
    for k, label in enumerate(["a", "b", "c"]):
        rows = task == label
        assert display.scores_a[k] == pytest.approx(r2_score(y_true[rows], y_a[rows]))
        assert display.scores_b[k] == pytest.approx(r2_score(y_true[rows], y_b[rows]))
        assert display.n_samples[k] == rows.sum()


def test_a_task_without_a_score_is_not_drawn():
    y_true, y_a, y_b = _wide_predictions()
    y_true[1:, 3] = np.nan  # one label: no R^2
    display = PerTaskScoreDisplay.from_predictions(y_true, y_a, y_b)
    assert np.isnan(display.scores_a[3]) and np.isnan(display.gain_[3])
    keep = [0, 1, 2, 4]
    np.testing.assert_allclose(display.scatter_.get_offsets(),
                               np.column_stack([display.scores_b[keep], display.scores_a[keep]]))


def test_from_estimator_reads_the_task_column_of_either_model():
    X, y = make_multitask_regression(n_tasks=6, n_samples_per_task=30, n_features=4,
                                     structure="clustered", random_state=0)
    frame = pd.DataFrame(X[:, 1:], columns=["x0", "x1", "x2", "x3"])
    frame.insert(2, "school", X[:, 0].astype(int))
    train, test = slice(0, None, 2), slice(1, None, 2)
    shared = SharedParamRegressor(alpha_task=0.1, task_column="school")
    shared.fit(frame[train], y[train])
    separate = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["school"]), remainder="passthrough"),
        Ridge(),
    ).fit(frame[train], y[train])
    pred_a, pred_b = shared.predict(frame[test]), separate.predict(frame[test])
    schools = frame["school"].to_numpy()[test]
    expected = {
        "a": [r2_score(y[test][schools == s], pred_a[schools == s]) for s in range(6)],
        "b": [r2_score(y[test][schools == s], pred_b[schools == s]) for s in range(6)],
    }
    for a, b, swap in [(shared, separate, False), (separate, shared, True)]:
        display = PerTaskScoreDisplay.from_estimator(a, b, frame[test], y[test])
        np.testing.assert_allclose(display.scores_a, expected["b" if swap else "a"])
        np.testing.assert_allclose(display.scores_b, expected["a" if swap else "b"])
        np.testing.assert_array_equal(display.task_labels, np.arange(6))
        assert display.name_a == type(a).__name__ and display.name_b == type(b).__name__


def test_per_task_score_bad_input():
    y_true, y_a, y_b = _wide_predictions()
    with pytest.raises(ValueError, match="metric must be one of"):
        PerTaskScoreDisplay.from_predictions(y_true, y_a, y_b, metric="accuracy")
    with pytest.raises(ValueError, match="different shapes"):
        PerTaskScoreDisplay.from_predictions(y_true, y_a[:, :3], y_b)
    with pytest.raises(ValueError, match="metric must be one of"):
        PerTaskScoreDisplay(scores_a=[1.0], scores_b=[0.5], metric="r3").plot()
    with pytest.raises(ValueError, match="scores_a and scores_b must be 1-D"):
        PerTaskScoreDisplay(scores_a=[1.0, 0.2], scores_b=[0.5]).plot()
    with pytest.raises(ValueError, match="annotate must be a non-negative int"):
        PerTaskScoreDisplay(scores_a=[1.0], scores_b=[0.5]).plot(annotate=-1)
    with pytest.raises(ValueError, match="n_samples must have one label per task"):
        PerTaskScoreDisplay(scores_a=[1.0, 0.2], scores_b=[0.5, 0.1], n_samples=[3]).plot()


# --------------------------------------------------------- TaskWeightsDisplay


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_weight_and_loss_lines_are_the_fitted_history():
    X, y = make_multitask_regression(n_tasks=3, n_samples_per_task=40, n_features=4,
                                     noise=[0.1, 1.0, 3.0], random_state=0)
    model = SharedObjectiveRegressor(n_components=2, task_weights="dwa", task_column=0,
                                     max_iter=8, random_state=0).fit(X, y)
    display = TaskWeightsDisplay.from_estimator(model)
    n_rounds = len(model.task_weights_history_)
    assert n_rounds > 1
    for k in range(3):
        for line, values in [(display.weight_lines_[k], model.task_weights_history_),
                             (display.loss_lines_[k], model.loss_curve_)]:
            np.testing.assert_array_equal(line.get_xdata(), np.arange(1, n_rounds + 1))
            np.testing.assert_array_equal(line.get_ydata(), values[:, k])
    # DWA moves the weights: the lines are not all flat at 1.
    assert np.ptp(model.task_weights_history_) > 0
    assert display.axes_[1].get_yscale() == "log"
    assert [t.get_text() for t in display.axes_[1].get_legend().get_texts()] == ["0", "1", "2"]
    assert display.figure_ is display.axes_[0].figure


def test_task_weights_on_given_axes_and_bad_input():
    history = np.array([[1.0, 1.0], [1.5, 0.5]])
    curve = np.array([[2.0, 1.0], [1.0, 0.5]])
    _, axes = plt.subplots(2, 1)
    display = TaskWeightsDisplay(task_weights_history=history, loss_curve=curve,
                                 task_labels=["a", "b"]).plot(ax=axes)
    assert display.axes_[0] is axes[0] and display.axes_[1] is axes[1]
    np.testing.assert_array_equal(display.loss_lines_[1].get_ydata(), curve[:, 1])
    with pytest.raises(ValueError, match="ax must be None or two matplotlib Axes"):
        TaskWeightsDisplay(task_weights_history=history, loss_curve=curve).plot(ax=axes[0])
    with pytest.raises(ValueError, match="must be 2-D of one shape"):
        TaskWeightsDisplay(task_weights_history=history, loss_curve=curve[:1]).plot()
    with pytest.raises(TypeError, match="needs a SharedObjectiveRegressor"):
        TaskWeightsDisplay.from_estimator(SharedParamRegressor())
    with pytest.raises(NotFittedError):
        TaskWeightsDisplay.from_estimator(SharedObjectiveRegressor())


# ------------------------------------------------------------ matplotlib missing


def test_without_matplotlib_plotting_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "skmtl\[plot\]"'):
        TaskSimilarityDisplay(similarity=np.eye(2)).plot()
    with pytest.raises(ImportError, match=r"PerTaskScoreDisplay.from_predictions requires"):
        PerTaskScoreDisplay.from_predictions(np.ones(3), np.ones(3), np.ones(3))


def test_importing_skmtl_inspection_does_not_import_matplotlib():
    code = "import sys, skmtl.inspection; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT), "PATH": ""})
