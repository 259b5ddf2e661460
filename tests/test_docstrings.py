"""numpydoc validation of the public API."""

import inspect

import pytest

import skmtl

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="numpydoc is in the [test] extra")

# GL08: private helpers inherited from scikit-learn (set_output etc.) are not ours.
# SA01/EX01 are required on classes (checked below), not on every method.
# ES01: an extended summary is optional for short methods.
IGNORED = {"GL08", "SA01", "EX01", "ES01", "RT02"}


def _public_objects():
    for name in skmtl.__all__:
        obj = getattr(skmtl, name)
        if not inspect.isclass(obj):
            continue
        yield f"skmtl.{name}"
        for meth, value in vars(obj).items():
            if not meth.startswith("_") and callable(value):
                yield f"skmtl.{name}.{meth}"
        for base in obj.__mro__[1:]:
            if base.__module__.startswith("skmtl"):
                for meth, value in vars(base).items():
                    if not meth.startswith("_") and callable(value) and meth not in vars(obj):
                        yield f"skmtl.{name}.{meth}"


@pytest.mark.parametrize("import_path", sorted(set(_public_objects())))
def test_numpydoc(import_path):
    result = numpydoc_validate.validate(import_path)
    errors = [
        f"{code}: {msg}"
        for code, msg in result["errors"]
        if code not in IGNORED or (code in {"SA01", "EX01"} and import_path.count(".") == 1)
    ]
    assert not errors, "\n".join(errors)
