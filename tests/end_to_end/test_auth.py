"""Authentication and roles, enforced by the interceptor for every RPC."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import Engine

from coalition.v1 import partner_service_pb2, points_service_pb2
from tests.conftest import api_key
from tests.end_to_end.support import (
    Client,
    PartnerClient,
    bearer,
    by_id,
    expect_failure,
    issue_key,
    revoke_key,
)

pytestmark = pytest.mark.end_to_end

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def get_own_partner(client: Client, partner_id: str = "test-coffee") -> str:
    response = client.call(
        "GetPartner", partner_service_pb2.GetPartnerRequest(partner_id=partner_id)
    )
    return str(response.partner.partner_id)


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Basic dXNlcjpwYXNz"),), (("authorization", "Bearer   "),)],
    ids=["none", "basic-scheme", "empty-bearer"],
)
def test_call_without_api_key_is_unauthenticated(
    channel: grpc.Channel, coffee: PartnerClient, metadata: tuple[tuple[str, str], ...]
) -> None:
    member_id = coffee.new_member()
    anonymous = Client(channel, metadata)
    request = points_service_pb2.GetBalanceRequest(member=by_id(member_id))
    expect_failure(
        lambda: anonymous.call("GetBalance", request), UNAUTHENTICATED, "API_KEY_MISSING"
    )


@pytest.mark.parametrize(
    "api_key_text",
    ["garbage", "coal_0123456789abcdef_" + "x" * 43, "coal__secret", "coal_only-one-part"],
    ids=["garbage", "well-formed-unknown", "empty-key-id", "no-secret"],
)
def test_unknown_api_key_is_unauthenticated(channel: grpc.Channel, api_key_text: str) -> None:
    stranger = Client(channel, bearer(api_key_text))
    expect_failure(lambda: get_own_partner(stranger), UNAUTHENTICATED, "API_KEY_INVALID")


def test_known_key_id_with_wrong_secret_is_unauthenticated(
    channel: grpc.Channel, coffee: PartnerClient
) -> None:
    genuine = coffee.metadata[0][1].removeprefix("Bearer ")
    forged = genuine[:-4] + ("aaaa" if not genuine.endswith("aaaa") else "bbbb")
    forger = Client(channel, bearer(forged))
    assert get_own_partner(coffee) == "test-coffee"
    expect_failure(lambda: get_own_partner(forger), UNAUTHENTICATED, "API_KEY_INVALID")


def test_revoked_key_stops_working(
    no_principal_cache: None, channel: grpc.Channel, engine: Engine
) -> None:
    issued = issue_key(engine, "test-coffee")
    client = Client(channel, bearer(issued.api_key))
    assert get_own_partner(client) == "test-coffee"
    revoke_key(engine, issued.key_id)
    expect_failure(lambda: get_own_partner(client), UNAUTHENTICATED, "API_KEY_INVALID")


@pytest.mark.parametrize(
    ("principal_id", "role", "method", "request_message"),
    [
        ("test-coffee", "merchant", "Earn", points_service_pb2.EarnRequest()),
        (
            "test-coffee",
            "merchant",
            "ListTransactions",
            points_service_pb2.ListTransactionsRequest(),
        ),
        ("ops", "admin", "Burn", points_service_pb2.BurnRequest()),
        ("finance-team", "finance", "GetBalance", points_service_pb2.GetBalanceRequest()),
        (
            "test-coffee",
            "partner",
            "CreateApiKey",
            partner_service_pb2.CreateApiKeyRequest(
                principal_id="test-coffee", role=partner_service_pb2.ROLE_ADMIN
            ),
        ),
        (
            "test-coffee",
            "partner",
            "RevokeApiKey",
            partner_service_pb2.RevokeApiKeyRequest(key_id="0123456789abcdef"),
        ),
        ("test-coffee", "partner", "ListPartners", partner_service_pb2.ListPartnersRequest()),
    ],
    ids=[
        "merchant-Earn",
        "merchant-ListTransactions",
        "admin-Burn",
        "finance-GetBalance",
        "partner-CreateApiKey",
        "partner-RevokeApiKey",
        "partner-ListPartners",
    ],
)
def test_role_not_allowed_is_permission_denied(
    channel: grpc.Channel,
    engine: Engine,
    principal_id: str,
    role: str,
    method: str,
    request_message: object,
) -> None:
    client = Client(channel, api_key(engine, principal_id, role))
    # Refused before the request is looked at: an empty request is not an INVALID_ARGUMENT.
    failure = expect_failure(
        lambda: client.call(method, request_message), PERMISSION_DENIED, "ROLE_NOT_ALLOWED"
    )
    assert failure.metadata["role"] == role
    assert failure.metadata["method"].endswith(f"/{method}")


def test_admin_revokes_api_key_over_grpc(
    no_principal_cache: None, channel: grpc.Channel, engine: Engine, coffee: PartnerClient
) -> None:
    admin = Client(channel, api_key(engine, "ops", "admin"))
    issued = issue_key(engine, "test-coffee")
    victim = Client(channel, bearer(issued.api_key))
    assert get_own_partner(victim) == "test-coffee"
    revoke = partner_service_pb2.RevokeApiKeyRequest(key_id=issued.key_id)
    response = admin.call("RevokeApiKey", revoke)
    assert response.revoke_time.seconds > 0
    expect_failure(lambda: get_own_partner(victim), UNAUTHENTICATED, "API_KEY_INVALID")
    assert get_own_partner(coffee) == "test-coffee"  # other keys of the partner still work
    expect_failure(
        lambda: admin.call("RevokeApiKey", revoke), grpc.StatusCode.NOT_FOUND, "API_KEY_NOT_FOUND"
    )


def test_admin_creates_api_key_that_works(channel: grpc.Channel, engine: Engine) -> None:
    admin = Client(channel, api_key(engine, "ops", "admin"))
    request = partner_service_pb2.CreateApiKeyRequest(
        principal_id="test-coffee", role=partner_service_pb2.ROLE_PARTNER
    )
    created = admin.call("CreateApiKey", request)
    assert created.api_key.startswith(f"coal_{created.key_id}_")
    assert get_own_partner(Client(channel, bearer(created.api_key))) == "test-coffee"


def test_create_api_key_names_the_missing_fields(channel: grpc.Channel, engine: Engine) -> None:
    admin = Client(channel, api_key(engine, "ops", "admin"))
    no_role = partner_service_pb2.CreateApiKeyRequest(principal_id="test-coffee")
    expect_failure(
        lambda: admin.call("CreateApiKey", no_role),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("role",),
    )
    no_principal = partner_service_pb2.CreateApiKeyRequest(role=partner_service_pb2.ROLE_ADMIN)
    expect_failure(
        lambda: admin.call("CreateApiKey", no_principal),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        ("principal_id",),
    )
