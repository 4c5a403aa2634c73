"""Building statements on real SQLite and PostgreSQL: contents, money, idempotency, late
entries, the chain, refusals, and key rotation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from coalition import operations
from coalition.domain.errors import FailedPrecondition, NotFound
from coalition.identity.members import MemberReference
from coalition.settlement import keys, service, signing
from coalition.settlement.format import GENESIS_HASH
from coalition.settlement.merkle import EMPTY_ROOT
from coalition.settlement.service import Signer
from coalition.settlement.verify import verify_export
from coalition.store.schema import settlement_entries, settlement_statements
from coalition.store.unit_of_work import UnitOfWork
from tests.settlement.conftest import FEBRUARY, JANUARY, SETTLE_NOW, Ledger, settle

pytestmark = pytest.mark.integration

V2025 = "test-coffee@2025-01-01T00:00:00Z"
V2026 = "test-coffee@2026-01-01T00:00:00Z"


def at(day: int, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


def january_traffic(ledger: Ledger) -> dict[str, int]:
    """Coffee: CNY, 0.1 point a yuan in 2025 and 0.2 from 2026; issuance 6.0 and redemption
    4.5 minor units a point under both versions."""
    member_id = ledger.member()
    december = ledger.earn(member_id, 1_000, at(20, 12, 2025))  # 10 CNY -> 1 point (v2025)
    first = ledger.earn(member_id, 10_000, at(10))  # 100 CNY -> 20 points (v2026)
    ledger.earn(member_id, 5_050, at(11))  # 50.5 CNY -> 10 points, rounded down
    burn = ledger.burn(member_id, 7, at(12))
    ledger.reverse(first.transaction.transaction_id, 3, at(13))
    ledger.reverse(burn.transaction.transaction_id, 2, at(14))
    february = ledger.earn(member_id, 500, at(2, 2))  # after the period: next statement
    air_member = ledger.member("test-air")
    ledger.earn(air_member, 1_000, at(15), partner_id="test-air")  # another partner's
    return {
        "december": december.transaction.transaction_id,
        "february": february.transaction.transaction_id,
    }


def test_statement_holds_the_partners_entries_totals_and_money(
    engine: Engine,
    ledger: Ledger,
    signer: Signer,
    public_key: bytes,
    exporter: Callable[[str], Path],
) -> None:
    january_traffic(ledger)
    (result,) = settle(engine, signer, JANUARY)
    statement = result.statement
    body = statement.body_document()
    assert result.created
    assert (statement.statement_id, statement.sequence_number) == ("test-coffee-20260131", 1)
    assert body["period"] == {"last_day": "2026-01-31", "end_time": "2026-02-01T00:00:00.000000Z"}
    assert body["currency"] == "CNY"
    assert body["entry_count"] == "6"  # December's unsettled earn, five of January's
    assert body["points"] == {
        "issued": "31",
        "issued_reversed": "3",
        "redeemed": "7",
        "redeemed_reversed": "2",
        "expired": "0",
    }
    # v2025: 1 x 6.0 = 6; v2026: 27 x 6.0 = 162 owed by the partner and 5 x 4.5 = 22.5,
    # half to even 22, owed by the hub.
    assert body["money"] == {
        "owed_by_partner_minor": "168",
        "owed_by_hub_minor": "22",
        "net_minor": "146",
        "net_direction": "partner_pays_hub",
    }
    assert [row["rate_version_id"] for row in body["rate_versions"]] == [V2025, V2026]
    assert body["rate_versions"][1]["issuance_price_minor_per_point"] == "6.0"
    assert body["previous_statement_hash"] == GENESIS_HASH
    assert body["signing_key_id"] == signing.key_id_of(public_key)
    assert signing.statement_signature_valid(public_key, statement.body, statement.signature)
    verification = verify_export(exporter(statement.statement_id), public_key)
    assert verification.failures == []


def test_every_partner_gets_a_statement_and_an_idle_one_is_empty(
    engine: Engine, ledger: Ledger, signer: Signer
) -> None:
    january_traffic(ledger)
    results = settle(engine, signer, JANUARY, partner_id=None)
    by_partner = {result.statement.partner_id: result.statement for result in results}
    assert sorted(by_partner) == ["test-air", "test-cinema", "test-coffee"]
    assert by_partner["test-air"].entry_count == 1
    cinema = by_partner["test-cinema"]
    assert (cinema.entry_count, cinema.merkle_root) == (0, EMPTY_ROOT.hex())
    assert cinema.body_document()["money"]["net_direction"] == "even"


def test_a_closed_period_returns_the_existing_statement_and_writes_nothing(
    engine: Engine, ledger: Ledger, signer: Signer
) -> None:
    january_traffic(ledger)
    (first,) = settle(engine, signer, JANUARY)
    rows_before = _row_counts(engine)
    (again,) = settle(engine, signer, JANUARY, now=datetime(2026, 7, 1, tzinfo=UTC))
    assert not again.created
    assert again.statement == first.statement
    assert _row_counts(engine) == rows_before


def test_late_entries_roll_into_the_next_statement_which_chains_to_the_first(
    engine: Engine,
    ledger: Ledger,
    signer: Signer,
    public_key: bytes,
    exporter: Callable[[str], Path],
) -> None:
    ids = january_traffic(ledger)
    (january,) = settle(engine, signer, JANUARY)
    # Committed after January was settled, though stamped inside January.
    late = ledger.earn(ledger.member(), 2_000, at(30))
    (february,) = settle(engine, signer, FEBRUARY)
    assert february.statement.sequence_number == 2
    assert february.statement.previous_statement_hash == january.statement.statement_hash
    with UnitOfWork(engine, read_only=True) as uow:
        listed = [
            entry.transaction_id
            for entry in service.stream_entries(
                lambda: UnitOfWork(engine, read_only=True), february.statement.statement_id, None
            )
        ]
        assert service.get_statement(uow, january.statement.statement_id, None).entry_count == 6
    assert listed == [ids["february"], late.transaction.transaction_id]
    january_directory = exporter(january.statement.statement_id)
    february_directory = exporter(february.statement.statement_id)
    assert verify_export(february_directory, public_key, january_directory).failures == []


def test_every_entry_lands_once_per_partner(engine: Engine, ledger: Ledger, signer: Signer) -> None:
    january_traffic(ledger)
    settle(engine, signer, JANUARY, partner_id=None)
    settle(engine, signer, FEBRUARY, partner_id=None)
    with engine.connect() as connection:
        entry_count = connection.execute(
            select(func.count()).select_from(settlement_entries)
        ).scalar_one()
        statement_entries = connection.execute(
            select(func.sum(settlement_statements.c.entry_count))
        ).scalar_one()
        orphans = connection.execute(
            select(func.count())
            .select_from(settlement_entries)
            .where(
                settlement_entries.c.statement_id.not_in(
                    select(settlement_statements.c.statement_id)
                )
            )
        ).scalar_one()
    assert entry_count == statement_entries == 8  # 7 of coffee, 1 of air
    assert orphans == 0


@pytest.mark.parametrize(
    ("period", "partner_id", "error", "reason"),
    [
        (date(2026, 5, 31), "test-coffee", FailedPrecondition, "PERIOD_NOT_ENDED"),
        (JANUARY, "no-such-partner", NotFound, "PARTNER_NOT_FOUND"),
    ],
)
def test_refusals_write_nothing(
    engine: Engine,
    ledger: Ledger,
    signer: Signer,
    period: date,
    partner_id: str,
    error: type[Exception],
    reason: str,
) -> None:
    january_traffic(ledger)
    rows_before = _row_counts(engine)
    with pytest.raises(error) as raised:
        settle(engine, signer, period, partner_id, now=datetime(2026, 5, 31, 23, tzinfo=UTC))
    assert raised.value.reason == reason  # type: ignore[attr-defined]
    assert _row_counts(engine) == rows_before


def test_a_period_before_the_last_statement_is_refused(
    engine: Engine, ledger: Ledger, signer: Signer
) -> None:
    january_traffic(ledger)
    settle(engine, signer, FEBRUARY)
    rows_before = _row_counts(engine)
    with pytest.raises(FailedPrecondition) as raised:
        settle(engine, signer, JANUARY)
    assert raised.value.reason == "PERIOD_BEFORE_LAST_STATEMENT"
    assert _row_counts(engine) == rows_before


def test_rotation_retires_the_old_key_which_stays_published_and_can_no_longer_sign(
    engine: Engine,
    ledger: Ledger,
    signing_key_path: Path,
    signer: Signer,
    public_key: bytes,
    exporter: Callable[[str], Path],
) -> None:
    january_traffic(ledger)
    (january,) = settle(engine, signer, JANUARY)
    rotated = keys.rotate(UnitOfWork(engine), signing_key_path, datetime(2026, 2, 15, tzinfo=UTC))
    assert signing_key_path.stat().st_mode & 0o777 == 0o600
    new_signer = Signer.from_file(signing_key_path)
    assert new_signer.key_id == rotated.key_id != signer.key_id
    with pytest.raises(FailedPrecondition) as refused:
        settle(engine, signer, FEBRUARY)
    assert refused.value.reason == "SIGNING_KEY_NOT_ACTIVE"
    (february,) = settle(engine, new_signer, FEBRUARY)
    assert february.statement.signing_key_id == rotated.key_id
    with UnitOfWork(engine, read_only=True) as uow:
        published = keys.list_keys(uow)
    assert [(key.key_id, key.valid_until) for key in published] == [
        (signer.key_id, datetime(2026, 2, 15, tzinfo=UTC)),
        (rotated.key_id, None),
    ]
    # The January statement still verifies with the retired key, and only with it.
    january_directory = exporter(january.statement.statement_id)
    assert verify_export(january_directory, public_key).ok
    assert not verify_export(january_directory, rotated.public_key).ok


def test_generate_refuses_a_second_active_key(engine: Engine, signing_key_path: Path) -> None:
    other_path = signing_key_path.with_name("other.pem")
    with pytest.raises(FailedPrecondition) as refused:
        keys.generate(UnitOfWork(engine), other_path, SETTLE_NOW)
    assert refused.value.reason == "SIGNING_KEY_EXISTS"
    assert not other_path.exists()


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (settlement_statements, settlement_entries)
        }


def test_statement_body_is_canonical_json_with_integers_as_strings(
    engine: Engine, ledger: Ledger, signer: Signer
) -> None:
    january_traffic(ledger)
    (result,) = settle(engine, signer, JANUARY)

    def numbers_in(value: object) -> list[object]:
        if isinstance(value, dict):
            return [n for item in value.values() for n in numbers_in(item)]
        if isinstance(value, list):
            return [n for item in value for n in numbers_in(item)]
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []

    assert numbers_in(json.loads(result.statement.body)) == []


def test_a_captured_hold_settles_at_the_holds_rate(
    engine: Engine,
    ledger: Ledger,
    signer: Signer,
    public_key: bytes,
    exporter: Callable[[str], Path],
) -> None:
    """A capture is a redemption priced at its hold's rate version (docs/programme.md)."""
    member_id = ledger.member()
    ledger.earn(member_id, 10_000, at(10))  # 20 points
    command = operations.AuthorizeCommand(
        request_id="hold-1",
        member=MemberReference(member_id=member_id),
        ttl=timedelta(minutes=15),
        points=8,
    )
    held = operations.authorize_burn(UnitOfWork(engine), "test-coffee", command, at(11))
    capture = operations.CaptureCommand("capture-1", held.hold.hold_id, 6)
    captured = operations.capture_burn(
        UnitOfWork(engine), "test-coffee", capture, at(11) + timedelta(minutes=1)
    )
    assert captured.transaction.rate_version_id == V2026
    (january,) = settle(engine, signer, JANUARY)
    body = january.statement.body_document()
    assert body["points"]["redeemed"] == "6"
    assert body["money"]["owed_by_hub_minor"] == "27"  # 6 x 4.5
    assert verify_export(exporter(january.statement.statement_id), public_key).failures == []
    # and the partner stays settleable
    (february,) = settle(engine, signer, FEBRUARY)
    assert february.statement.sequence_number == 2
