"""ListTransactions pagination (AIP-158): defaults, caps, complete walks, bad page tokens."""

from __future__ import annotations

import base64
from collections.abc import Callable

import grpc
import pytest

from tests.end_to_end.support import PartnerClient, expect_failure

pytestmark = pytest.mark.end_to_end

PAGE_SIZE_DEFAULT = 50


def make_ledger(
    coffee: PartnerClient, air: PartnerClient, earns_a: int, earns_b: int
) -> dict[str, list[str]]:
    """Coffee transactions for two members, plus air transactions coffee must never see."""
    member_a, member_b = coffee.new_member(), coffee.new_member()
    ids_a = [coffee.earn(member_a, 500).transaction.transaction_id for _ in range(earns_a)]
    ids_b = [coffee.earn(member_b, 500).transaction.transaction_id for _ in range(earns_b)]
    air.earn(member_a, 500)
    air.earn(member_b, 500)
    return {
        "member_a": [member_a],
        "a": sorted(ids_a, key=int, reverse=True),
        "all": sorted(ids_a + ids_b, key=int, reverse=True),  # newest first
    }


@pytest.fixture
def ledger(coffee: PartnerClient, air: PartnerClient) -> dict[str, list[str]]:
    """51 coffee transactions: one more than the default page."""
    return make_ledger(coffee, air, earns_a=48, earns_b=3)


@pytest.fixture
def small_ledger(coffee: PartnerClient, air: PartnerClient) -> dict[str, list[str]]:
    """Enough coffee transactions for two pages of 5, overall and for member A."""
    return make_ledger(coffee, air, earns_a=7, earns_b=4)


def walk(client: PartnerClient, page_size: int, member_id: str | None = None) -> list[list[str]]:
    """The transaction ids of every page, following next_page_token to the end."""
    pages: list[list[str]] = []
    page_token = ""
    while len(pages) < 100:
        page = client.list_page(member_id, page_size, page_token)
        pages.append([t.transaction_id for t in page.transactions])
        page_token = page.next_page_token
        if not page_token:
            return pages
    raise AssertionError("the listing does not end")


def test_page_size_zero_means_the_default(
    coffee: PartnerClient, ledger: dict[str, list[str]]
) -> None:
    first = coffee.list_page(page_size=0)
    assert [t.transaction_id for t in first.transactions] == ledger["all"][:PAGE_SIZE_DEFAULT]
    assert first.next_page_token
    second = coffee.list_page(page_size=0, page_token=first.next_page_token)
    assert [t.transaction_id for t in second.transactions] == ledger["all"][PAGE_SIZE_DEFAULT:]
    assert second.next_page_token == ""


def test_page_size_above_the_maximum_is_capped_not_refused(
    coffee: PartnerClient, ledger: dict[str, list[str]]
) -> None:
    page = coffee.list_page(page_size=100_000)
    assert [t.transaction_id for t in page.transactions] == ledger["all"]
    assert page.next_page_token == ""


def test_walking_all_pages_has_no_duplicates_or_gaps(
    coffee: PartnerClient, ledger: dict[str, list[str]]
) -> None:
    for page_size in (1, 7, 17, 51, 52):
        pages = walk(coffee, page_size)
        assert all(len(page) == page_size for page in pages[:-1])
        assert 0 < len(pages[-1]) <= page_size
        assert [tid for page in pages for tid in page] == ledger["all"], page_size


def test_walking_one_members_pages(
    coffee: PartnerClient, small_ledger: dict[str, list[str]]
) -> None:
    (member_a,) = small_ledger["member_a"]
    pages = walk(coffee, 5, member_a)
    assert [len(page) for page in pages] == [5, 2]
    assert [tid for page in pages for tid in page] == small_ledger["a"]


def test_negative_page_size_is_invalid(coffee: PartnerClient) -> None:
    expect_failure(
        lambda: coffee.list_page(page_size=-1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("page_size",),
    )


def with_cursor(cursor: object) -> Callable[[str, str], str]:
    """A forged token: the hub's own token for the query, with another cursor inside. The
    token is opaque to callers, but nothing stops a caller from editing it (its text is
    `p1.<query digest>.<cursor>`)."""

    def forge(token: str, _member_token: str) -> str:
        version, digest, _ = base64.urlsafe_b64decode(token).decode().split(".", 2)
        return base64.urlsafe_b64encode(f"{version}.{digest}.{cursor}".encode()).decode()

    return forge


@pytest.mark.parametrize(
    ("tamper", "member_filter"),
    [
        pytest.param(lambda token, _: "not-a-token", False, id="garbage"),
        pytest.param(lambda token, _: token[: len(token) // 2], False, id="truncated"),
        pytest.param(lambda token, _: "A" + token[1:], False, id="first-character-changed"),
        pytest.param(lambda _, member_token: member_token, False, id="other-query-token"),
        pytest.param(lambda token, _: token, True, id="used-with-a-member-filter"),
        pytest.param(with_cursor("x"), False, id="cursor-text"),
        pytest.param(with_cursor(10**30), False, id="cursor-beyond-int64"),
        pytest.param(with_cursor(2**63), False, id="cursor-just-beyond-int64"),
        pytest.param(with_cursor("0"), False, id="cursor-zero"),
        pytest.param(
            lambda *_: base64.urlsafe_b64encode(b"[" * 50_000).decode(), False, id="deep-json"
        ),
    ],
)
def test_tampered_or_foreign_page_token_is_invalid(
    coffee: PartnerClient,
    small_ledger: dict[str, list[str]],
    tamper: Callable[[str, str], str],
    member_filter: bool,
) -> None:
    (member_a,) = small_ledger["member_a"]
    token = coffee.list_page(page_size=5).next_page_token
    member_token = coffee.list_page(member_a, page_size=5).next_page_token
    assert token and member_token
    bad_token = tamper(token, member_token)
    expect_failure(
        lambda: coffee.list_page(member_a if member_filter else None, 5, bad_token),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("page_token",),
    )


def test_a_page_token_is_bound_to_its_page_size_and_partner(
    coffee: PartnerClient, air: PartnerClient, small_ledger: dict[str, list[str]]
) -> None:
    """A token continues only the query that made it: same caller, filters and page size."""
    token = coffee.list_page(page_size=5).next_page_token
    assert token
    assert len(coffee.list_page(page_size=5, page_token=token).transactions) == 5
    for other_query in (
        lambda: coffee.list_page(page_size=6, page_token=token),
        lambda: coffee.list_page(page_size=0, page_token=token),
        lambda: air.list_page(page_size=5, page_token=token),
    ):
        expect_failure(
            other_query, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", ("page_token",)
        )
