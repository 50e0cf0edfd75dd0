"""lumenserve as a real ``lumenserve serve`` process on free ports, driven by tritonclient's
gRPC and HTTP clients; results compared with in-process ONNX Runtime on the same bundle files."""

from __future__ import annotations

import io
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from lumenserve.bundle import Bundle
from serving.codecs.image import ImageCodec
from tests.support.clients import concurrent_callers, grpc_health, grpc_repository, jpeg_bytes, triton_infer
from tests.support.server import TOKEN, ServerOptions, ServerProcess

SENTENCES = [
    "a short sentence",
    "a considerably longer sentence that needs many more tokens than the first one does",
    "three",
    "the fourth example, of medium length",
]
KINDS = ["grpc", "http"]


@pytest.fixture(scope="module")
def server_options() -> ServerOptions:
    env = {"LUMENSERVE_MAX_BATCH_SIZE": "16", "LUMENSERVE_EXPLAIN": "false", "LUMENSERVE_GRACE_PERIOD": "5"}
    return ServerOptions(env=env)


def call(worker: ThreadPoolExecutor, kind: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a tritonclient call (both transports in this process)."""
    return fn(kind, *args, **kwargs)


def url(server: ServerProcess, kind: str) -> str:
    return server.grpc_url if kind == "grpc" else server.http_url


def onnx_session(bundle: Bundle) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])


def text_reference(bundle: Bundle, sentences: list[str]) -> np.ndarray:
    """Logits of each sentence run alone (no padding at all)."""
    from lumenserve.bundle.eager import load_tokenizer

    tokenizer, session = load_tokenizer(bundle), onnx_session(bundle)
    rows = []
    for sentence in sentences:
        enc = tokenizer([sentence], truncation=True, max_length=64, return_tensors="np")
        feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        rows.append(session.run(["logits"], feed)[0][0])
    return np.stack(rows)  # (batch, classes)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---- infer ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_tensor_matches_in_process_onnx(kind: str, server: ServerProcess, worker: ThreadPoolExecutor,
                                             image_bundle: Bundle) -> None:  # fmt: skip
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)  # (batch, C, H, W)
    expected = onnx_session(image_bundle).run(["logits"], {"input": x})[0]
    out = call(worker, kind, triton_infer, url(server, kind), "tiny-image", {"input": (x, "FP32")})
    assert set(out) == {"logits", "probabilities"}
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=0)
    np.testing.assert_allclose(out["probabilities"], softmax(expected), rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_jpeg_bytes_preprocessed_on_the_server(kind: str, server: ServerProcess, worker: ThreadPoolExecutor,
                                               image_bundle: Bundle) -> None:  # fmt: skip
    images = [jpeg_bytes(seed) for seed in range(3)]
    codec = ImageCodec(image_bundle.manifest.preprocessing, max_pixels=10**7)  # type: ignore[arg-type]
    expected = onnx_session(image_bundle).run(["logits"], {"input": codec(images)})[0]
    payload = np.array(images, dtype=np.object_)
    out = call(worker, kind, triton_infer, url(server, kind), "tiny-image", {"image": (payload, "BYTES")})
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-5, atol=0)


def test_image_codec_matches_torchvision_transforms(image_bundle: Bundle) -> None:
    """Without JPEG draft decoding the codec equals torchvision's Resize/CenterCrop/Normalize."""
    from torchvision import transforms

    pre: Any = image_bundle.manifest.preprocessing
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(3).random((77, 53, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    pipeline = transforms.Compose(
        [
            transforms.Resize(pre.resize_size),
            transforms.CenterCrop(pre.crop_size),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    reference = pipeline(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).numpy()  # (C, H, W)
    ours = ImageCodec(pre, max_pixels=10**7, draft=False)([buffer.getvalue()])  # (1, C, H, W)
    np.testing.assert_allclose(ours[0], reference, atol=1e-5)


@pytest.mark.parametrize(("kind", "binary"), [("grpc", True), ("http", True), ("http", False)])
def test_sentences_as_bytes(kind: str, binary: bool, server: ServerProcess, worker: ThreadPoolExecutor,
                            text_bundle: Bundle) -> None:  # fmt: skip
    expected = text_reference(text_bundle, SENTENCES)
    payload = np.array([s.encode() for s in SENTENCES], dtype=np.object_)
    out = call(worker, kind, triton_infer, url(server, kind), "tiny-text", {"text": (payload, "BYTES")},
               outputs=[("logits", 0, binary)], binary=binary)  # fmt: skip
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_int64_token_tensors_and_attention_output(kind: str, server: ServerProcess, worker: ThreadPoolExecutor,
                                                  text_bundle: Bundle) -> None:  # fmt: skip
    ids = np.array([[101, 2023, 2003, 102], [101, 7592, 102, 0]], dtype=np.int64)  # (batch, seq)
    mask = (ids != 0).astype(np.int64)
    logits, attention = onnx_session(text_bundle).run(
        ["logits", "attention_0"], {"input_ids": ids, "attention_mask": mask}
    )
    out = call(worker, kind, triton_infer, url(server, kind), "tiny-text",
               {"input_ids": (ids, "INT64"), "attention_mask": (mask, "INT64")},
               outputs=[("logits", 0, True), ("attention_0", 0, True)])  # fmt: skip
    assert set(out) == {"logits", "attention_0"}  # only what was asked for
    np.testing.assert_allclose(out["logits"], logits, atol=1e-6)
    np.testing.assert_allclose(out["attention_0"], attention, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_classification_extension(kind: str, server: ServerProcess, worker: ThreadPoolExecutor,
                                  text_bundle: Bundle) -> None:  # fmt: skip
    expected = text_reference(text_bundle, SENTENCES[:2])
    payload = np.array([s.encode() for s in SENTENCES[:2]], dtype=np.object_)
    out = call(worker, kind, triton_infer, url(server, kind), "tiny-text", {"text": (payload, "BYTES")},
               outputs=[("logits", 2, True)])  # fmt: skip
    top = out["logits"]
    assert top.shape == (2, 2)
    labels = text_bundle.manifest.labels
    for row in range(2):
        order = np.argsort(-expected[row])
        for col in range(2):
            score, index, label = top[row, col].decode().split(":")
            assert int(index) == order[col] and label == labels[order[col]]
            assert float(score) == pytest.approx(expected[row, order[col]], abs=1e-5)


def test_grpc_and_http_return_identical_outputs(server: ServerProcess, worker: ThreadPoolExecutor) -> None:
    x = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    inputs = {"input": (x, "FP32")}
    via_grpc = call(worker, "grpc", triton_infer, server.grpc_url, "tiny-image", inputs)
    via_http = triton_infer("http", server.http_url, "tiny-image", inputs)
    via_json = triton_infer("http", server.http_url, "tiny-image", inputs, binary=False,
                            outputs=[("logits", 0, False), ("probabilities", 0, False)])  # fmt: skip
    for name in ("logits", "probabilities"):
        assert via_grpc[name].tobytes() == via_http[name].tobytes()
        np.testing.assert_array_equal(via_json[name], via_grpc[name])


# ---- health, metadata, repository ---------------------------------------------------------


def test_health_metadata_and_readiness(server: ServerProcess, worker: ThreadPoolExecutor) -> None:
    answers = worker.submit(grpc_health, server.grpc_url, "tiny-image").result(60)
    assert answers["live"] and answers["ready"] and answers["model_ready"]
    assert answers["server_name"] == "lumenserve"
    assert answers["inputs"] == [("input", "FP32", [-1, 3, 32, 32])]
    assert answers["outputs"] == ["logits", "probabilities"]
    assert answers["health"] == {"": "SERVING", "tiny-image": "SERVING"}
    assert {"inference.GRPCInferenceService", "lumenserve.explain.ExplainService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= set(answers["services"])  # fmt: skip

    base = f"http://{server.http_url}"
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{base}/v2/health/ready").status_code == 200
    assert httpx.get(f"{base}/v2/models/tiny-text/ready").status_code == 200
    assert httpx.get(f"{base}/v2/models/tiny-text/versions/1/ready").status_code == 200
    assert httpx.get(f"{base}/v2/models/tiny-text/versions/2/ready").status_code == 404
    meta = httpx.get(f"{base}/v2/models/tiny-text").json()
    assert meta["platform"] == "onnxruntime_onnx" and meta["versions"] == ["1"]
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask"]
    assert {"logits", "probabilities", "attention_0", "attention_1"} == {o["name"] for o in meta["outputs"]}
    listed = httpx.get(f"{base}/v2/models").json()  # KServe's shape; public: no token needed
    assert set(listed) == {"models"} and {"tiny-text", "tiny-image"} <= set(listed["models"])
    server_meta = httpx.get(f"{base}/v2").json()
    assert server_meta["name"] == "lumenserve" and "classification" in server_meta["extensions"]


def test_repository_api_needs_the_token(server: ServerProcess, worker: ThreadPoolExecutor) -> None:
    base = f"http://{server.http_url}/v2/repository"
    good, bad = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer nope"}
    assert httpx.post(f"{base}/index").status_code == 401
    assert httpx.post(f"{base}/index", headers=bad).status_code == 403
    assert httpx.post(f"{base}/models/tiny-image/unload").status_code == 401
    assert httpx.post(f"{base}/models/tiny-image/load", headers=bad).status_code == 403
    assert worker.submit(grpc_repository, server.grpc_url, "unload", "tiny-image", None).result(60) == "UNAUTHENTICATED"
    assert worker.submit(grpc_repository, server.grpc_url, "unload", "tiny-image", "nope").result(60) == (
        "PERMISSION_DENIED"
    )
    assert httpx.get(f"http://{server.http_url}/v2/models/tiny-image/ready").status_code == 200  # untouched
    index = httpx.post(f"{base}/index", headers=good).json()
    assert {"name": "tiny-image", "version": "1", "state": "READY"} in index
    assert httpx.post(f"{base}/models/tiny-image/unload", headers=good).status_code == 200
    assert httpx.get(f"http://{server.http_url}/v2/models/tiny-image/ready").status_code == 404
    assert httpx.get(f"http://{server.http_url}/v2/health/ready").status_code == 200  # unloaded on purpose
    assert worker.submit(grpc_repository, server.grpc_url, "load", "tiny-image", TOKEN).result(60) == "OK"
    assert httpx.get(f"http://{server.http_url}/v2/models/tiny-image/ready").status_code == 200
    assert httpx.get(f"http://{server.http_url}/v2/health/ready").status_code == 200


# ---- batching under concurrency -----------------------------------------------------------


def metric_samples(text: str, name: str, **labels: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out[sample.labels.get("le", "")] = sample.value
    return out


def test_32_concurrent_callers_get_their_own_rows(server: ServerProcess, worker: ThreadPoolExecutor,
                                                  image_bundle: Bundle, text_bundle: Bundle) -> None:  # fmt: skip
    """16 gRPC + 16 HTTP callers, batch sizes 1-4, images and texts of different lengths at once."""
    rng = np.random.default_rng(11)
    session = onnx_session(image_bundle)
    sentences = [" ".join(["word"] * (1 + 3 * i)) + f" number {i}" for i in range(8)]
    text_expected = text_reference(text_bundle, sentences)
    jobs: dict[str, list[tuple[str, Any]]] = {"grpc": [], "http": []}
    expected: dict[str, list[np.ndarray]] = {"grpc": [], "http": []}
    for caller in range(32):
        kind = KINDS[caller % 2]
        if caller < 8:  # texts: one sentence each, all different lengths
            payload = np.array([sentences[caller].encode()], dtype=np.object_)
            jobs[kind].append(("tiny-text", {"text": (payload, "BYTES")}))
            expected[kind].append(text_expected[caller : caller + 1])
        else:
            x = rng.standard_normal((1 + caller % 4, 3, 32, 32)).astype(np.float32)  # (batch, C, H, W)
            jobs[kind].append(("tiny-image", {"input": (x, "FP32")}))
            expected[kind].append(session.run(["logits"], {"input": x})[0])
    grpc_future = worker.submit(concurrent_callers, "grpc", server.grpc_url, jobs["grpc"], 4)
    results = {"http": concurrent_callers("http", server.http_url, jobs["http"], 4), "grpc": grpc_future.result(180)}
    for kind in KINDS:
        for want, got_list in zip(expected[kind], results[kind], strict=True):
            for got in got_list:
                assert got.shape == want.shape
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 if want.shape[0] == 1 and abs(
                    want).max() > 1e-3 else 1e-12)  # fmt: skip
    metrics = httpx.get(f"http://{server.http_url}/metrics").text
    for model in ("tiny-image", "tiny-text"):
        buckets = metric_samples(metrics, "lumenserve_batch_size_bucket", model=model)
        count = metric_samples(metrics, "lumenserve_batch_size_count", model=model)[""]
        assert count > buckets["1.0"], f"{model}: no batch carried more than one row"
    image_buckets = metric_samples(metrics, "lumenserve_batch_size_bucket", model="tiny-image")
    assert image_buckets["4.0"] < image_buckets["+Inf"], "image batches never joined several requests"


def test_metrics_pass_promtool(server: ServerProcess) -> None:
    triton_infer("http", server.http_url, "tiny-image", {"input": (np.zeros((1, 3, 32, 32), np.float32), "FP32")})
    text = httpx.get(f"http://{server.http_url}/metrics").text
    for name in ("lumenserve_requests_total", "lumenserve_request_duration_seconds_bucket",
                 "lumenserve_queue_duration_seconds_bucket", "lumenserve_compute_duration_seconds_count",
                 "lumenserve_model_load_duration_seconds", "lumenserve_inflight_requests",
                 "lumenserve_queue_depth", "lumenserve_model_ready"):  # fmt: skip
        assert name in text
    assert 'protocol="http"' in text and 'status="OK"' in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is required"
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
