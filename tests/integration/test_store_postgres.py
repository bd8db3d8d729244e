"""The store tests of tests/unit/test_store.py, run against the real Postgres."""

from tests.unit.test_store import *  # noqa: F403  (pytest collects the imported tests)
