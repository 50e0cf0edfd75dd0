"""Request logs and the tracing switch, in-process: a real repository with the tiny ONNX image
model, the HTTP app (ASGI) and a real grpc.aio server; the explain engine is the test double
whose method "crash" raises an internal error."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from serving.http.app import build_app
from serving.logs import LogFormat, log_handler
from serving.observe import enable_access_log
from serving.protogen import explain_pb2_grpc
from serving.protogen import grpc_service_pb2_grpc as pb_grpc
from serving.tracing import exporters_wanted, otlp_protocol
from tests.support.inprocess import BlockingEngine, grpc_channel, serving_stack
from tests.test_inprocess_serving import grpc_image_request, image_body

ROOT = Path(__file__).resolve().parents[1]
SECRET = "secret-detail-8842"  # BlockingEngine's crash message: only ever in the server log


@contextmanager
def captured(log_format: LogFormat) -> Iterator[io.StringIO]:
    """What the server's handler writes in ``log_format``, with the access log on."""
    stream = io.StringIO()
    handler = log_handler(log_format, stream)
    root = logging.getLogger()
    root.addHandler(handler)
    enable_access_log(True)
    try:
        yield stream
    finally:
        enable_access_log(False)
        root.removeHandler(handler)


async def test_internal_error_is_logged_once_with_the_echoed_request_id(model_repo: Path) -> None:
    async with serving_stack(model_repo, ["tiny-image"], BlockingEngine()) as stack:
        with captured("json") as stream:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=build_app(stack.dataplane)), base_url="http://test"
            ) as client:
                body, headers = image_body(method="crash"), {"x-request-id": "crash-1"}
                answer = await client.post("/v2/models/tiny-image/explain", json=body, headers=headers)
            async with grpc_channel(stack) as channel:
                stub = explain_pb2_grpc.ExplainServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await stub.ModelExplain(grpc_image_request(method="crash"), metadata=(("x-request-id", "crash-2"),))
    assert answer.status_code == 500 and SECRET not in answer.text
    assert answer.headers["x-request-id"] == "crash-1"
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert dict(failed.value.trailing_metadata() or ())["x-request-id"] == "crash-2"
    lines = stream.getvalue().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert sum(SECRET in line for line in lines) == 2  # once per request
    for request_id, protocol in (("crash-1", "http"), ("crash-2", "grpc")):
        mine = [e for e in entries if e.get("request_id") == request_id]
        (error,) = [e for e in mine if SECRET in e.get("exception", "") + e["message"]]
        assert error["level"] == "ERROR" and "Traceback" in error["exception"]
        (access,) = [e for e in mine if e["logger"] == "lumenserve.access"]
        assert access["status"] == "INTERNAL" and access["protocol"] == protocol and access["endpoint"] == "explain"
        assert SECRET not in json.dumps(access)


async def test_text_lines_and_ids_over_grpc(model_repo: Path) -> None:
    async with serving_stack(model_repo, ["tiny-image"]) as stack:
        with captured("text") as stream:
            async with grpc_channel(stack) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                call = stub.ModelInfer(grpc_image_request(), metadata=(("x-request-id", "text-1"),))
                await call
                echoed = dict(await call.trailing_metadata() or ())
                request = grpc_image_request()
                request.id = "oip-7"
                call = stub.ModelInfer(request)  # no metadata id: the OIP id is the request id
                reply = await call
                from_oip = dict(await call.trailing_metadata() or ())
                call = stub.ModelInfer(grpc_image_request())  # neither: a generated one
                await call
                generated = dict(await call.trailing_metadata() or ())["x-request-id"]
    assert echoed["x-request-id"] == "text-1"
    assert from_oip["x-request-id"] == "oip-7" and reply.id == "oip-7"
    assert len(generated) == 32 and int(generated, 16) >= 0
    (line,) = [line for line in stream.getvalue().splitlines() if "request_id=text-1" in line]
    assert "lumenserve.access" in line and "model=tiny-image version=1 status=OK" in line and "protocol=grpc" in line


# ---- the tracing switch ------------------------------------------------------------------
def test_tracing_is_off_unless_the_environment_asks_for_it() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert exporters_wanted({}) == []
    assert exporters_wanted({"OTEL_SERVICE_NAME": "lumen", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == []
    assert exporters_wanted(endpoint) == ["otlp"]
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "otlp,console"}) == ["otlp", "console"]
    assert exporters_wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporters_wanted({**endpoint, "OTEL_SDK_DISABLED": "true"}) == []
    with pytest.raises(RuntimeError, match="zipkin"):
        exporters_wanted({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert otlp_protocol({}) == "http/protobuf"
    both = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
    assert otlp_protocol(both) == "grpc"  # the traces-only variable wins
    with pytest.raises(RuntimeError, match="http/json"):
        otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


CHECK_OFF = """
import sys
from serving import tracing
from serving.server import LumenServer
from serving.settings import ServingSettings

server = LumenServer(ServingSettings(repository=".", explain=False))
assert server.tracing is False and tracing._tracer is None
assert tracing.phase("preprocess") is tracing._NOOP
assert tracing.queued(0) is None and tracing.start_batch([]) is None
print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""


def test_with_tracing_off_no_exporter_is_created() -> None:
    """A server built without ``OTEL_*`` never imports OpenTelemetry (a fresh interpreter, the
    otel extra installed), so no provider, processor or exporter exists; every hook is a no-op."""
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", CHECK_OFF], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    import opentelemetry.sdk.trace  # noqa: F401  (installed: the test above would mean nothing without it)


def test_log_settings_come_from_flags_environment_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from serving.observe import access_log
    from serving.server import LumenServer
    from serving.settings import ServingSettings, load_settings

    defaults = load_settings()
    assert defaults.log_format == "text" and defaults.access_log is False
    try:
        LumenServer(ServingSettings(repository=ROOT, explain=False, access_log=True))
        assert access_log.isEnabledFor(logging.INFO)
        LumenServer(ServingSettings(repository=ROOT, explain=False))
        assert not access_log.isEnabledFor(logging.INFO)  # off by default
    finally:
        enable_access_log(False)
    monkeypatch.setenv("LUMENSERVE_LOG_FORMAT", "json")
    monkeypatch.setenv("LUMENSERVE_ACCESS_LOG", "true")
    from_env = load_settings()
    assert from_env.log_format == "json" and from_env.access_log is True
    assert load_settings(log_format="text", access_log=False).access_log is False  # flags win
    with pytest.raises(ValidationError, match="log_format"):
        ServingSettings(log_format="xml")
