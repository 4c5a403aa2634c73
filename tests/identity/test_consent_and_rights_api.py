"""Consent-filtered profiles, merges and member rights over real gRPC, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine

from coalition.v1 import common_pb2, points_service_pb2
from coalition.v1 import member_service_pb2 as messages
from tests.identity.support import Caller, expect_failure, new_id, text_values
from tests.integration.ledger_checks import assert_ledger_sound, row_counts

pytestmark = pytest.mark.end_to_end

ALL_SCOPES = ["profile.basic", "profile.tier", "profile.balance", "profile.preferences",
              "profile.birthday"]  # fmt: skip
NOT_GRANTED = messages.WITHHOLDING_REASON_NOT_GRANTED
REVOKED = messages.WITHHOLDING_REASON_REVOKED


def withheld(profile: messages.GetMemberProfileResponse) -> dict[str, int]:
    return {item.scope: item.reason for item in profile.withheld_scopes}


def enrol_rich(caller: Caller, customer_id: str = "C-1") -> str:
    response = caller.enroll(
        customer_id, email="mei@example.com", birthday="1990-04-17",
        preferences={"drink": "oolong", "seat": "aisle"},
    )  # fmt: skip
    return str(response.member.member_id)


def test_a_merchant_without_consent_sees_the_id_and_the_balance_its_link_grants(
    coffee: Caller, coffee_merchant: Caller
) -> None:
    """The link grants profile.balance until the member revokes it (docs/identity.md,
    "Privacy between partners"); every other scope waits for the member's grant."""
    member_id = enrol_rich(coffee)
    coffee.earn(member_id, 50_000, "CNY")
    profile = coffee_merchant.profile(member_id)
    assert profile.member == messages.Member(member_id=member_id)
    assert profile.balance_points == 100
    assert (profile.tier_id, dict(profile.preferences), profile.birthday) == ("", {}, "")
    assert list(profile.granted_scopes) == ["profile.balance"]
    assert withheld(profile) == dict.fromkeys(set(ALL_SCOPES) - {"profile.balance"}, NOT_GRANTED)
    coffee.consent(member_id, balance=False)
    revoked = coffee_merchant.profile(member_id)
    assert (revoked.balance_points, list(revoked.granted_scopes)) == (0, [])
    assert withheld(revoked)["profile.balance"] == REVOKED


def test_granted_scopes_only_reach_the_partner_they_were_granted_to(
    coffee: Caller, coffee_merchant: Caller, air: Caller
) -> None:
    member_id = enrol_rich(coffee)
    coffee.earn(member_id, 50_000, "CNY")
    recorded = coffee.consent(member_id, basic=True, balance=True, birthday=True, tier=True)
    assert [(c.scope, c.granted, c.applied) for c in recorded.changes] == [
        ("profile.basic", True, True), ("profile.balance", True, True),
        ("profile.birthday", True, True), ("profile.tier", True, True),
    ]  # fmt: skip

    profile = coffee_merchant.profile(member_id)
    assert profile.member.display_name == "Mei Lin"
    assert "profile.balance" in profile.granted_scopes and profile.balance_points == 100
    assert profile.birthday == "1990-04-17"
    assert profile.tier_id  # every member has a tier, the base one at first
    assert dict(profile.preferences) == {}
    assert withheld(profile) == {"profile.preferences": NOT_GRANTED}
    assert list(profile.linked_partner_ids) == ["test-coffee"]

    # Air is not linked to the member: it reads no profile at all (not even an empty one).
    expect_failure(
        lambda: air.profile(member_id), grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_NOT_LINKED"
    )


def test_a_revocation_takes_effect_at_once(coffee: Caller, coffee_merchant: Caller) -> None:
    member_id = enrol_rich(coffee)
    coffee.consent(member_id, preferences=True, basic=True)
    assert dict(coffee_merchant.profile(member_id).preferences) == {
        "drink": "oolong",
        "seat": "aisle",
    }

    coffee.consent(member_id, preferences=False, source="pos:store-0042")
    profile = coffee_merchant.profile(member_id)
    assert dict(profile.preferences) == {}
    assert withheld(profile)["profile.preferences"] == REVOKED
    assert profile.member.display_name == "Mei Lin"  # other grants stand


def test_an_older_decision_never_overrides_a_newer_one(
    coffee: Caller, coffee_merchant: Caller
) -> None:
    member_id = enrol_rich(coffee)
    coffee.consent(member_id, basic=False)
    late_sync = messages.UpdateConsentRequest(
        request_id=new_id(),
        member=common_pb2.MemberReference(member_id=member_id),
        changes=[messages.ConsentChange(scope="profile.basic", granted=True)],
        source="pos:offline-till",
    )
    late_sync.occurred_at.FromDatetime(datetime.now(UTC) - timedelta(hours=2))
    (change,) = coffee.call("UpdateConsent", late_sync).changes
    assert (change.granted, change.applied) == (True, False)
    assert withheld(coffee_merchant.profile(member_id))["profile.basic"] == REVOKED


def test_consent_updates_are_idempotent_and_validated(coffee: Caller, engine: Engine) -> None:
    member_id = enrol_rich(coffee)
    first = coffee.consent(member_id, request_id="consent-1", basic=True)
    counts = row_counts(engine)
    again = coffee.consent(member_id, request_id="consent-1", basic=True)
    assert again.replayed and list(again.changes) == list(first.changes)
    expect_failure(
        lambda: coffee.consent(member_id, request_id="consent-1", basic=False),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    bad = messages.UpdateConsentRequest(
        request_id=new_id(),
        member=common_pb2.MemberReference(member_id=member_id),
        changes=[messages.ConsentChange(scope="profile.email", granted=True),
                 messages.ConsentChange(scope="profile.basic"),
                 messages.ConsentChange(scope="profile.basic")],
        source=" app",
    )  # fmt: skip
    future = Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    bad.occurred_at.CopyFrom(future)
    expect_failure(
        lambda: coffee.call("UpdateConsent", bad),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("changes[0].scope", "changes[2].scope", "source"),
    )
    bad.ClearField("changes")
    bad.changes.add(scope="profile.basic")
    bad.source = "app"
    expect_failure(
        lambda: coffee.call("UpdateConsent", bad),
        grpc.StatusCode.INVALID_ARGUMENT,
        "OCCURRED_AT_IN_FUTURE",
        ("occurred_at",),
    )
    assert row_counts(engine) == counts


def test_merge_moves_points_lots_links_and_identifiers_in_one_transaction(
    coffee: Caller, air: Caller, admin: Caller, engine: Engine
) -> None:
    survivor = coffee.enroll("C-1").member.member_id
    coffee.earn(survivor, 50_000, "CNY")  # 100 points
    duplicate = air.enroll("A-1", email="mei@example.com").member.member_id
    air.earn(duplicate, 4_000, "EUR")  # 40 points
    burned = air.burn(duplicate, 15)
    air.consent(duplicate, balance=True)

    merged = admin.merge(survivor, duplicate, request_id="merge-1")
    assert not merged.replayed
    moved = merged.merge
    assert (moved.points_moved, moved.lots_moved, moved.links_moved, moved.identifiers_moved,
            moved.consents_moved) == (25, 1, 1, 1, 1)  # fmt: skip
    assert merged.merge.transaction_id

    assert coffee.balance(survivor).balance_points == 125
    by_old_id = coffee.balance(duplicate)
    assert (by_old_id.member_id, by_old_id.balance_points) == (survivor, 125)
    assert air.resolve(partner_customer_id="A-1") == survivor
    assert air.resolve(email="mei@example.com") == survivor
    assert air.profile(survivor).balance_points == 125  # the consent came along

    # A refund of the duplicate's burn lands on the survivor, and its lots stay consistent.
    reverse = points_service_pb2.ReverseRequest(
        request_id=new_id(), transaction_id=burned.transaction.transaction_id
    )
    assert air.call("Reverse", reverse).balance_points == 140
    assert_ledger_sound(engine)

    counts = row_counts(engine)
    replay = admin.merge(survivor, duplicate, request_id="merge-1")
    assert replay.replayed and replay.merge.transaction_id == merged.merge.transaction_id
    assert admin.merge(survivor, duplicate).replayed  # the same pair, another request id
    assert row_counts(engine) == counts


def test_merge_refusals_change_nothing(coffee: Caller, admin: Caller, engine: Engine) -> None:
    first = coffee.enroll("C-1").member.member_id
    second = coffee.enroll("C-2").member.member_id
    third = coffee.enroll("C-3").member.member_id
    admin.merge(first, second, request_id="merge-1")
    counts = row_counts(engine)
    failed = grpc.StatusCode.FAILED_PRECONDITION
    expect_failure(lambda: coffee.merge(first, third), grpc.StatusCode.PERMISSION_DENIED,
                   "ROLE_NOT_ALLOWED")  # fmt: skip
    expect_failure(lambda: admin.merge(first, first), grpc.StatusCode.INVALID_ARGUMENT,
                   "MERGE_INTO_ITSELF", ("duplicate_member_id",))  # fmt: skip
    expect_failure(lambda: admin.merge(first, "mem_missing"), grpc.StatusCode.NOT_FOUND,
                   "MEMBER_NOT_FOUND")  # fmt: skip
    expect_failure(lambda: admin.merge(third, second), failed, "MEMBER_MERGED")
    expect_failure(lambda: admin.merge(second, third), failed, "MEMBER_MERGED")
    failure = expect_failure(lambda: admin.merge(first, third, request_id="merge-1"),
                             grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")  # fmt: skip
    assert failure.metadata["differing_fields"] == "duplicate_member_id"
    expect_failure(lambda: admin.call("MergeMembers", messages.MergeMembersRequest()),
                   grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD",
                   ("request_id", "survivor_member_id", "duplicate_member_id"))  # fmt: skip
    assert row_counts(engine) == counts


def test_merging_a_member_without_points_posts_nothing(
    coffee: Caller, admin: Caller, engine: Engine
) -> None:
    survivor = coffee.enroll("C-1").member.member_id
    coffee.earn(survivor, 50_000, "CNY")
    duplicate = coffee.enroll("C-2").member.member_id
    counts = row_counts(engine)
    merged = admin.merge(survivor, duplicate).merge
    assert (merged.points_moved, merged.transaction_id, merged.links_moved) == (0, "", 1)
    after = row_counts(engine)
    assert after["journal_transactions"] == counts["journal_transactions"]
    assert after["member_audit_events"] == counts["member_audit_events"] + 1
    assert coffee.resolve(partner_customer_id="C-2") == survivor
    assert_ledger_sound(engine)


def test_export_holds_everything_including_the_access_log(
    coffee: Caller, air: Caller, coffee_merchant: Caller, admin: Caller
) -> None:
    member_id = enrol_rich(coffee)
    coffee.earn(member_id, 50_000, "CNY")
    duplicate = air.enroll("A-1", phone="+1 202 555 0100").member.member_id
    coffee.consent(member_id, basic=True)
    coffee_merchant.profile(member_id)
    admin.merge(member_id, duplicate)

    export = admin.call("ExportMemberData", messages.ExportMemberDataRequest(member_id=duplicate))
    assert export.member.member_id == member_id
    assert list(export.member.merged_member_ids) == [duplicate]
    assert (export.member.display_name, export.member.birthday) == ("Mei Lin", "1990-04-17")
    assert dict(export.member.preferences) == {"drink": "oolong", "seat": "aisle"}
    assert export.member.balance_points == 100
    assert sorted(i.kind for i in export.identifiers) == ["email", "phone"]
    assert sorted((link.partner_id, link.partner_customer_id) for link in export.links) == [
        ("test-air", "A-1"), ("test-coffee", "C-1"),
    ]  # fmt: skip
    assert [(c.scope, c.granted) for c in export.consents] == [("profile.basic", True)]
    assert len(export.consent_history) == 1
    (read,) = export.profile_reads
    assert (read.partner_id, read.role, list(read.scopes_returned)) == (
        "test-coffee", "merchant", ["profile.basic", "profile.balance"],
    )  # fmt: skip
    assert [event.kind for event in export.audit_events] == ["merge"]
    assert [lot.points for lot in export.lots] == [100]
    assert [t.kind for t in export.transactions] == ["earn"]
    assert list(export.truncated_sections) == []

    again = admin.call("ExportMemberData", messages.ExportMemberDataRequest(member_id=member_id))
    assert [event.kind for event in again.audit_events] == ["merge", "export"]
    expect_failure(
        lambda: coffee.call(
            "ExportMemberData", messages.ExportMemberDataRequest(member_id=member_id)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_ALLOWED",
    )


def test_forgetting_erases_the_person_and_keeps_the_ledger_balanced(
    coffee: Caller, air: Caller, admin: Caller, engine: Engine
) -> None:
    name = f"Zhou Xiaoyu {new_id()[:8]}"
    member_id = coffee.enroll(
        "C-1", email="zhou@example.com", display_name=name, birthday="1985-11-02",
        request_id="enrol-zhou",
    ).member.member_id  # fmt: skip
    earned = coffee.earn(member_id, 50_000, "CNY")
    duplicate = air.enroll("A-1", display_name=name).member.member_id
    admin.merge(member_id, duplicate)
    coffee.consent(member_id, basic=True)

    request = messages.ForgetMemberRequest(request_id="forget-1", member_id=member_id)
    forgotten = admin.call("ForgetMember", request)
    assert (forgotten.identifiers_erased, forgotten.links_erased, forgotten.balance_points) == (
        1,
        2,
        100,
    )
    assert admin.call("ForgetMember", request).replayed

    stored = [value for _, _, value in text_values(engine)]
    assert not [value for value in stored if name in value or "1985-11-02" in value]
    expect_failure(lambda: coffee.resolve(email="zhou@example.com"), grpc.StatusCode.NOT_FOUND,
                   "MEMBER_NOT_FOUND")  # fmt: skip
    expect_failure(lambda: coffee.resolve(partner_customer_id="C-1"), grpc.StatusCode.NOT_FOUND,
                   "MEMBER_NOT_FOUND")  # fmt: skip
    expect_failure(lambda: coffee.balance(member_id), grpc.StatusCode.NOT_FOUND, "MEMBER_FORGOTTEN")
    expect_failure(lambda: coffee.profile(duplicate), grpc.StatusCode.NOT_FOUND, "MEMBER_FORGOTTEN")
    expect_failure(lambda: coffee.enroll("C-1", display_name=name, request_id="enrol-zhou"),
                   grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")  # fmt: skip

    # A refund of a purchase made before the erasure still reaches the pseudonymous account.
    reverse = points_service_pb2.ReverseRequest(
        request_id=new_id(), transaction_id=earned.transaction.transaction_id
    )
    assert coffee.call("Reverse", reverse).balance_points == 0
    assert_ledger_sound(engine)
    export = admin.call("ExportMemberData", messages.ExportMemberDataRequest(member_id=member_id))
    assert export.member.display_name == "" and export.member.HasField("forget_time")
    assert [t.kind for t in export.transactions] == ["earn", "reverse"]


def test_a_member_with_open_holds_cannot_be_merged_away(
    coffee: Caller, admin: Caller, engine: Engine
) -> None:
    survivor = coffee.enroll("C-1").member.member_id
    duplicate = coffee.enroll("C-2").member.member_id
    coffee.earn(duplicate, 50_000, "CNY")
    authorize = points_service_pb2.AuthorizeBurnRequest(
        request_id=new_id(), member=common_pb2.MemberReference(member_id=duplicate), points=30
    )
    coffee.call("AuthorizeBurn", authorize)
    counts = row_counts(engine)
    failure = expect_failure(
        lambda: admin.merge(survivor, duplicate),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MEMBER_HAS_OPEN_HOLDS",
    )
    assert failure.metadata == {"member_id": duplicate}
    assert row_counts(engine) == counts
    assert admin.merge(duplicate, survivor).merge.points_moved == 0  # holds of a survivor stay


@pytest.mark.parametrize("changes_count", [6, 200, 1_001])
def test_more_consent_changes_than_the_proto_allows_are_one_fault(
    coffee: Caller, engine: Engine, changes_count: int
) -> None:
    """Refused whole before each change is checked: the error stays one small trailer."""
    member_id = enrol_rich(coffee)
    counts = row_counts(engine)
    request = messages.UpdateConsentRequest(
        request_id=new_id(),
        member=common_pb2.MemberReference(member_id=member_id),
        changes=[messages.ConsentChange(scope="profile.basic")] * changes_count,
        source="app",
    )
    expect_failure(
        lambda: coffee.call("UpdateConsent", request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("changes",),
    )
    assert row_counts(engine) == counts
