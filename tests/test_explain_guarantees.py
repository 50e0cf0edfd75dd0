"""Explain gets predict's guarantees: its own admission queue and metrics, a deadline, cancellation.

In-process: a real repository with the tiny ONNX image model, the data plane, the HTTP app (ASGI)
and a real grpc.aio server; the explain engine is a test double whose explanations block until
released, so what is queued and what runs is known at every step.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from serving.errors import DeadlineExceeded, Unavailable
from serving.http.app import build_app
from serving.protogen import explain_pb2_grpc
from tests.support.inprocess import BlockingEngine, Stack, grpc_channel, image_request, serving_stack
from tests.support.waiting import wait_until_async
from tests.test_inprocess_serving import grpc_image_request, image_body

MODEL = {"model": "tiny-image", "version": "1"}


def rejected(stack: Stack, reason: str) -> float:
    return stack.sample("lumenserve_explain_rejected_total", **MODEL, reason=reason)


async def occupy_the_explain_thread(stack: Stack, engine: BlockingEngine) -> asyncio.Task[Any]:
    """One explanation running (blocked in the engine): the next ones queue."""
    running = asyncio.ensure_future(stack.dataplane.explain(image_request(), "test"))
    await wait_until_async(lambda: engine.started == 1, what="the first explanation to start")
    return running


async def test_deadline_leaves_the_queue_and_is_counted(model_repo: Path) -> None:
    engine = BlockingEngine()
    async with serving_stack(model_repo, ["tiny-image"], engine, explain_max_concurrency=1) as stack:
        running = await occupy_the_explain_thread(stack, engine)
        with pytest.raises(DeadlineExceeded, match="queued"):
            await stack.dataplane.explain(image_request(timeout=50_000), "test")  # 50 ms, queued all along
        assert rejected(stack, "deadline") == 1
        assert stack.sample("lumenserve_explain_queue_depth") == 0
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(stack.dataplane)),
                                     base_url="http://test") as client:  # fmt: skip
            answer = await client.post("/v2/models/tiny-image/explain", json=image_body(timeout=50_000))
        assert answer.status_code == 504 and "deadline" in answer.json()["error"]
        assert rejected(stack, "deadline") == 2
        engine.release.set()
        await running
        assert engine.started == 1, "expired explanations never reach the engine"


async def test_grpc_deadline_is_deadline_exceeded(model_repo: Path) -> None:
    engine = BlockingEngine()
    async with serving_stack(model_repo, ["tiny-image"], engine, explain_max_concurrency=1) as stack:
        running = await occupy_the_explain_thread(stack, engine)
        async with grpc_channel(stack) as channel:
            stub = explain_pb2_grpc.ExplainServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.ModelExplain(grpc_image_request(), timeout=0.3)
            assert failed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # the server's own timer and grpc's cancellation at the deadline race: either counts it once
            left = lambda: rejected(stack, "deadline") + rejected(stack, "cancelled")  # noqa: E731
            await wait_until_async(lambda: left() == 1, what="the abandoned explanation to be counted")
            assert stack.sample("lumenserve_explain_queue_depth") == 0
        engine.release.set()
        await running


async def test_grpc_cancel_takes_the_explanation_out_of_the_queue(model_repo: Path) -> None:
    engine = BlockingEngine()
    async with serving_stack(model_repo, ["tiny-image"], engine, explain_max_concurrency=1) as stack:
        running = await occupy_the_explain_thread(stack, engine)
        async with grpc_channel(stack) as channel:
            call = explain_pb2_grpc.ExplainServiceStub(channel).ModelExplain(grpc_image_request())
            await wait_until_async(
                lambda: stack.sample("lumenserve_explain_queue_depth") == 1, what="a queued explanation"
            )
            call.cancel()
            await wait_until_async(lambda: rejected(stack, "cancelled") == 1, what="the cancellation to be counted")
            assert stack.sample("lumenserve_explain_queue_depth") == 0
        engine.release.set()
        await running
        assert engine.started == 1, "the cancelled explanation never ran"
        assert stack.dataplane.inflight == 0


async def test_http_disconnect_takes_the_explanation_out_of_the_queue(model_repo: Path) -> None:
    engine = BlockingEngine()
    async with serving_stack(model_repo, ["tiny-image"], engine, explain_max_concurrency=1) as stack:
        running = await occupy_the_explain_thread(stack, engine)
        app = build_app(stack.dataplane)
        body = httpx.Request("POST", "http://test", json=image_body()).read()
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append({})
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()  # the client hangs up once its explanation is queued
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v2/models/tiny-image/explain", "raw_path": b"", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 1), "server": ("test", 80)}  # fmt: skip
        call = asyncio.ensure_future(app(scope, receive, send))
        await wait_until_async(lambda: stack.sample("lumenserve_explain_queue_depth") == 1, what="a queued explanation")
        gone.set()
        await call
        assert rejected(stack, "cancelled") == 1
        assert stack.sample("lumenserve_explain_queue_depth") == 0
        assert any(m.get("status") == 499 for m in sent)
        engine.release.set()
        await running
        assert engine.started == 1


async def test_queue_full_is_unavailable_with_its_own_metrics(model_repo: Path) -> None:
    engine = BlockingEngine()
    settings = {"explain_max_concurrency": 1, "explain_max_queue": 1}
    async with serving_stack(model_repo, ["tiny-image"], engine, **settings) as stack:
        running = await occupy_the_explain_thread(stack, engine)
        queued = asyncio.ensure_future(stack.dataplane.explain(image_request(), "test"))
        await wait_until_async(lambda: stack.sample("lumenserve_explain_queue_depth") == 1, what="a queued explanation")
        with pytest.raises(Unavailable, match="explain queue full"):
            await stack.dataplane.explain(image_request(), "test")
        async with grpc_channel(stack) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await explain_pb2_grpc.ExplainServiceStub(channel).ModelExplain(grpc_image_request())
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(stack.dataplane)),
                                     base_url="http://test") as client:  # fmt: skip
            answer = await client.post("/v2/models/tiny-image/explain", json=image_body())
        assert answer.status_code == 503
        assert rejected(stack, "queue_full") == 3
        # explain and predict are counted apart: predictions are untouched by all of this
        assert stack.sample("lumenserve_explain_inflight") == 1
        assert stack.sample("lumenserve_inflight_requests", **MODEL) == 0
        assert stack.sample("lumenserve_requests_rejected_total", **MODEL, reason="queue_full") == 0
        prediction = await stack.dataplane.infer(image_request(), "test")  # flows while explain is blocked
        assert prediction.outputs[0].name == "logits"
        engine.release.set()
        await asyncio.gather(running, queued)
        assert stack.sample("lumenserve_explain_inflight") == 0
        assert stack.sample("lumenserve_explain_duration_seconds_count", **MODEL, method="blocking") == 2
