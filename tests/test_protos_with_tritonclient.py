"""lumenserve's generated modules and tritonclient's gRPC client in ONE process, against a real server.

Both register Triton's `grpc_service.proto` / `model_config.proto`; the files are identical,
so protobuf's pool holds them once and the message classes are shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as triton_pb

from serving.protogen import explain_pb2, grpc_service_pb2, grpc_service_pb2_grpc
from tests.support.server import TOKEN, ServerProcess

IMAGE = np.random.default_rng(3).random((2, 3, 32, 32), dtype=np.float32)


@pytest.fixture(scope="module")
def server(model_repo: Path) -> Iterator[ServerProcess]:
    with ServerProcess(model_repo) as running:
        yield running


@pytest.fixture(scope="module")
def expected_logits(image_bundle) -> np.ndarray:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    session = ort.InferenceSession(str(image_bundle.path("onnx")), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": IMAGE})[0]


def test_one_set_of_message_classes() -> None:
    assert grpc_service_pb2.ModelInferRequest is triton_pb.ModelInferRequest
    assert grpc_service_pb2.DESCRIPTOR is triton_pb.DESCRIPTOR
    assert explain_pb2.DESCRIPTOR.dependencies[0] is triton_pb.DESCRIPTOR


def test_tritonclient_and_our_stub_in_one_process(server: ServerProcess, expected_logits: np.ndarray) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready() and client.get_model_metadata("tiny-image").name == "tiny-image"
    tensor = grpcclient.InferInput("input", list(IMAGE.shape), "FP32")
    tensor.set_data_from_numpy(IMAGE)
    by_triton = client.infer("tiny-image", [tensor]).as_numpy("logits")
    np.testing.assert_allclose(by_triton, expected_logits, rtol=1e-4, atol=1e-5)

    request = triton_pb.ModelInferRequest(model_name="tiny-image")  # tritonclient's class, our stub
    request.inputs.add(name="input", datatype="FP32", shape=IMAGE.shape)
    request.raw_input_contents.append(IMAGE.tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        answer = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert isinstance(answer, triton_pb.ModelInferResponse)
    by_stub = np.frombuffer(answer.raw_output_contents[0], dtype=np.float32).reshape(tuple(answer.outputs[0].shape))
    np.testing.assert_array_equal(by_stub, by_triton)


def test_tritonclient_repository_calls_reach_the_named_model(server: ServerProcess) -> None:
    """tritonclient sends Triton's message (model name in field 2) and reads Triton's empty answer."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    headers = {"authorization": f"Bearer {TOKEN}"}
    client.unload_model("tiny-text", headers=headers)
    assert not _ready(client, "tiny-text")
    client.load_model("tiny-text", headers=headers)
    assert client.is_model_ready("tiny-text")


def _ready(client: grpcclient.InferenceServerClient, model: str) -> bool:
    """Readiness; an unloaded model may answer not ready or NOT_FOUND."""
    from tritonclient.utils import InferenceServerException

    try:
        return bool(client.is_model_ready(model))
    except InferenceServerException as exc:
        assert "NOT_FOUND" in str(exc.status()), exc
        return False
