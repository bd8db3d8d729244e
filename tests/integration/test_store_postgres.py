"""The store tests of tests/unit/, run against the real Postgres."""

from tests.unit.test_store import *  # noqa: F403  (pytest collects the imported tests)
from tests.unit.test_tokens_definitions import *  # noqa: F403
