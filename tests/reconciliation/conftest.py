"""Reconciliation fixtures: a small real ledger, and the partner report that describes it.

The report is generated from the journal itself (so that it matches to the unit), then each
exception kind is planted exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from coalition import operations
from coalition.domain.points import Money
from coalition.identity import members
from coalition.identity.members import MemberReference
from coalition.operations.points import BurnCommand, EarnCommand, ReverseCommand
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.reconciliation.runs import rfc3339
from coalition.store.schema import journal_transactions, partner_links
from coalition.store.unit_of_work import UnitOfWork

PARTNER_ID = "test-coffee"
REPORT_FIELDS = (
    "request_id",
    "type",
    "points",
    "occurred_at",
    "partner_reference",
    "member",
    "amount_minor",
    "currency",
)


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Ledger:
    """A partner's operations; `requests` names them by role in the scenario."""

    engine: Engine
    requests: dict[str, str]
    window_start: datetime
    window_end: datetime

    def report_rows(self, partner_id: str = PARTNER_ID) -> list[dict[str, Any]]:
        """The partner's report as the ledger has it: every field, matching exactly."""
        j, link = journal_transactions.c, partner_links.c
        # The partner's links first (on Citus they are distributed by customer id, not by
        # member, so the journal cannot join them directly).
        links = (
            select(link.member_id, link.partner_customer_id)
            .where(link.partner_id == partner_id)
            .cte("links")
            .prefix_with("MATERIALIZED")
        )
        statement = (
            select(journal_transactions, links.c.partner_customer_id)
            .outerjoin(links, links.c.member_id == j.member_id)
            .where(j.partner_id == partner_id)
            .order_by(j.occurred_at, j.transaction_id)  # ids are not time-ordered on Citus
        )
        with self.engine.connect() as connection:
            return [_report_row(row) for row in connection.execute(statement)]


def _report_row(row: Any) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "type": row.kind,
        "points": abs(row.points_delta),
        "occurred_at": rfc3339(row.occurred_at),
        "partner_reference": row.partner_reference,
        "member": row.partner_customer_id,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
    }


def build_ledger(engine: Engine) -> Ledger:
    """Two linked members of test-coffee: earns, a burn, a partial reversal."""
    start = now().replace(microsecond=0) - timedelta(days=3)
    customers = {}
    for name in ("alice", "bob"):
        customers[name] = f"cust-{name}-{new_id()[:8]}"
        members.enroll(
            UnitOfWork(engine), PARTNER_ID, new_id(), customers[name], name.title(), now()
        )
    requests: dict[str, str] = {}

    def earn(role: str, customer: str, amount_minor: int, hours: int) -> int:
        requests[role] = f"{role}-{new_id()[:12]}"
        command = EarnCommand(
            request_id=requests[role],
            member=MemberReference(partner_customer_id=customers[customer]),
            spend=Money(amount_minor, "CNY"),
            occurred_at=start + timedelta(hours=hours),
            partner_reference=f"receipt-{role}",
        )
        return operations.earn(
            UnitOfWork(engine), DEFAULT_PROGRAMME, PARTNER_ID, command, now()
        ).transaction.transaction_id

    earn("earn_a", "alice", 100_000, 1)
    earn_b = earn("earn_b", "bob", 50_000, 2)
    earn("earn_c", "alice", 20_000, 3)
    earn("earn_d", "bob", 30_000, 4)
    requests["burn_a"] = f"burn_a-{new_id()[:12]}"
    operations.burn(
        UnitOfWork(engine),
        PARTNER_ID,
        BurnCommand(
            request_id=requests["burn_a"],
            member=MemberReference(partner_customer_id=customers["alice"]),
            points=50,
            occurred_at=start + timedelta(hours=5),
        ),
        now(),
    )
    requests["reverse_b"] = f"reverse_b-{new_id()[:12]}"
    operations.reverse(
        UnitOfWork(engine),
        PARTNER_ID,
        ReverseCommand(request_id=requests["reverse_b"], transaction_id=earn_b, points=30),
        now(),
    )
    # Another partner's operations never take part in test-coffee's run.
    members.enroll(UnitOfWork(engine), "test-air", new_id(), "air-1", "Carol", now())
    operations.earn(
        UnitOfWork(engine),
        DEFAULT_PROGRAMME,
        "test-air",
        EarnCommand(
            request_id=new_id(),
            member=MemberReference(partner_customer_id="air-1"),
            spend=Money(1000, "EUR"),
            occurred_at=start + timedelta(hours=1),
        ),
        now(),
    )
    return Ledger(engine, requests, start, now() + timedelta(minutes=1))


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    return build_ledger(engine)


@dataclass(frozen=True)
class PlantedReport:
    rows: list[dict[str, Any]]
    ghost_request_id: str
    missing_request_id: str
    mismatched_request_id: str
    duplicated_request_id: str
    mismatched_report_values: dict[str, str]


def planted_report(ledger: Ledger) -> PlantedReport:
    """Every exception kind exactly once; everything else matches (one within the second)."""
    rows = ledger.report_rows()
    by_request = {row["request_id"]: row for row in rows}
    missing = ledger.requests["earn_c"]
    mismatched = ledger.requests["earn_d"]
    duplicated = ledger.requests["burn_a"]
    rows = [row for row in rows if row["request_id"] != missing]
    # A fraction within the same second is no difference (compared to the second).
    first = by_request[ledger.requests["earn_a"]]
    first["occurred_at"] = first["occurred_at"].replace("Z", ".999999Z")
    wrong = by_request[mismatched]
    hub_occurred_at = datetime.fromisoformat(wrong["occurred_at"])
    wrong_values = {
        "points": str(wrong["points"] + 1),
        "occurred_at": rfc3339(hub_occurred_at + timedelta(seconds=2)),
        "partner_reference": "receipt-typo",
    }
    wrong.update(
        points=wrong["points"] + 1,
        occurred_at=wrong_values["occurred_at"],
        partner_reference="receipt-typo",
    )
    rows.append(dict(by_request[duplicated]))
    ghost = f"ghost-{new_id()[:12]}"
    rows.append(
        {
            "request_id": ghost,
            "type": "earn",
            "points": 7,
            "occurred_at": rfc3339(ledger.window_start + timedelta(hours=6)),
            "partner_reference": None,
            "member": None,
            "amount_minor": None,
            "currency": None,
        }
    )
    return PlantedReport(rows, ghost, missing, mismatched, duplicated, wrong_values)


def as_csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue().encode()


def as_jsonl(rows: list[dict[str, Any]]) -> bytes:
    lines = [json.dumps({k: v for k, v in row.items() if v is not None}) for row in rows]
    return ("\n".join(lines) + "\n").encode()


ENCODERS = {"csv": as_csv, "jsonl": as_jsonl}


def chunked(content: bytes, chunk_bytes: int = 97) -> list[bytes]:
    """Odd-sized chunks, so rows and UTF-8 sequences straddle chunk boundaries."""
    return [content[i : i + chunk_bytes] for i in range(0, len(content), chunk_bytes)]
