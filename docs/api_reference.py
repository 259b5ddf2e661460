"""What the API reference lists: written to ``api.rst`` by ``conf.py``.

Each public module gets a section. Its entries are the names in the module's
``__all__``, classes and functions apart, in that order, so a new public name
appears without an edit here. A module that does not import (not merged yet,
or missing an optional dependency) is left out with a note in the build log,
so listing it early is safe: ``skmtl.inspection`` below appears as soon as it
exists.
"""

import importlib
import inspect

from sphinx.util import logging

MODULES = [
    ("skmtl", "estimators"),
    ("skmtl.datasets", "grouped data sets"),
    ("skmtl.metrics", "scores with missing labels"),
    ("skmtl.inspection", "plots of fitted models"),
]

HEADER = """\
.. _api:

API reference
=============

.. This file is written by conf.py from docs/api_reference.py: edit that.

Everything public is importable from the modules below; modules whose names
start with an underscore are private.
"""


def _autosummary(names, template):
    if not names:
        return []
    return ["", ".. autosummary::", "   :toctree: generated/", f"   :template: {template}", "",
            *(f"   {name}" for name in names)]


def render():
    """The text of ``api.rst``."""
    lines = [HEADER]
    for name, title in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            logging.getLogger(__name__).info(f"API reference: {name} left out ({exc})")
            continue
        public = [getattr(module, n) for n in module.__all__ if not n.startswith("_")]
        classes = [obj.__name__ for obj in public if inspect.isclass(obj)]
        functions = [obj.__name__ for obj in public if inspect.isfunction(obj)]
        heading = f":mod:`{name}`: {title}"
        lines += ["", heading, "-" * len(heading), "", f".. automodule:: {name}", "   :no-members:",
                  "   :no-inherited-members:", "", f".. currentmodule:: {name}"]
        lines += _autosummary(classes, "class.rst")
        lines += _autosummary(functions, "function.rst")
    return "\n".join(lines) + "\n"
