"""Real TorchServe 0.12 (Java 17) serving lumenserve archives through our handler.

TorchServe starts once for the module on free loopback ports with two archives: an image
bundle (ONNX) and the ``tiny-text`` bundle. Predictions are compared with in-process ONNX
Runtime (preprocessing done independently with torchvision / the tokenizer) and with
lumenserve's own server; explanations must come back as decodable PNGs with scores;
TorchServe's own gRPC ``Predictions`` (stubs generated here from the protos inside its
jar) and metrics endpoint must answer; and stopping must leave no process behind.

The image bundle is a random-weight SqueezeNet 1.1 at 32 px: the ``tiny-image`` fixture
(random MobileNetV3-small) gives the same logits (~1e-10) for every input, which would let
a broken preprocessing path pass unnoticed.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from lumenserve.bundle import Bundle, ImagePreprocessing, load_bundle
from serving.torchserve.archive import archive_bundle
from serving.torchserve.config import Ports, read_config
from serving.torchserve.launcher import TorchServe, TorchServeError
from tests.support.ports import raise_if_port_clash, retry_on_port_clash
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.torchserve, pytest.mark.slow]

IMAGE_MODEL = "ts-image"
TEXT_MODEL = "tiny-text"
LABELS = ["cat", "dog", "bird"]


def random_png(seed: int, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


IMAGES = [random_png(i, size) for i, size in enumerate([(48, 40), (40, 56), (36, 36), (64, 48)])]
TEXTS = ["what a lovely film", "dull, long and far too loud", "ok"]


# ---- the bundles and the in-process references ----------------------------------------------
@pytest.fixture(scope="module")
def ts_repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    import torchvision

    from training.export import export_image_model

    repo = tmp_path_factory.mktemp("ts_repo")
    torch.manual_seed(0)
    model = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=len(LABELS))
    pre = ImagePreprocessing(resize_size=36, crop_size=32, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    export_image_model(
        model, arch_name="squeezenet1_1", labels=LABELS, preprocessing=pre, repo=repo, name=IMAGE_MODEL,
        gradcam_layer="features.12", training={"note": "random weights, TorchServe test"},
    )  # fmt: skip
    shutil.copytree(model_repo / TEXT_MODEL, repo / TEXT_MODEL)
    return repo


@pytest.fixture(scope="module")
def image_ref(ts_repo: Path) -> tuple[Bundle, Any]:
    import onnxruntime as ort

    bundle = load_bundle(ts_repo / IMAGE_MODEL / "1")
    return bundle, ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])


def preprocess_with_torchvision(bundle: Bundle, png: bytes) -> np.ndarray:
    from torchvision import transforms

    pre = bundle.manifest.preprocessing
    assert isinstance(pre, ImagePreprocessing)
    chain = transforms.Compose(
        [
            transforms.Resize(pre.resize_size),
            transforms.CenterCrop(pre.crop_size),
            transforms.ToTensor(),
            transforms.Normalize(pre.mean, pre.std),
        ]
    )
    return chain(Image.open(io.BytesIO(png)).convert("RGB")).numpy()  # (C, H, W)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def image_reference(image_ref: tuple[Bundle, Any], png: bytes) -> np.ndarray:
    bundle, session = image_ref
    x = preprocess_with_torchvision(bundle, png)[None]  # (1, C, H, W)
    return softmax(session.run(["logits"], {"input": x})[0][0])  # (classes,)


@pytest.fixture(scope="module")
def text_ref(ts_repo: Path) -> tuple[Any, Any]:
    import onnxruntime as ort

    from lumenserve.bundle.eager import load_tokenizer

    bundle = load_bundle(ts_repo / TEXT_MODEL / "1")
    return load_tokenizer(bundle), ort.InferenceSession(str(bundle.path("onnx")), providers=["CPUExecutionProvider"])


def text_reference(text_ref: tuple[Any, Any], text: str) -> np.ndarray:
    tokenizer, session = text_ref
    enc = tokenizer([text], truncation=True, max_length=64, return_tensors="np")
    feed = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    return softmax(session.run(["logits"], feed)[0][0])  # (classes,)


def by_index(body: dict[str, Any], classes: int) -> np.ndarray:
    """The answer's top-k as a full probability vector (all classes requested)."""
    out = np.full(classes, np.nan)
    for p in body["predictions"]:
        out[p["index"]] = p["probability"]
    return out


# ---- TorchServe for the module ----------------------------------------------------------------
@pytest.fixture(scope="module")
def torchserve(ts_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServe]:
    def start(picked: list[int]) -> TorchServe:
        store = tmp_path_factory.mktemp("model_store")
        ports = Ports(*picked)
        archive_bundle(ts_repo / IMAGE_MODEL / "1", store, batch_size=4, max_batch_delay_ms=100, ports=ports)
        archive_bundle(ts_repo / TEXT_MODEL / "1", store, batch_size=4, max_batch_delay_ms=20)
        server = TorchServe(read_config(store), tmp_path_factory.mktemp("ts_scratch"))
        started = time.monotonic()
        try:
            server.start(timeout_s=150)
        except TorchServeError as exc:
            raise_if_port_clash(str(exc))
            raise
        print(f"TorchServe ready in {time.monotonic() - started:.1f} s")
        return server

    server = retry_on_port_clash(start, len(fields(Ports)))
    try:
        yield server
    finally:
        survivors = server.stop()
        for proc in survivors:  # only processes this fixture started
            proc.kill()
        assert not survivors, f"TorchServe left processes behind: {survivors}"


@pytest.fixture(scope="module")
def http(torchserve: TorchServe) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=torchserve.inference_url, timeout=120) as client:
        yield client


# ---- predictions ----------------------------------------------------------------------------------
def test_models_registered_with_archive_settings(torchserve: TorchServe) -> None:
    described = httpx.get(f"{torchserve.management_url}/models/{IMAGE_MODEL}", timeout=10).json()[0]
    assert described["batchSize"] == 4 and described["maxBatchDelay"] == 100
    assert described["modelVersion"] == "1"
    assert [w["status"] for w in described["workers"]] == ["READY"]


def test_image_predictions_match_in_process_onnx(http: httpx.Client, image_ref: tuple[Bundle, Any]) -> None:
    for png in IMAGES:
        response = http.post(f"/predictions/{IMAGE_MODEL}", content=png)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model"], body["version"]) == (IMAGE_MODEL, "1")
        expected = image_reference(image_ref, png)
        np.testing.assert_allclose(by_index(body, 3), expected, atol=1e-5)
        probs = [p["probability"] for p in body["predictions"]]
        assert probs == sorted(probs, reverse=True)
        assert body["predictions"][0]["label"] == LABELS[int(np.argmax(expected))]
    # the reference itself is input-dependent, so the comparison above can fail
    assert np.abs(image_reference(image_ref, IMAGES[0]) - image_reference(image_ref, IMAGES[1])).max() > 1e-4


def test_every_request_form_gives_the_same_answer(http: httpx.Client, image_ref: tuple[Bundle, Any]) -> None:
    png = IMAGES[1]
    expected = image_reference(image_ref, png)
    x = preprocess_with_torchvision(image_ref[0], png)  # (C, H, W)
    forms = {
        "multipart": http.post(f"/predictions/{IMAGE_MODEL}", files={"data": ("a.png", png, "image/png")},
                               data={"top_k": "3"}),
        "json-base64": http.post(f"/predictions/{IMAGE_MODEL}", json={"image": base64.b64encode(png).decode()}),
        "json-tensor": http.post(f"/predictions/{IMAGE_MODEL}", json={"inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}),
    }  # fmt: skip
    for form, response in forms.items():
        assert response.status_code == 200, (form, response.text)
        np.testing.assert_allclose(by_index(response.json(), 3), expected, atol=1e-5, err_msg=form)
    top1 = http.post(f"/predictions/{IMAGE_MODEL}", files={"data": png}, data={"top_k": "1"}).json()
    assert len(top1["predictions"]) == 1


def test_concurrent_requests_batch_and_each_gets_its_own_answer(
    http: httpx.Client, image_ref: tuple[Bundle, Any]
) -> None:
    payloads = [*IMAGES, *IMAGES[::-1], b"not an image"]

    def send(png: bytes) -> httpx.Response:
        with httpx.Client(base_url=str(http.base_url), timeout=120) as client:
            return client.post(f"/predictions/{IMAGE_MODEL}", content=png)

    with ThreadPoolExecutor(len(payloads)) as pool:
        responses = list(pool.map(send, payloads))
    for png, response in zip(payloads[:-1], responses[:-1], strict=True):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(by_index(response.json(), 3), image_reference(image_ref, png), atol=1e-5)
    assert responses[-1].status_code == 400
    assert "not a decodable" in responses[-1].json()["error"]
    sizes = [int(r.headers["x-lumenserve-batch-size"]) for r in responses]
    assert max(sizes) > 1, f"TorchServe never batched: {sizes}"
    assert max(sizes) <= 4


def test_text_predictions_match_in_process_onnx(http: httpx.Client, text_ref: tuple[Any, Any]) -> None:
    tokenizer = text_ref[0]
    for text in TEXTS:
        expected = text_reference(text_ref, text)
        ids = tokenizer(text, truncation=True, max_length=64)["input_ids"]
        forms = {
            "text/plain": http.post(f"/predictions/{TEXT_MODEL}", content=text.encode(),
                                    headers={"content-type": "text/plain"}),
            "raw bytes": http.post(f"/predictions/{TEXT_MODEL}", content=text.encode()),
            "json": http.post(f"/predictions/{TEXT_MODEL}", json={"text": text, "top_k": 2}),
            "json-tensor": http.post(f"/predictions/{TEXT_MODEL}", json={"inputs": [
                {"name": "input_ids", "shape": [len(ids)], "datatype": "INT64", "data": ids}]}),
        }  # fmt: skip
        for form, response in forms.items():
            assert response.status_code == 200, (form, response.text)
            np.testing.assert_allclose(by_index(response.json(), 2), expected, atol=1e-6, err_msg=form)
    # the random tiny BERT barely depends on its input (~1e-5), hence the tight tolerance above
    assert np.abs(text_reference(text_ref, TEXTS[0]) - text_reference(text_ref, TEXTS[1])).max() > 5e-6


def test_bad_requests_get_clear_errors(http: httpx.Client) -> None:
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        (f"/predictions/{IMAGE_MODEL}", {"json": [1, 2]}, 400, "JSON body must be an object"),
        (f"/predictions/{IMAGE_MODEL}", {"json": {"text": "hello"}}, 400, "classifies images"),
        (f"/predictions/{IMAGE_MODEL}", {"json": {"inputs": [{"name": "input", "shape": [3, 8, 8],
                                                              "datatype": "FP32", "data": [0.0] * 192}]}},
         400, "shape"),
        (f"/predictions/{TEXT_MODEL}", {"content": b"\xff\xfe\xfd"}, 400, "UTF-8"),
        (f"/predictions/{TEXT_MODEL}", {"json": {"text": "x", "top_k": 0}}, 400, "top_k"),
    ]  # fmt: skip
    for path, kwargs, status, message in cases:
        response = http.post(path, **kwargs)
        assert response.status_code == status, (kwargs, response.text)
        assert message in response.json()["error"]


# ---- lumenserve's own server gives the same answers -------------------------------------------------
def test_predictions_match_lumenserve_server(http: httpx.Client, ts_repo: Path) -> None:
    import tritonclient.http as triton

    with ServerProcess(ts_repo) as server:
        client = triton.InferenceServerClient(server.http_url)
        for model, name, items in ((IMAGE_MODEL, "image", IMAGES), (TEXT_MODEL, "text", [t.encode() for t in TEXTS])):
            inp = triton.InferInput(name, [len(items)], "BYTES")
            inp.set_data_from_numpy(np.array(items, dtype=np.object_), binary_data=True)
            result = client.infer(model, [inp], outputs=[triton.InferRequestedOutput("probabilities")])
            ours = result.as_numpy("probabilities")  # (batch, classes)
            for row, item in enumerate(items):
                answer = http.post(f"/predictions/{model}", content=item, data=None).json()
                np.testing.assert_allclose(by_index(answer, ours.shape[1]), ours[row], atol=1e-6, err_msg=model)
        client.close()


# ---- explanations ----------------------------------------------------------------------------------------
def decode_png(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_image_explanations_return_pngs_and_scores(http: httpx.Client) -> None:
    png = IMAGES[0]
    response = http.post(f"/explanations/{IMAGE_MODEL}", files={"data": png},
                         data={"method": "integrated_gradients", "n_steps": "8", "target": "2"})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "integrated_gradients"
    assert body["parameters"]["n_steps"] == 8  # the per-request parameter, not TorchServe's fixed 15
    assert (body["target"], body["target_label"]) == (2, "bird")
    assert decode_png(body["png"]).size == (32, 32)
    scores = body["faithfulness"]
    assert 0.0 <= scores["deletion_auc"] <= 1.0
    assert "convergence_delta" in scores and "infidelity" in scores
    assert "attributions" not in body  # a picture and scores, not a raw array
    assert len(response.content) < 100_000
    fields = {"method": "saliency", "render_png": "false", "deletion_steps": "0", "infidelity": "false"}
    lean = http.post(f"/explanations/{IMAGE_MODEL}", files={"data": png}, data=fields)
    assert lean.status_code == 200, lean.text
    lean_body = lean.json()
    assert lean_body["png"] is None and lean_body["faithfulness"] == {}
    raw = lean_body["attributions"]
    values = np.frombuffer(base64.b64decode(raw["base64"]), dtype="<f4").reshape(raw["shape"])
    assert raw["shape"] == [3, 32, 32] and np.isfinite(values).all() and np.abs(values).sum() > 0

    # rows of one TorchServe batch keep their own method and target
    def send(fields: dict[str, str]) -> httpx.Response:
        with httpx.Client(base_url=str(http.base_url), timeout=120) as client:
            return client.post(f"/explanations/{IMAGE_MODEL}", files={"data": png}, data=fields)

    asks = [{"method": "saliency", "target": "0"}, {"method": "saliency", "target": "1"}, {"method": "grad_cam"}]
    with ThreadPoolExecutor(len(asks)) as pool:
        answers = [r.json() for r in pool.map(send, asks)]
    assert [a["target"] for a in answers[:2]] == [0, 1]
    assert [a["method"] for a in answers] == ["saliency", "saliency", "grad_cam"]
    assert answers[2]["target"] == answers[2]["predictions"][0]["index"]  # default: the predicted class
    for a in answers:
        decode_png(a["png"])


def test_text_explanations_return_pngs(http: httpx.Client) -> None:
    response = http.post(f"/explanations/{TEXT_MODEL}", json={"text": TEXTS[0], "n_steps": 8})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "integrated_gradients"
    assert body["tokens"][0] == "[CLS]" and "lovely" in body["tokens"]
    strip = decode_png(body["png"])
    assert strip.size[0] > 0 and strip.size[1] > 0
    assert "deletion_auc" in body["faithfulness"]
    attention = http.post(f"/explanations/{TEXT_MODEL}", json={"text": TEXTS[1], "method": "attention"}).json()
    decode_png(attention["pngs"]["attention_grid_png"])


def test_explanation_errors(http: httpx.Client) -> None:
    bad_param = http.post(f"/explanations/{IMAGE_MODEL}", files={"data": IMAGES[0]},
                          data={"method": "saliency", "n_steps": "5"})  # fmt: skip
    assert bad_param.status_code == 400 and "n_steps" in bad_param.json()["error"]
    out_of_range = http.post(f"/explanations/{IMAGE_MODEL}", files={"data": IMAGES[0]},
                             data={"method": "integrated_gradients", "n_steps": "100000"})  # fmt: skip
    assert out_of_range.status_code == 400
    bad_target = http.post(f"/explanations/{IMAGE_MODEL}", files={"data": IMAGES[0]}, data={"target": "7"})
    assert bad_target.status_code == 400 and "target" in bad_target.json()["error"]
    unsupported = http.post(f"/explanations/{TEXT_MODEL}", json={"text": "x", "method": "grad_cam"})
    assert unsupported.status_code == 501


# ---- TorchServe's gRPC API, metrics, processes --------------------------------------------------------
@pytest.fixture(scope="module")
def ts_grpc(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """Stubs for TorchServe's inference.proto, generated from the copy inside its jar."""
    import importlib.resources

    import grpc_tools
    import ts
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("ts_grpc")
    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    with zipfile.ZipFile(jar) as zf:
        # renamed so its descriptor never collides with lumenserve's own inference.proto
        (out / "ts_inference.proto").write_bytes(zf.read("proto/inference.proto"))
    common = next(p for p in map(Path, sys.path) if (p / "google" / "rpc" / "status.proto").is_file())
    well_known = importlib.resources.files(grpc_tools) / "_proto"
    args = ["protoc", f"-I{out}", f"-I{common}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main([*args, str(out / "ts_inference.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        import ts_inference_pb2
        import ts_inference_pb2_grpc
    finally:
        sys.path.remove(str(out))
    return ts_inference_pb2, ts_inference_pb2_grpc


def test_grpc_predictions(torchserve: TorchServe, http: httpx.Client, ts_grpc: tuple[ModuleType, ModuleType]) -> None:
    import grpc
    from google.protobuf import empty_pb2

    pb2, pb2_grpc = ts_grpc
    with grpc.insecure_channel(torchserve.grpc_target) as channel:
        stub = pb2_grpc.InferenceAPIsServiceStub(channel)
        assert "Healthy" in stub.Ping(empty_pb2.Empty(), timeout=10).health
        reply = stub.Predictions(pb2.PredictionsRequest(model_name=IMAGE_MODEL, input={"data": IMAGES[2]}), timeout=60)
        over_http = http.post(f"/predictions/{IMAGE_MODEL}", content=IMAGES[2]).json()
        assert json.loads(reply.prediction) == over_http
        text = stub.Predictions(
            pb2.PredictionsRequest(model_name=TEXT_MODEL, input={"data": TEXTS[0].encode(), "top_k": b"1"}), timeout=60
        )
        assert len(json.loads(text.prediction)["predictions"]) == 1
        with pytest.raises(grpc.RpcError) as err:
            stub.Predictions(pb2.PredictionsRequest(model_name=IMAGE_MODEL, input={"data": b"junk"}), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a decodable" in (err.value.details() or "")


def test_metrics_endpoint_answers(torchserve: TorchServe, http: httpx.Client) -> None:
    http.post(f"/predictions/{TEXT_MODEL}", content=b"one more")
    response = httpx.get(f"{torchserve.metrics_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert "ts_inference_requests_total" in response.text
    assert f'model_name="{TEXT_MODEL}"' in response.text


def test_workers_run_with_telemetry_off_and_scratch_inside(torchserve: TorchServe) -> None:
    procs = torchserve.processes()
    assert procs and procs[0].name() == "java"
    workers = [p for p in procs[1:] if "model_service_worker" in " ".join(p.cmdline())]
    assert len(workers) == 2  # one per model (default_workers_per_model=1)
    for worker in workers:
        env = worker.environ()
        assert env["ORT_DISABLE_TELEMETRY"] == "1"
        assert env["TMPDIR"] == str(torchserve.scratch)


def test_stop_leaves_no_process_behind(torchserve: TorchServe) -> None:
    procs = torchserve.processes()
    assert len(procs) >= 3
    survivors = torchserve.stop()
    assert survivors == []
    assert all(not p.is_running() for p in procs)
    for port in (torchserve.config.ports.inference, torchserve.config.ports.grpc_inference):
        with socket.socket() as s, pytest.raises(OSError):
            s.connect(("127.0.0.1", port))
