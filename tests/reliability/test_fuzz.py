"""Every RPC of every service the hub registers, fuzzed from its proto descriptor.

Requests are built by hypothesis from the request message's descriptor (missing and random
fields, huge strings, int64 extremes, invalid currencies, unknown enum values) or are raw
garbage bytes. A refused call must carry a client-mistake code and exactly one ErrorInfo, and
must leave every table's row count unchanged; INTERNAL and UNKNOWN never come back. A new RPC
in api/server.py is fuzzed without touching this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from coalition.api.bounds import MESSAGE_BYTES_MAX
from coalition.api.server import SERVICE_DESCRIPTORS, Hub
from coalition.programme.config import DEFAULT_PROGRAMME
from tests.conftest import api_key
from tests.end_to_end.support import PartnerClient, failure_of
from tests.integration.ledger_checks import remembered_refusals
from tests.reliability.support import row_counts, scaled

pytestmark = pytest.mark.reliability

METHODS: dict[str, MethodDescriptor] = {
    f"/{service.full_name}/{method.name}": method
    for service in SERVICE_DESCRIPTORS
    for method in service.methods
}
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
EXAMPLES_PER_RPC = scaled(25, 400)
CALL_TIMEOUT_SECONDS = 10.0
STREAM_MESSAGES_READ_MAX = 2
CLIENT_STREAM_MESSAGES_MAX = 3
NESTING_DEPTH_MAX = 3
REPEATED_ITEMS_MAX = 3
HUGE_TEXT_CHARACTERS = 200_000
INT64_EXTREMES = (0, 1, -1, 2**31, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63))
# An operations log, not business data: a refused report still records its job run (with its
# end state). The check below asserts that no such run is left `running` instead.
OPERATIONAL_LOG_TABLES = frozenset({"reconciliation_jobs"})
STREAM_TIMEOUT_SECONDS = 2.0
ROLES = ("partner", "merchant", "finance", "admin", "anonymous", "forged")


@pytest.fixture
def world(engine: Engine) -> Iterator[tuple[grpc.Channel, dict[str, Any], list[str]]]:
    """A hub with a little data (a member, an earn, a burn) and a key per role; the ids of the
    data feed the strategies so that requests also reach past the not-found paths."""
    hub = Hub(engine, "127.0.0.1:0", programme=DEFAULT_PROGRAMME).start()
    try:
        with grpc.insecure_channel(
            f"127.0.0.1:{hub.port}",
            options=[("grpc.max_send_message_length", 2 * MESSAGE_BYTES_MAX)],
        ) as channel:
            coffee = PartnerClient(channel, engine, "test-coffee")
            member_id = coffee.new_member()
            earned = coffee.earn(member_id, 100_000)
            burned = coffee.burn(member_id, 10)
            keys = {
                "partner": coffee.metadata,
                "merchant": api_key(engine, "test-coffee", "merchant"),
                "finance": api_key(engine, "fuzz-finance", "finance"),
                "admin": api_key(engine, "fuzz-admin", "admin"),
                "anonymous": (),
                "forged": (("authorization", "Bearer not-a-key"),),
            }
            known = [
                member_id,
                earned.transaction.transaction_id,
                burned.transaction.transaction_id,
                "test-coffee",
                "test-air",
            ]
            yield channel, keys, known
    finally:
        hub.stop(grace_seconds=0)


def text_values(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(
            [
                "",
                "CNY",
                "EUR",
                "GBP",
                "XXX",
                "cny",
                "€€€",
                "0",
                "-1",
                "\x00",
                "' OR 1=1 --",
                "partner",
                "admin",
                "2026-01",
                "x" * HUGE_TEXT_CHARACTERS,
                "界" * (HUGE_TEXT_CHARACTERS // 4),
                *known,
            ]
        ),
    )


def scalar_values(field: FieldDescriptor, known: list[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return st.one_of(st.sampled_from(INT64_EXTREMES), st.integers(-(2**63), 2**63 - 1))
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return st.integers(-(2**31), 2**31 - 1)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_STRING:
        return text_values(known)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-(2**31), 2**31 - 1))
    raise AssertionError(f"no strategy for field type {kind} of {field.full_name}")


def field_values(
    field: FieldDescriptor, known: list[str], depth: int
) -> st.SearchStrategy[Any] | None:
    """A strategy for one field's value, or None when the field is too deep to build."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            value = field_values(value_field, known, depth + 1)
            if value is None:
                return None
            return st.dictionaries(
                scalar_values(key_field, known), value, max_size=REPEATED_ITEMS_MAX
            )
        if depth >= NESTING_DEPTH_MAX:
            return None
        single = messages(field.message_type, known, depth + 1)
    else:
        single = scalar_values(field, known)
    if field.is_repeated:
        return st.lists(single, max_size=REPEATED_ITEMS_MAX)
    return single


def messages(
    descriptor: Descriptor, known: list[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    """Messages of the descriptor's type with any subset of fields set to any values."""
    strategies = {}
    for field in descriptor.fields:
        values = field_values(field, known, depth)
        if values is not None:
            strategies[field.name] = st.one_of(st.none(), values)
    message_class = message_factory.GetMessageClass(descriptor)
    return st.fixed_dictionaries(strategies).map(lambda chosen: built(message_class, chosen))


def built(message_class: type[Message], chosen: dict[str, Any]) -> Message:
    message = message_class()
    for name, value in chosen.items():
        if value is None:
            continue
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def payloads(method: MethodDescriptor, known: list[str]) -> st.SearchStrategy[bytes]:
    """Serialized requests, a fifth of them raw garbage bytes."""
    return st.one_of(
        messages(method.input_type, known).map(lambda message: message.SerializeToString()),
        st.binary(min_size=1, max_size=256),
    )


def call(
    channel: grpc.Channel, path: str, method: MethodDescriptor, requests: list[bytes], metadata: Any
) -> None:
    """One call with raw bytes in and out; raises grpc.RpcError when the hub refuses it."""
    if method.client_streaming:
        stream_unary = channel.stream_unary(path)
        stream_unary(iter(requests), metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        return
    if method.server_streaming:
        responses = channel.unary_stream(path)(
            requests[0], metadata=metadata, timeout=STREAM_TIMEOUT_SECONDS
        )
        try:
            # A valid subscription never ends: read a bounded number of messages, then cancel.
            for read, _response in enumerate(responses, start=1):
                if read >= STREAM_MESSAGES_READ_MAX:
                    break
        finally:
            responses.cancel()
        return
    channel.unary_unary(path)(requests[0], metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)


def check_refusal(
    error: grpc.RpcError,
    path: str,
    method: MethodDescriptor,
    before: dict[str, int],
    refusals_before: dict[tuple[str, str], str],
    engine: Engine,
) -> None:
    code = error.code()
    if code == grpc.StatusCode.CANCELLED:  # our own cancel of a long stream
        return
    if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return  # a valid subscription with nothing new to send: our bound, not the hub's
    assert_no_job_left_running(engine, path)
    assert code in REFUSALS, f"{path} answered {code}: {error.details()}"
    failure = failure_of(error)  # exactly one ErrorInfo in a google.rpc.Status
    # A refusal writes nothing but, once the ledger has evaluated it, its own answer under its
    # request id (ledger/idempotency.py).
    remembered = set(remembered_refusals(engine).items()) - set(refusals_before.items())
    assert {reason for _key, reason in remembered} <= {failure.reason} and len(remembered) <= 1
    after = row_counts(engine)
    changed = {
        table: (before[table], after[table])
        for table in before
        if before[table] != after[table] and table not in OPERATIONAL_LOG_TABLES
    }
    assert not changed, f"{path} refused with {code} but wrote rows: {changed}"


def assert_no_job_left_running(engine: Engine, path: str) -> None:
    with engine.connect() as connection:
        running = connection.execute(
            text("SELECT COUNT(*) FROM reconciliation_jobs WHERE status = 'running'")
        ).scalar_one()
    assert running == 0, f"{path} left a reconciliation job running"


@pytest.mark.parametrize("path", sorted(METHODS), ids=lambda path: path.rsplit(".", 1)[-1])
def test_fuzzed_requests_are_refused_cleanly_and_write_nothing(
    world: tuple[grpc.Channel, dict[str, Any], list[str]], engine: Engine, path: str
) -> None:
    channel, keys, known = world
    method = METHODS[path]
    count = CLIENT_STREAM_MESSAGES_MAX if method.client_streaming else 1
    minimum = 0 if method.client_streaming else 1

    @settings(
        max_examples=EXAMPLES_PER_RPC,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )
    @given(
        role=st.sampled_from(ROLES),
        requests=st.lists(payloads(method, known), min_size=minimum, max_size=count),
    )
    def fuzz(role: str, requests: list[bytes]) -> None:
        before, refusals_before = row_counts(engine), remembered_refusals(engine)
        try:
            call(channel, path, method, requests, keys[role])
        except grpc.RpcError as error:
            check_refusal(error, path, method, before, refusals_before, engine)

    fuzz()


def test_every_registered_rpc_is_fuzzed() -> None:
    registered = {
        f"/{service.full_name}/{method.name}"
        for service in SERVICE_DESCRIPTORS
        for method in service.methods
    }
    assert registered == set(METHODS) and len(registered) >= 30


@pytest.mark.parametrize("path", ["/coalition.v1.PointsService/Earn"])
def test_a_request_over_the_size_limit_is_refused_before_the_hub_reads_it(
    world: tuple[grpc.Channel, dict[str, Any], list[str]], engine: Engine, path: str
) -> None:
    channel, keys, _known = world
    before = row_counts(engine)
    oversized = b"\x0a" + b"\xff\xff\xff\x02" + b"x" * (MESSAGE_BYTES_MAX + 1)
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(path)(oversized, metadata=keys["partner"], timeout=CALL_TIMEOUT_SECONDS)
    # gRPC itself refuses it, before any hub code runs: no ErrorInfo can be attached here.
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert row_counts(engine) == before
