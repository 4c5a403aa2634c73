"""How far back `occurred_at` may lie: the documented default, a partner's own bound from its
manifest, and a precise refusal that writes nothing, for every operation that takes one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine

from coalition import operations
from coalition.domain.errors import InvalidArgument
from coalition.domain.occurrence import BACKDATING_DAYS_MAX_DEFAULT
from coalition.domain.points import Money
from coalition.identity.members import MemberReference
from coalition.operations import batch_earn
from coalition.partners.manifest import ManifestError, load_manifest
from coalition.partners.sync import sync_partners
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.store.unit_of_work import UnitOfWork
from coalition.v1 import common_pb2, points_service_pb2, points_service_pb2_grpc
from tests.conftest import AIR, COFFEE, api_key
from tests.end_to_end.support import failure_of
from tests.integration.ledger_checks import row_counts
from tests.integration.test_ledger import earn, enroll, new_id

pytestmark = pytest.mark.integration


@pytest.fixture
def default_bound(engine: Engine) -> None:
    """Test Coffee with the default bound (7 days), Test Air with a bound of its own (30)."""
    manifests = [
        replace(COFFEE, backdating_days_max=BACKDATING_DAYS_MAX_DEFAULT),
        replace(AIR, backdating_days_max=30),
    ]
    sync_partners(UnitOfWork(engine), manifests, datetime.now(UTC))


def burn_at(engine: Engine, member_id: str, occurred_at: datetime) -> None:
    command = operations.BurnCommand(
        request_id=new_id(),
        member=MemberReference(member_id=member_id),
        points=1,
        occurred_at=occurred_at,
    )
    operations.burn(UnitOfWork(engine), "test-coffee", command, datetime.now(UTC))


def authorize_at(engine: Engine, member_id: str, occurred_at: datetime) -> None:
    command = operations.AuthorizeCommand(
        request_id=new_id(),
        member=MemberReference(member_id=member_id),
        ttl=timedelta(minutes=5),
        points=1,
        occurred_at=occurred_at,
    )
    operations.authorize_burn(UnitOfWork(engine), "test-coffee", command, datetime.now(UTC))


def batch_earn_at(engine: Engine, member_id: str, occurred_at: datetime) -> None:
    command = operations.EarnCommand(
        request_id=new_id(),
        member=MemberReference(member_id=member_id),
        spend=Money(10_000, "CNY"),
        occurred_at=occurred_at,
    )
    result = batch_earn.batch_earn(
        UnitOfWork(engine), DEFAULT_PROGRAMME, "test-coffee", [command], True, datetime.now(UTC)
    )
    raise AssertionError(f"applied: {result}")


def earn_at(engine: Engine, member_id: str, occurred_at: datetime) -> None:
    earn(engine, member_id, 10_000, occurred_at=occurred_at)


@pytest.mark.usefixtures("default_bound")
@pytest.mark.parametrize("operation", [earn_at, burn_at, authorize_at, batch_earn_at])
def test_beyond_the_default_bound_is_refused_precisely_and_writes_nothing(
    engine: Engine, operation: Callable[[Engine, str, datetime], None]
) -> None:
    member_id = enroll(engine)
    earn(engine, member_id, 10_000)  # 20 points, for the debits
    counts = row_counts(engine)
    a_year_ago = datetime.now(UTC) - timedelta(days=365)
    with pytest.raises(InvalidArgument) as refused:
        operation(engine, member_id, a_year_ago)
    error = refused.value
    assert error.reason == "OCCURRED_AT_TOO_FAR_IN_PAST"
    assert error.metadata["fields"] == "occurred_at"
    assert error.metadata["backdating_days_max"] == "7"
    assert error.metadata["partner_id"] == "test-coffee"
    assert row_counts(engine) == counts


@pytest.mark.usefixtures("default_bound")
def test_within_the_bound_is_accepted_and_a_partner_may_declare_its_own(engine: Engine) -> None:
    member_id = enroll(engine)
    six_days_ago = datetime.now(UTC) - timedelta(days=6)
    assert earn(engine, member_id, 10_000, occurred_at=six_days_ago).points == 20
    twenty_days_ago = datetime.now(UTC) - timedelta(days=20)
    with pytest.raises(InvalidArgument):
        earn(engine, member_id, 10_000, occurred_at=twenty_days_ago)
    air_member = enroll(engine, "test-air")
    assert earn(engine, air_member, 1_000, "test-air", occurred_at=twenty_days_ago).points == 10


@pytest.mark.usefixtures("default_bound")
def test_the_refusal_over_grpc_names_the_field_and_the_bound(
    engine: Engine, channel: grpc.Channel
) -> None:
    member_id = enroll(engine)
    occurred_at = Timestamp()
    occurred_at.FromDatetime(datetime.now(UTC) - timedelta(days=365))
    request = points_service_pb2.EarnRequest(
        request_id=new_id(),
        member=common_pb2.MemberReference(member_id=member_id),
        spend=common_pb2.Money(amount_minor=10_000, currency="CNY"),
        occurred_at=occurred_at,
    )
    stub = points_service_pb2_grpc.PointsServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Earn(request, metadata=api_key(engine, "test-coffee"))
    failure = failure_of(raised.value)
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "OCCURRED_AT_TOO_FAR_IN_PAST",
    )
    assert failure.metadata["backdating_days_max"] == "7"


MANIFEST = """
name = "Test Coffee"
kind = "coffee_chain"
currency = "CNY"
points_validity_months = 24
{bound}
[[rate_versions]]
effective_from = 2025-01-01T00:00:00Z
earn_points_per_unit = "0.1"
burn_value_minor_per_point = "5"
issuance_price_minor_per_point = "6.0"
redemption_price_minor_per_point = "4.5"
"""


@pytest.mark.unit
@pytest.mark.parametrize(
    ("bound", "expected"),
    [("", 7), ("backdating_days_max = 0", 0), ("backdating_days_max = 90", 90)],
)
def test_the_manifest_declares_the_bound_or_gets_the_default(
    tmp_path: Path, bound: str, expected: int
) -> None:
    path = tmp_path / "test-coffee.toml"
    path.write_text(MANIFEST.format(bound=bound))
    assert load_manifest(path).backdating_days_max == expected


@pytest.mark.unit
@pytest.mark.parametrize(
    "bound", ["backdating_days_max = -1", "backdating_days_max = 4000", 'backdating_days_max = "7"']
)
def test_a_bound_out_of_range_is_refused_by_name(tmp_path: Path, bound: str) -> None:
    path = tmp_path / "test-coffee.toml"
    path.write_text(MANIFEST.format(bound=bound))
    with pytest.raises(ManifestError, match="backdating_days_max"):
        load_manifest(path)
