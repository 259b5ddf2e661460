"""skmtl.metrics against scikit-learn's metrics on the observed labels."""

import numpy as np
import pytest
from sklearn.metrics import (
    explained_variance_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skmtl import SharedFeatureRegressor, SharedParamRegressor
from skmtl.metrics import (
    get_scorer,
    get_scorer_names,
    mean_task_score,
    per_task_score,
    pooled_explained_variance_score,
)

SKLEARN = {
    "r2": r2_score,
    "explained_variance": explained_variance_score,
    "mean_squared_error": mean_squared_error,
    "mean_absolute_error": mean_absolute_error,
}


def _wide(seed=0, n=40, k=4, missing=0.3):
    rng = np.random.RandomState(seed)
    Y = rng.normal(size=(n, k)) + np.arange(k)
    # A bias per task, so that R^2 and explained variance differ.
    P = Y + 0.5 * rng.normal(size=(n, k)) + 0.3 * rng.normal(size=k)
    Y[rng.uniform(size=Y.shape) < missing] = np.nan
    return Y, P, rng.uniform(0.5, 2.0, size=n)


@pytest.mark.parametrize("metric", sorted(SKLEARN))
@pytest.mark.parametrize("weighted", [False, True])
def test_per_task_score_is_sklearn_on_the_observed_rows(metric, weighted):
    Y, P, sw = _wide()
    sw = sw if weighted else None
    expected = []
    for t in range(Y.shape[1]):
        rows = ~np.isnan(Y[:, t])
        expected.append(SKLEARN[metric](Y[rows, t], P[rows, t],
                                        sample_weight=None if sw is None else sw[rows]))
    np.testing.assert_allclose(per_task_score(Y, P, metric=metric, sample_weight=sw), expected,
                               rtol=1e-12)


@pytest.mark.parametrize("metric", sorted(SKLEARN))
def test_per_task_score_complete_is_raw_values(metric):
    Y, P, _ = _wide(missing=0.0)
    np.testing.assert_allclose(per_task_score(Y, P, metric=metric),
                               SKLEARN[metric](Y, P, multioutput="raw_values"), rtol=1e-12)


@pytest.mark.parametrize("metric", sorted(SKLEARN))
def test_long_layout_equals_wide(metric):
    Y, P, sw = _wide(seed=1)
    n, k = Y.shape
    observed = ~np.isnan(Y)
    rows, tasks = np.nonzero(observed)
    # Labels as strings, given out of order: scores come in sorted label order.
    labels = np.array(["t3", "t0", "t2", "t1"])
    order = np.argsort(labels)
    long = per_task_score(Y[rows, tasks], P[rows, tasks], metric=metric, task=labels[tasks],
                          sample_weight=sw[rows])
    np.testing.assert_allclose(long, per_task_score(Y, P, metric=metric, sample_weight=sw)[order],
                               rtol=1e-12)


def test_tasks_with_too_few_labels():
    Y, P, _ = _wide(missing=0.0)
    Y[1:, 0] = np.nan  # one label
    Y[:, 1] = np.nan  # none
    scores = per_task_score(Y, P)
    assert np.isnan(scores[0]) and np.isnan(scores[1])
    assert np.isfinite(scores[2:]).all()
    mse = per_task_score(Y, P, metric="mean_squared_error")
    assert mse[0] == pytest.approx((Y[0, 0] - P[0, 0]) ** 2) and np.isnan(mse[1])
    assert mean_task_score(Y, P) == pytest.approx(np.mean(scores[2:]))


def test_mean_task_score():
    Y, P, _ = _wide(missing=0.0)
    assert mean_task_score(Y, P) == pytest.approx(r2_score(Y, P, multioutput="uniform_average"))
    assert mean_task_score(Y, P, metric="explained_variance") == pytest.approx(
        explained_variance_score(Y, P, multioutput="uniform_average"))


@pytest.mark.parametrize("weighted", [False, True])
def test_pooled_explained_variance_is_r2_of_stacked_labels(weighted):
    Y, P, sw = _wide(seed=2)
    observed = ~np.isnan(Y)
    weights = np.broadcast_to(sw[:, None], Y.shape)[observed] if weighted else None
    expected = r2_score(Y[observed], P[observed], sample_weight=weights)
    got = pooled_explained_variance_score(Y, P, sample_weight=sw if weighted else None)
    assert got == pytest.approx(expected, rel=1e-12)
    # Not scikit-learn's explained_variance_score, which forgives a bias.
    shifted = pooled_explained_variance_score(Y, P + 1.0)
    assert shifted < got - 0.05
    assert explained_variance_score(Y[observed], P[observed] + 1.0) == pytest.approx(
        explained_variance_score(Y[observed], P[observed]))


def test_pooled_explained_variance_equals_long_layout_score():
    rng = np.random.RandomState(0)
    task = np.repeat([0.0, 1.0, 2.0], 20)
    X = np.column_stack([task, rng.normal(size=(60, 2))])
    y = X[:, 1] - X[:, 2] + task + rng.normal(size=60)
    model = SharedParamRegressor(task_column=0).fit(X, y)
    assert pooled_explained_variance_score(y, model.predict(X)) == pytest.approx(model.score(X, y))


def test_degenerate_pooled():
    assert np.isnan(pooled_explained_variance_score([1.0, np.nan], [1.0, 2.0]))
    assert np.isnan(pooled_explained_variance_score([2.0, 2.0], [1.0, 2.0]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: per_task_score([[1.0, 2.0]], [[1.0]]), "shapes"),
        (lambda: per_task_score([1.0, 2.0], [1.0, np.nan]), "y_pred"),
        (lambda: per_task_score([1.0, np.inf], [1.0, 2.0]), "y_true"),
        (lambda: per_task_score([1.0, 2.0], [1.0, 2.0], metric="auc"), "metric"),
        (lambda: per_task_score([[1.0, 2.0]], [[1.0, 2.0]], task=[0]), "task"),
        (lambda: per_task_score([1.0, 2.0], [1.0, 2.0], task=[0]), "inconsistent"),
        (lambda: pooled_explained_variance_score([1.0, 2.0], [1.0, 2.0], sample_weight=[1.0]),
         "inconsistent"),
        (lambda: get_scorer("r2"), "valid scorer"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- scorers


def _wide_problem(seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(90, 4))
    Y = X @ rng.normal(size=(4, 3)) + rng.normal(size=(90, 3))
    Y[rng.uniform(size=Y.shape) < 0.25] = np.nan
    return X, Y


def test_sklearn_r2_fails_on_nan_and_ours_work_in_grid_search():
    X, Y = _wide_problem()
    cv = KFold(3, shuffle=True, random_state=0)
    grid = {"alpha_task": [1e-3, 1e-1, 10.0]}
    with pytest.raises(ValueError, match="NaN"):
        GridSearchCV(SharedParamRegressor(), grid, scoring="r2", cv=cv, error_score="raise").fit(X, Y)
    for name, func in [("mean_task_r2", mean_task_score),
                       ("pooled_explained_variance", pooled_explained_variance_score)]:
        search = GridSearchCV(SharedParamRegressor(), grid, scoring=get_scorer(name), cv=cv).fit(X, Y)
        # The cross-validated score is the metric on each held-out fold.
        expected = []
        for train, test in cv.split(X):
            model = SharedParamRegressor(**search.best_params_).fit(X[train], Y[train])
            expected.append(func(Y[test], model.predict(X[test])))
        assert search.best_score_ == pytest.approx(np.mean(expected), rel=1e-10)


def test_scorers_equal_their_metrics():
    X, Y = _wide_problem(seed=1)
    model = SharedFeatureRegressor(alpha=0.01).fit(X, Y)
    P = model.predict(X)
    assert get_scorer("mean_task_r2")(model, X, Y) == pytest.approx(model.score(X, Y))
    assert get_scorer("mean_task_explained_variance")(model, X, Y) == pytest.approx(
        mean_task_score(Y, P, metric="explained_variance"))
    observed = ~np.isnan(Y)
    assert get_scorer("neg_pooled_mean_squared_error")(model, X, Y) == pytest.approx(
        -mean_squared_error(Y[observed], P[observed]))
    assert set(get_scorer_names()) == {"pooled_explained_variance", "mean_task_r2",
                                       "mean_task_explained_variance",
                                       "neg_pooled_mean_squared_error"}


def test_mean_task_scorer_reads_the_task_column():
    pd = pytest.importorskip("pandas", reason="the task column is named in a DataFrame")
    rng = np.random.RandomState(0)
    task = np.repeat(["a", "b", "c"], 30)
    X = pd.DataFrame({"x": rng.normal(size=90), "z": rng.normal(size=90), "school": task})
    y = X["x"].to_numpy() * np.repeat([1.0, 2.0, -1.0], 30) + rng.normal(size=90)
    model = SharedParamRegressor(alpha_task=0.1, task_column="school").fit(X, y)
    expected = mean_task_score(y, model.predict(X), task=task)
    assert get_scorer("mean_task_r2")(model, X, y) == pytest.approx(expected)
    # Per task, not pooled: the pooled score is another number here.
    assert expected != pytest.approx(get_scorer("pooled_explained_variance")(model, X, y))
    # In a Pipeline the last step's task column is used, by position on arrays too.
    Xa = np.column_stack([np.repeat([0.0, 1.0, 2.0], 30), X[["x", "z"]].to_numpy()])
    pipe = make_pipeline(FunctionTransformer(), SharedParamRegressor(alpha_task=0.1, task_column=0))
    pipe.fit(Xa, y)
    assert get_scorer("mean_task_r2")(pipe, Xa, y) == pytest.approx(
        mean_task_score(y, pipe.predict(Xa), task=Xa[:, 0]))
