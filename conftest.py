"""Settings for every test run, the doctests in skmtl/ included."""

import sys

import pytest


def pytest_configure(config):
    # Draw into memory: the Displays' doctests and tests must not need a screen.
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    """Close the figures a test or doctest opened, so that they do not pile up."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
