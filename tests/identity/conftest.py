"""Identity test fixtures: a fresh identity secret per test, and one client per principal."""

from __future__ import annotations

import secrets

import grpc
import pytest
from sqlalchemy import Engine

from coalition.settings import SECRET_ENVIRONMENT_VARIABLE, SECRET_FILE_ENVIRONMENT_VARIABLE
from tests.conftest import api_key
from tests.identity.support import Caller


@pytest.fixture(autouse=True)
def identity_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The hub's identity secret for this test, from the environment as in production."""
    secret = secrets.token_hex(32)
    monkeypatch.setenv(SECRET_ENVIRONMENT_VARIABLE, secret)
    monkeypatch.delenv(SECRET_FILE_ENVIRONMENT_VARIABLE, raising=False)
    return secret


@pytest.fixture
def coffee(channel: grpc.Channel, engine: Engine) -> Caller:
    return Caller(channel, api_key(engine, "test-coffee"), "test-coffee")


@pytest.fixture
def air(channel: grpc.Channel, engine: Engine) -> Caller:
    return Caller(channel, api_key(engine, "test-air"), "test-air")


@pytest.fixture
def cinema(channel: grpc.Channel, engine: Engine) -> Caller:
    return Caller(channel, api_key(engine, "test-cinema"), "test-cinema")


@pytest.fixture
def coffee_merchant(channel: grpc.Channel, engine: Engine) -> Caller:
    """Test Coffee's CRM: a merchant key, bound to the partner test-coffee."""
    return Caller(channel, api_key(engine, "test-coffee", "merchant"), "test-coffee")


@pytest.fixture
def admin(channel: grpc.Channel, engine: Engine) -> Caller:
    return Caller(channel, api_key(engine, "ops", "admin"), "")
