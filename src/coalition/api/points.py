"""PointsService: earn, burn, reverse, quote, balances, transaction lists."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from coalition import operations
from coalition.api import holds, responses
from coalition.api.errors import status_code_of
from coalition.api.interceptors import caller_partner_id
from coalition.api.privacy import MemberPrivacy
from coalition.api.requests import PARTNER_REFERENCE_LENGTH_MAX, RequestParser, page_token_for
from coalition.domain.errors import CoalitionError
from coalition.identity.privacy import BALANCE
from coalition.operations import batch_earn
from coalition.operations.group_commit import Committer
from coalition.operations.points import LedgerResult
from coalition.programme.config import Programme
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, points_service_pb2_grpc
from coalition.v1 import points_service_pb2 as messages

# BatchEarn's mode -> all or nothing.
BATCH_EARN_MODES = {
    messages.BATCH_EARN_MODE_ALL_OR_NOTHING: True,
    messages.BATCH_EARN_MODE_PER_ITEM: False,
}


def _now() -> datetime:
    return datetime.now(UTC)


class PointsServicer(points_service_pb2_grpc.PointsServiceServicer):
    def __init__(
        self, unit_of_work: Callable[..., UnitOfWork], committer: Committer, programme: Programme
    ) -> None:
        self._unit_of_work = unit_of_work
        self._committer = committer  # holds the same programme for Earn's groups
        self._programme = programme  # the hub's, for BatchEarn

    def _privacy(self) -> MemberPrivacy:
        return MemberPrivacy(self._unit_of_work, caller_partner_id())

    def Earn(
        self, request: messages.EarnRequest, context: grpc.ServicerContext
    ) -> messages.EarnResponse:
        command = _earn_command(request)
        answer = self._committer.earn(caller_partner_id(), command, context.time_remaining())
        return messages.EarnResponse(**_earn_fields(answer.result, answer.balance_visible))

    def BatchEarn(
        self, request: messages.BatchEarnRequest, context: grpc.ServicerContext
    ) -> messages.BatchEarnResponse:
        parser = RequestParser()
        if not 0 < len(request.items) <= batch_earn.BATCH_EARN_ITEMS_MAX:
            parser.fault("items", f"1 to {batch_earn.BATCH_EARN_ITEMS_MAX} earns")
        all_or_nothing = parser.choice(request.mode, BATCH_EARN_MODES, "mode")
        parser.done()
        items: list[operations.EarnCommand | CoalitionError] = []
        for item in request.items:
            try:
                items.append(_earn_command(item))
            except CoalitionError as error:
                items.append(error)
        assert all_or_nothing is not None
        result = batch_earn.batch_earn(
            self._unit_of_work(),
            self._programme,
            caller_partner_id(),
            items,
            all_or_nothing,
            _now(),
        )
        return messages.BatchEarnResponse(
            results=[_batch_earn_result(outcome) for outcome in result.outcomes],
            applied_count=result.applied_count,
            replayed_count=result.replayed_count,
            failed_count=result.failed_count,
        )

    def Burn(
        self, request: messages.BurnRequest, context: grpc.ServicerContext
    ) -> messages.BurnResponse:
        parser = RequestParser()
        basis = request.WhichOneof("basis")
        if basis is None:
            parser.fault("basis", "required: points or value")
        value = parser.money(request.value, "value") if basis == "value" else None
        points = request.points if basis == "points" else None
        if points is not None:
            parser.points(points, "points")
        request_id = parser.request_id(request.request_id)
        member = parser.member(request)
        occurred_at = parser.timestamp(request, "occurred_at")
        partner_reference = parser.text(
            request.partner_reference, "partner_reference", PARTNER_REFERENCE_LENGTH_MAX
        )
        parser.done()
        command = operations.BurnCommand(
            request_id, member, points, value, occurred_at, partner_reference
        )
        # The answer tells the balance (INSUFFICIENT_POINTS names it): the burn is refused
        # unless the caller sees it (operations/batch_burn.py).
        answer = self._committer.burn(caller_partner_id(), command, context.time_remaining())
        assert answer.balance_visible, "a burn applies only for a caller who sees the balance"
        return messages.BurnResponse(**_ledger_fields(answer.result, True))

    def Reverse(
        self, request: messages.ReverseRequest, context: grpc.ServicerContext
    ) -> messages.ReverseResponse:
        parser = RequestParser()
        command = operations.ReverseCommand(
            request_id=parser.request_id(request.request_id),
            transaction_id=parser.transaction_id(request.transaction_id, "transaction_id"),
            points=parser.points(request.points, "points", zero_allowed=True),
            reason=parser.text(request.reason, "reason"),
        )
        parser.done()
        result = operations.reverse(self._unit_of_work(), caller_partner_id(), command, _now())
        member_id = result.transaction.member_id
        visible = member_id in self._privacy().balance_visible({member_id})
        return messages.ReverseResponse(**_ledger_fields(result, visible))

    def Quote(
        self, request: messages.QuoteRequest, context: grpc.ServicerContext
    ) -> messages.QuoteResponse:
        parser = RequestParser()
        operation = request.WhichOneof("operation")
        if operation is None:
            parser.fault(
                "operation", "required: earn_spend, earn_native_points, burn_value or burn_points"
            )
        command = operations.QuoteCommand(
            earn_spend=parser.money(request.earn_spend, "earn_spend")
            if operation == "earn_spend"
            else None,
            earn_native_points=(
                parser.points(request.earn_native_points, "earn_native_points")
                if operation == "earn_native_points"
                else None
            ),
            burn_value=parser.money(request.burn_value, "burn_value")
            if operation == "burn_value"
            else None,
            burn_points=(
                parser.points(request.burn_points, "burn_points")
                if operation == "burn_points"
                else None
            ),
            occurred_at=parser.timestamp(request, "occurred_at"),
            member=parser.member(request) if request.HasField("member") else None,
        )
        parser.done()
        if command.member is not None:
            self._privacy().require(command.member, BALANCE)
        result = operations.quote(
            self._unit_of_work(read_only=True), caller_partner_id(), command, _now()
        )
        return messages.QuoteResponse(
            points=result.points,
            value=responses.money(result.value),
            rate_version_id=result.rate_version_id,
            balance_points=result.balance_points or 0,
            sufficient_balance=bool(result.sufficient_balance),
        )

    def GetBalance(
        self, request: messages.GetBalanceRequest, context: grpc.ServicerContext
    ) -> messages.GetBalanceResponse:
        parser = RequestParser()
        member = parser.member(request)
        as_of = parser.timestamp(request, "as_of")
        parser.done()
        self._privacy().require(member, BALANCE)
        balance = operations.get_balance(
            self._unit_of_work(read_only=True), caller_partner_id(), member, as_of, _now()
        )
        return messages.GetBalanceResponse(
            member_id=balance.member_id,
            balance_points=balance.balance_points,
            as_of=responses.timestamp(balance.as_of),
            held_points=balance.held_points,
        )

    def AuthorizeBurn(
        self, request: messages.AuthorizeBurnRequest, context: grpc.ServicerContext
    ) -> messages.AuthorizeBurnResponse:
        return holds.authorize_burn(self._unit_of_work, self._privacy(), request)

    def CaptureBurn(
        self, request: messages.CaptureBurnRequest, context: grpc.ServicerContext
    ) -> messages.CaptureBurnResponse:
        return holds.capture_burn(self._unit_of_work, self._privacy(), request)

    def VoidBurn(
        self, request: messages.VoidBurnRequest, context: grpc.ServicerContext
    ) -> messages.VoidBurnResponse:
        return holds.void_burn(self._unit_of_work, self._privacy(), request)

    def ListTransactions(
        self, request: messages.ListTransactionsRequest, context: grpc.ServicerContext
    ) -> messages.ListTransactionsResponse:
        parser = RequestParser()
        member = parser.member(request) if request.HasField("member") else None
        page_size = parser.page_size(request.page_size)
        query = {
            "caller": caller_partner_id(),
            "page_size": page_size,
            "member": request.member.SerializeToString().hex(),
        }
        before_transaction_id = parser.page_token(request.page_token, query)
        parser.done()
        records = operations.list_transactions(
            self._unit_of_work(read_only=True),
            caller_partner_id(),
            member,
            before_transaction_id,
            page_size + 1,  # one more than asked tells whether another page exists
        )
        page = records[:page_size]
        visible = self._privacy().balance_visible({record.member_id for record in page})
        next_page_token = (
            page_token_for(page[-1].transaction_id, query) if len(records) > page_size else ""
        )
        return messages.ListTransactionsResponse(
            transactions=[
                responses.transaction(record, record.member_id in visible) for record in page
            ],
            next_page_token=next_page_token,
        )


def _earn_command(request: messages.EarnRequest) -> operations.EarnCommand:
    parser = RequestParser()
    basis = request.WhichOneof("basis")
    if basis is None:
        parser.fault("basis", "required: spend or native_points")
    spend = parser.money(request.spend, "spend") if basis == "spend" else None
    native_points = request.native_points if basis == "native_points" else None
    if native_points is not None:
        parser.points(native_points, "native_points")
    request_id = parser.request_id(request.request_id)
    member = parser.member(request)
    occurred_at = parser.timestamp(request, "occurred_at")
    partner_reference = parser.text(
        request.partner_reference, "partner_reference", PARTNER_REFERENCE_LENGTH_MAX
    )
    parser.done()
    return operations.EarnCommand(
        request_id, member, spend, native_points, occurred_at, partner_reference
    )


def _batch_earn_result(outcome: batch_earn.BatchItemOutcome) -> messages.BatchEarnResult:
    if outcome.result is not None:
        return messages.BatchEarnResult(
            earn=messages.EarnResponse(**_earn_fields(outcome.result, outcome.balance_visible))
        )
    error = outcome.error
    assert error is not None
    return messages.BatchEarnResult(
        error=messages.BatchEarnItemError(
            code=status_code_of(error),
            reason=error.reason,
            message=error.message,
            metadata=error.metadata,
        )
    )


def _ledger_fields(result: LedgerResult, visible: bool) -> dict[str, Any]:
    """The answer to a ledger mutation; the balance only if the caller may see it."""
    return {
        "transaction": responses.transaction(result.transaction, visible),
        "points": result.points,
        "balance_points": result.balance_points if visible else 0,
        "replayed": result.replayed,
    }


def _earn_fields(result: LedgerResult, visible: bool) -> dict[str, Any]:
    """An earn's answer: what it credited, and the balance after all of it."""
    fields = _ledger_fields(result, visible)
    explanation = result.explanation
    assert explanation is not None, "every earn is explained (operations/batch_earn.py)"
    if visible:
        fields["balance_points"] = explanation.balance_points_after
    fields["base_points"] = explanation.base_points
    fields["bonuses"] = [
        messages.EarnBonus(
            rule_id=bonus.rule_id,
            promotion_id=bonus.rule_id.removeprefix("promotion:")
            if bonus.rule_id.startswith("promotion:")
            else "",
            points=bonus.points,
            funded_by=common_pb2.PROMOTION_FUNDING_COALITION
            if bonus.funding_partner_id is None
            else common_pb2.PROMOTION_FUNDING_PARTNER,
        )
        for bonus in explanation.bonuses
    ]
    if explanation.tier_change is not None:
        before, after = explanation.tier_change
        fields["tier_change"] = messages.TierChange(tier_id_before=before, tier_id_after=after)
    return fields
