"""A generated ledger per database, shared by the report tests of one test function."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.reports.ledger_model import Model, generate


@pytest.fixture
def generated(engine: Engine) -> Model:
    return generate(engine, seed=20260701)
