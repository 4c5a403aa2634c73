"""Settlement fixtures: a published signing key, a partner acknowledgement key, and ledger
traffic at chosen instants (ledger services take `now`, so a test can fill past periods)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from coalition import operations
from coalition.domain.points import Money
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations.points import BurnCommand, EarnCommand, LedgerResult, ReverseCommand
from coalition.partners.sync import sync_partners
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.settlement import export, keys, service, signing
from coalition.settlement.service import RunResult, Signer
from coalition.store.unit_of_work import UnitOfWork
from tests.conftest import COFFEE

# Settlement runs "now" = this instant, after every period the tests settle.
SETTLE_NOW = datetime(2026, 6, 1, tzinfo=UTC)
JANUARY = date(2026, 1, 31)
FEBRUARY = date(2026, 2, 28)
CURRENCY = {"test-coffee": "CNY", "test-air": "EUR", "test-cinema": "GBP"}


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def coffee_acknowledgement_key(engine: Engine) -> Ed25519PrivateKey:
    """Test Coffee's own key, declared in its manifest as settlement_public_key."""
    private_key = Ed25519PrivateKey.generate()
    encoded = base64.b64encode(signing.raw_public_key(private_key)).decode()
    manifest = replace(COFFEE, settlement_public_key=encoded)
    sync_partners(UnitOfWork(engine), [manifest], datetime.now(UTC))
    return private_key


@pytest.fixture
def signing_key_path(engine: Engine, tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "signing.pem"
    keys.generate(UnitOfWork(engine), path, datetime(2025, 12, 1, tzinfo=UTC))
    return path


@pytest.fixture
def signer(signing_key_path: Path) -> Signer:
    return Signer.from_file(signing_key_path)


@pytest.fixture
def public_key(signer: Signer) -> bytes:
    return signing.raw_public_key(signer.private_key)


class Ledger:
    """Earn, burn and reverse through the real service functions at chosen instants."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def member(self, partner_id: str = "test-coffee") -> str:
        enrolment = members.enroll(
            UnitOfWork(self.engine),
            partner_id,
            new_id(),
            f"customer-{new_id()}",
            "Mei Lin",
            datetime(2025, 12, 1, tzinfo=UTC),
        )
        return enrolment.member.member_id

    def earn(
        self, member_id: str, amount_minor: int, at: datetime, partner_id: str = "test-coffee"
    ) -> LedgerResult:
        command = EarnCommand(
            request_id=new_id(),
            member=MemberReference(member_id=member_id),
            spend=Money(amount_minor, CURRENCY[partner_id]),
        )
        return operations.earn(UnitOfWork(self.engine), DEFAULT_PROGRAMME, partner_id, command, at)

    def burn(
        self, member_id: str, points: int, at: datetime, partner_id: str = "test-coffee"
    ) -> LedgerResult:
        command = BurnCommand(
            request_id=new_id(), member=MemberReference(member_id=member_id), points=points
        )
        return operations.burn(UnitOfWork(self.engine), partner_id, command, at)

    def reverse(
        self, transaction_id: int, points: int, at: datetime, partner_id: str = "test-coffee"
    ) -> LedgerResult:
        command = ReverseCommand(request_id=new_id(), transaction_id=transaction_id, points=points)
        return operations.reverse(UnitOfWork(self.engine), partner_id, command, at)


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    return Ledger(engine)


def settle(
    engine: Engine,
    signer: Signer,
    period_last_day: date,
    partner_id: str | None = "test-coffee",
    now: datetime = SETTLE_NOW,
) -> list[RunResult]:
    return service.run_settlement(
        lambda: UnitOfWork(engine), period_last_day, partner_id, signer, now
    )


@pytest.fixture
def exporter(engine: Engine, tmp_path: Path) -> Callable[[str], Path]:
    """Export a statement into a fresh directory and return it."""

    def export_to(statement_id: str) -> Path:
        directory = tmp_path / "exports" / new_id()
        export.export_statement(lambda: UnitOfWork(engine), statement_id, directory)
        return directory

    return export_to
