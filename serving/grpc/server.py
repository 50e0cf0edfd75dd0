"""Build the grpc.aio server: inference + explain + health + reflection, message size limits, TLS."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving.dataplane import DataPlane
from serving.grpc.servicer import ExplainServicer, HealthTracker, InferenceServicer
from serving.protogen import explain_pb2, explain_pb2_grpc
from serving.protogen import grpc_service_pb2 as pb
from serving.protogen import grpc_service_pb2_grpc as pb_grpc
from serving.settings import ServingSettings


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_grpc_server(
    dataplane: DataPlane, health: HealthTracker, settings: ServingSettings
) -> tuple[grpc.aio.Server, int]:
    """The server (not started yet) and the port it is bound to."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_size),
        ("grpc.max_send_message_length", settings.max_message_size),
        ("grpc.so_reuseport", 0),  # a taken port is an error, not a silently shared one
        ("grpc.max_concurrent_streams", 1000),
    ]
    if settings.grpc_max_connection_age:  # GOAWAY after this age: clients reconnect, spread over replicas
        options.append(("grpc.max_connection_age_ms", round(settings.grpc_max_connection_age * 1000)))
        options.append(("grpc.max_connection_age_grace_ms", round(settings.grpc_max_connection_age_grace * 1000)))
    server = grpc.aio.server(options=options)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane), server)
    explain_pb2_grpc.add_ExplainServiceServicer_to_server(ExplainServicer(dataplane), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    names = (
        pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
        explain_pb2.DESCRIPTOR.services_by_name["ExplainService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    address = host_port(settings.host, settings.grpc_port)
    if settings.tls_cert and settings.tls_key:
        credentials = grpc.ssl_server_credentials([(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    return server, port
