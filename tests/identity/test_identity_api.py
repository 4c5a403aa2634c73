"""Unified identity over real gRPC, on SQLite and PostgreSQL: identifiers, links, isolation."""

from __future__ import annotations

import logging

import grpc
import pytest
from sqlalchemy import Engine, select

from coalition.store.schema import member_identifiers, member_requests, profile_reads
from coalition.v1 import member_service_pb2 as messages
from tests.identity.support import Caller, expect_failure, new_id, text_values
from tests.integration.ledger_checks import row_counts

pytestmark = pytest.mark.end_to_end

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EMAIL = "Mei.Lin@Example.COM"
PHONE = "+86 138-0013-8000"


def test_an_identifier_that_resolves_returns_the_existing_member(
    coffee: Caller, air: Caller, cinema: Caller
) -> None:
    first = coffee.enroll("C-1", email=EMAIL, phone=PHONE, birthday="1990-04-17")
    assert first.created
    member_id = first.member.member_id

    # Another spelling of the same address, at another partner: no duplicate, a new link.
    second = air.enroll("A-9", email="  mei.lin@EXAMPLE.com ", display_name="M. Lin")
    assert (second.created, second.member.member_id) == (False, member_id)
    assert second.member.display_name == "Mei Lin"  # a later enrolment never renames
    third = cinema.enroll("K-3", phone="+8613800138000")
    assert (third.created, third.member.member_id) == (False, member_id)

    assert air.resolve(partner_customer_id="A-9") == member_id
    assert cinema.resolve(email="mei.lin@example.com") == member_id
    assert coffee.resolve(phone="+86 (138) 0013 8000") == member_id


def test_enrolment_is_idempotent_per_request_id(coffee: Caller, engine: Engine) -> None:
    first = coffee.enroll("C-1", email=EMAIL, request_id="enrol-1")
    counts = row_counts(engine)
    again = coffee.enroll("C-1", email=EMAIL, request_id="enrol-1")
    assert (again.replayed, again.member.member_id) == (True, first.member.member_id)
    assert row_counts(engine) == counts
    failure = expect_failure(
        lambda: coffee.enroll("C-1", email="other@example.com", request_id="enrol-1"),
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    assert failure.metadata["differing_fields"] == "email_hmac"
    assert row_counts(engine) == counts


def test_customer_ids_of_different_partners_never_collide(
    coffee: Caller, air: Caller, cinema: Caller
) -> None:
    coffee_member = coffee.enroll("C-42").member.member_id
    air_member = air.enroll("C-42").member.member_id
    assert coffee_member != air_member
    assert coffee.resolve(partner_customer_id="C-42") == coffee_member
    assert air.resolve(partner_customer_id="C-42") == air_member
    failure = expect_failure(
        lambda: cinema.resolve(partner_customer_id="C-42"), NOT_FOUND, "MEMBER_NOT_FOUND"
    )
    assert failure.metadata == {"partner_customer_id": "C-42", "partner_id": "test-cinema"}
    assert coffee_member not in failure.message and air_member not in failure.message

    # One customer id of a partner maps to exactly one member.
    link = messages.LinkPartnerAccountRequest(
        request_id=new_id(), member_id=coffee_member, partner_customer_id="C-42"
    )
    expect_failure(
        lambda: air.call("LinkPartnerAccount", link),
        grpc.StatusCode.ALREADY_EXISTS,
        "PARTNER_CUSTOMER_ALREADY_LINKED",
    )
    # The same member may hold several customer ids of one partner.
    link.partner_customer_id, link.request_id = "C-43", new_id()
    coffee.call("LinkPartnerAccount", link)
    assert coffee.resolve(partner_customer_id="C-43") == coffee_member


def test_unlinking_frees_the_customer_id_and_keeps_the_member(coffee: Caller) -> None:
    member_id = coffee.enroll("C-7", email=EMAIL).member.member_id
    coffee.earn(member_id, 50_000, "CNY")
    unlink = messages.UnlinkPartnerAccountRequest(request_id="unlink-1", partner_customer_id="C-7")
    response = coffee.call("UnlinkPartnerAccount", unlink)
    assert (response.member_id, response.replayed) == (member_id, False)
    assert coffee.call("UnlinkPartnerAccount", unlink).replayed
    expect_failure(lambda: coffee.resolve(partner_customer_id="C-7"), NOT_FOUND, "MEMBER_NOT_FOUND")
    again = messages.UnlinkPartnerAccountRequest(request_id=new_id(), partner_customer_id="C-7")
    expect_failure(
        lambda: coffee.call("UnlinkPartnerAccount", again), NOT_FOUND, "PARTNER_CUSTOMER_NOT_LINKED"
    )
    # Unlinked, the member is nobody coffee knows: not by email, and no balance by id.
    expect_failure(lambda: coffee.resolve(email=EMAIL), NOT_FOUND, "MEMBER_NOT_FOUND")
    expect_failure(
        lambda: coffee.balance(member_id), grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_NOT_LINKED"
    )
    relinked = coffee.enroll("C-7", email=EMAIL)
    assert (relinked.created, relinked.member.member_id) == (False, member_id)
    assert coffee.resolve(email=EMAIL) == member_id
    assert coffee.balance(member_id).balance_points == 100


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "mei.lin@@example.com"}, "email"),
        ({"email": "mei lin@example.com"}, "email"),
        ({"email": "mei.lin@localhost"}, "email"),
        ({"email": "mei..lin@example.com"}, "email"),
        ({"phone": "13800138000"}, "phone"),
        ({"phone": "+0613800138000"}, "phone"),
        ({"phone": "+86 138 0013 8000 1234 5"}, "phone"),
        ({"birthday": "1990-02-30"}, "birthday"),
        ({"birthday": "17/04/1990"}, "birthday"),
        ({"birthday": "2999-01-01"}, "birthday"),
        ({"preferences": {"Drink": "tea"}}, "preferences"),
        ({"preferences": {"drink": "tea\n"}}, "preferences[drink]"),
    ],
)
def test_bad_enrolment_input_is_refused_precisely_and_changes_nothing(
    coffee: Caller, engine: Engine, fields: dict[str, object], field: str
) -> None:
    counts = row_counts(engine)
    failure = expect_failure(
        lambda: coffee.enroll("C-1", **fields), INVALID, "INVALID_FIELD", (field,)
    )
    for value in fields.values():
        if isinstance(value, str):
            assert value not in failure.message, "an error never repeats an identifier"
    assert row_counts(engine) == counts


def test_resolve_needs_exactly_one_key(coffee: Caller) -> None:
    expect_failure(lambda: coffee.resolve(), INVALID, "INVALID_FIELD", ("partner_customer_id",))
    expect_failure(
        lambda: coffee.resolve(partner_customer_id="C-1", email=EMAIL),
        INVALID,
        "INVALID_FIELD",
        ("email",),
    )
    failure = expect_failure(lambda: coffee.resolve(email=EMAIL), NOT_FOUND, "MEMBER_NOT_FOUND")
    assert failure.metadata == {"identifier_kind": "email"}


def test_a_merchant_cannot_enrol_or_resolve(coffee_merchant: Caller) -> None:
    denied = grpc.StatusCode.PERMISSION_DENIED
    expect_failure(lambda: coffee_merchant.enroll("C-1"), denied, "ROLE_NOT_ALLOWED")
    expect_failure(lambda: coffee_merchant.resolve(email=EMAIL), denied, "ROLE_NOT_ALLOWED")


def test_raw_identifiers_never_reach_the_database_or_the_logs(
    coffee: Caller,
    air: Caller,
    admin: Caller,
    coffee_merchant: Caller,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    raw_email, raw_phone = "Zhou.Xiaoyu+loyalty@Mail.Example.CN", "+44 20 7946 0958"
    spellings = (raw_email, raw_email.lower(), "zhou.xiaoyu+loyalty", "+442079460958",
                 "2079460958", "7946 0958")  # fmt: skip

    member_id = coffee.enroll("C-1", email=raw_email, phone=raw_phone).member.member_id
    other = air.enroll("A-1").member.member_id
    air.enroll("A-2", email=raw_email.upper(), request_id="retry-me")
    air.enroll("A-2", email=raw_email.upper(), request_id="retry-me")
    coffee.resolve(email=raw_email)
    coffee.resolve(phone=raw_phone)
    expect_failure(lambda: air.enroll("A-1", email=raw_email), grpc.StatusCode.FAILED_PRECONDITION,
                   "IDENTIFIER_BELONGS_TO_OTHER_MEMBER")  # fmt: skip
    expect_failure(lambda: coffee.enroll("C-9", email=raw_email + "@"), INVALID, "INVALID_FIELD",
                   ("email",))  # fmt: skip
    coffee.consent(member_id, basic=True)
    coffee_merchant.profile(member_id)
    admin.merge(member_id, other)
    admin.call("ExportMemberData", messages.ExportMemberDataRequest(member_id=member_id))

    stored = text_values(engine)
    assert stored, "the scan reads the tables"
    for spelling in spellings:
        leaks = [(t, c) for t, c, value in stored if spelling.lower() in value.lower()]
        assert not leaks, f"{spelling!r} stored in {leaks}"
        assert spelling.lower() not in caplog.text.lower()
    with engine.connect() as connection:
        digests = connection.execute(select(member_identifiers.c.identifier_hmac)).scalars().all()
    assert len(digests) == 2 and all(len(digest) == 64 for digest in digests)


def test_every_profile_read_is_logged(
    coffee: Caller, coffee_merchant: Caller, engine: Engine
) -> None:
    member_id = coffee.enroll("C-1").member.member_id
    coffee.consent(member_id, basic=True)
    coffee_merchant.profile(member_id)
    coffee.profile(member_id)
    with engine.connect() as connection:
        reads = connection.execute(select(profile_reads).order_by(profile_reads.c.read_id)).all()
    assert [(r.member_id, r.partner_id, r.role) for r in reads] == [
        (member_id, "test-coffee", "merchant"),
        (member_id, "test-coffee", "partner"),
    ]
    assert reads[0].scopes_returned == "profile.basic,profile.balance"  # balance: by the link
    assert reads[0].scopes_withheld.split(",") == [
        "profile.tier", "profile.preferences", "profile.birthday",
    ]  # fmt: skip
    with engine.connect() as connection:
        assert connection.execute(select(member_requests.c.member_id)).scalars().all() == [
            member_id, member_id,
        ]  # fmt: skip
