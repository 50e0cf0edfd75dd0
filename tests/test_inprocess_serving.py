"""The predict road in-process: data plane, HTTP app (ASGI) and gRPC servicer on tiny ONNX models."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from serving.errors import DeadlineExceeded, InvalidInput, ModelNotFound, Unimplemented, classify
from serving.http.app import build_app
from serving.protogen import explain_pb2_grpc
from serving.protogen import grpc_service_pb2 as pb
from serving.protogen import grpc_service_pb2_grpc as pb_grpc
from serving.types import InferenceRequest, RequestedOutput, Tensor
from tests.support.inprocess import BlockingEngine, grpc_channel, image_request, serving_stack

SECRET = "secret-detail-8842"


def http_client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]


def image_body(**parameters: object) -> dict[str, object]:
    return {"parameters": parameters, "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32],
            "data": [0.0] * (3 * 32 * 32)}]}  # fmt: skip


def grpc_image_request(model: str = "tiny-image", **parameters: int | str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
    del tensor
    request.raw_input_contents.append(np.zeros((1, 3, 32, 32), dtype="<f4").tobytes())
    for key, value in parameters.items():
        if isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = value
    return request


async def test_data_plane_infers_tensors_and_raw_text(model_repo: Path) -> None:
    async with serving_stack(model_repo, ["tiny-image", "tiny-text"]) as stack:
        response = await stack.dataplane.infer(image_request(rows=2), "test")
        by_name = {t.name: t.data for t in response.outputs}
        assert set(by_name) == {"logits", "probabilities"}
        assert by_name["probabilities"].shape[0] == 2
        np.testing.assert_allclose(by_name["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
        texts = np.array([b"a fine film", b"dull"], dtype=object)
        request = InferenceRequest("tiny-text", inputs=[Tensor("text", "BYTES", texts)],
                                   outputs=[RequestedOutput("logits", {"classification": 1})])  # fmt: skip
        top = (await stack.dataplane.infer(request, "test")).outputs[0]
        assert top.datatype == "BYTES" and top.data.shape == (2, 1)
        assert stack.sample("lumenserve_requests_total", model="tiny-text", version="1", protocol="test",
                            endpoint="infer", status="OK") == 1  # fmt: skip
        assert stack.sample("lumenserve_inflight_requests", model="tiny-image", version="1") == 0
        assert stack.dataplane.inflight == 0


async def test_data_plane_error_table(model_repo: Path) -> None:
    async with serving_stack(model_repo, ["tiny-image"]) as stack:
        plane = stack.dataplane
        with pytest.raises(ModelNotFound):
            await plane.infer(image_request("nope"), "test")
        bad = InferenceRequest("tiny-image", inputs=[Tensor("input", "FP32", np.zeros((1, 3, 8, 8), np.float32))])
        with pytest.raises(InvalidInput, match="shape"):
            await plane.infer(bad, "test")
        with pytest.raises(InvalidInput, match="timeout"):
            await plane.infer(image_request(timeout=-1), "test")
        with pytest.raises(DeadlineExceeded):
            await plane.infer(image_request(timeout=1), "test")  # 1 µs: gone before it is queued
        with pytest.raises(Unimplemented):
            await plane.explain(image_request(), "test")  # no explain service
        statuses = {"INVALID_ARGUMENT": 2, "DEADLINE_EXCEEDED": 1}
        for status, count in statuses.items():
            assert stack.sample("lumenserve_requests_total", model="tiny-image", version="1", protocol="test",
                                endpoint="infer", status=status) == count  # fmt: skip


def test_classify_is_pure_and_generic_for_bugs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        classified = classify(RuntimeError(SECRET))
    assert classified.http_status == 500 and classified.grpc_code is grpc.StatusCode.INTERNAL
    assert SECRET not in classified.message and not caplog.records
    assert classify(InvalidInput("x" * 5000)).message.endswith("(truncated, 5000 characters)")


async def test_http_infer_and_error_table(model_repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with (
        serving_stack(model_repo, ["tiny-image"], engine=BlockingEngine()) as stack,
        http_client(build_app(stack.dataplane)) as client,
    ):
        ok = await client.post("/v2/models/tiny-image/infer", json=image_body())
        assert ok.status_code == 200
        assert [o["name"] for o in ok.json()["outputs"]] == ["logits", "probabilities"]
        cases = {
            "/v2/models/nope/infer": (image_body(), 404),
            "/v2/models/tiny-image/infer": (image_body(timeout=1), 504),
            "/v2/models/tiny-image/versions/7/infer": (image_body(), 404),
        }
        for path, (body, status) in cases.items():
            answer = await client.post(path, json=body)
            assert answer.status_code == status, (path, answer.text)
            assert "error" in answer.json()
        bad = await client.post("/v2/models/tiny-image/infer", content=b"{not json")
        assert bad.status_code == 400
        unsupported = await client.post("/v2/models/tiny-image/explain", json=image_body(method="unsupported"))
        assert unsupported.status_code == 501 and "not supported" in unsupported.json()["error"]
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="lumenserve"):
            crash = await client.post("/v2/models/tiny-image/explain", json=image_body(method="crash"))
        assert crash.status_code == 500 and SECRET not in crash.text
        assert "internal error" in crash.json()["error"]
        assert sum(SECRET in r.getMessage() or SECRET in (r.exc_text or "") for r in caplog.records) <= 1
        assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1, "logged once, at the edge"


async def test_http_explain_methods_come_from_the_model(model_repo: Path) -> None:
    from serving.explain_backend import CaptumEngine

    async with (
        serving_stack(model_repo, ["tiny-image", "tiny-text"], engine=CaptumEngine()) as stack,
        http_client(build_app(stack.dataplane)) as client,
    ):
        image = (await client.get("/v2/models/tiny-image/explain")).json()
        text = (await client.get("/v2/models/tiny-text/versions/1/explain")).json()
        missing = await client.get("/v2/models/nope/explain")
    assert missing.status_code == 404
    methods = {m["name"]: m for m in image["methods"]}
    assert image["default_method"] in methods and "grad_cam" in methods and "attention" not in methods
    n_steps = methods["integrated_gradients"]["parameters"]["properties"]["n_steps"]
    assert (n_steps["type"], n_steps["minimum"], n_steps["maximum"], n_steps["default"]) == ("integer", 2, 512, 32)
    assert n_steps["description"] and all(m["description"] for m in image["methods"])
    assert methods["saliency"]["parameters"]["properties"]["alpha"]["maximum"] == 1.0  # rendering, per method
    assert "attention" in {m["name"] for m in text["methods"]}


async def test_http_explain_methods_without_explain_is_501(model_repo: Path) -> None:
    async with serving_stack(model_repo, ["tiny-image"]) as stack, http_client(build_app(stack.dataplane)) as client:
        assert (await client.get("/v2/models/tiny-image/explain")).status_code == 501


async def test_grpc_infer_and_error_table(model_repo: Path) -> None:
    async with (
        serving_stack(model_repo, ["tiny-image"], engine=BlockingEngine()) as stack,
        grpc_channel(stack) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = await stub.ModelInfer(grpc_image_request())
        assert [o.name for o in response.outputs] == ["logits", "probabilities"]
        logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
        assert logits.size == response.outputs[0].shape[1]
        cases = [
            (grpc_image_request("nope"), grpc.StatusCode.NOT_FOUND),
            (grpc_image_request(timeout=1), grpc.StatusCode.DEADLINE_EXCEEDED),
            (grpc_image_request(timeout="soon"), grpc.StatusCode.INVALID_ARGUMENT),
        ]
        for request, code in cases:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.ModelInfer(request)
            assert failed.value.code() == code
        explain = explain_pb2_grpc.ExplainServiceStub(channel)
        for method, code in (("unsupported", grpc.StatusCode.UNIMPLEMENTED), ("crash", grpc.StatusCode.INTERNAL)):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await explain.ModelExplain(grpc_image_request(method=method))
            assert failed.value.code() == code and SECRET not in (failed.value.details() or "")
