"""The contract a client author reads (proto comments, docs/errors.md, docs/bounds.md) says
what the code does: every reason raised is catalogued with its code and metadata keys, each
RPC's comment names its reasons, and every bound is written where the field is, from the
constant that enforces it."""

from __future__ import annotations

import re

import pytest

from coalition.api.bounds import MESSAGE_BYTES_MAX
from coalition.api.events import SUBSCRIPTIONS_MAX
from coalition.api.members import (
    DISPLAY_NAME_LENGTH_MAX,
    PREFERENCE_VALUE_LENGTH_MAX,
    PREFERENCES_COUNT_MAX,
)
from coalition.api.partners import PRINCIPAL_ID_LENGTH_MAX
from coalition.api.promotions import PAGE_BYTES_MAX as PROMOTIONS_PAGE_BYTES_MAX
from coalition.api.requests import (
    IDENTIFIER_LENGTH_MAX,
    PAGE_SIZE_DEFAULT,
    PAGE_SIZE_MAX,
    PARTNER_REFERENCE_LENGTH_MAX,
    REQUEST_ID_LENGTH_MAX,
    TEXT_LENGTH_MAX,
)
from coalition.domain.points import AMOUNT_MINOR_MAX, POINTS_PER_OPERATION_MAX
from coalition.identity.consent import SOURCE_LENGTH_MAX
from coalition.operations.batch_earn import BATCH_EARN_ITEMS_MAX
from coalition.operations.holds import HOLD_TTL_MAX
from coalition.partners.daily_sales import SALES_DAYS_BACK_MAX
from coalition.programme.config import (
    BONUS_POINTS_MAX,
    BUDGET_POINTS_MAX,
    GRANTS_PER_MEMBER_MAX,
)
from coalition.programme.config import ID_LENGTH_MAX as PROMOTION_ID_LENGTH_MAX
from coalition.programme.config import PROMOTIONS_MAX as PROMOTION_IDS_MAX
from coalition.reconciliation.report import LINE_BYTES_MAX, REPORT_ROWS_MAX
from coalition.reconciliation.servicer import CONTENT_CHUNK_BYTES_MAX, RESOLUTION_NOTE_LENGTH_MAX
from tests.unit import contract_sources as sources

pytestmark = pytest.mark.unit

V1 = "coalition.v1"
MIB = 1024 * 1024


def characters(length_max: int) -> str:
    return f"at most {length_max:,} characters"


def at_most(value_max: int) -> str:
    return f"at most {value_max:,}"


PAGE_SIZE = (
    f"0 means {PAGE_SIZE_DEFAULT}; values above {PAGE_SIZE_MAX} are capped at {PAGE_SIZE_MAX}"
)
REQUEST_ID = f"1 to {REQUEST_ID_LENGTH_MAX} characters of [A-Za-z0-9._:-]"
POINTS = at_most(POINTS_PER_OPERATION_MAX)
IDS = f"at most {PROMOTION_IDS_MAX} ids of at most {PROMOTION_ID_LENGTH_MAX} characters"
MESSAGE_SIZE = f"requests and responses of at most {MESSAGE_BYTES_MAX // MIB} MiB"

# Bounds written on one element each; request_id, page_size and the service-wide message
# size are checked on every element that has them (see the tests below).
BOUNDS: dict[str, str] = {
    f"{V1}.Money.amount_minor": at_most(AMOUNT_MINOR_MAX),
    f"{V1}.MemberReference.member_id": characters(IDENTIFIER_LENGTH_MAX),
    f"{V1}.MemberReference.partner_customer_id": characters(IDENTIFIER_LENGTH_MAX),
    f"{V1}.EarnRequest.native_points": POINTS,
    f"{V1}.EarnRequest.partner_reference": characters(PARTNER_REFERENCE_LENGTH_MAX),
    f"{V1}.BurnRequest.points": POINTS,
    f"{V1}.BurnRequest.partner_reference": characters(PARTNER_REFERENCE_LENGTH_MAX),
    f"{V1}.ReverseRequest.points": POINTS,
    f"{V1}.ReverseRequest.reason": characters(TEXT_LENGTH_MAX),
    f"{V1}.QuoteRequest.earn_native_points": POINTS,
    f"{V1}.QuoteRequest.burn_points": POINTS,
    f"{V1}.AuthorizeBurnRequest.points": POINTS,
    f"{V1}.AuthorizeBurnRequest.partner_reference": characters(PARTNER_REFERENCE_LENGTH_MAX),
    f"{V1}.AuthorizeBurnRequest.ttl": f"at most {HOLD_TTL_MAX.days} days",
    f"{V1}.CaptureBurnRequest.points": POINTS,
    f"{V1}.BatchEarnRequest.items": f"1 to {BATCH_EARN_ITEMS_MAX:,} earns",
    f"{V1}.EnrollMemberRequest.partner_customer_id": characters(IDENTIFIER_LENGTH_MAX),
    f"{V1}.EnrollMemberRequest.display_name": characters(DISPLAY_NAME_LENGTH_MAX),
    f"{V1}.EnrollMemberRequest.preferences": (
        f"at most {PREFERENCES_COUNT_MAX} entries; values {characters(PREFERENCE_VALUE_LENGTH_MAX)}"
    ),
    f"{V1}.UpdateConsentRequest.source": characters(SOURCE_LENGTH_MAX),
    f"{V1}.CreateApiKeyRequest.principal_id": characters(PRINCIPAL_ID_LENGTH_MAX),
    f"{V1}.ReportDailySalesRequest.sales_date": f"at most {SALES_DAYS_BACK_MAX} days back",
    f"{V1}.SubmitPartnerReportRequest.content": (
        f"at most {CONTENT_CHUNK_BYTES_MAX // MIB} MiB a message; lines of at most "
        f"{LINE_BYTES_MAX // 1024} KiB; at most {REPORT_ROWS_MAX:,} rows"
    ),
    f"{V1}.ResolveReconciliationExceptionRequest.note": characters(RESOLUTION_NOTE_LENGTH_MAX),
    f"{V1}.EventService.Subscribe": f"at most {SUBSCRIPTIONS_MAX} streams per hub process",
    f"{V1}.ListPromotionsResponse.promotions": (
        f"at most {PROMOTIONS_PAGE_BYTES_MAX // MIB} MiB a page, serialized"
    ),
    f"{V1}.Promotion.bonus_points": at_most(BONUS_POINTS_MAX),
    f"{V1}.Promotion.partner_ids": IDS,
    f"{V1}.Promotion.tier_ids": IDS,
    f"{V1}.Promotion.budget_points": at_most(BUDGET_POINTS_MAX),
    f"{V1}.Promotion.grants_per_member_max": at_most(GRANTS_PER_MEMBER_MAX),
    f"{V1}.ReferralReward.referred_points": at_most(BONUS_POINTS_MAX),
    f"{V1}.ReferralReward.referrer_points": at_most(BONUS_POINTS_MAX),
}


@pytest.fixture(scope="module")
def comments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return sources.proto_comments(tmp_path_factory.mktemp("protos"))


def flat(text: str) -> str:
    return " ".join(text.split())


def expected_bounds(comments: dict[str, str]) -> dict[str, str]:
    expected = dict(BOUNDS)
    for name in comments:
        message, _, field = name.rpartition(".")
        if message.endswith("Request") and field == "request_id":
            expected[name] = REQUEST_ID
        elif field == "page_size":
            expected[name] = PAGE_SIZE
        elif re.fullmatch(rf"{re.escape(V1)}\.\w+Service", name):
            expected[name] = MESSAGE_SIZE
    return expected


# --- errors ------------------------------------------------------------------------------------


def test_every_reason_raised_is_catalogued_with_its_code_and_metadata_keys() -> None:
    raised = sources.raised_reasons()
    catalogue = sources.catalogue()
    assert sorted(set(raised) - set(catalogue)) == [], "raised but not in docs/errors.md"
    assert sorted(set(catalogue) - set(raised)) == [], "in docs/errors.md but never raised"
    for reason, entry in catalogue.items():
        assert entry.code == raised[reason].code, reason
        assert entry.metadata_keys == raised[reason].metadata_keys, (reason, raised[reason].sites)
        assert entry.when, reason


def test_each_reason_says_where_it_happens() -> None:
    for entry in sources.catalogue().values():
        assert [bool(entry.rpcs), entry.every_rpc, entry.cli_only].count(True) == 1, entry


def test_each_rpc_comment_names_exactly_its_catalogued_reasons(comments: dict[str, str]) -> None:
    catalogue = sources.catalogue()
    by_rpc = sources.reasons_by_rpc(catalogue)
    rpcs = sources.rpc_names(comments)
    assert set(by_rpc) <= set(rpcs), "docs/errors.md names RPCs the protos do not have"
    every_rpc = {reason for reason, entry in catalogue.items() if entry.every_rpc}
    for rpc in rpcs:
        assert "Errors:" in comments[rpc], f"{rpc}: its comment names no reasons"
        named = sources.reasons_named_in(comments[rpc])
        assert named - every_rpc == by_rpc.get(rpc, set()), rpc


# --- bounds ------------------------------------------------------------------------------------


def test_every_bound_is_in_the_proto_comment_of_its_field(comments: dict[str, str]) -> None:
    missing = {
        name: bound
        for name, bound in expected_bounds(comments).items()
        if bound.lower() not in flat(comments[name]).lower()
    }
    assert missing == {}


def test_docs_list_every_bound_as_the_code_enforces_it(comments: dict[str, str]) -> None:
    assert sources.bounds_table() == expected_bounds(comments)


def test_the_refusals_the_api_tests_provoke_are_catalogued_for_their_rpc(
    comments: dict[str, str],
) -> None:
    """The end-to-end validation table provokes each refusal over gRPC; the catalogue must
    list that reason for that RPC, with that code."""
    from tests.end_to_end.test_validation import CASES

    catalogue = sources.catalogue()
    rpcs_by_method = {name.rpartition(".")[2]: name for name in sources.rpc_names(comments)}
    for case in CASES:
        method, _, code, reason, _ = case.values
        entry = catalogue[reason]
        assert entry.code == code.name, (case.id, reason)
        assert entry.every_rpc or rpcs_by_method[method] in entry.rpcs, (case.id, reason)
