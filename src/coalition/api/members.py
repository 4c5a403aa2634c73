"""MemberService: enrolment, partner links, resolution, profiles."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from coalition.api import responses
from coalition.api.interceptors import current_principal
from coalition.api.requests import RequestParser
from coalition.identity import members
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import member_service_pb2 as messages
from coalition.v1 import member_service_pb2_grpc

DISPLAY_NAME_LENGTH_MAX = 200


def _member_message(member: members.Member) -> messages.Member:
    return messages.Member(
        member_id=member.member_id,
        display_name=member.display_name,
        create_time=responses.timestamp(member.create_time),
    )


def _caller_partner_id() -> str:
    partner_id = current_principal().partner_id
    assert partner_id is not None, "partner-scoped roles always belong to a partner"
    return partner_id


class MemberServicer(member_service_pb2_grpc.MemberServiceServicer):
    def __init__(self, unit_of_work: Callable[..., UnitOfWork]) -> None:
        self._unit_of_work = unit_of_work

    def EnrollMember(
        self, request: messages.EnrollMemberRequest, context: grpc.ServicerContext
    ) -> messages.EnrollMemberResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        customer_id = parser.identifier(request.partner_customer_id, "partner_customer_id")
        display_name = parser.text(request.display_name, "display_name", DISPLAY_NAME_LENGTH_MAX)
        parser.done()
        enrolment = members.enroll(
            self._unit_of_work(),
            _caller_partner_id(),
            request_id,
            customer_id,
            display_name or "",
            datetime.now(UTC),
        )
        return messages.EnrollMemberResponse(
            member=_member_message(enrolment.member),
            created=enrolment.created,
            replayed=enrolment.replayed,
        )

    def LinkPartnerAccount(
        self, request: messages.LinkPartnerAccountRequest, context: grpc.ServicerContext
    ) -> messages.LinkPartnerAccountResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        member_id = parser.identifier(request.member_id, "member_id")
        customer_id = parser.identifier(request.partner_customer_id, "partner_customer_id")
        parser.done()
        replayed = members.link_partner_account(
            self._unit_of_work(),
            _caller_partner_id(),
            request_id,
            member_id,
            customer_id,
            datetime.now(UTC),
        )
        return messages.LinkPartnerAccountResponse(
            member_id=member_id, partner_customer_id=customer_id, replayed=replayed
        )

    def ResolveMember(
        self, request: messages.ResolveMemberRequest, context: grpc.ServicerContext
    ) -> messages.ResolveMemberResponse:
        parser = RequestParser()
        customer_id = parser.identifier(request.partner_customer_id, "partner_customer_id")
        parser.done()
        member_id = members.resolve_member(
            self._unit_of_work(read_only=True), _caller_partner_id(), customer_id
        )
        return messages.ResolveMemberResponse(member_id=member_id)

    def GetMemberProfile(
        self, request: messages.GetMemberProfileRequest, context: grpc.ServicerContext
    ) -> messages.GetMemberProfileResponse:
        parser = RequestParser()
        reference = parser.member(request)
        parser.done()
        profile = members.get_profile(
            self._unit_of_work(read_only=True), _caller_partner_id(), reference
        )
        return messages.GetMemberProfileResponse(
            member=_member_message(profile.member),
            balance_points=profile.balance_points,
            linked_partner_ids=list(profile.linked_partner_ids),
        )
