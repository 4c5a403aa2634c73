"""The standard health service and server reflection: always on, no API key needed."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

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
HUB_SERVICES = (
    "coalition.v1.PointsService",
    "coalition.v1.MemberService",
    "coalition.v1.PartnerService",
)


def health_of(channel: grpc.Channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=CALL_TIMEOUT_SECONDS)
    return int(response.status)


def reflect(
    channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (response,) = stub.ServerReflectionInfo(iter([request]), timeout=CALL_TIMEOUT_SECONDS)
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


def test_reflection_lists_every_service(channel: grpc.Channel) -> None:
    response = reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in response.list_services_response.service}
    assert names >= {*HUB_SERVICES, "grpc.health.v1.Health"}


def test_reflection_describes_the_points_service(channel: grpc.Channel) -> None:
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="coalition.v1.PointsService"
    )
    response = reflect(channel, request)
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
