"""SharedParamRegressor the way users run it: pipelines, grid search, CV."""

import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skmtl import SharedParamRegressor

FEATURES = ["hours", "prior", "class_size"]


def _students(n_schools, n_per_school, task_spread, seed=0):
    """Students in schools, the school as a string column (pandas ``str``).

    ``task_spread`` scales how much the schools' slopes and levels differ.
    """
    rng = np.random.RandomState(seed)
    school = np.repeat([f"school_{k:02d}" for k in range(n_schools)], n_per_school)
    codes = np.repeat(np.arange(n_schools), n_per_school)
    # Unscaled features, so that the scaler in the pipeline matters.
    x = rng.normal(size=(len(school), 3)) * [10.0, 15.0, 5.0] + [20.0, 60.0, 25.0]
    coef = [0.3, 0.2, -0.1] + task_spread * rng.normal(size=(n_schools, 3)) * [0.3, 0.2, 0.1]
    level = 10.0 + task_spread * 5.0 * rng.normal(size=n_schools)
    y = np.einsum("ij,ij->i", x, coef[codes]) + level[codes] + rng.normal(size=len(school))
    X = pd.DataFrame(x, columns=FEATURES).assign(school=pd.Series(school, dtype="str"))
    order = rng.permutation(len(X))
    return X.iloc[order].reset_index(drop=True), y[order], school[order]


def _pipeline(**params):
    scale = ColumnTransformer(
        [("scale", StandardScaler(), FEATURES)],
        remainder="passthrough",
        # Keeps the passthrough column named "school", not "remainder__school".
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    return make_pipeline(scale, SharedParamRegressor(task_column="school", **params))


GRID = {
    "sharedparamregressor__alpha_shared": [1e-3, 1e-1],
    "sharedparamregressor__alpha_task": [1e-3, 1e-1, 1e1],
}


def _manual_cv(pipe, X, y, cv, groups=None, *, cold_start=False):
    """Per-fold R^2 computed by hand; cold start predicts with the shared model."""
    scores = []
    for train, test in cv.split(X, y, groups):
        fitted = clone(pipe).fit(X.iloc[train], y[train])
        if cold_start:
            model = fitted[-1]
            Z = fitted[:-1].transform(X.iloc[test])[FEATURES].to_numpy()
            pred = Z @ model.shared_coef_ + model.shared_intercept_
        else:
            pred = fitted.predict(X.iloc[test])
        scores.append(r2_score(y[test], pred))
    return np.array(scores)


@pytest.mark.parametrize(
    "task_spread, expected_alpha_task", [(1.0, 1e-3), (0.0, 1e1)], ids=["tasks-differ", "tasks-alike"]
)
def test_grid_search_over_both_alphas(task_spread, expected_alpha_task):
    # Schools that really differ need a small alpha_task; identical schools
    # with few students each are best served by one pooled model.
    n_per_school = 40 if task_spread else 6
    X, y, _ = _students(12, n_per_school, task_spread)
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(_pipeline(), GRID, cv=cv).fit(X, y)
    assert search.best_params_["sharedparamregressor__alpha_task"] == expected_alpha_task
    best = search.best_estimator_[-1]
    assert list(best.tasks_) == sorted(set(X["school"]))
    assert list(best.feature_names_in_) == FEATURES + ["school"]
    # The search scored each candidate as a hand-made loop does.
    for k, params in enumerate(search.cv_results_["params"]):
        manual = _manual_cv(_pipeline().set_params(**params), X, y, cv)
        assert search.cv_results_["mean_test_score"][k] == pytest.approx(manual.mean(), rel=1e-10)
    # The refit model is the one fit directly with the best parameters.
    direct = _pipeline().set_params(**search.best_params_).fit(X, y)
    assert_allclose(best.coef_, direct[-1].coef_, rtol=1e-12)


def test_cross_val_score_with_kfold():
    X, y, _ = _students(8, 25, task_spread=1.0)
    cv = KFold(5, shuffle=True, random_state=1)
    pipe = _pipeline(alpha_task=1e-2)
    scores = cross_val_score(pipe, X, y, cv=cv)
    assert_allclose(scores, _manual_cv(pipe, X, y, cv), rtol=1e-12)
    assert np.all(scores > 0.5)


def test_cold_start_with_group_kfold():
    X, y, school = _students(9, 20, task_spread=0.5)
    cv = GroupKFold(n_splits=3)
    pipe = _pipeline(alpha_task=1e-1, handle_unknown="shared")
    for train, test in cv.split(X, y, school):
        # Every test school is unseen: the shared model predicts all of them.
        assert not set(school[test]) & set(school[train])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = cross_val_score(pipe, X, y, cv=cv, groups=school)
    assert np.all(np.isfinite(scores))
    assert_allclose(scores, _manual_cv(pipe, X, y, cv, school, cold_start=True), rtol=1e-12)
    # The default handle_unknown='warn' says why the scores are what they are.
    with pytest.warns(UserWarning, match="unknown task label"):
        warned = cross_val_score(_pipeline(alpha_task=1e-1), X, y, cv=cv, groups=school)
    assert_allclose(warned, scores, rtol=1e-12)
