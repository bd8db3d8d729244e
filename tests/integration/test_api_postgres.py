"""The API's contract tests of tests/unit/api/, run against the real Postgres.

Cursor pagination, idempotency keys, metrics queries and log following all touch SQL
that differs between SQLite and Postgres; here they meet the real thing.
"""

import pytest

from tests.unit.api.conftest import *  # noqa: F403  (the fixtures, on db_store = Postgres)
from tests.unit.api.test_auth import *  # noqa: F403  (pytest collects the imported tests)
from tests.unit.api.test_listing import *  # noqa: F403
from tests.unit.api.test_logs import *  # noqa: F403
from tests.unit.api.test_runs import *  # noqa: F403
from tests.unit.api.test_system import *  # noqa: F403

pytestmark = pytest.mark.postgres
