"""A partner's client of the hub: typed calls of PointsService and MemberService.

Each call carries the API key and a deadline. A mutating request sent without a request_id
gets one (a UUID) before its first attempt, and every retry sends that same request, so a
retry can never apply an operation twice (AIP-155): the hub replays what the first attempt
did. Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED are retried with backoff, a
bounded number of times; any other refusal is final and raised at once as a `HubError`.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from coalition.client.errors import HubError
from coalition.client.retry import RetryPolicy
from coalition.v1 import (
    member_service_pb2,
    member_service_pb2_grpc,
    points_service_pb2,
    points_service_pb2_grpc,
)

CALL_TIMEOUT_SECONDS_DEFAULT = 10.0
_REQUEST_ID = "request_id"

Response = TypeVar("Response", bound=Message)


def new_request_id() -> str:
    return str(uuid.uuid4())


class HubClient:
    """One principal's calls on one channel. Thread-safe, as the channel is."""

    def __init__(
        self,
        channel: grpc.Channel,
        api_key: str,
        timeout_seconds: float = CALL_TIMEOUT_SECONDS_DEFAULT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout_seconds = timeout_seconds
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._random = random.Random()
        self._points = points_service_pb2_grpc.PointsServiceStub(channel)
        self._members = member_service_pb2_grpc.MemberServiceStub(channel)

    @classmethod
    @contextmanager
    def connect(cls, target: str, api_key: str, **options: Any) -> Iterator[HubClient]:
        """A client on a channel of its own to `target` (host:port, plaintext), closed after."""
        with grpc.insecure_channel(target) as channel:
            yield cls(channel, api_key, **options)

    # --- PointsService ---------------------------------------------------------------------

    def earn(self, request: points_service_pb2.EarnRequest) -> points_service_pb2.EarnResponse:
        return self._call(self._points.Earn, request, points_service_pb2.EarnResponse)

    def burn(self, request: points_service_pb2.BurnRequest) -> points_service_pb2.BurnResponse:
        return self._call(self._points.Burn, request, points_service_pb2.BurnResponse)

    def reverse(
        self, request: points_service_pb2.ReverseRequest
    ) -> points_service_pb2.ReverseResponse:
        return self._call(self._points.Reverse, request, points_service_pb2.ReverseResponse)

    def quote(self, request: points_service_pb2.QuoteRequest) -> points_service_pb2.QuoteResponse:
        return self._call(self._points.Quote, request, points_service_pb2.QuoteResponse)

    def get_balance(
        self, request: points_service_pb2.GetBalanceRequest
    ) -> points_service_pb2.GetBalanceResponse:
        return self._call(self._points.GetBalance, request, points_service_pb2.GetBalanceResponse)

    def list_transactions(
        self, request: points_service_pb2.ListTransactionsRequest
    ) -> points_service_pb2.ListTransactionsResponse:
        return self._call(
            self._points.ListTransactions, request, points_service_pb2.ListTransactionsResponse
        )

    def authorize_burn(
        self, request: points_service_pb2.AuthorizeBurnRequest
    ) -> points_service_pb2.AuthorizeBurnResponse:
        return self._call(
            self._points.AuthorizeBurn, request, points_service_pb2.AuthorizeBurnResponse
        )

    def capture_burn(
        self, request: points_service_pb2.CaptureBurnRequest
    ) -> points_service_pb2.CaptureBurnResponse:
        return self._call(self._points.CaptureBurn, request, points_service_pb2.CaptureBurnResponse)

    def void_burn(
        self, request: points_service_pb2.VoidBurnRequest
    ) -> points_service_pb2.VoidBurnResponse:
        return self._call(self._points.VoidBurn, request, points_service_pb2.VoidBurnResponse)

    def batch_earn(
        self, request: points_service_pb2.BatchEarnRequest
    ) -> points_service_pb2.BatchEarnResponse:
        return self._call(self._points.BatchEarn, request, points_service_pb2.BatchEarnResponse)

    # --- MemberService ---------------------------------------------------------------------

    def enroll_member(
        self, request: member_service_pb2.EnrollMemberRequest
    ) -> member_service_pb2.EnrollMemberResponse:
        return self._call(
            self._members.EnrollMember, request, member_service_pb2.EnrollMemberResponse
        )

    def link_partner_account(
        self, request: member_service_pb2.LinkPartnerAccountRequest
    ) -> member_service_pb2.LinkPartnerAccountResponse:
        return self._call(
            self._members.LinkPartnerAccount,
            request,
            member_service_pb2.LinkPartnerAccountResponse,
        )

    def unlink_partner_account(
        self, request: member_service_pb2.UnlinkPartnerAccountRequest
    ) -> member_service_pb2.UnlinkPartnerAccountResponse:
        return self._call(
            self._members.UnlinkPartnerAccount,
            request,
            member_service_pb2.UnlinkPartnerAccountResponse,
        )

    def resolve_member(
        self, request: member_service_pb2.ResolveMemberRequest
    ) -> member_service_pb2.ResolveMemberResponse:
        return self._call(
            self._members.ResolveMember, request, member_service_pb2.ResolveMemberResponse
        )

    def get_member_profile(
        self, request: member_service_pb2.GetMemberProfileRequest
    ) -> member_service_pb2.GetMemberProfileResponse:
        return self._call(
            self._members.GetMemberProfile, request, member_service_pb2.GetMemberProfileResponse
        )

    def update_consent(
        self, request: member_service_pb2.UpdateConsentRequest
    ) -> member_service_pb2.UpdateConsentResponse:
        return self._call(
            self._members.UpdateConsent, request, member_service_pb2.UpdateConsentResponse
        )

    def get_referral_code(
        self, request: member_service_pb2.GetReferralCodeRequest
    ) -> member_service_pb2.GetReferralCodeResponse:
        return self._call(
            self._members.GetReferralCode, request, member_service_pb2.GetReferralCodeResponse
        )

    # --- the one path of every call --------------------------------------------------------

    def _call(
        self,
        method: grpc.UnaryUnaryMultiCallable,
        request: Message,
        response_type: type[Response],
    ) -> Response:
        request = _with_request_ids(request)
        for attempt in range(1, self._retry.attempts_max + 1):
            try:
                response = method(request, metadata=self._metadata, timeout=self._timeout_seconds)
            except grpc.RpcError as error:
                failure = HubError.from_rpc_error(error)
                if not failure.retryable or attempt == self._retry.attempts_max:
                    raise failure from error
                self._sleep(self._retry.backoff_seconds(attempt, self._random))
                continue
            assert isinstance(response, response_type), type(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")


def _with_request_ids(request: Message) -> Message:
    """`request`, or a copy of it whose missing request ids (its own, or a batch's items')
    are filled in. That copy is what every attempt sends, so retries keep the ids."""
    if all(getattr(holder, _REQUEST_ID) for holder in _request_id_holders(request)):
        return request
    filled = type(request)()
    filled.CopyFrom(request)
    for holder in _request_id_holders(filled):
        if not getattr(holder, _REQUEST_ID):
            setattr(holder, _REQUEST_ID, new_request_id())
    return filled


def _request_id_holders(request: Message) -> list[Message]:
    if isinstance(request, points_service_pb2.BatchEarnRequest):
        return list(request.items)
    return [request] if _REQUEST_ID in request.DESCRIPTOR.fields_by_name else []
