"""The event outbox read path: cursors, late commits, partner isolation (both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert

from coalition.events.outbox import commit_xid
from coalition.events.stream import START, Cursor, parse_cursor, read_events
from coalition.store.schema import events
from coalition.store.unit_of_work import UnitOfWork
from tests.programme.conftest import authorize, burn, capture, earn, enroll, now

pytestmark = pytest.mark.integration


def read_all(engine: Engine, partner_id: str, after: Cursor = START) -> list[tuple[str, int]]:
    with UnitOfWork(engine, read_only=True) as uow:
        return [
            (event.kind, event.points_delta or 0)
            for event in read_events(uow, partner_id, after, 500)
        ]


def test_each_partner_reads_only_its_own_events_in_order(engine: Engine) -> None:
    member_id = enroll(engine, "test-air")
    earn(engine, member_id, 5_000, "test-air")
    earn(engine, member_id, 500, "test-cinema")
    held = authorize(engine, member_id, 20, "test-air")
    capture(engine, held.hold.hold_id, 15, "test-air")
    burn(engine, member_id, 3, "test-cinema")
    assert read_all(engine, "test-air") == [
        ("earned", 50),
        ("held", -20),
        ("captured", 5),
    ]
    assert read_all(engine, "test-cinema") == [("earned", 5), ("burned", -3)]
    assert read_all(engine, "test-coffee") == []


def test_resuming_from_any_cursor_gives_the_rest_exactly_once(engine: Engine) -> None:
    member_id = enroll(engine, "test-air")
    for amount in range(100, 1_100, 100):
        earn(engine, member_id, amount, "test-air")
    with UnitOfWork(engine, read_only=True) as uow:
        everything = read_events(uow, "test-air", START, 500)
        for index, event in enumerate(everything):
            rest = read_events(uow, "test-air", event.cursor, 3)
            assert rest == everything[index + 1 : index + 4]
    assert [event.points_delta for event in everything] == list(range(1, 11))
    assert [parse_cursor(event.cursor.text()) for event in everything] == [
        event.cursor for event in everything
    ]


@pytest.mark.parametrize(
    "text",
    ["x", "1-", "-1", "1-2-3", "1.2", " 1-2", "1" * 20 + "-1", f"{2**63}-1", f"1-{2**63}"],
)
def test_malformed_cursors_are_not_cursors(text: str) -> None:
    assert parse_cursor(text) is None


def test_a_late_commit_is_never_skipped(engine: Engine, database_url: str) -> None:
    """Transaction A writes an event first, B writes one after and commits first: a reader
    must not move past A's event before A commits (PostgreSQL; SQLite has one writer)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: commit order is id order there")
    member_id = enroll(engine, "test-air")

    def event_row(uow: UnitOfWork, points: int) -> dict[str, object]:
        return {
            "partner_id": "test-air",
            "commit_xid": commit_xid(uow),
            "kind": "earned",
            "member_id": member_id,
            "points_delta": points,
            "create_time": now(),
        }

    with UnitOfWork(engine) as slow:
        slow.connection.execute(insert(events).values(event_row(slow, 1)))
        with UnitOfWork(engine) as fast:
            fast.connection.execute(insert(events).values(event_row(fast, 2)))
            fast.commit()
        assert read_all(engine, "test-air") == [], "B waits behind A, which may still commit"
        slow.commit()
    assert read_all(engine, "test-air") == [("earned", 1), ("earned", 2)]
