"""Declared shapes that no tensor can have, sent to a real server over both transports.

An empty tensor (a 0 dimension) with dimensions of 2^31 and more beside it holds no data, so
every byte-count check passes; numpy then refuses to describe it. The server must answer
400 / INVALID_ARGUMENT before it looks the model up (an unknown model gets the same answer),
with typed contents and with raw ones, and answer the next normal request.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from serving.protogen import grpc_service_pb2 as pb
from tests.support.clients import grpc_raw
from tests.support.server import ServerProcess

IMAGE = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
SHAPES = [[0, 1 << 60], [0, 1 << 31, 1 << 31], [0, (1 << 63) - 1], [1 << 31, 0, 1 << 40], [0, 3, -1, 32]]
MODELS = ["tiny-image", "no-such-model"]
FORMS = ["typed", "raw"]


@pytest.fixture(scope="module")
def server(model_repo: Path) -> Iterator[ServerProcess]:
    with ServerProcess(model_repo) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as client:
        yield client


def grpc_request(model: str, datatype: str, shape: list[int], form: str) -> bytes:
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="input", datatype=datatype, shape=shape)
    if form == "raw":
        message.raw_input_contents.append(b"")
    return message.SerializeToString()


def http_request(client: httpx.Client, model: str, datatype: str, shape: list[int], form: str) -> httpx.Response:
    entry: dict[str, object] = {"name": "input", "datatype": datatype, "shape": shape}
    if form == "raw":
        entry["parameters"] = {"binary_data_size": 0}
        head = orjson.dumps({"inputs": [entry]})
        return client.post(
            f"/v2/models/{model}/infer", content=head, headers={"inference-header-content-length": str(len(head))}
        )
    entry["data"] = []
    return client.post(f"/v2/models/{model}/infer", content=orjson.dumps({"inputs": [entry]}))


def normal_grpc(server: ServerProcess) -> np.ndarray:
    message = pb.ModelInferRequest(model_name="tiny-image")
    message.inputs.add(name="input", datatype="FP32", shape=IMAGE.shape)
    message.raw_input_contents.append(IMAGE.tobytes())
    code, details, answer = grpc_raw(server.grpc_url, "ModelInfer", message.SerializeToString(), timeout=60)
    assert code == "OK", details
    response = pb.ModelInferResponse.FromString(answer)
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(tuple(response.outputs[0].shape))


def normal_http(client: httpx.Client) -> np.ndarray:
    doc = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(IMAGE.shape), "data": IMAGE.ravel().tolist()}]
    }
    response = client.post("/v2/models/tiny-image/infer", content=orjson.dumps(doc))
    assert response.status_code == 200, response.text
    output = response.json()["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("datatype", ["UINT64", "FP32"])
def test_impossible_shapes_over_grpc(server: ServerProcess, model: str, datatype: str, form: str) -> None:
    before = normal_grpc(server)
    for shape in SHAPES:
        code, details, _ = grpc_raw(server.grpc_url, "ModelInfer", grpc_request(model, datatype, shape, form))
        assert code == "INVALID_ARGUMENT", f"{shape}: {code} {details}"
        assert "more than" in details or "negative" in details, details
    np.testing.assert_array_equal(normal_grpc(server), before)  # still answering, same logits


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("datatype", ["UINT64", "FP32"])
def test_impossible_shapes_over_http(http: httpx.Client, model: str, datatype: str, form: str) -> None:
    before = normal_http(http)
    for shape in SHAPES:
        response = http_request(http, model, datatype, shape, form)
        assert response.status_code == 400, f"{shape}: {response.status_code} {response.text}"
        message = response.json()["error"]
        assert "more than" in message or "negative" in message, message
    np.testing.assert_allclose(normal_http(http), before, rtol=1e-6)


def test_grpc_raw_and_typed_contents_together_are_refused(server: ServerProcess) -> None:
    message = pb.ModelInferRequest(model_name="tiny-image")
    tensor = message.inputs.add(name="input", datatype="FP32", shape=IMAGE.shape)
    tensor.contents.fp32_contents.extend(IMAGE.ravel().tolist())
    message.raw_input_contents.append(IMAGE.tobytes())
    code, details, _ = grpc_raw(server.grpc_url, "ModelInfer", message.SerializeToString(), timeout=60)
    assert code == "INVALID_ARGUMENT" and "contents must not be set" in details, (code, details)
    assert normal_grpc(server).shape[0] == 1
