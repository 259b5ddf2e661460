"""Wide and long layouts, task labels, unknown tasks, score, 1-D y (SPEC section 2)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from skmtl import SharedParamRegressor
from skmtl._tasks import make_long_tasks, make_wide_tasks

ALPHA_SHARED, ALPHA_TASK = 0.3, 0.7


def _same_fit(a, b, rtol=1e-12, atol=1e-13):
    for name in ("coef_", "intercept_", "shared_coef_", "shared_intercept_"):
        assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol, err_msg=name)


# ------------------------------------------------------------ wide == long


@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("loss", ["squared", "huber"])
def test_wide_with_nan_equals_long_on_observed_pairs(problem_factory, loss, weights):
    wide = problem_factory("wide", weights=weights, outliers=True, unlabelled_rows=3)
    # The same observed pairs in the long layout, each with its row's weight.
    X_long = np.column_stack([wide.tp, wide.Xp])
    # Both data terms are the same weighted sum, divided by S_wide (all rows of
    # the wide X, labelled or not, each once) and S_long (one per pair). Times
    # S_long / S_wide the long objective is the wide one when its alphas are
    # the wide alphas times S_wide / S_long. Reweighting rows cannot do this:
    # S scales with the weights.
    scale = wide.S / wide.sp.sum()
    assert abs(scale - 1) > 0.05
    kw = dict(loss=loss, tol=1e-8)
    with warnings.catch_warnings():
        # L-BFGS may stop at a gradient of ~3e-8 (see test_shared_param.py).
        warnings.simplefilter("ignore", ConvergenceWarning)
        w = SharedParamRegressor(ALPHA_SHARED, alpha_task=ALPHA_TASK, **kw).fit(
            wide.X, wide.y, sample_weight=wide.sample_weight
        )
        lo = SharedParamRegressor(
            ALPHA_SHARED * scale, alpha_task=ALPHA_TASK * scale, task_column=0, **kw
        ).fit(X_long, wide.yp, sample_weight=wide.sp if weights else None)
    # Squared: two direct solves of one linear system. Huber: two L-BFGS runs
    # that stop near a gradient of 1e-8, each within ~1e-7 of the optimum.
    tol = 1e-12 if loss == "squared" else 1e-6
    _same_fit(w, lo, rtol=tol, atol=0 if loss == "squared" else tol)
    assert_array_equal(lo.tasks_, w.tasks_)
    # Predictions agree too: row i of the wide prediction, column t, is the
    # long prediction of row (t, x_i).
    t = np.repeat(np.arange(wide.n_tasks), 5)
    x = np.tile(wide.X[:5], (wide.n_tasks, 1))
    assert_allclose(
        lo.predict(np.column_stack([t, x])), w.predict(wide.X[:5]).T.ravel(), rtol=tol, atol=tol
    )


# ---------------------------------------------------------------- labels


def _long_int(problem_factory):
    prob = problem_factory("long", n_tasks=5, seed=3)
    codes = prob.tp
    # Zero-padded names sort like the ints they stand for.
    names = np.array([f"school_{c:02d}" for c in codes], dtype=object)
    ref = SharedParamRegressor(ALPHA_SHARED, alpha_task=ALPHA_TASK, task_column=0)
    ref.fit(np.column_stack([codes, prob.Xp]), prob.y)
    return prob, names, ref


@pytest.mark.parametrize("dtype", ["object-ndarray", "object", "string", "str"])
def test_string_labels_fit_like_int_labels(problem_factory, dtype):
    prob, names, ref = _long_int(problem_factory)
    if dtype == "object-ndarray":
        X = np.empty((len(names), 1 + prob.Xp.shape[1]), dtype=object)
        X[:, 0], X[:, 1:] = names, prob.Xp
        task_column = 0
    else:
        X = pd.DataFrame(prob.Xp, columns=[f"f{j}" for j in range(prob.Xp.shape[1])])
        X["school"] = pd.Series(names, dtype=dtype)
        task_column = "school"
    model = SharedParamRegressor(ALPHA_SHARED, alpha_task=ALPHA_TASK, task_column=task_column)
    model.fit(X, prob.y)
    _same_fit(model, ref)
    assert list(model.tasks_) == sorted(set(names))
    assert model.n_tasks_ == 5
    assert_allclose(model.predict(X), ref.predict(np.column_stack([prob.tp, prob.Xp])), rtol=1e-12)


@pytest.mark.parametrize(
    "labels",
    [np.array([30, -2, 7, 30, 7, -2]), np.array(["b", "a", "c", "c", "a", "b"], dtype=object),
     np.array([2.5, -1.0, 0.5, 0.5, 2.5, -1.0])],
    ids=["int", "str", "float"],
)
def test_tasks_are_sorted_and_rows_follow_their_label(labels):
    rng = np.random.RandomState(0)
    x = rng.normal(size=(len(labels) * 4, 2))
    labels = np.tile(labels, 4)
    X = np.empty((len(labels), 3), dtype=object)
    X[:, 0], X[:, 1:] = labels, x
    y = rng.normal(size=len(labels))
    model = SharedParamRegressor(alpha_task=0.1, task_column=0).fit(X, y)
    assert_array_equal(model.tasks_, np.sort(np.unique(labels)))
    # Row k of coef_ belongs to tasks_[k]: it predicts that label's rows.
    for k, label in enumerate(model.tasks_):
        rows = labels == label
        assert_allclose(
            model.predict(X[rows]), x[rows] @ model.coef_[k] + model.intercept_[k], rtol=1e-12
        )


def test_task_column_by_name_and_by_negative_position(problem_factory):
    prob, _, ref = _long_int(problem_factory)
    d = prob.Xp.shape[1]
    last = np.column_stack([prob.Xp, prob.tp])
    by_negative = SharedParamRegressor(ALPHA_SHARED, alpha_task=ALPHA_TASK, task_column=-1)
    _same_fit(by_negative.fit(last, prob.y), ref)
    # The task column in the middle of a DataFrame, by name and by position.
    df = pd.DataFrame(prob.Xp, columns=[f"f{j}" for j in range(d)])
    df.insert(1, "school", prob.tp)
    for tc in ("school", 1, -d):
        model = SharedParamRegressor(ALPHA_SHARED, alpha_task=ALPHA_TASK, task_column=tc)
        _same_fit(model.fit(df, prob.y), ref)
        assert model.n_features_in_ == d + 1
        assert_array_equal(model.feature_names_in_, df.columns)
        assert model.coef_.shape == (5, d)


# ---------------------------------------------------------- unknown tasks


def _fitted_with_unseen(handle_unknown):
    rng = np.random.RandomState(1)
    labels = np.repeat(["north", "south", "west"], 10).astype(object)
    x = rng.normal(size=(30, 2))
    y = x @ [1.0, -2.0] + (labels == "west") * 3 + 0.1 * rng.normal(size=30)
    X = pd.DataFrame({"region": pd.Series(labels, dtype="str"), "a": x[:, 0], "b": x[:, 1]})
    model = SharedParamRegressor(
        alpha_task=0.1, task_column="region", handle_unknown=handle_unknown
    ).fit(X, y)
    X_new = pd.DataFrame(
        {"region": pd.Series(["south", "east", "west", "mars", "east"], dtype="str"),
         "a": rng.normal(size=5), "b": rng.normal(size=5)}
    )
    return model, X_new


def _expected_prediction(model, X_new):
    x = X_new[["a", "b"]].to_numpy()
    pred = x @ model.shared_coef_ + model.shared_intercept_
    for i, label in enumerate(X_new["region"]):
        if label in model.tasks_:
            k = list(model.tasks_).index(label)
            pred[i] = x[i] @ model.coef_[k] + model.intercept_[k]
    return pred


def test_unknown_tasks_warn_and_use_the_shared_model():
    model, X_new = _fitted_with_unseen("warn")
    with pytest.warns(UserWarning, match=r"unknown task label\(s\) \['east', 'mars'\]"):
        pred = model.predict(X_new)
    assert_allclose(pred, _expected_prediction(model, X_new), rtol=1e-12)
    # The shared model is not one of the task models.
    assert not np.allclose(model.coef_, model.shared_coef_)


def test_unknown_tasks_shared_is_silent_and_predicts_the_same():
    model, X_new = _fitted_with_unseen("shared")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pred = model.predict(X_new)
    assert_allclose(pred, _expected_prediction(model, X_new), rtol=1e-12)


def test_unknown_tasks_error_names_them():
    model, X_new = _fitted_with_unseen("error")
    with pytest.raises(ValueError, match=r"unknown task label\(s\) \['east', 'mars'\]"):
        model.predict(X_new)
    # Known labels alone still predict.
    known = X_new[X_new["region"].isin(["south", "west"])]
    assert_allclose(model.predict(known), _expected_prediction(model, known), rtol=1e-12)


def test_unknown_int_labels_between_known_ones(problem_factory):
    # Labels -15, -5, 5, 15: unseen labels below, between and above them.
    prob = problem_factory("long")
    model = SharedParamRegressor(task_column=0, handle_unknown="shared").fit(prob.X, prob.y)
    x = prob.Xp[:4]
    X_new = np.column_stack([[-100, 0, 100, 5], x])
    pred = model.predict(X_new)
    shared = x @ model.shared_coef_ + model.shared_intercept_
    assert_allclose(pred[:3], shared[:3], rtol=1e-12)
    assert_allclose(pred[3], x[3] @ model.coef_[2] + model.intercept_[2], rtol=1e-12)


# ------------------------------------------------------------------- score


def test_wide_score_is_mean_r2_over_observed_rows(problem_factory):
    train = problem_factory("wide", seed=0)
    test = problem_factory("wide", seed=5, missing=0.4)
    model = SharedParamRegressor().fit(train.X, train.y)
    pred = model.predict(test.X)
    for sw in (None, np.random.RandomState(2).uniform(0.5, 2, len(test.X))):
        expected = np.mean([
            r2_score(
                test.y[rows, t], pred[rows, t], sample_weight=None if sw is None else sw[rows]
            )
            for t in range(test.n_tasks)
            if (rows := ~np.isnan(test.y[:, t])).any()
        ])
        assert model.score(test.X, test.y, sample_weight=sw) == pytest.approx(expected, rel=1e-12)


def test_wide_score_on_complete_y_is_uniform_average_r2(problem_factory):
    train = problem_factory("wide", seed=0)
    test = problem_factory("wide", seed=5, missing=0.0, unlabelled_rows=0)
    model = SharedParamRegressor().fit(train.X, train.y)
    expected = r2_score(test.y, model.predict(test.X), multioutput="uniform_average")
    assert model.score(test.X, test.y) == pytest.approx(expected, rel=1e-12)


def test_long_score_is_r2_over_all_rows(problem_factory):
    train = problem_factory("long", seed=0)
    test = problem_factory("long", seed=5)
    model = SharedParamRegressor(task_column=0).fit(train.X, train.y)
    # The pooled R^2, not the mean of per-task R^2.
    pooled = r2_score(test.y, model.predict(test.X))
    per_task = np.mean([
        r2_score(test.y[test.tp == k], model.predict(test.X[test.tp == k]))
        for k in range(test.n_tasks)
    ])
    assert model.score(test.X, test.y) == pytest.approx(pooled, rel=1e-12)
    assert abs(pooled - per_task) > 1e-3


# -------------------------------------------------------------------- 1-D y


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no-intercept"])
@pytest.mark.parametrize("missing", [0.0, 0.3], ids=["complete", "missing"])
def test_one_dimensional_y_is_ridge(problem_factory, fit_intercept, missing):
    prob = problem_factory("wide", n_tasks=1, missing=missing, weights=True, unlabelled_rows=0)
    y = prob.y[:, 0]
    model = SharedParamRegressor(ALPHA_SHARED, alpha_task=ALPHA_TASK, fit_intercept=fit_intercept)
    model.fit(prob.X, y, sample_weight=prob.sample_weight)
    assert model.coef_.shape == (prob.X.shape[1],)
    assert model.task_coef_.shape == (prob.X.shape[1],)
    assert isinstance(model.intercept_, float)
    assert isinstance(model.task_intercept_, float)
    assert model.predict(prob.X).shape == (len(y),)
    # One task: w = w0 + v, and the cheapest split of a given w costs
    # a_s a_t / (a_s + a_t) / 2 ||w||^2; c is penalized and b0 is not, so b is
    # free. Times 2S that is Ridge with alpha = S a_s a_t / (a_s + a_t).
    alpha = prob.S * ALPHA_SHARED * ALPHA_TASK / (ALPHA_SHARED + ALPHA_TASK)
    ridge = Ridge(alpha=alpha, fit_intercept=fit_intercept)
    ridge.fit(prob.Xp, prob.yp, sample_weight=prob.sp)
    assert_allclose(model.coef_, ridge.coef_, rtol=1e-10)
    assert_allclose(model.intercept_, ridge.intercept_, rtol=1e-10, atol=1e-12)
    assert_allclose(model.predict(prob.X), ridge.predict(prob.X), rtol=1e-10)


def test_one_column_y_keeps_two_dimensional_shapes(problem_factory):
    prob = problem_factory("wide", n_tasks=1, missing=0.0, unlabelled_rows=0)
    two_d = SharedParamRegressor().fit(prob.X, prob.y)
    one_d = SharedParamRegressor().fit(prob.X, prob.y[:, 0])
    assert two_d.coef_.shape == (1, prob.X.shape[1])
    assert two_d.intercept_.shape == (1,)
    assert two_d.predict(prob.X).shape == (len(prob.X), 1)
    assert_allclose(two_d.coef_[0], one_d.coef_, rtol=1e-12)
    assert_allclose(two_d.predict(prob.X)[:, 0], one_d.predict(prob.X), rtol=1e-12)


def test_wide_shapes(problem_factory):
    prob = problem_factory("wide", n_tasks=4)
    model = SharedParamRegressor().fit(prob.X, prob.y)
    assert model.coef_.shape == (4, prob.X.shape[1])
    assert model.intercept_.shape == (4,)
    assert model.predict(prob.X).shape == (len(prob.X), 4)
    assert_array_equal(model.tasks_, np.arange(4))
    assert model.n_tasks_ == 4
    assert model.n_features_in_ == prob.X.shape[1]


@pytest.mark.parametrize("sizes", [[5] * 12 + [70] * 3, list(range(1, 30))],
                         ids=["few-sizes", "many-sizes"])
def test_long_task_blocks_batched_equal_row_wise(sizes, monkeypatch):
    # The long layout computes its per-task linear loss and gradient blocks
    # with one batched product per group of equal-size tasks, or row by row
    # when there are many sizes; both must give the same numbers. Each form
    # is forced through the limit on the number of groups.
    from skmtl import _tasks
    from skmtl._losses import LOSSES

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n, d = len(labels), 4
    X, y = rng.normal(size=(n, d)), rng.normal(size=n)
    s = rng.uniform(0.5, 2.0, size=n)
    T = len(sizes)
    coef, intercept = rng.normal(size=(T, d)), rng.normal(size=T)

    def blocks():
        data, _ = _tasks.make_long_tasks(X, labels, y, s)
        lo, hi = 2, T - 1
        return data.linear_loss_grad(lo, hi, coef[lo:hi], intercept[lo:hi], LOSSES["huber"], 1.0)

    monkeypatch.setattr(_tasks, "_MAX_GROUP_FRACTION", 10.0)
    batched = blocks()
    monkeypatch.setattr(_tasks, "_MAX_GROUP_FRACTION", -10.0)
    row_wise = blocks()
    for u, v in zip(batched, row_wise):
        assert_allclose(u, v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("form", ["batched", "row-wise", "row-wise, one task per block"])
def test_long_task_gram_equals_per_task_products(form, fit_intercept, weighted, monkeypatch):
    # The per-task sufficient statistics against a plain loop over the tasks
    # of Z_t^T S_t Z_t, Z_t^T S_t y_t, y_t^T S_t y_t and sum S_t, with the
    # batched and the row-wise forms forced, the latter also in blocks of
    # one task.
    from skmtl import _tasks

    if form == "batched":
        monkeypatch.setattr(_tasks, "_MAX_GROUP_FRACTION", 10.0)
    else:
        monkeypatch.setattr(_tasks, "_MAX_GROUP_FRACTION", -10.0)
    if form.endswith("block"):
        monkeypatch.setattr(_tasks, "_BLOCK_BYTES", 1)
    rng = np.random.default_rng(0)
    sizes = [1, 3, 3, 7, 2, 70, 1, 5, 5, 5, 12]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    X, y = rng.normal(size=(len(labels), 4)), rng.normal(size=len(labels))
    s = rng.uniform(0.5, 2.0, size=len(labels)) if weighted else None
    data, _ = _tasks.make_long_tasks(X, labels, y, s)
    lo, hi = 1, len(sizes) - 1
    G, g, yy, sw = data.gram(lo, hi, fit_intercept)
    for t in range(lo, hi):
        rows = labels == t
        Z = np.column_stack([X[rows], np.ones(rows.sum())]) if fit_intercept else X[rows]
        w = np.ones(rows.sum()) if s is None else s[rows]
        assert_allclose(G[t - lo], Z.T @ (w[:, None] * Z), rtol=1e-12, atol=1e-12)
        assert_allclose(g[t - lo], Z.T @ (w * y[rows]), rtol=1e-12, atol=1e-12)
        assert_allclose(yy[t - lo], y[rows] @ (w * y[rows]), rtol=1e-12)
        assert_allclose(sw[t - lo], w.sum(), rtol=1e-12)


@pytest.mark.parametrize("layout", ["long", "wide"])
@pytest.mark.parametrize("sample_weight", [False, True])
def test_head_blocks_equal_a_task_by_task_evaluation(layout, sample_weight):
    # The head blocks of SharedObjectiveRegressor work on the whole range of
    # tasks at once (repeated heads and segment sums in the long layout, one
    # row per task in the wide one); here each task's block is written out
    # on its own rows: uneven task sizes (a task of one row), missing labels,
    # sample weights, a task range that starts and ends inside the data.
    from skmtl._losses import LOSSES

    rng = np.random.default_rng(1)
    T, k, epsilon = 7, 3, 0.4
    losses = [LOSSES["huber"] if t % 3 == 1 else LOSSES["squared"] for t in range(T)]
    heads, head_b, weights = rng.normal(size=(T, k)), rng.normal(size=T), rng.uniform(size=T)
    if layout == "long":
        sizes = [3, 1, 17, 4, 9, 2, 30]
        labels = rng.permutation(np.repeat(np.arange(T), sizes))
        n = len(labels)
        y = rng.normal(size=n)
        s = rng.uniform(0.5, 2.0, size=n) if sample_weight else None
        data, _ = make_long_tasks(rng.normal(size=(n, 2)), labels, y, s)
        lo, hi = 1, T - 1
        rows = data.row_range(lo, hi)
        task_rows = [np.flatnonzero(data.codes[rows] == t) for t in range(lo, hi)]
        task_y = [data.y[rows][r] for r in task_rows]
        task_s = [np.ones(len(r)) if s is None else data.sample_weight[rows][r]
                  for r in task_rows]
    else:
        n = 40
        Y = rng.normal(size=(n, T))
        Y[rng.random((n, T)) < 0.3] = np.nan
        s = rng.uniform(0.5, 2.0, size=n) if sample_weight else None
        data = make_wide_tasks(rng.normal(size=(n, 2)), Y, s)
        lo, hi = 1, T - 1
        task_rows = [np.flatnonzero(~np.isnan(Y[:, t])) for t in range(lo, hi)]
        task_y = [Y[r, t] for t, r in zip(range(lo, hi), task_rows)]
        task_s = [np.ones(len(r)) if s is None else s[r] for r in task_rows]
    m = data.row_range(lo, hi).stop - data.row_range(lo, hi).start
    H = rng.normal(size=(k, m))
    got = data.head_loss_grad(lo, hi, H, heads[lo:hi], head_b[lo:hi], losses[lo:hi],
                              epsilon, weights[lo:hi])

    grad_H = np.zeros((k, m))
    for j, t in enumerate(range(lo, hi)):
        Ht = H[:, task_rows[j]]
        r = task_y[j] - (heads[t] @ Ht + head_b[t])
        value, deriv = losses[t](r, epsilon)
        assert_allclose(got[0][j], task_s[j] @ value, rtol=1e-12)
        assert_allclose(got[1][j], -Ht @ (task_s[j] * deriv), rtol=1e-12, atol=1e-12)
        assert_allclose(got[2][j], -(task_s[j] @ deriv), rtol=1e-12, atol=1e-12)
        grad_H[:, task_rows[j]] -= weights[t] * np.outer(heads[t], task_s[j] * deriv)
    assert_allclose(got[3], grad_H, rtol=1e-12, atol=1e-12)


def _direct_huber_loss_grad(X, labels, y, s, coef, intercept, epsilon, tasks):
    """Weighted Huber loss sum and per-task gradients, task by task, as written."""
    value, grad_coef, grad_intercept = 0.0, [], []
    for t in tasks:
        rows = labels == t
        r = y[rows] - X[rows] @ coef[t] - intercept[t]
        small = np.abs(r) <= epsilon
        value += np.sum(s[rows] * np.where(small, r**2 / 2, epsilon * np.abs(r) - epsilon**2 / 2))
        psi = s[rows] * np.where(small, r, epsilon * np.sign(r))
        grad_coef.append(-X[rows].T @ psi)
        grad_intercept.append(-psi.sum())
    return value, np.array(grad_coef), np.array(grad_intercept)


@pytest.mark.parametrize("form", ["batched", "row-wise"])
@pytest.mark.parametrize("block_rows", [1, 7, 40, None], ids=lambda b: f"block{b}")
def test_long_loss_grad_in_blocks_is_the_written_objective(form, block_rows, monkeypatch):
    # The long layout computes the loss and gradient in blocks of about
    # _BLOCK_BYTES of X (the rows of a block are read once from memory).
    # Uneven sizes: runs of equal-size consecutive tasks, equal sizes apart
    # (gathered), tasks of 64 rows or more, and tasks larger than a block.
    # Blocks of 1 row (every task alone), 7 and 40 rows, and one block for
    # everything give the written objective, on any range of tasks.
    from skmtl import _tasks
    from skmtl._losses import LOSSES

    sizes = [3, 3, 3, 5, 9, 5, 70, 70, 12, 70, 1, 5, 33, 3, 8, 8, 100]
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n, d, T, epsilon = len(labels), 4, len(sizes), 0.8
    X, y, s = rng.normal(size=(n, d)), 2 * rng.normal(size=n), rng.uniform(0.5, 2.0, size=n)
    coef, intercept = rng.normal(size=(T, d)), rng.normal(size=T)
    if block_rows is not None:
        monkeypatch.setattr(_tasks, "_BLOCK_BYTES", block_rows * 8 * d)
    monkeypatch.setattr(_tasks, "_MAX_GROUP_FRACTION", 10.0 if form == "batched" else -10.0)
    data, _ = _tasks.make_long_tasks(X, labels, y, s)
    for lo, hi in [(0, T), (2, T - 1), (6, 7), (5, 13)]:
        value, grad_coef, grad_intercept = data.linear_loss_grad(
            lo, hi, coef[lo:hi], intercept[lo:hi], LOSSES["huber"], epsilon
        )
        expected = _direct_huber_loss_grad(X, labels, y, s, coef, intercept, epsilon,
                                           range(lo, hi))
        assert_allclose(value, expected[0], rtol=1e-12)
        assert_allclose(grad_coef, expected[1], rtol=1e-12, atol=1e-12)
        assert_allclose(grad_intercept, expected[2], rtol=1e-12, atol=1e-12)
