"""MemberService: enrolment, identifiers, links, resolution, consent, profiles, merges and
member rights. Servicers only parse, call one service function and map its result."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime

import grpc

from coalition.api import responses
from coalition.api.interceptors import caller_partner_id, current_principal
from coalition.api.privacy import MemberPrivacy
from coalition.api.requests import RequestParser
from coalition.domain.errors import FailedPrecondition
from coalition.identity import consent, members, merge, privacy, profiles, rights
from coalition.identity.identifiers import (
    ContactIdentifier,
    IdentifierError,
    IdentifierHasher,
    normalise_email,
    normalise_phone,
)
from coalition.identity.secret import IdentitySecretError
from coalition.programme.config import Programme
from coalition.referrals import service as referral_service
from coalition.store.schema import CONSENT_SCOPES
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import member_service_pb2 as messages
from coalition.v1 import member_service_pb2_grpc

DISPLAY_NAME_LENGTH_MAX = 200
PREFERENCES_COUNT_MAX = 32
CONSENT_CHANGES_MAX = len(CONSENT_SCOPES)  # each scope at most once (member_service.proto)
PREFERENCE_KEY_PATTERN = re.compile(r"[a-z0-9_.\-]{1,64}")
PREFERENCE_VALUE_LENGTH_MAX = 256
BIRTHDAY_MIN = date(1900, 1, 1)
WITHHOLDING_REASONS = {
    privacy.Withholding.NOT_GRANTED: messages.WITHHOLDING_REASON_NOT_GRANTED,
    privacy.Withholding.REVOKED: messages.WITHHOLDING_REASON_REVOKED,
    privacy.Withholding.UNAVAILABLE: messages.WITHHOLDING_REASON_UNAVAILABLE,
}


class MemberServicer(member_service_pb2_grpc.MemberServiceServicer):
    def __init__(
        self,
        unit_of_work: Callable[..., UnitOfWork],
        programme: Programme,
        identifier_hasher: Callable[[], IdentifierHasher] | None = None,
    ) -> None:
        self._unit_of_work = unit_of_work
        self._programme = programme  # the hub's: a profile's tier is on its ladder
        self._hasher_factory = identifier_hasher
        self._hasher: IdentifierHasher | None = None
        self._hasher_lock = threading.Lock()

    def _identifier_hasher(self) -> IdentifierHasher:
        """Loaded on first use: a hub whose partners never send identifiers needs no secret."""
        with self._hasher_lock:
            if self._hasher is None:
                try:
                    assert self._hasher_factory is not None, "identifiers need an identity secret"
                    self._hasher = self._hasher_factory()
                except IdentitySecretError as error:
                    # The operator's mistake, not the caller's: say so instead of INTERNAL.
                    raise FailedPrecondition(
                        "IDENTITY_SECRET_NOT_CONFIGURED",
                        f"this hub cannot match contact identifiers: {error}",
                    ) from error
            return self._hasher

    def EnrollMember(
        self, request: messages.EnrollMemberRequest, context: grpc.ServicerContext
    ) -> messages.EnrollMemberResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        customer_id = parser.identifier(request.partner_customer_id, "partner_customer_id")
        display_name = parser.text(request.display_name, "display_name", DISPLAY_NAME_LENGTH_MAX)
        identifiers = _contact_identifiers(parser, request.email, request.phone)
        details = members.EnrolmentDetails(
            identifiers=identifiers,
            birthday=_birthday(parser, request.birthday),
            preferences=_preferences(parser, request.preferences),
        )
        referral_code = (
            parser.identifier(request.referral_code, "referral_code")
            if request.referral_code
            else None
        )
        parser.done()
        enrolment = members.enroll(
            self._unit_of_work(),
            caller_partner_id(),
            request_id,
            customer_id,
            display_name or "",
            datetime.now(UTC),
            details=details,
            hasher=self._identifier_hasher() if identifiers else None,
            referral_code=referral_code,
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
            caller_partner_id(),
            request_id,
            member_id,
            customer_id,
            datetime.now(UTC),
        )
        return messages.LinkPartnerAccountResponse(
            member_id=member_id, partner_customer_id=customer_id, replayed=replayed
        )

    def UnlinkPartnerAccount(
        self, request: messages.UnlinkPartnerAccountRequest, context: grpc.ServicerContext
    ) -> messages.UnlinkPartnerAccountResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        customer_id = parser.identifier(request.partner_customer_id, "partner_customer_id")
        parser.done()
        unlinking = members.unlink_partner_account(
            self._unit_of_work(), caller_partner_id(), request_id, customer_id, datetime.now(UTC)
        )
        return messages.UnlinkPartnerAccountResponse(
            member_id=unlinking.member_id,
            partner_customer_id=customer_id,
            replayed=unlinking.replayed,
        )

    def GetReferralCode(
        self, request: messages.GetReferralCodeRequest, context: grpc.ServicerContext
    ) -> messages.GetReferralCodeResponse:
        parser = RequestParser()
        if bool(request.member_id) == bool(request.partner_customer_id):
            parser.fault("member_id", "required: exactly one of member_id, partner_customer_id")
        else:
            given = "member_id" if request.member_id else "partner_customer_id"
            parser.identifier(getattr(request, given), given)
        parser.done()
        reference = members.MemberReference(
            member_id=request.member_id or None,
            partner_customer_id=request.partner_customer_id or None,
        )
        # A member's code is the member's own, for the brands it deals with.
        MemberPrivacy(self._unit_of_work, caller_partner_id()).require(reference)
        member_id, code = referral_service.get_referral_code(
            self._unit_of_work(), caller_partner_id(), reference, datetime.now(UTC)
        )
        return messages.GetReferralCodeResponse(member_id=member_id, referral_code=code)

    def ResolveMember(
        self, request: messages.ResolveMemberRequest, context: grpc.ServicerContext
    ) -> messages.ResolveMemberResponse:
        parser = RequestParser()
        given = [
            name for name in ("partner_customer_id", "email", "phone") if getattr(request, name)
        ]
        if len(given) != 1:
            parser.fault(
                "partner_customer_id" if not given else given[1],
                "required: exactly one of partner_customer_id, email, phone",
            )
            parser.done()
        if request.partner_customer_id:
            customer_id = parser.identifier(request.partner_customer_id, "partner_customer_id")
            parser.done()
            member_id = members.resolve_member(
                self._unit_of_work(read_only=True), caller_partner_id(), customer_id
            )
            return messages.ResolveMemberResponse(member_id=member_id)
        identifiers = _contact_identifiers(parser, request.email, request.phone)
        parser.done()  # an invalid identifier is refused here, before it is unpacked
        (identifier,) = identifiers
        member_id = members.resolve_member(
            self._unit_of_work(read_only=True),
            caller_partner_id(),
            identifier=identifier,
            hasher=self._identifier_hasher(),
        )
        return messages.ResolveMemberResponse(member_id=member_id)

    def UpdateConsent(
        self, request: messages.UpdateConsentRequest, context: grpc.ServicerContext
    ) -> messages.UpdateConsentResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        reference = parser.member(request)
        changes = _consent_changes(parser, request.changes)
        source = parser.identifier(request.source, "source", length_max=consent.SOURCE_LENGTH_MAX)
        occurred_at = parser.timestamp(request, "occurred_at")
        parser.done()
        update = consent.ConsentUpdate(request_id, reference, changes, source, occurred_at)
        result = consent.update_consent(
            self._unit_of_work(), caller_partner_id(), update, datetime.now(UTC)
        )
        return messages.UpdateConsentResponse(
            member_id=result.member_id,
            changes=[_consent_message(change) for change in result.changes],
            replayed=result.replayed,
        )

    def GetMemberProfile(
        self, request: messages.GetMemberProfileRequest, context: grpc.ServicerContext
    ) -> messages.GetMemberProfileResponse:
        parser = RequestParser()
        reference = parser.member(request)
        parser.done()
        principal = current_principal()
        reader = profiles.Reader(caller_partner_id(), principal.key_id, principal.role)
        profile = profiles.read_profile(
            self._unit_of_work(), reader, reference, self._programme.ladder, datetime.now(UTC)
        )
        return _profile_message(profile, reader.partner_id)

    def MergeMembers(
        self, request: messages.MergeMembersRequest, context: grpc.ServicerContext
    ) -> messages.MergeMembersResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        survivor_id = parser.identifier(request.survivor_member_id, "survivor_member_id")
        duplicate_id = parser.identifier(request.duplicate_member_id, "duplicate_member_id")
        parser.done()
        result = merge.merge_members(
            self._unit_of_work(),
            current_principal().principal_id,
            request_id,
            survivor_id,
            duplicate_id,
            datetime.now(UTC),
        )
        return messages.MergeMembersResponse(
            merge=messages.MemberMerge(
                survivor_member_id=result.survivor_member_id,
                duplicate_member_id=result.duplicate_member_id,
                transaction_id=str(result.transaction_id or ""),
                points_moved=result.points_moved,
                lots_moved=result.lots_moved,
                links_moved=result.links_moved,
                identifiers_moved=result.identifiers_moved,
                consents_moved=result.consents_moved,
                create_time=responses.timestamp(result.create_time),
            ),
            replayed=result.replayed,
        )

    def ExportMemberData(
        self, request: messages.ExportMemberDataRequest, context: grpc.ServicerContext
    ) -> messages.ExportMemberDataResponse:
        parser = RequestParser()
        member_id = parser.identifier(request.member_id, "member_id")
        parser.done()
        export = rights.export_member_data(
            self._unit_of_work(), current_principal().principal_id, member_id, datetime.now(UTC)
        )
        return _export_message(export)

    def ForgetMember(
        self, request: messages.ForgetMemberRequest, context: grpc.ServicerContext
    ) -> messages.ForgetMemberResponse:
        parser = RequestParser()
        request_id = parser.request_id(request.request_id)
        member_id = parser.identifier(request.member_id, "member_id")
        parser.done()
        result = rights.forget_member(
            self._unit_of_work(),
            current_principal().principal_id,
            request_id,
            member_id,
            datetime.now(UTC),
        )
        return messages.ForgetMemberResponse(
            member_id=result.member_id,
            forget_time=responses.timestamp(result.forget_time),
            identifiers_erased=result.identifiers_erased,
            links_erased=result.links_erased,
            balance_points=result.balance_points,
            replayed=result.replayed,
        )


def _contact_identifiers(
    parser: RequestParser, email: str, phone: str
) -> tuple[ContactIdentifier, ...]:
    """Normalised identifiers; a fault names the field but never repeats the value."""
    identifiers: list[ContactIdentifier] = []
    for field, raw, normalise in (
        ("email", email, normalise_email),
        ("phone", phone, normalise_phone),
    ):
        if not raw:
            continue
        try:
            identifiers.append(normalise(raw))
        except IdentifierError as error:
            parser.fault(field, str(error))
    return tuple(identifiers)


def _birthday(parser: RequestParser, text: str) -> date | None:
    if not text:
        return None
    try:
        birthday = date.fromisoformat(text)
    except ValueError:
        birthday = None
    if birthday is None or len(text) != len("YYYY-MM-DD"):
        parser.fault("birthday", "must be a date written YYYY-MM-DD")
        return None
    if not BIRTHDAY_MIN <= birthday <= datetime.now(UTC).date():
        parser.fault("birthday", f"must lie between {BIRTHDAY_MIN.isoformat()} and today")
        return None
    return birthday


def _preferences(
    parser: RequestParser, preferences: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    if len(preferences) > PREFERENCES_COUNT_MAX:
        parser.fault("preferences", f"at most {PREFERENCES_COUNT_MAX} entries")
        return ()
    for key, value in preferences.items():
        if not PREFERENCE_KEY_PATTERN.fullmatch(key):
            parser.fault("preferences", "keys are 1 to 64 characters of a-z 0-9 _ . -")
        elif len(value) > PREFERENCE_VALUE_LENGTH_MAX or not value.isprintable():
            parser.fault(
                f"preferences[{key}]",
                f"at most {PREFERENCE_VALUE_LENGTH_MAX} printable characters",
            )
    return tuple(sorted(preferences.items()))


def _consent_changes(
    parser: RequestParser, changes: list[messages.ConsentChange]
) -> tuple[consent.ConsentChange, ...]:
    if not 0 < len(changes) <= CONSENT_CHANGES_MAX:
        # Refused whole: checking each of thousands of changes would report thousands of faults.
        parser.fault("changes", f"required: 1 to {CONSENT_CHANGES_MAX} changes")
        return ()
    parsed: dict[str, consent.ConsentChange] = {}
    for index, change in enumerate(changes):
        if change.scope not in CONSENT_SCOPES:
            parser.fault(f"changes[{index}].scope", f"must be one of {', '.join(CONSENT_SCOPES)}")
        elif change.scope in parsed:
            parser.fault(f"changes[{index}].scope", "each scope at most once per request")
        else:
            parsed[change.scope] = consent.ConsentChange(change.scope, change.granted)
    return tuple(parsed.values())


def _member_message(member: members.Member) -> messages.Member:
    return messages.Member(
        member_id=member.member_id,
        display_name=member.display_name,
        create_time=responses.timestamp(member.create_time),
    )


def _consent_message(decision: consent.Consent) -> messages.Consent:
    return messages.Consent(
        partner_id=decision.partner_id,
        scope=decision.scope,
        granted=decision.granted,
        occurred_at=responses.timestamp(decision.occurred_at),
        source=decision.source,
        applied=decision.applied,
    )


def _profile_message(
    profile: profiles.SharedProfile, partner_id: str
) -> messages.GetMemberProfileResponse:
    response = messages.GetMemberProfileResponse(
        member=messages.Member(member_id=profile.member_id),
        linked_partner_ids=[partner_id],  # only a linked partner reads a profile
        granted_scopes=list(profile.granted_scopes),
        withheld_scopes=[
            messages.WithheldScope(scope=scope, reason=WITHHOLDING_REASONS[reason])
            for scope, reason in profile.withheld_scopes
        ],
    )
    if profile.display_name is not None and profile.create_time is not None:
        response.member.display_name = profile.display_name
        response.member.create_time.CopyFrom(responses.timestamp(profile.create_time))
    if profile.balance_points is not None:
        response.balance_points = profile.balance_points
    if profile.tier_id is not None:
        response.tier_id = profile.tier_id
    if profile.preferences is not None:
        response.preferences.update(dict(profile.preferences))
    if profile.birthday is not None:
        response.birthday = profile.birthday.isoformat()
    return response


def _export_message(export: rights.MemberExport) -> messages.ExportMemberDataResponse:
    member = export.member
    exported_member = messages.ExportedMember(
        member_id=member.member_id,
        display_name=member.display_name,
        create_time=responses.timestamp(member.create_time),
        merged_member_ids=list(export.merged_member_ids),
        birthday=export.birthday.isoformat() if export.birthday else "",
        preferences=dict(export.preferences),
        balance_points=export.balance_points,
    )
    if member.forget_time is not None:
        exported_member.forget_time.CopyFrom(responses.timestamp(member.forget_time))
    return messages.ExportMemberDataResponse(
        member=exported_member,
        identifiers=[
            messages.ExportedIdentifier(
                kind=identifier.kind,
                identifier_hmac=identifier.identifier_hmac,
                create_time=responses.timestamp(identifier.create_time),
            )
            for identifier in export.identifiers
        ],
        links=[
            messages.ExportedLink(
                partner_id=link.partner_id,
                partner_customer_id=link.partner_customer_id,
                create_time=responses.timestamp(link.create_time),
            )
            for link in export.links
        ],
        consents=[_consent_message(decision) for decision in export.consents],
        consent_history=[_consent_message(decision) for decision in export.consent_history],
        profile_reads=[
            messages.ExportedProfileRead(
                member_id=read.member_id,
                partner_id=read.partner_id,
                role=read.role,
                scopes_returned=list(read.scopes_returned),
                scopes_withheld=list(read.scopes_withheld),
                read_time=responses.timestamp(read.read_time),
            )
            for read in export.profile_reads
        ],
        audit_events=[
            messages.ExportedAuditEvent(
                kind=event.kind,
                member_id=event.member_id,
                related_member_id=event.related_member_id or "",
                transaction_id=str(event.transaction_id or ""),
                points=event.points or 0,
                principal_id=event.principal_id,
                create_time=responses.timestamp(event.create_time),
            )
            for event in export.audit_events
        ],
        lots=[_lot_message(lot) for lot in export.lots],
        transactions=[
            messages.ExportedTransaction(
                transaction_id=str(transaction.transaction_id),
                kind=transaction.kind,
                partner_id=transaction.partner_id,
                member_id=transaction.member_id,
                points_delta=transaction.points_delta,
                occurred_at=responses.timestamp(transaction.occurred_at),
                partner_reference=transaction.partner_reference or "",
            )
            for transaction in export.transactions
        ],
        truncated_sections=list(export.truncated_sections),
    )


def _lot_message(exported: rights.ExportedLot) -> messages.ExportedLot:
    lot = messages.ExportedLot(
        lot_id=str(exported.lot_id),
        partner_id=exported.partner_id,
        points=exported.points,
        remaining_points=exported.remaining_points,
        create_time=responses.timestamp(exported.create_time),
    )
    if exported.expires_at is not None:
        lot.expires_at.CopyFrom(responses.timestamp(exported.expires_at))
    return lot
