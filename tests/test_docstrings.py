"""numpydoc validation of the public API."""

import inspect

import pytest

import skmtl
import skmtl.datasets
import skmtl.inspection
import skmtl.metrics

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the [test] extra")

# GL08: private helpers inherited from scikit-learn (set_output etc.) are not ours.
# SA01/EX01 are required on classes (checked below), not on every method.
# ES01: an extended summary is optional for short methods.
IGNORED = {"GL08", "SA01", "EX01", "ES01", "RT02"}


# Public functions: each needs See Also and Examples, like a class.
FUNCTION_MODULES = [skmtl, skmtl.datasets, skmtl.inspection, skmtl.metrics]
# Public classes: each needs See Also and Examples, and so does each of its methods' owner.
CLASS_MODULES = [skmtl, skmtl.inspection]


def _public_functions():
    for module in FUNCTION_MODULES:
        for name in module.__all__:
            if inspect.isfunction(getattr(module, name)):
                yield f"{module.__name__}.{name}"


def _public_objects():
    yield from _public_functions()
    for module in CLASS_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if not inspect.isclass(obj):
                continue
            path = f"{module.__name__}.{name}"
            yield path
            for meth, value in vars(obj).items():
                if not meth.startswith("_") and callable(_unwrapped(value)):
                    yield f"{path}.{meth}"
            for base in obj.__mro__[1:]:
                if base.__module__.startswith("skmtl"):
                    for meth, value in vars(base).items():
                        if not meth.startswith("_") and callable(value) and meth not in vars(obj):
                            yield f"{path}.{meth}"


def _unwrapped(value):
    """The function behind a classmethod (``from_estimator``), which is not callable itself."""
    return value.__func__ if isinstance(value, classmethod) else value


TOP_LEVEL = {
    f"{module.__name__}.{name}" for module in CLASS_MODULES for name in module.__all__
} | set(_public_functions())


@pytest.mark.parametrize("import_path", sorted(set(_public_objects())))
def test_numpydoc(import_path):
    result = numpydoc_validate.validate(import_path)
    errors = [
        f"{code}: {msg}"
        for code, msg in result["errors"]
        if code not in IGNORED
        or (code == "EX01" and import_path in TOP_LEVEL)
        or (code == "SA01" and import_path in TOP_LEVEL)
    ]
    assert not errors, "\n".join(errors)
