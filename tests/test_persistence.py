"""A fitted estimator survives pickle, joblib and skops bit for bit (SPEC section 5)."""

import pickle
import warnings

import joblib
import numpy as np
import pytest
import skops.io
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning


def _pickle(model, tmp_path):
    return pickle.loads(pickle.dumps(model))


def _joblib(model, tmp_path):
    joblib.dump(model, tmp_path / "model.joblib")
    return joblib.load(tmp_path / "model.joblib")


def _skops(model, tmp_path):
    data = skops.io.dumps(model)
    untrusted = skops.io.get_untrusted_types(data=data)
    # Fitted attributes are numpy arrays and builtins: nothing to trust but
    # skmtl's own classes.
    assert untrusted == [f"{type(model).__module__}.{type(model).__qualname__}"], untrusted
    return skops.io.loads(data, trusted=untrusted)


def _outputs(model, X_new):
    with warnings.catch_warnings():
        # The long cases predict an unseen task with the shared model.
        warnings.simplefilter("ignore", UserWarning)
        outputs = [model.predict(X_new)]
    if hasattr(model, "transform"):
        outputs.append(model.transform(X_new))
    return outputs


def _fitted(make_estimator, case):
    model = make_estimator(task_column=case.task_column)
    with warnings.catch_warnings():
        # Few iterations on purpose: persistence does not need an optimum.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(case.X, case.y)


# None: an attribute that does not apply to the configuration, as
# MLPRegressor's validation_scores_ without early stopping.
_BUILTINS = (bool, int, float, str, type(None))


def _check_plain(name, value):
    if isinstance(value, np.ndarray):
        # Numbers, or the strings of string task labels.
        assert value.dtype.kind in "biuf" or (
            value.dtype.kind == "O" and all(type(v) is str for v in value.ravel())
        ), (name, value.dtype)
    else:
        assert type(value) in _BUILTINS, (name, type(value))


def test_fitted_attributes_are_arrays_and_builtins(make_estimator, fit_case):
    model = _fitted(make_estimator, fit_case)
    params = model.get_params()
    fitted = {k: v for k, v in vars(model).items() if k not in params}
    assert "coef_" in fitted or "head_coef_" in fitted
    for name, value in fitted.items():
        _check_plain(name, value)


@pytest.mark.parametrize("dump_load", [_pickle, _joblib, _skops], ids=["pickle", "joblib", "skops"])
def test_round_trip_gives_identical_predictions(make_estimator, fit_case, dump_load, tmp_path):
    model = _fitted(make_estimator, fit_case)
    before = _outputs(model, fit_case.X_new)
    loaded = dump_load(model, tmp_path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    for a, b in zip(_outputs(loaded, fit_case.X_new), before, strict=True):
        assert_array_equal(a, b)
    assert vars(loaded).keys() == vars(model).keys()
    for name, value in vars(model).items():
        if isinstance(value, np.ndarray):
            assert_array_equal(getattr(loaded, name), value, err_msg=name)
            assert getattr(loaded, name).dtype == value.dtype, name
