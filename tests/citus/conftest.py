"""tests/citus collects before tests/end_to_end and imports its support module (a real hub's
client): register it for assertion rewriting before that import, as its own conftest does."""

import pytest

pytest.register_assert_rewrite("tests.end_to_end.support")
