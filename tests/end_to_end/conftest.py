"""End-to-end fixtures: one client per test partner, on the real gRPC channel."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import Engine

# Plain `assert`s in the helpers explain their failures as well as those in test modules do.
pytest.register_assert_rewrite("tests.end_to_end.support")

from tests.end_to_end.support import PartnerClient  # noqa: E402


@pytest.fixture
def coffee(channel: grpc.Channel, engine: Engine) -> PartnerClient:
    """Test Coffee: CNY, earns 0.1 point per yuan before 2026, 0.2 from 2026; 5 fen a point."""
    return PartnerClient(channel, engine, "test-coffee")


@pytest.fixture
def air(channel: grpc.Channel, engine: Engine) -> PartnerClient:
    """Test Air: EUR, 1 point per euro, converts its own miles at 0.5; 1 cent a point."""
    return PartnerClient(channel, engine, "test-air")


@pytest.fixture
def cinema(channel: grpc.Channel, engine: Engine) -> PartnerClient:
    """Test Cinema: GBP from 2025-06-01, 1 point per pound; 0.85 pence a point."""
    return PartnerClient(channel, engine, "test-cinema")
