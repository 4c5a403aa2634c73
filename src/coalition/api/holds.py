"""Parsing and mapping for PointsService.AuthorizeBurn / CaptureBurn / VoidBurn.

The servicer methods in api/points.py delegate here; this module only parses, calls the
service functions of operations/holds.py and maps the results.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from coalition import operations
from coalition.api import responses
from coalition.api.privacy import MemberPrivacy
from coalition.api.requests import PARTNER_REFERENCE_LENGTH_MAX, RequestParser
from coalition.identity.privacy import BALANCE
from coalition.ledger.holds import Hold
from coalition.operations.holds import HOLD_TTL_DEFAULT, HOLD_TTL_MAX, HoldResult
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import points_service_pb2 as messages

HOLD_STATUSES = {
    "open": messages.HOLD_STATUS_OPEN,
    "captured": messages.HOLD_STATUS_CAPTURED,
    "voided": messages.HOLD_STATUS_VOIDED,
    "expired": messages.HOLD_STATUS_EXPIRED,
}


def authorize_burn(
    unit_of_work: Callable[..., UnitOfWork],
    privacy: MemberPrivacy,
    request: messages.AuthorizeBurnRequest,
) -> messages.AuthorizeBurnResponse:
    parser = RequestParser()
    basis = request.WhichOneof("basis")
    if basis is None:
        parser.fault("basis", "required: points or value")
    value = parser.money(request.value, "value") if basis == "value" else None
    points = parser.points(request.points, "points") if basis == "points" else None
    request_id = parser.request_id(request.request_id)
    member = parser.member(request)
    ttl = _ttl(parser, request)
    occurred_at = parser.timestamp(request, "occurred_at")
    partner_reference = parser.text(
        request.partner_reference, "partner_reference", PARTNER_REFERENCE_LENGTH_MAX
    )
    parser.done()  # before the command: it asserts what the parser has just checked
    privacy.require(member, BALANCE)  # as a burn: the answer tells the balance
    command = operations.AuthorizeCommand(
        request_id, member, ttl, points, value, occurred_at, partner_reference
    )
    result = operations.authorize_burn(unit_of_work(), privacy.partner_id, command, _now())
    visible = result.hold.member_id in privacy.balance_visible({result.hold.member_id})
    return messages.AuthorizeBurnResponse(
        transaction=responses.transaction(result.transaction, visible),
        hold=hold_message(result.hold),
        points=result.points,
        balance_points=result.balance_points if visible else 0,
        replayed=result.replayed,
    )


def capture_burn(
    unit_of_work: Callable[..., UnitOfWork],
    privacy: MemberPrivacy,
    request: messages.CaptureBurnRequest,
) -> messages.CaptureBurnResponse:
    parser = RequestParser()
    command = operations.CaptureCommand(
        request_id=parser.request_id(request.request_id),
        hold_id=parser.transaction_id(request.hold_id, "hold_id"),
        points=parser.points(request.points, "points", zero_allowed=True),
    )
    parser.done()
    result = operations.capture_burn(unit_of_work(), privacy.partner_id, command, _now())
    return messages.CaptureBurnResponse(
        points_released=result.points_released, **_close_fields(result, privacy)
    )


def void_burn(
    unit_of_work: Callable[..., UnitOfWork],
    privacy: MemberPrivacy,
    request: messages.VoidBurnRequest,
) -> messages.VoidBurnResponse:
    parser = RequestParser()
    command = operations.VoidCommand(
        request_id=parser.request_id(request.request_id),
        hold_id=parser.transaction_id(request.hold_id, "hold_id"),
    )
    parser.done()
    result = operations.void_burn(unit_of_work(), privacy.partner_id, command, _now())
    return messages.VoidBurnResponse(**_close_fields(result, privacy))


def hold_message(hold: Hold) -> messages.Hold:
    return messages.Hold(
        hold_id=str(hold.hold_id),
        member_id=hold.member_id,
        points_held=hold.points_held,
        status=HOLD_STATUSES[hold.status],
        expire_time=responses.timestamp(hold.expire_time),
        points_captured=hold.points_captured or 0,
        close_transaction_id=str(hold.close_transaction_id or ""),
    )


def _close_fields(result: HoldResult, privacy: MemberPrivacy) -> dict[str, Any]:
    visible = result.hold.member_id in privacy.balance_visible({result.hold.member_id})
    return {
        "transaction": responses.transaction(result.transaction, visible),
        "hold": hold_message(result.hold),
        "points": result.points,
        "balance_points": result.balance_points if visible else 0,
        "replayed": result.replayed,
    }


def _ttl(parser: RequestParser, request: messages.AuthorizeBurnRequest) -> timedelta:
    if not request.HasField("ttl"):
        return HOLD_TTL_DEFAULT
    ttl = parser.duration(request, "ttl")
    if ttl is None:  # malformed, and already reported
        return HOLD_TTL_DEFAULT
    if not timedelta(0) < ttl <= HOLD_TTL_MAX:
        parser.fault("ttl", f"must be positive and at most {int(HOLD_TTL_MAX.total_seconds())} s")
        return HOLD_TTL_DEFAULT
    # Whole seconds: the TTL is part of the request fingerprint (in seconds), so a
    # sub-second part would either be lost or make two different TTLs one request.
    if ttl.microseconds:
        parser.fault("ttl.nanos", "whole seconds only: must be 0")
        return HOLD_TTL_DEFAULT
    return ttl


def _now() -> datetime:
    return datetime.now(UTC)
