"""The journal: the one place that inserts journal transactions and postings.

Every transaction is balanced (its postings sum to zero) and moves the balance cache of every
member account it posts to, in the same database transaction, under the members' row locks.
All but merges touch exactly one member account.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, select

from coalition.ledger import writer
from coalition.ledger.accounts import member_account_id
from coalition.ledger.writer import JournalEntry, Posting, TransactionRecord
from coalition.store import driver
from coalition.store.driver import IN_BIGINT_LIST, IN_LIST, Statement
from coalition.store.schema import journal_transactions, member_accounts
from coalition.store.unit_of_work import UnitOfWork

__all__ = ["JournalEntry", "Posting", "TransactionRecord"]


# Every statement on member accounts names the member (one shard on Citus, docs/scaling.md).
READ_BALANCE = Statement(
    "SELECT balance_points FROM member_accounts WHERE member_id = %s AND account_id = %s"
)
LOCK_BALANCE = Statement(f"{READ_BALANCE.postgresql} FOR UPDATE")
# FOR UPDATE with ORDER BY locks the rows in that order: concurrent groups never deadlock.
READ_BALANCES = Statement(
    "SELECT account_id, balance_points FROM member_accounts"
    f" WHERE member_id {IN_LIST} %s AND account_id {IN_LIST} %s ORDER BY account_id"
)
LOCK_BALANCES = Statement(f"{READ_BALANCES.postgresql} FOR UPDATE")
SURVIVOR = Statement("SELECT merged_into_member_id FROM members WHERE member_id = %s")


def lock_member_balance(uow: UnitOfWork, member_id: str) -> int:
    """Lock the member's account row for the rest of the unit of work; return its balance.

    Every ledger mutation takes this lock first (SELECT ... FOR UPDATE on PostgreSQL; SQLite
    already serialises writers), so all checks on a member's balance, lots and reversals see
    a state no other request can change before commit.
    """
    statement = LOCK_BALANCE if uow.dialect_name == "postgresql" else READ_BALANCE
    row = driver.execute(uow, statement, (member_id, member_account_id(member_id))).fetchone()
    assert row is not None, f"member {member_id} has its account"
    balance_points = int(row[0])
    assert balance_points >= 0, f"negative balance cache for member {member_id}"
    _refuse_merged_member(uow, member_id)
    return balance_points


def lock_member_balances(uow: UnitOfWork, member_ids: Iterable[str]) -> dict[str, int]:
    """Lock several members' account rows, in account-id order, so that requests locking
    overlapping sets never wait on each other in a circle; return balances by account id.

    Unlike `lock_member_balance` this does not refuse merged members: the ledger's first read
    after these locks does (writer.MembersMerged: the writer's, which reads the balances, or
    a debit's due-changes read, availability.lock_members_for_debit).
    """
    members = sorted(set(member_ids))
    account_ids = sorted(member_account_id(member_id) for member_id in members)
    if not account_ids:
        return {}
    statement = LOCK_BALANCES if uow.dialect_name == "postgresql" else READ_BALANCES
    if uow.is_citus:
        # Citus refuses a FOR UPDATE that spans shards: one member per statement, in the
        # same (account id) order, so the locks are still taken without cycles.
        balances = {
            member_account_id(member_id): row[0]
            for member_id in members
            if (
                row := driver.execute(
                    uow, LOCK_BALANCE, (member_id, member_account_id(member_id))
                ).fetchone()
            )
            is not None
        }
    else:
        balances = dict(driver.fetch_all(uow, statement, (members, account_ids)))
    return checked_balances(balances, account_ids)


def checked_balances(balances: dict[str, int], account_ids: list[str]) -> dict[str, int]:
    """The balances read under the members' locks, checked: one per account, none negative."""
    assert set(balances) == set(account_ids), "every member has its account"
    assert all(balance >= 0 for balance in balances.values()), "negative balance cache"
    return balances


def _refuse_merged_member(uow: UnitOfWork, member_id: str) -> None:
    # Read after the lock, in a statement of its own, so that it sees a merge that committed
    # while this request waited: a merged member's account is closed, and points posted to it
    # would be stranded. The caller resolved the member just before a merge; a retry resolves
    # it to the survivor.
    survivor_member_id = driver.execute(uow, SURVIVOR, (member_id,)).fetchone()[0]
    if survivor_member_id is not None:
        raise writer.member_merged(member_id, survivor_member_id)


def member_balance(uow: UnitOfWork, member_id: str) -> int:
    """The member's balance cache, without a lock (for reads)."""
    balance_points = uow.connection.execute(
        select(member_accounts.c.balance_points).where(
            member_accounts.c.member_id == member_id,
            member_accounts.c.account_id == member_account_id(member_id),
        )
    ).scalar_one()
    return int(balance_points)


def post(
    uow: UnitOfWork,
    entry: JournalEntry,
    now: datetime,
    result_of: tuple[str, str] | None = None,
) -> TransactionRecord:
    """Write one journal entry (the caller holds the locks of every member it posts to);
    `result_of` names the claim (partner, request id) whose result the transaction is."""
    return writer.write(uow, [entry], now, results=[result_of])[0]


# The points reversed of each parent, by its children wherever they are: a reversal after a
# merge posts to the survivor, so on Citus this reads every shard (docs/scaling.md).
CHILDREN_POINTS_DELTA = Statement(
    "SELECT parent_transaction_id, SUM(points_delta) FROM journal_transactions"
    f" WHERE parent_transaction_id {IN_BIGINT_LIST} %s GROUP BY parent_transaction_id"
)


def select_transactions() -> Select[Any]:
    """SELECT of journal rows, to be made records by `records_from_rows`."""
    return select(journal_transactions)


def records_from_rows(uow: UnitOfWork, rows: Iterable[Row[Any]]) -> list[TransactionRecord]:
    """Transaction records of journal rows, with the points already reversed of each (one
    more statement for all of them)."""
    rows = list(rows)
    children = _points_reversed(uow, [int(row.transaction_id) for row in rows])
    return [
        TransactionRecord(
            points_reversed=abs(int(children.get(row.transaction_id, 0))), **row._mapping
        )
        for row in rows
    ]


FIND_TRANSACTIONS = Statement(
    f"SELECT {writer.JOURNAL_COLUMNS} FROM journal_transactions"
    f" WHERE transaction_id {IN_BIGINT_LIST} %s"
)
_DATETIME_FIELDS = frozenset({"occurred_at", "create_time"})


def find_transactions(uow: UnitOfWork, transaction_ids: Iterable[int]) -> list[TransactionRecord]:
    """The records of the transactions with these ids (those that exist), in two statements
    on the driver's cursor whatever their number."""
    wanted = sorted(set(transaction_ids))
    if not wanted:
        return []
    rows = driver.execute(uow, FIND_TRANSACTIONS, (wanted,)).fetchall()
    children = _points_reversed(uow, [int(row[0]) for row in rows])
    names = ("transaction_id", *writer.JOURNAL_FIELDS)
    records = []
    for row in rows:
        fields: dict[str, Any] = {
            name: driver.utc_datetime(value) if name in _DATETIME_FIELDS else value
            for name, value in zip(names, row, strict=True)
        }
        reversed_points = abs(int(children.get(fields["transaction_id"], 0)))
        records.append(TransactionRecord(points_reversed=reversed_points, **fields))
    return records


def find_transaction(uow: UnitOfWork, transaction_id: int) -> TransactionRecord | None:
    records = find_transactions(uow, (transaction_id,))
    return records[0] if records else None


def _points_reversed(uow: UnitOfWork, transaction_ids: list[int]) -> dict[int, int]:
    if not transaction_ids:
        return {}
    return dict(driver.execute(uow, CHILDREN_POINTS_DELTA, (transaction_ids,)).fetchall())
