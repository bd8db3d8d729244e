"""The findings store and API tests of tests/unit, on the real Postgres."""

import pytest

from tests.unit.api.conftest import *  # noqa: F403  (the fixtures, on db_store = Postgres)
from tests.unit.api.test_findings import *  # noqa: F403  (pytest collects the imported tests)
from tests.unit.test_findings_store import *  # noqa: F403

pytestmark = pytest.mark.postgres
