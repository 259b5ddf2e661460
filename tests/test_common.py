"""scikit-learn's estimator checks over every public skmtl estimator."""

import inspect

from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import skmtl


def _public_estimators():
    return [
        obj
        for name in skmtl.__all__
        if inspect.isclass(obj := getattr(skmtl, name)) and issubclass(obj, BaseEstimator)
    ]


# Configurations that take a different code path than the defaults, checked too.
_EXTRA_CONFIGURATIONS = {
    "SharedFeatureRegressor": [{"penalty": "l21"}],
    "SharedObjectiveRegressor": [{"activation": "relu"}, {"early_stopping": True}],
}


def _instances():
    for cls in _public_estimators():
        yield cls()
        yield cls(task_column=0)
        for params in _EXTRA_CONFIGURATIONS.get(cls.__name__, []):
            yield cls(**params)


def test_every_public_estimator_is_checked():
    assert {type(e) for e in _instances()} == set(_public_estimators())
    assert len(_public_estimators()) >= 1


# Every expected failure, with the reason next to it.
_EXPECTED_FAILED_CHECKS = {
    "SharedObjectiveRegressor": {
        "check_sample_weight_equivalence_on_dense_data": (
            "A nonconvex network fitted by an iterative solver that stops at a "
            "relative gradient tolerance: the check shuffles the rows, so the same "
            "objective is summed in another order, the iterates drift apart and "
            "the two fits stop at points whose predictions differ by about 1e-2 "
            "relative with the default tol (with 'relu' they end at different "
            "kinks even at tol=1e-10), not within the check's rtol=1e-7. "
            "scikit-learn runs this check on MLPRegressor only with special "
            "parameters. tests/test_shared_objective.py checks that integer "
            "weights equal repeated rows and zero weights equal removed rows. "
            "With early_stopping=True the held-out rows differ as well: a row "
            "repeated k times is k rows to the validation split."
        ),
    },
}


def _expected_failed_checks(estimator):
    if estimator.get_params().get("task_column") is not None:
        # In the check's long layout every row is its own task: nothing is
        # summed in another order, and the check passes.
        return {}
    return _EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


@parametrize_with_checks(list(_instances()), expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
