"""scikit-learn's estimator checks over every public skmtl estimator."""

import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import skmtl


def _public_estimators():
    return [
        obj
        for name in skmtl.__all__
        if inspect.isclass(obj := getattr(skmtl, name)) and issubclass(obj, BaseEstimator)
    ]


# Configurations that run a different solver from the default one, checked too.
_EXTRA_CONFIGURATIONS = {"SharedFeatureRegressor": [{"penalty": "l21"}]}


def _instances():
    for cls in _public_estimators():
        yield cls()
        yield cls(task_column=0)
        for params in _EXTRA_CONFIGURATIONS.get(cls.__name__, []):
            yield cls(**params)


def test_every_public_estimator_is_checked():
    assert {type(e) for e in _instances()} == set(_public_estimators())
    assert len(_public_estimators()) >= 1


@parametrize_with_checks(list(_instances()))
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
