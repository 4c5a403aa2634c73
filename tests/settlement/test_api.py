"""SettlementService over real gRPC on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, text

from coalition.api.server import Hub
from coalition.programme.config import DEFAULT_PROGRAMME
from coalition.settlement import signing
from coalition.settlement.merkle import MerkleAccumulator
from coalition.settlement.signing import SigningKeyError
from coalition.v1 import settlement_service_pb2 as messages
from coalition.v1 import settlement_service_pb2_grpc
from tests.conftest import api_key
from tests.end_to_end.support import CALL_TIMEOUT_SECONDS, expect_failure
from tests.settlement.conftest import Ledger
from tests.settlement.test_statements import january_traffic

pytestmark = pytest.mark.end_to_end

Code = grpc.StatusCode


@pytest.fixture
def stub(
    engine: Engine, signing_key_path: Path
) -> Iterator[settlement_service_pb2_grpc.SettlementServiceStub]:
    hub = Hub(engine, "127.0.0.1:0", signing_key_path, programme=DEFAULT_PROGRAMME).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{hub.port}") as channel:
            yield settlement_service_pb2_grpc.SettlementServiceStub(channel)
    finally:
        hub.stop(grace_seconds=0)


def run_january(
    stub: settlement_service_pb2_grpc.SettlementServiceStub, finance: object
) -> messages.RunSettlementResponse:
    return stub.RunSettlement(
        messages.RunSettlementRequest(period="2026-01-31"),
        metadata=finance,
        timeout=CALL_TIMEOUT_SECONDS,
    )


def test_finance_runs_and_a_partner_reads_streams_and_acknowledges_its_own(
    engine: Engine,
    ledger: Ledger,
    stub: settlement_service_pb2_grpc.SettlementServiceStub,
    public_key: bytes,
    coffee_acknowledgement_key: Ed25519PrivateKey,
) -> None:
    january_traffic(ledger)
    finance = api_key(engine, "group-finance", "finance")
    coffee = api_key(engine, "test-coffee")
    ran = run_january(stub, finance)
    assert list(ran.created) == [True, True, True]
    again = run_january(stub, finance)
    assert list(again.created) == [False, False, False]
    assert [s.statement_hash for s in again.statements] == [
        s.statement_hash for s in ran.statements
    ]
    statement_id = "test-coffee-20260131"

    got = stub.GetSettlement(
        messages.GetSettlementRequest(statement_id=statement_id), metadata=coffee
    ).statement
    assert got.net_direction == messages.NET_DIRECTION_PARTNER_PAYS_HUB
    assert (got.owed_by_partner_minor, got.owed_by_hub_minor, got.net_minor) == ("168", "22", "146")
    assert hashlib.sha256(got.body).hexdigest() == got.statement_hash
    assert signing.statement_signature_valid(public_key, got.body, got.signature)

    listed = stub.ListSettlements(messages.ListSettlementsRequest(), metadata=coffee)
    assert [s.statement_id for s in listed.statements] == [statement_id]

    streamed = list(
        stub.ListSettlementEntries(
            messages.ListSettlementEntriesRequest(statement_id=statement_id), metadata=coffee
        )
    )
    merkle = MerkleAccumulator()
    for index, entry in enumerate(streamed):
        assert entry.leaf_index == index
        merkle.add_entry(entry.canonical_entry)
    assert (merkle.leaf_count, merkle.root().hex()) == (6, got.merkle_root)

    signature = coffee_acknowledgement_key.sign(signing.acknowledgement_message(got.statement_hash))
    acknowledged = stub.AcknowledgeSettlement(
        messages.AcknowledgeSettlementRequest(statement_id=statement_id, signature=signature),
        metadata=coffee,
    )
    assert acknowledged.statement.HasField("acknowledge_time")
    repeated = stub.AcknowledgeSettlement(
        messages.AcknowledgeSettlementRequest(statement_id=statement_id, signature=signature),
        metadata=coffee,
    )
    assert repeated.statement.acknowledge_time == acknowledged.statement.acknowledge_time
    # the countersignature is readable back, and checkable offline by anyone
    read_back = stub.GetSettlement(
        messages.GetSettlementRequest(statement_id=statement_id), metadata=finance
    ).statement.acknowledgement
    assert read_back.signature == signature
    assert read_back.partner_public_key == signing.raw_public_key(coffee_acknowledgement_key)
    assert read_back.acknowledge_time == acknowledged.statement.acknowledge_time
    assert signing.acknowledgement_valid(
        read_back.partner_public_key, got.statement_hash, read_back.signature
    )
    listed_again = stub.ListSettlements(messages.ListSettlementsRequest(), metadata=coffee)
    assert listed_again.statements[0].acknowledgement.signature == signature


def test_signing_keys_are_published_to_every_role(
    engine: Engine, stub: settlement_service_pb2_grpc.SettlementServiceStub, public_key: bytes
) -> None:
    for principal, role in (("test-coffee", "merchant"), ("ops", "admin"), ("fin", "finance")):
        response = stub.GetSigningKeys(
            messages.GetSigningKeysRequest(), metadata=api_key(engine, principal, role)
        )
        (key,) = response.signing_keys
        assert key.public_key == public_key
        assert key.key_id == signing.key_id_of(public_key)
        assert not key.HasField("valid_until")


def test_a_partner_sees_no_other_partners_statements_and_cannot_run(
    engine: Engine, ledger: Ledger, stub: settlement_service_pb2_grpc.SettlementServiceStub
) -> None:
    january_traffic(ledger)
    run_january(stub, api_key(engine, "fin", "finance"))
    air = api_key(engine, "test-air")
    expect_failure(
        lambda: stub.GetSettlement(
            messages.GetSettlementRequest(statement_id="test-coffee-20260131"), metadata=air
        ),
        Code.NOT_FOUND,
        "STATEMENT_NOT_FOUND",
    )
    expect_failure(
        lambda: list(
            stub.ListSettlementEntries(
                messages.ListSettlementEntriesRequest(statement_id="test-coffee-20260131"),
                metadata=air,
            )
        ),
        Code.NOT_FOUND,
        "STATEMENT_NOT_FOUND",
    )
    expect_failure(
        lambda: stub.ListSettlements(
            messages.ListSettlementsRequest(partner_id="test-coffee"), metadata=air
        ),
        Code.NOT_FOUND,
        "PARTNER_NOT_FOUND",
    )
    expect_failure(lambda: run_january(stub, air), Code.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
    expect_failure(
        lambda: list(
            stub.ListSettlementEntries(
                messages.ListSettlementEntriesRequest(statement_id="test-coffee-20260131")
            )
        ),
        Code.UNAUTHENTICATED,
        "API_KEY_MISSING",
    )


def test_bad_input_gets_a_precise_status_and_changes_nothing(
    engine: Engine,
    ledger: Ledger,
    stub: settlement_service_pb2_grpc.SettlementServiceStub,
    coffee_acknowledgement_key: Ed25519PrivateKey,
) -> None:
    january_traffic(ledger)
    finance = api_key(engine, "fin", "finance")
    coffee = api_key(engine, "test-coffee")
    for period in ("", "2026-1-31", "2026-02-30", "20260131"):
        expect_failure(
            lambda period=period: stub.RunSettlement(
                messages.RunSettlementRequest(period=period), metadata=finance
            ),
            Code.INVALID_ARGUMENT,
            "INVALID_FIELD",
            ("period",),
        )
    expect_failure(
        lambda: stub.RunSettlement(
            messages.RunSettlementRequest(period="2099-01-31"), metadata=finance
        ),
        Code.FAILED_PRECONDITION,
        "PERIOD_NOT_ENDED",
    )
    listed = stub.ListSettlements(messages.ListSettlementsRequest(), metadata=finance)
    assert list(listed.statements) == []
    run_january(stub, finance)
    wrong_key = Ed25519PrivateKey.generate()
    bad_signature = wrong_key.sign(b"anything")
    expect_failure(
        lambda: stub.AcknowledgeSettlement(
            messages.AcknowledgeSettlementRequest(
                statement_id="test-coffee-20260131", signature=bad_signature
            ),
            metadata=coffee,
        ),
        Code.INVALID_ARGUMENT,
        "ACKNOWLEDGEMENT_SIGNATURE_INVALID",
        ("signature",),
    )
    expect_failure(
        lambda: stub.AcknowledgeSettlement(
            messages.AcknowledgeSettlementRequest(
                statement_id="test-coffee-20260131", signature=b"short"
            ),
            metadata=coffee,
        ),
        Code.INVALID_ARGUMENT,
        # as docs/settlement.md promises: a malformed signature is an invalid one
        "ACKNOWLEDGEMENT_SIGNATURE_INVALID",
        ("signature",),
    )
    got = stub.GetSettlement(
        messages.GetSettlementRequest(statement_id="test-coffee-20260131"), metadata=coffee
    ).statement
    assert not got.HasField("acknowledge_time")
    # Test Air's manifest declares no acknowledgement key.
    air_statement = stub.GetSettlement(
        messages.GetSettlementRequest(statement_id="test-air-20260131"),
        metadata=api_key(engine, "test-air"),
    ).statement
    expect_failure(
        lambda: stub.AcknowledgeSettlement(
            messages.AcknowledgeSettlementRequest(
                statement_id="test-air-20260131",
                signature=wrong_key.sign(
                    signing.acknowledgement_message(air_statement.statement_hash)
                ),
            ),
            metadata=api_key(engine, "test-air"),
        ),
        Code.FAILED_PRECONDITION,
        "ACKNOWLEDGEMENT_KEY_MISSING",
    )


def test_a_hub_without_a_signing_key_serves_but_cannot_settle(
    engine: Engine, channel: grpc.Channel
) -> None:
    stub = settlement_service_pb2_grpc.SettlementServiceStub(channel)
    expect_failure(
        lambda: run_january(stub, api_key(engine, "fin", "finance")),
        Code.FAILED_PRECONDITION,
        "SIGNING_KEY_NOT_CONFIGURED",
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_the_hub_refuses_to_start_with_a_key_others_can_read(
    engine: Engine, signing_key_path: Path, mode: int
) -> None:
    signing_key_path.chmod(mode)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        Hub(engine, "127.0.0.1:0", signing_key_path, programme=DEFAULT_PROGRAMME)


def test_running_every_partner_answers_the_statements_made_and_each_failure(
    engine: Engine, ledger: Ledger, stub: settlement_service_pb2_grpc.SettlementServiceStub
) -> None:
    january_traffic(ledger)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE journal_transactions SET rate_version_id = NULL "
                "WHERE partner_id = 'test-air'"
            )
        )
    ran = run_january(stub, api_key(engine, "fin", "finance"))
    assert [s.partner_id for s in ran.statements] == ["test-cinema", "test-coffee"]
    assert list(ran.created) == [True, True]
    (failure,) = ran.failures
    assert (failure.partner_id, failure.reason) == ("test-air", "ENTRY_WITHOUT_RATE_VERSION")
