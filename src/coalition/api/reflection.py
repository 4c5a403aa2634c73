"""Server reflection as both `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

Current tools (grpcurl, Postman, grpcui) ask for v1 first; older ones know only v1alpha.
grpcio-reflection (1.85) ships v1alpha alone. The two protocols are the same messages under
another package name, field for field, so v1 is served by the same servicer: its file
descriptor is v1alpha's with the package renamed, registered in the default pool so that v1
can describe itself too.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
V1_PACKAGE = "grpc.reflection.v1"
V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
METHOD_NAME = "ServerReflectionInfo"


def _v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    v1_file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1_file)
    v1_file.name = V1_FILE_NAME
    v1_file.package = V1_PACKAGE
    v1_file.ClearField("options")  # v1alpha's language options name v1alpha's packages
    old_prefix, new_prefix = f".{V1ALPHA_PACKAGE}.", f".{V1_PACKAGE}."
    for message in v1_file.message_type:
        for field in message.field:
            if field.type_name.startswith(old_prefix):
                field.type_name = new_prefix + field.type_name.removeprefix(old_prefix)
    for service in v1_file.service:
        for method in service.method:
            method.input_type = new_prefix + method.input_type.removeprefix(old_prefix)
            method.output_type = new_prefix + method.output_type.removeprefix(old_prefix)
    return v1_file


def _register_v1_file() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE_NAME)
    except KeyError:
        pool.Add(_v1_file_descriptor())


def enable_server_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection on `server` for `service_names`, under both protocol versions."""
    _register_v1_file()
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    # The servicer reads v1alpha messages; on the wire they are v1's bytes exactly.
    v1_handler = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            METHOD_NAME: grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1_handler,))
