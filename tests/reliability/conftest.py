"""Reliability fixtures; the shared ones (databases, hub, keys) come from tests/conftest.py."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.end_to_end.support", "tests.reliability.support")
