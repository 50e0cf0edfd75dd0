"""A real OTLP trace receiver for the tests, built from OpenTelemetry's own protobuf definitions
(``opentelemetry-proto``): HTTP ``POST /v1/traces`` and the gRPC ``TraceService``, both on
127.0.0.1 free ports, both decoding ``ExportTraceServiceRequest`` into one list of spans."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as collector
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as collector_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class Received:
    """One exported span with its service name."""

    span: trace_pb2.Span
    service: str

    @property
    def attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kv in self.span.attributes:
            which = kv.value.WhichOneof("value")
            out[kv.key] = getattr(kv.value, which) if which else None
        return out


class SpanSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[Received] = []
        self.exports = 0

    def add(self, request: collector.ExportTraceServiceRequest) -> None:
        with self._lock:
            self.exports += 1
            for resource_spans in request.resource_spans:
                service = next(
                    (kv.value.string_value for kv in resource_spans.resource.attributes if kv.key == "service.name"), ""
                )
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(Received(span, service) for span in scope_spans.spans)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.spans)


class _TraceService(collector_grpc.TraceServiceServicer):
    def __init__(self, sink: SpanSink) -> None:
        self.sink = sink

    def Export(self, request: collector.ExportTraceServiceRequest, context: Any) -> Any:
        self.sink.add(request)
        return collector.ExportTraceServiceResponse()


@contextmanager
def grpc_receiver() -> Iterator[tuple[SpanSink, str]]:
    """(sink, endpoint) of an OTLP/gRPC receiver."""
    sink = SpanSink()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    collector_grpc.add_TraceServiceServicer_to_server(_TraceService(sink), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield sink, f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)


@contextmanager
def http_receiver() -> Iterator[tuple[SpanSink, str]]:
    """(sink, endpoint) of an OTLP/HTTP receiver (protobuf bodies on ``/v1/traces``)."""
    sink = SpanSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces" or self.headers.get("content-type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            sink.add(collector.ExportTraceServiceRequest.FromString(body))
            answer = collector.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
