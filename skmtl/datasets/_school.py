"""The School data (ILEA exam scores, as distributed with MALSAR), shipped in the package."""

import gzip
from pathlib import Path

import numpy as np

from ._common import make_bunch

SCHOOL_FILE = Path(__file__).parent / "data" / "school.csv.gz"

FEATURE_NAMES = (
    ["year_1985", "year_1986", "year_1987", "fsm_pct", "vr1_pct", "female", "male",
     "vr_band_1", "vr_band_2", "vr_band_3"]
    + [f"ethnic_{k}" for k in range(1, 12)]
    + ["school_mixed", "school_boys", "school_girls", "school_maintained",
       "school_church_of_england", "school_roman_catholic"]
)

DESCR = """\
.. _school_dataset:

School data (ILEA exam scores)
------------------------------

Exam scores of 15,362 students in 139 secondary schools of the Inner London
Education Authority, years 1985, 1986 and 1987. Each school is one task.

**Provenance.** The file ``school.mat`` distributed with the MALSAR toolbox
(Zhou, Chen & Ye, 2011), the version used by Evgeniou & Pontil (2004) and
Argyriou, Evgeniou & Pontil (2008); converted once, exactly (every value is an
integer), by ``skmtl/datasets/_make_school.py``. Schools are numbered 1 to 139
in the order of MALSAR's cell array; its constant bias column is dropped.

**Layout.** Long: ``data`` is the ``school`` column followed by 27 features;
``target`` is the exam score (an integer from 1 to 70).

**Features** (``feature_names`` after ``school``):

- ``year_1985``, ``year_1986``, ``year_1987``: year of the exam (one-hot);
- ``fsm_pct``: percentage of the school's students eligible for free school
  meals (per school and year);
- ``vr1_pct``: percentage of the school's students in verbal-reasoning band 1
  (per school and year);
- ``female``, ``male``: the student's gender (one-hot);
- ``vr_band_1``, ``vr_band_2``, ``vr_band_3``: the student's verbal-reasoning
  band (one-hot; 15 students have no band recorded, all three are 0);
- ``ethnic_1`` ... ``ethnic_11``: the student's ethnic group (one-hot);
- ``school_mixed``, ``school_boys``, ``school_girls``: school gender (one-hot);
- ``school_maintained``, ``school_church_of_england``,
  ``school_roman_catholic``: school denomination (one-hot).

The one-hot blocks each sum to one, so they are collinear with an intercept:
use a penalized model, or drop one level per block.

**Scores usually reported.** The explained variance (R^2 over all test
students, :func:`skmtl.metrics.pooled_explained_variance_score`) of random
75/25 splits within every school: 26 to 30% in the papers above, which
penalize the intercept; about 37-38% with unpenalized school intercepts
(``benchmarks/README.md``).

References: Goldstein (1991), "Multilevel modelling of survey data", The
Statistician 40; Evgeniou & Pontil (2004), "Regularized multi-task learning",
KDD; Argyriou, Evgeniou & Pontil (2008), "Convex multi-task feature
learning", Machine Learning 73.
"""


def load_school(*, as_frame=False, return_X_y=False):
    """Load the School data: exam scores of 15,362 students in 139 schools.

    Long layout, one task per school; the data ship with skmtl, nothing is
    downloaded. Provenance and column meanings are in ``DESCR``.

    =================   ==============================
    Samples             15,362
    Tasks (schools)     139, 22 to 251 students each
    Features            27 (plus the school column)
    Target              exam score, integer 1 to 70
    =================   ==============================

    Parameters
    ----------
    as_frame : bool, default=False
        If True, ``data`` is a pandas DataFrame (with an integer ``school``
        column), ``target`` a Series and ``frame`` both together; pandas is
        required.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : {ndarray, DataFrame} of shape (15362, 28)
            The ``school`` column, then the 27 features.
        target : {ndarray, Series} of shape (15362,)
            The exam score.
        frame : DataFrame of shape (15362, 29) or None
            ``data`` and ``target`` together when ``as_frame=True``.
        feature_names : list of str
            Names of the columns of ``data``, ``'school'`` first.
        target_names : list of str
            ``['score']``.
        task_column : int or str
            Where the task labels are: ``0``, or ``'school'`` when
            ``as_frame=True``. Pass it as the estimators' ``task_column``.
        DESCR : str
            Description, provenance and column meanings.

    (data, target) : tuple if ``return_X_y`` is True
        ``data`` and ``target`` as above.

    See Also
    --------
    load_exam : Exam scores of 4,059 students in 65 London schools.
    make_multitask_regression : Synthetic tasks of a known structure.

    Examples
    --------
    >>> from skmtl.datasets import load_school
    >>> school = load_school()
    >>> school.data.shape, school.task_column
    ((15362, 28), 0)
    """
    with gzip.open(SCHOOL_FILE, "rt", encoding="ascii") as f:
        header = f.readline().strip().split(",")
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if header != ["school", *FEATURE_NAMES, "score"]:  # pragma: no cover - a broken install
        raise ValueError(f"{SCHOOL_FILE}: unexpected columns {header}")
    return make_bunch(
        table[:, 0], table[:, 1:-1], table[:, -1],
        task_name="school", feature_names=FEATURE_NAMES, target_name="score",
        descr=DESCR, as_frame=as_frame, return_X_y=return_X_y,
    )
