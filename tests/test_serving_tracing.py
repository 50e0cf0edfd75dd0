"""OpenTelemetry traces and request logs of a real ``lumenserve serve`` process.

A real OTLP receiver (tests/support/otlp.py, from OpenTelemetry's own protobuf definitions)
takes the server's spans over HTTP/protobuf and over gRPC; HTTP and gRPC requests carry a W3C
``traceparent`` and the spans must continue it. The same process logs JSON with an access log.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from opentelemetry.proto.trace.v1 import trace_pb2

from serving.protogen import grpc_service_pb2 as pb
from serving.protogen import grpc_service_pb2_grpc as pb_grpc
from tests.support.otlp import Received, SpanSink, grpc_receiver, http_receiver
from tests.support.server import ServerProcess
from tests.support.waiting import wait_until

STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
PIXELS = np.linspace(0, 1, 3 * 32 * 32, dtype=np.float32).reshape(1, 3, 32, 32)  # (batch, C, H, W)


class Caller:
    """A caller's own trace context: the ``traceparent`` it sends."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)
        self.span_id = secrets.token_hex(8)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


def otel_env(endpoint: str, protocol: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "LUMENSERVE_GRACE_PERIOD": "5",
    }


def http_infer(server: ServerProcess, caller: Caller | None, model: str = "tiny-image", **body: Any) -> httpx.Response:
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": PIXELS.ravel().tolist()}]}
    doc.update(body)
    headers = {"traceparent": caller.traceparent} if caller else {}
    return httpx.post(f"http://{server.http_url}/v2/models/{model}/infer", json=doc, headers=headers, timeout=60)


def grpc_infer(server: ServerProcess, caller: Caller, request_id: str) -> tuple[pb.ModelInferResponse, dict[str, str]]:
    request = pb.ModelInferRequest(model_name="tiny-image")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
    request.raw_input_contents.append(PIXELS.tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        metadata = (("traceparent", caller.traceparent), ("x-request-id", request_id))
        reply, call = stub.ModelInfer.with_call(request, metadata=metadata, timeout=60)
    return reply, dict(call.trailing_metadata() or ())


def spans_of(sink: SpanSink, caller: Caller, count: int, what: str) -> list[Received]:
    """The caller's trace's spans, once its request span and at least ``count`` spans have
    arrived (the request span ends last, so its children were exported with it or before)."""

    def found() -> list[Received]:
        mine = [r for r in sink.snapshot() if r.span.trace_id.hex() == caller.trace_id]
        return mine if len(mine) >= count and any(r.span.kind == SERVER for r in mine) else []

    return wait_until(found, 30, what, details=lambda: f"{len(sink.snapshot())} spans received")


def request_span(spans: list[Received], caller: Caller) -> Received:
    (server_span,) = [r for r in spans if r.span.kind == SERVER]
    assert server_span.span.parent_span_id.hex() == caller.span_id  # the caller's span is its parent
    assert server_span.service == "lumenserve"
    return server_span


def children(spans: list[Received], parent: Received) -> dict[str, Received]:
    return {r.span.name: r for r in spans if r.span.parent_span_id == parent.span.span_id}


def check_batch_link(sink: SpanSink, request: Received) -> Received:
    """The request span links to exactly one ``batch`` span, which links back to it."""
    (link,) = request.span.links
    batch = wait_until(
        lambda: next((r for r in sink.snapshot() if r.span.span_id == link.span_id), None), 30, "the batch span"
    )
    assert batch.span.name == "batch"
    assert batch.span.trace_id == link.trace_id
    assert request.span.span_id in {peer.span_id for peer in batch.span.links}
    rows = batch.attributes["lumenserve.batch_size"]
    assert rows >= 1 and batch.attributes["lumenserve.batch_requests"] >= 1
    assert request.attributes["lumenserve.batch_size"] == rows
    assert batch.attributes["lumenserve.model"] == "tiny-image"
    return batch


# ---- tracing over OTLP/HTTP, JSON logs with the access log ---------------------------------
@pytest.fixture(scope="module")
def http_traced(model_repo: Path) -> Iterator[tuple[ServerProcess, SpanSink]]:
    with http_receiver() as (sink, endpoint):
        env = otel_env(endpoint, "http/protobuf")
        args = ("--models", "tiny-image", "--log-format", "json", "--access-log")
        with ServerProcess(model_repo, *args, env=env) as server:
            yield server, sink


def test_http_and_grpc_requests_continue_the_callers_trace(http_traced: tuple[ServerProcess, SpanSink]) -> None:
    server, sink = http_traced
    caller = Caller()
    answer = http_infer(server, caller)
    assert answer.status_code == 200
    spans = spans_of(sink, caller, 4, "the HTTP request's spans")
    span = request_span(spans, caller)
    assert span.span.name == "POST /v2/models/{model}/infer"
    attributes = span.attributes
    assert attributes["lumenserve.model"] == "tiny-image" and attributes["lumenserve.model_version"] == "1"
    assert attributes["lumenserve.status"] == "OK" and attributes["http.response.status_code"] == 200
    assert attributes["lumenserve.request_id"] == answer.headers["x-request-id"]
    assert span.span.status.code != STATUS_ERROR
    steps = children(spans, span)
    assert {"preprocess", "queue"} <= set(steps)
    check_batch_link(sink, span)

    grpc_caller = Caller()
    _reply, trailing = grpc_infer(server, grpc_caller, "grpc-request-7")
    assert trailing["x-request-id"] == "grpc-request-7"
    spans = spans_of(sink, grpc_caller, 3, "the gRPC request's spans")
    span = request_span(spans, grpc_caller)
    assert span.span.name == "inference.GRPCInferenceService/ModelInfer"
    assert span.attributes["rpc.grpc.status_code"] == 0 and span.attributes["lumenserve.request_id"] == "grpc-request-7"
    assert "queue" in children(spans, span)
    check_batch_link(sink, span)


def test_every_request_of_a_burst_links_its_batch(http_traced: tuple[ServerProcess, SpanSink]) -> None:
    server, sink = http_traced
    callers = [Caller() for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda c: http_infer(server, c), callers))
    assert all(a.status_code == 200 for a in answers)
    batches: dict[bytes, Received] = {}
    linked: dict[bytes, int] = {}
    for caller in callers:
        span = request_span(spans_of(sink, caller, 3, "a burst request's spans"), caller)
        batch = check_batch_link(sink, span)
        batches[batch.span.span_id] = batch
        linked[batch.span.span_id] = linked.get(batch.span.span_id, 0) + 1
    for span_id, batch in batches.items():  # each batch links every request it ran, and only those
        assert batch.attributes["lumenserve.batch_requests"] == len(batch.span.links) == linked[span_id]


def test_status_of_failed_requests(http_traced: tuple[ServerProcess, SpanSink]) -> None:
    server, sink = http_traced
    expired, unknown = Caller(), Caller()
    assert http_infer(server, expired, parameters={"timeout": 1}).status_code == 504  # 1 µs deadline
    assert http_infer(server, unknown, model="no-such-model").status_code == 404
    span = request_span(spans_of(sink, expired, 1, "the expired request's span"), expired)
    assert span.attributes["lumenserve.status"] == "DEADLINE_EXCEEDED"
    assert span.span.status.code == STATUS_ERROR  # a server-side failure
    span = request_span(spans_of(sink, unknown, 1, "the unknown model's span"), unknown)
    assert span.attributes["lumenserve.status"] == "NOT_FOUND" and span.attributes["http.response.status_code"] == 404
    assert span.span.status.code != STATUS_ERROR  # the caller's mistake is not the server's error


def test_explain_has_its_span(http_traced: tuple[ServerProcess, SpanSink]) -> None:
    server, sink = http_traced
    caller = Caller()
    doc = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": PIXELS.ravel().tolist()}],
        "parameters": {"method": "saliency"},
    }
    answer = httpx.post(
        f"http://{server.http_url}/v2/models/tiny-image/explain",
        json=doc,
        headers={"traceparent": caller.traceparent},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    spans = spans_of(sink, caller, 2, "the explain request's spans")
    span = request_span(spans, caller)
    assert span.span.name == "POST /v2/models/{model}/explain"
    explain = children(spans, span)["explain"]
    assert explain.attributes["lumenserve.explain_method"] == "saliency"


def test_json_logs_carry_the_echoed_request_id_and_each_error_once(
    http_traced: tuple[ServerProcess, SpanSink],
) -> None:
    server, _sink = http_traced
    caller = Caller()
    ok = http_infer(server, caller)
    given = http_infer(server, None, id="oip-id-42")  # the OIP id is the request id when no header
    assert given.headers["x-request-id"] == "oip-id-42" and given.json()["id"] == "oip-id-42"
    bad = httpx.post(
        f"http://{server.http_url}/v2/models/tiny-image/infer",
        json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [1.0]}]},
        headers={"x-request-id": "bad-request-1"},
        timeout=60,
    )
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "bad-request-1"
    rid = ok.headers["x-request-id"]
    assert len(rid) == 32  # generated
    server.wait_for_line("bad-request-1")

    def log_lines() -> list[dict[str, Any]]:
        lines = [line for line in server.lines if not line.startswith("lumenserve ready:")]
        return [json.loads(line) for line in lines if line.strip()]  # every log line is JSON

    access = wait_until(
        lambda: [e for e in log_lines() if e["logger"] == "lumenserve.access" and e["request_id"] == rid],
        10,
        "the access line",
    )
    (line,) = access
    assert line["trace_id"] == caller.trace_id
    assert (line["model"], line["version"], line["protocol"], line["endpoint"]) == ("tiny-image", "1", "http", "infer")
    assert line["status"] == "OK" and line["http_status"] == 200 and line["duration_ms"] > 0
    assert [e["request_id"] for e in log_lines() if e.get("request_id") == "oip-id-42"] == ["oip-id-42"]
    message = bad.json()["error"]
    mentions = [e for e in log_lines() if any(message in str(value) for value in e.values())]
    assert len(mentions) == 1, mentions  # logged once: on its access line, with the request id
    assert mentions[0]["request_id"] == "bad-request-1" and mentions[0]["status"] == "INVALID_ARGUMENT"


# ---- tracing over OTLP/gRPC --------------------------------------------------------------
def test_spans_reach_an_otlp_grpc_receiver(model_repo: Path) -> None:
    with grpc_receiver() as (sink, endpoint):
        env = {**otel_env(endpoint, "grpc"), "LUMENSERVE_EXPLAIN": "false", "OTEL_SERVICE_NAME": "edge-lumen"}
        with ServerProcess(model_repo, "--models", "tiny-image", env=env) as server:
            http_caller, grpc_caller = Caller(), Caller()
            assert http_infer(server, http_caller).status_code == 200
            grpc_infer(server, grpc_caller, "g-1")
            for caller in (http_caller, grpc_caller):
                spans = spans_of(sink, caller, 3, "spans over OTLP/gRPC")
                (span,) = [r for r in spans if r.span.kind == SERVER]
                assert span.span.parent_span_id.hex() == caller.span_id and span.service == "edge-lumen"
                check_batch_link(sink, span)
