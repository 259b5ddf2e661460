"""Shared fixtures for the skmtl tests."""

import os

# scikit-learn's check_array_api_input skips itself unless scipy's array API
# mode is on; with it on, the check runs (numpy namespace) instead of skipping.
os.environ.setdefault("SCIPY_ARRAY_API", "1")
