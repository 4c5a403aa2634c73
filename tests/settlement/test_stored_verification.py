"""Verifying statements from the database (the integrity proof's hooks), on SQLite and
PostgreSQL: a clean settled ledger verifies, and each single corruption is named."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from coalition.settlement.service import Signer
from coalition.settlement.verify import settled_totals_match_ledger, verify_stored_statements
from coalition.store.unit_of_work import UnitOfWork
from tests.settlement.conftest import FEBRUARY, JANUARY, Ledger, settle
from tests.settlement.test_statements import january_traffic

pytestmark = pytest.mark.integration

WHOLE_TIME = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))
COFFEE_JANUARY = "test-coffee-20260131"
COFFEE_FEBRUARY = "test-coffee-20260228"
AIR_JANUARY = "test-air-20260131"


@dataclass(frozen=True)
class Settled:
    engine: Engine
    transactions: dict[str, int]


@pytest.fixture
def settled(engine: Engine, ledger: Ledger, signer: Signer) -> Settled:
    """January for every partner, then February for test-coffee (chained to January)."""
    transactions = january_traffic(ledger)
    settle(engine, signer, JANUARY, partner_id=None)
    settle(engine, signer, FEBRUARY)
    return Settled(engine, transactions)


def verified(engine: Engine) -> dict[str, list[str]]:
    with UnitOfWork(engine, read_only=True) as uow:
        return dict(verify_stored_statements(uow, *WHOLE_TIME))


def matched(engine: Engine) -> tuple[int, list[str]]:
    with UnitOfWork(engine, read_only=True) as uow:
        return settled_totals_match_ledger(uow, *WHOLE_TIME)


def failing(engine: Engine) -> dict[str, list[str]]:
    return {statement_id: f for statement_id, f in verified(engine).items() if f}


def corrupt(engine: Engine, sql: str, **parameters: object) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), parameters)


def prefixes(failures: list[str]) -> set[str]:
    return {failure.split(":")[0] for failure in failures}


def test_a_clean_settled_ledger_verifies(settled: Settled) -> None:
    results = verified(settled.engine)
    assert sorted(results) == [
        AIR_JANUARY,
        "test-cinema-20260131",
        COFFEE_JANUARY,
        COFFEE_FEBRUARY,
    ]
    assert all(failures == [] for failures in results.values())
    assert matched(settled.engine) == (4, [])


def test_the_window_selects_statements_by_generation_time(settled: Settled) -> None:
    with UnitOfWork(settled.engine, read_only=True) as uow:
        later = datetime(2030, 1, 1, tzinfo=UTC)
        assert list(verify_stored_statements(uow, later, WHOLE_TIME[1])) == []
        assert settled_totals_match_ledger(uow, later, WHOLE_TIME[1]) == (0, [])


def test_a_changed_total_is_named(settled: Settled) -> None:
    corrupt(
        settled.engine,
        """UPDATE settlement_statements SET body = REPLACE(body, '"issued":"31"', '"issued":"32"')
           WHERE statement_id = :statement_id""",
        statement_id=COFFEE_JANUARY,
    )
    failures = failing(settled.engine)
    assert sorted(failures) == [COFFEE_JANUARY, COFFEE_FEBRUARY]
    assert prefixes(failures[COFFEE_JANUARY]) == {"statement hash", "signature", "totals"}
    # February links to the body January was signed with, which no longer is the stored one.
    assert prefixes(failures[COFFEE_FEBRUARY]) == {"chain", "row"}
    assert any(f.startswith("totals: points is") for f in failures[COFFEE_JANUARY])
    checked, mismatches = matched(settled.engine)
    assert checked == 4
    assert mismatches == [
        f"{COFFEE_JANUARY}: points issued is 32 in the statement, 31 in the ledger's postings "
        "for its entries"
    ]


def test_a_changed_merkle_root_is_named(settled: Settled) -> None:
    forged = "ab" * 32
    corrupt(
        settled.engine,
        """UPDATE settlement_statements
           SET body = REPLACE(body, merkle_root, :forged), merkle_root = :forged
           WHERE statement_id = :statement_id""",
        forged=forged,
        statement_id=COFFEE_JANUARY,
    )
    failures = failing(settled.engine)
    assert sorted(failures) == [COFFEE_JANUARY, COFFEE_FEBRUARY]
    assert prefixes(failures[COFFEE_JANUARY]) == {
        "statement hash",
        "signature",
        "merkle root",
        "row",
    }
    assert prefixes(failures[COFFEE_FEBRUARY]) == {"chain", "row"}
    assert matched(settled.engine) == (4, [])  # the entries themselves still match the ledger


def test_a_changed_signature_is_named(settled: Settled) -> None:
    corrupt(
        settled.engine,
        """UPDATE settlement_statements SET signature = (
             SELECT other.signature FROM settlement_statements other
             WHERE other.statement_id = :other)
           WHERE statement_id = :statement_id""",
        other=COFFEE_FEBRUARY,
        statement_id=COFFEE_JANUARY,
    )
    failures = failing(settled.engine)
    assert list(failures) == [COFFEE_JANUARY]
    (failure,) = failures[COFFEE_JANUARY]
    assert failure.startswith("signature: does not verify")


def test_a_changed_previous_hash_is_named(settled: Settled) -> None:
    forged = "cd" * 32
    corrupt(
        settled.engine,
        """UPDATE settlement_statements
           SET body = REPLACE(body, previous_statement_hash, :forged),
               previous_statement_hash = :forged
           WHERE statement_id = :statement_id""",
        forged=forged,
        statement_id=COFFEE_FEBRUARY,
    )
    failures = failing(settled.engine)
    assert list(failures) == [COFFEE_FEBRUARY]
    assert prefixes(failures[COFFEE_FEBRUARY]) == {"statement hash", "signature", "chain", "row"}
    assert any(f'previous_statement_hash is "{forged}"' in f for f in failures[COFFEE_FEBRUARY])


def test_a_deleted_entry_is_named(settled: Settled) -> None:
    december = settled.transactions["december"]
    corrupt(
        settled.engine,
        "DELETE FROM settlement_entries WHERE partner_id = 'test-coffee' AND transaction_id = :t",
        t=december,
    )
    failures = failing(settled.engine)
    assert list(failures) == [COFFEE_JANUARY]
    assert prefixes(failures[COFFEE_JANUARY]) == {"merkle root", "totals", "row"}
    _, mismatches = matched(settled.engine)
    assert mismatches[0].startswith("unsettled: 1 transaction(s)")
    assert mismatches[0].endswith(f"e.g. test-coffee transaction {december}")
    assert prefixes(mismatches[1:]) == {COFFEE_JANUARY}


def test_an_entry_duplicated_into_another_partners_statement_is_named(settled: Settled) -> None:
    corrupt(
        settled.engine,
        """INSERT INTO settlement_entries (partner_id, transaction_id, statement_id, points)
           SELECT 'test-coffee', transaction_id, :statement_id, points FROM settlement_entries
           WHERE statement_id = :air""",
        statement_id=COFFEE_JANUARY,
        air=AIR_JANUARY,
    )
    failures = failing(settled.engine)
    assert list(failures) == [COFFEE_JANUARY]
    assert "merkle root" in prefixes(failures[COFFEE_JANUARY])
    _, mismatches = matched(settled.engine)
    # The foreign transaction posts nothing on test-coffee's accounts: no points to compare.
    (misplaced,) = mismatches
    assert misplaced.startswith("misplaced: 1 entr(ies)")


def test_an_entry_moved_to_an_earlier_statement_is_named(settled: Settled) -> None:
    february = settled.transactions["february"]
    corrupt(
        settled.engine,
        """UPDATE settlement_entries SET statement_id = :statement_id
           WHERE partner_id = 'test-coffee' AND transaction_id = :t""",
        statement_id=COFFEE_JANUARY,
        t=february,
    )
    failures = failing(settled.engine)
    assert sorted(failures) == [COFFEE_JANUARY, COFFEE_FEBRUARY]
    assert all("merkle root" in prefixes(f) for f in failures.values())
    _, mismatches = matched(settled.engine)
    assert mismatches[0] == (
        "misplaced: 1 entr(ies) name a transaction their statement could not claim (another "
        "partner's, or committed after the statement's period end), "
        f"e.g. test-coffee transaction {february}"
    )
    assert prefixes(mismatches[1:]) == {COFFEE_JANUARY, COFFEE_FEBRUARY}


def test_ledger_points_changed_after_settlement_are_named(settled: Settled) -> None:
    # One more point issued by the December earn, kept double-entry: the partner's posting and
    # the member's both move by one.
    corrupt(
        settled.engine,
        """UPDATE postings SET points = points + CASE
             WHEN account_id IN (SELECT account_id FROM accounts WHERE partner_id = 'test-coffee')
             THEN -1 ELSE 1 END
           WHERE transaction_id = :t
             AND (account_id IN (SELECT account_id FROM accounts WHERE partner_id = 'test-coffee')
                  OR account_id LIKE 'member:%')""",
        t=settled.transactions["december"],
    )
    # The statements are intact (their entries are the snapshot they were built from)...
    assert failing(settled.engine) == {}
    # ...but they no longer equal the ledger.
    assert matched(settled.engine) == (
        4,
        [
            f"{COFFEE_JANUARY}: points issued is 31 in the statement, 32 in the ledger's "
            "postings for its entries"
        ],
    )
