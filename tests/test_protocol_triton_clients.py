"""tritonclient (gRPC and HTTP, in this process next to ``serving.protogen``) against a real
server: metadata, model configuration, statistics, repository index and load/unload with the
token, infer and async_infer, and the bidirectional stream with mixed models."""

from __future__ import annotations

import queue
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from lumenserve.bundle import load_bundle
from serving.protogen import grpc_service_pb2  # noqa: F401  (both proto sets in one process)
from tests.support.server import TOKEN, ServerOptions, ServerProcess

AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BATCH = 16
QUEUE_DELAY_S = 0.004


@pytest.fixture(scope="module")
def server_options(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerOptions:
    repo = tmp_path_factory.mktemp("triton_clients_repo")
    for name in ("tiny-image", "tiny-text"):
        shutil.copytree(model_repo / name, repo / name)
    env = {
        "LUMENSERVE_MAX_BATCH_SIZE": str(MAX_BATCH),
        "LUMENSERVE_MAX_QUEUE_DELAY": str(QUEUE_DELAY_S),
        "LUMENSERVE_MAX_QUEUE_SIZE": "300",
        "LUMENSERVE_EXPLAIN": "false",
    }
    return ServerOptions(env=env, repo=repo)


def image(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 3, 32, 32), dtype=np.float32)


def grpc_inputs(array: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("input", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return [tensor]


def http_inputs(array: np.ndarray) -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput("input", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return [tensor]


def test_metadata_on_both_clients(server: ServerProcess) -> None:
    for client in (
        grpcclient.InferenceServerClient(server.grpc_url),
        httpclient.InferenceServerClient(server.http_url),
    ):
        meta = client.get_server_metadata()
        extensions = meta.extensions if hasattr(meta, "extensions") else meta["extensions"]
        assert {"model_configuration", "statistics", "model_repository", "binary_tensor_data"} <= set(extensions)
    model = grpcclient.InferenceServerClient(server.grpc_url).get_model_metadata("tiny-image")
    assert model.name == "tiny-image" and model.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, 3, 32, 32])]


def test_model_config_field_by_field(server: ServerProcess) -> None:
    manifest = load_bundle(Path(server.repo) / "tiny-text" / "1").manifest
    config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("tiny-text").config
    assert config.name == "tiny-text" and config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == MAX_BATCH
    assert [(i.name, list(i.dims)) for i in config.input] == [(t.name, t.shape[1:]) for t in manifest.inputs]
    assert all(model_config_pb2.DataType.Name(i.data_type) == "TYPE_INT64" for i in config.input)
    assert {o.name for o in config.output} == {t.name for t in manifest.outputs} | {"probabilities"}
    assert config.dynamic_batching.max_queue_delay_microseconds == round(QUEUE_DELAY_S * 1e6)
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 300
    assert config.instance_group[0].count >= 1
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.parameters["raw_input"].string_value == "text"
    assert config.version_policy.HasField("all")
    http_config = httpclient.InferenceServerClient(server.http_url).get_model_config("tiny-text")
    assert http_config["max_batch_size"] == MAX_BATCH and http_config["input"][0]["data_type"] == "TYPE_INT64"
    versioned = httpx.get(f"http://{server.http_url}/v2/models/tiny-text/versions/1/config").json()
    assert versioned == http_config
    missing = httpx.get(f"http://{server.http_url}/v2/models/nope/config")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def _stats(client: Any, name: str) -> dict[str, Any]:
    if isinstance(client, grpcclient.InferenceServerClient):
        return client.get_inference_statistics(name, as_json=True)["model_stats"][0]  # type: ignore[no-any-return]
    return client.get_inference_statistics(name)["model_stats"][0]  # type: ignore[no-any-return]


def _count(stats: dict[str, Any], *path: str) -> int:
    value: Any = stats
    for key in path:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return int(value or 0)


def _batches(stats: dict[str, Any]) -> dict[int, int]:
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def _prometheus_batches(server: ServerProcess, model: str) -> float:
    for line in httpx.get(f"http://{server.http_url}/metrics").text.splitlines():
        if line.startswith("lumenserve_batch_size_count{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_statistics_rise_by_exactly_the_requests_sent(server: ServerProcess) -> None:
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    http_client = httpclient.InferenceServerClient(server.http_url)
    before, executions_before = _stats(grpc_client, "tiny-image"), _prometheus_batches(server, "tiny-image")
    for seed in range(5):  # one after another: each its own batch of 1
        grpc_client.infer("tiny-image", grpc_inputs(image(1, seed)))
    http_client.infer("tiny-image", http_inputs(image(3, 9)))  # one batch of 3
    with pytest.raises(InferenceServerException):
        grpc_client.infer("tiny-image", grpc_inputs(image(MAX_BATCH + 1, 0)))  # refused: a failure
    for client in (grpc_client, http_client):
        after = _stats(client, "tiny-image")

        def grew(*path: str, after: dict[str, Any] = after) -> int:
            return _count(after, *path) - _count(before, *path)

        assert grew("inference_count") == 8 and grew("execution_count") == 6
        for stage in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            assert grew("inference_stats", stage, "count") == 6, stage
        assert grew("inference_stats", "fail", "count") == 1
        assert grew("inference_stats", "compute_infer", "ns") > 0
        per_size = {size: n - _batches(before).get(size, 0) for size, n in _batches(after).items()}
        assert {size: n for size, n in per_size.items() if n} == {1: 5, 3: 1}
        assert _count(after, "last_inference") > 0
    assert _prometheus_batches(server, "tiny-image") - executions_before == 6  # the same executions
    every = http_client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in every} == {"tiny-image", "tiny-text"}
    with pytest.raises(InferenceServerException, match="nope"):
        grpc_client.get_inference_statistics("nope")


def test_infer_and_async_infer_agree(server: ServerProcess) -> None:
    array = image(2, 4)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    http_client = httpclient.InferenceServerClient(server.http_url)
    direct = grpc_client.infer("tiny-image", grpc_inputs(array)).as_numpy("logits")
    answers: queue.Queue[Any] = queue.Queue()
    grpc_client.async_infer("tiny-image", grpc_inputs(array), lambda result, error: answers.put((result, error)))
    result, error = answers.get(timeout=60)
    assert error is None
    np.testing.assert_allclose(result.as_numpy("logits"), direct, rtol=1e-6, atol=1e-6)
    pending = http_client.async_infer("tiny-image", http_inputs(array))
    np.testing.assert_allclose(pending.get_result().as_numpy("logits"), direct, rtol=1e-6, atol=1e-6)


def test_stream_answers_mixed_models_by_content(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    texts = ["a short one", "a rather longer sentence for the second model", "three"]
    expected: dict[str, np.ndarray] = {}
    for i, text in enumerate(texts):
        tensor = grpcclient.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode()], dtype=object))
        expected[f"text-{i}"] = client.infer("tiny-text", [tensor]).as_numpy("logits")
    for seed in range(4):
        expected[f"image-{seed}"] = client.infer("tiny-image", grpc_inputs(image(1, seed))).as_numpy("logits")

    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent: dict[str, str] = {}
    for n in range(100):
        if n % 2:
            key = f"text-{n % 3}"
            tensor = grpcclient.InferInput("text", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([texts[n % 3].encode()], dtype=object))
            client.async_stream_infer("tiny-text", [tensor], request_id=f"r{n}")
        else:
            key = f"image-{n % 4}"
            client.async_stream_infer("tiny-image", grpc_inputs(image(1, n % 4)), request_id=f"r{n}")
        sent[f"r{n}"] = key
        if n == 50:  # an invalid request in the middle: answered in-stream, the stream stays open
            client.async_stream_infer("tiny-image", grpc_inputs(image(1, 0)[:, :2]), request_id="bad")
    client.stop_stream()  # waits for every answer
    results, errors = {}, []
    while not answers.empty():
        result, error = answers.get_nowait()
        if error is not None:
            errors.append(str(error))
        else:
            results[result.get_response().id] = result.as_numpy("logits")
    assert len(errors) == 1 and "shape" in errors[0]
    assert set(results) == set(sent)
    for request_id, key in sent.items():
        np.testing.assert_allclose(results[request_id], expected[key], rtol=1e-5, atol=1e-5)


def test_repository_index_load_and_unload_with_the_token(server: ServerProcess) -> None:
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    http_client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException, match=r"(?i)authoriz|token"):
        grpc_client.get_model_repository_index()
    index = grpc_client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    assert {(m["name"], m["version"], m["state"]) for m in index} == {
        ("tiny-image", "1", "READY"),
        ("tiny-text", "1", "READY"),
    }
    grpc_client.unload_model("tiny-text", headers=AUTH)
    assert not grpc_client.is_model_ready("tiny-text")
    states = {m["name"]: m.get("state") for m in http_client.get_model_repository_index(headers=AUTH)}
    assert states == {"tiny-image": "READY", "tiny-text": "UNAVAILABLE"}
    ready_only = httpx.post(f"http://{server.http_url}/v2/repository/index", json={"ready": True}, headers=AUTH)
    assert [m["name"] for m in ready_only.json()] == ["tiny-image"]
    http_client.load_model("tiny-text", headers=AUTH)
    assert grpc_client.is_model_ready("tiny-text") and http_client.is_model_ready("tiny-text")


def test_extensions_not_implemented_are_refused_clearly(server: ServerProcess) -> None:
    with pytest.raises(InferenceServerException, match="UNIMPLEMENTED"):
        grpcclient.InferenceServerClient(server.grpc_url).get_system_shared_memory_status()
    answer = httpx.get(f"http://{server.http_url}/v2/systemsharedmemory/status")
    assert answer.status_code == 404 and "error" in answer.json()


def test_every_503_carries_retry_after() -> None:
    from serving.errors import ModelNotFound, Unavailable
    from serving.http.app import error_response

    refused = error_response(Unavailable("queue full (256 requests waiting); retry later"), "test")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    missing = error_response(ModelNotFound("unknown model 'x'"), "test")
    assert missing.status_code == 404 and "retry-after" not in missing.headers
