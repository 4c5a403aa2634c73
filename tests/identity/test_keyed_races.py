"""Every keyed RPC claims its request id before it reads anything, so that concurrent attempts
with one id apply once and the others replay it (never INTERNAL, never a spurious refusal)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, func, select

from coalition.api.bounds import CALLS_PER_MEMBER_MAX
from coalition.store.schema import journal_transactions, member_audit_events
from coalition.v1 import member_service_pb2 as messages
from tests.identity.support import Caller, new_id
from tests.integration.ledger_checks import assert_ledger_sound

pytestmark = pytest.mark.end_to_end

ATTEMPTS = CALLS_PER_MEMBER_MAX  # all admitted at once by one hub process


def all_at_once(call: Callable[[], Any], attempts: int = ATTEMPTS) -> list[Any]:
    """`call` from `attempts` threads released together; each answer or its status code."""
    barrier = threading.Barrier(attempts)

    def attempt() -> Any:
        barrier.wait()
        try:
            return call()
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(attempts) as pool:
        return list(pool.map(lambda _: attempt(), range(attempts)))


def audit_events(engine: Engine, kind: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                select(func.count()).where(member_audit_events.c.kind == kind)
            ).scalar_one()
        )


def test_concurrent_forgets_with_one_request_id_apply_once(
    coffee: Caller, admin: Caller, engine: Engine
) -> None:
    member_id = coffee.enroll("C-1", email="zhou@example.com").member.member_id
    coffee.earn(member_id, 10_000, "CNY")
    request = messages.ForgetMemberRequest(request_id="forget-1", member_id=member_id)
    answers = all_at_once(lambda: admin.call("ForgetMember", request))
    assert all(isinstance(a, messages.ForgetMemberResponse) for a in answers), answers
    assert sorted(a.replayed for a in answers) == [False] + [True] * (ATTEMPTS - 1)
    assert {(a.identifiers_erased, a.links_erased, a.balance_points) for a in answers} == {
        (1, 1, 20)
    }
    assert audit_events(engine, "forget") == 1
    assert_ledger_sound(engine)


def test_concurrent_merges_with_one_request_id_apply_once(
    coffee: Caller, admin: Caller, engine: Engine
) -> None:
    survivor, duplicate = (coffee.enroll().member.member_id for _ in range(2))
    coffee.earn(duplicate, 5_000, "CNY")
    request = messages.MergeMembersRequest(
        request_id=new_id(), survivor_member_id=survivor, duplicate_member_id=duplicate
    )
    answers = all_at_once(lambda: admin.call("MergeMembers", request))
    assert all(isinstance(a, messages.MergeMembersResponse) for a in answers), answers
    assert sorted(a.replayed for a in answers) == [False] + [True] * (ATTEMPTS - 1)
    assert {(a.merge.points_moved, a.merge.transaction_id) for a in answers} == {
        (10, answers[0].merge.transaction_id)
    }
    assert audit_events(engine, "merge") == 1
    with engine.connect() as connection:
        merges = select(func.count()).where(journal_transactions.c.kind == "merge")
        assert connection.execute(merges).scalar_one() == 1
    assert_ledger_sound(engine)
