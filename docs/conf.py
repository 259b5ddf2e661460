"""Sphinx configuration of skmtl's documentation.

Build from the repository root with
``sphinx-build -W --keep-going -b html docs docs/_build/html``; the snippets
of the user guide run with ``sphinx-build -b doctest docs docs/_build/doctest``.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
# The checkout being documented, not whichever skmtl happens to be installed.
sys.path.insert(0, str(REPO))
# Worker processes started by the doctests (dask) import the same checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS))

import skmtl  # noqa: E402

project = "skmtl"
author = "skmtl developers"
copyright = "2026, skmtl developers"
version = release = skmtl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "benchmark_tables",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "generated/gallery/*.ipynb", "**.codeobj.json"]
default_role = "literal"

# -- API reference ----------------------------------------------------------
import api_reference  # noqa: E402

# Written before autosummary scans the sources for the pages to generate;
# only when it changes, so that an incremental build does not re-read it.
_api = api_reference.render()
if not (DOCS / "api.rst").exists() or (DOCS / "api.rst").read_text() != _api:
    (DOCS / "api.rst").write_text(_api)
autosummary_generate = True
# scikit-learn's generic metadata-routing and set_output methods are left to
# scikit-learn's documentation: their docstrings refer to its own pages.
SKLEARN_GENERIC = [
    "get_metadata_routing",
    "set_fit_request",
    "set_score_request",
    "set_predict_request",
    "set_transform_request",
    "set_output",
]
autodoc_default_options = {
    "members": True,
    "inherited-members": True,
    "exclude-members": ",".join(SKLEARN_GENERIC),
}
autodoc_typehints = "none"
# autosummary writes one page per public class and lists the methods there;
# numpydoc's own member tables would list them a second time.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "sklearn": ("https://scikit-learn.org/stable", None),
    "joblib": ("https://joblib.readthedocs.io/en/stable", None),
}
# Offline builds (CI has no internet beyond PyPI) keep the inventories away:
# a failed download would be a warning, and -W turns warnings into errors.
if os.environ.get("SKMTL_DOCS_INTERSPHINX", "0") != "1":
    intersphinx_mapping = {}

# -- Gallery ----------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(REPO / "examples"),
    "gallery_dirs": "auto_examples",
    # Only plot_*.py run; quickstart.py is a plain script (the quick start of README.md).
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py|quickstart\.py",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "doc_module": ("skmtl",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"skmtl": None},
    "min_reported_time": 0,
    "write_computation_times": True,
    "remove_config_comments": True,
    "show_memory": False,
    "download_all_examples": False,
}

# -- Doctest ----------------------------------------------------------------
doctest_global_setup = """
import numpy as np
np.set_printoptions(legacy=False)
"""

# -- HTML -------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skmtl {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []
html_show_sourcelink = False
# Labels such as alpha_task='auto' keep their straight quotes.
smartquotes = False

# The class template filters the same methods out of its method table.
autosummary_context = {"sklearn_generic": SKLEARN_GENERIC}
