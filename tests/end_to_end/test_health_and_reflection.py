"""The standard health service and server reflection: always on, no API key needed."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from coalition.store.engine import create_database_engine
from coalition.v1 import points_service_pb2
from tests.end_to_end.support import (
    CALL_TIMEOUT_SECONDS,
    Client,
    bearer,
    by_id,
    expect_failure,
    serving,
)

pytestmark = pytest.mark.end_to_end

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Nothing listens on port 1, so connecting is refused at once.
UNREACHABLE_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:1/none"
REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)
HUB_SERVICES = (
    "coalition.v1.PointsService",
    "coalition.v1.MemberService",
    "coalition.v1.PartnerService",
)


def health_of(channel: grpc.Channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=CALL_TIMEOUT_SECONDS)
    return int(response.status)


REFLECTION_VERSIONS = ("grpc.reflection.v1", "grpc.reflection.v1alpha")


def reflect(
    channel: grpc.Channel,
    request: reflection_pb2.ServerReflectionRequest,
    version: str = "grpc.reflection.v1alpha",
) -> reflection_pb2.ServerReflectionResponse:
    """One reflection exchange under `version`. Both versions carry the same messages field
    for field, so v1alpha's classes encode v1's requests as a v1 client would."""
    call = channel.stream_stream(
        f"/{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = call(iter([request]), timeout=CALL_TIMEOUT_SECONDS)
    return response


@pytest.mark.parametrize("service", ["", *HUB_SERVICES])
def test_health_is_serving(channel: grpc.Channel, service: str) -> None:
    assert health_of(channel, service) == SERVING


def test_health_of_an_unknown_service_is_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_of(channel, "coalition.v1.NoSuchService")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_not_serving_when_the_database_is_unreachable() -> None:
    engine = create_database_engine(UNREACHABLE_POSTGRES_URL)
    try:
        with serving(engine) as channel:
            for service in ("", *HUB_SERVICES):
                assert health_of(channel, service) == NOT_SERVING
            # A call that slips through anyway is told to retry, not that the hub is broken.
            client = Client(channel, bearer("coal_0123456789abcdef_secret"))
            request = points_service_pb2.GetBalanceRequest(member=by_id("mem_0"))
            expect_failure(
                lambda: client.call("GetBalance", request),
                grpc.StatusCode.UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("version", REFLECTION_VERSIONS)
def test_reflection_lists_every_service(channel: grpc.Channel, version: str) -> None:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = reflect(channel, request, version)
    names = {service.name for service in response.list_services_response.service}
    assert names >= {*HUB_SERVICES, "grpc.health.v1.Health", *REFLECTION_SERVICES}


@pytest.mark.parametrize("version", REFLECTION_VERSIONS)
def test_reflection_describes_the_points_service(channel: grpc.Channel, version: str) -> None:
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="coalition.v1.PointsService"
    )
    response = reflect(channel, request, version)
    file_descriptors = response.file_descriptor_response.file_descriptor_proto
    assert file_descriptors, response
    names = set()
    for serialized in file_descriptors:
        file_descriptor = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        names.add(file_descriptor.name)
        if file_descriptor.name == "coalition/v1/points_service.proto":
            (service,) = file_descriptor.service
            assert {"Earn", "Burn", "Reverse", "Quote"} <= {m.name for m in service.method}
    assert "coalition/v1/points_service.proto" in names


def test_reflection_v1_describes_itself_under_its_own_package(channel: grpc.Channel) -> None:
    """grpcurl describes the reflection service it talks to; v1 must name v1's messages."""
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="grpc.reflection.v1.ServerReflection"
    )
    response = reflect(channel, request, "grpc.reflection.v1")
    (serialized,) = response.file_descriptor_response.file_descriptor_proto
    file_descriptor = descriptor_pb2.FileDescriptorProto.FromString(serialized)
    assert (file_descriptor.name, file_descriptor.package) == (
        "grpc/reflection/v1/reflection.proto",
        "grpc.reflection.v1",
    )
    (method,) = file_descriptor.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
