"""Imported models served: generic tensors of every datatype over gRPC (tritonclient) and HTTP
(JSON and binary), classifiers with other input/output names, NHWC/BGR images and fixed-length
texts from raw inputs, Triton's no-batching semantics, and the per-model config.yaml."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc.aio as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from PIL import Image

from explain.errors import ExplainParameterError
from lumenserve.assets import minilm_dir
from serving.errors import InvalidInput, classify
from serving.http.app import build_app
from serving.types import InferenceRequest, RequestedOutput, Tensor
from tests.import_sources import IMAGE_SIZE, MEAN, STD, onnx_nhwc_classifier, onnx_text_classifier, two_in_two_out_graph
from tests.support.inprocess import Stack, serving_stack
from training.importer import ImportOptions, import_model
from training.importer.options import ImageFlags

# v2 datatype -> (ONNX element type, numpy dtype of the test data)
IDENTITY_TYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, np.object_),
}


def identity_graph() -> onnx.ModelProto:
    """One Identity per datatype: ``in_T`` (N, 2) -> ``out_T`` (N, 2)."""
    nodes, inputs, outputs = [], [], []
    for name, (elem, _) in IDENTITY_TYPES.items():
        t = name.lower()
        nodes.append(helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{t}", elem, ["N", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{t}", elem, ["N", 2]))
    model = helper.make_model(
        helper.make_graph(nodes, "identity", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    return model


def identity_data(rows: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    data: dict[str, np.ndarray] = {}
    for name, (_, dtype) in IDENTITY_TYPES.items():
        key = f"in_{name.lower()}"
        if dtype is np.object_:
            data[key] = np.array([[b"a", b"bc"], [b"", "\u00e9".encode()]] * (rows // 2), dtype=np.object_)
        elif dtype is np.bool_:
            data[key] = rng.integers(0, 2, (rows, 2)).astype(np.bool_)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data[key] = np.array([[info.min, info.max], [0, 1]] * (rows // 2), dtype=dtype)
        else:
            data[key] = rng.standard_normal((rows, 2)).astype(dtype)
    return data


@asynccontextmanager
async def grpc_client(stack: Stack) -> AsyncIterator[grpcclient.InferenceServerClient]:
    """A real grpc.aio server for the stack on a free port, and tritonclient's asyncio client."""
    from serving.grpc.server import build_grpc_server
    from serving.grpc.servicer import HealthTracker

    server, port = build_grpc_server(stack.dataplane, HealthTracker(stack.dataplane), stack.settings)
    await server.start()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        yield client
    finally:
        await client.close()
        await server.stop(0)


def http_client(stack: Stack) -> httpx.AsyncClient:
    app = build_app(stack.dataplane)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]


async def grpc_infer(
    client: grpcclient.InferenceServerClient, model: str, feed: dict[str, np.ndarray], datatypes: dict[str, str]
) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in feed.items():
        tensor = grpcclient.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = await client.infer(model, inputs)
    response = result.get_response()
    return {o.name: result.as_numpy(o.name) for o in response.outputs}


async def http_binary_infer(
    client: httpx.AsyncClient, model: str, feed: dict[str, np.ndarray], datatypes: dict[str, str]
) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in feed.items():
        tensor = httpclient.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs)
    headers = {"Inference-Header-Content-Length": str(json_size)} if json_size is not None else {}
    answer = await client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    header = answer.headers.get("Inference-Header-Content-Length")
    result = httpclient.InferenceServerClient.parse_response_body(
        answer.content, header_length=int(header) if header else None
    )
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


async def http_json_infer(
    client: httpx.AsyncClient, model: str, feed: dict[str, np.ndarray], datatypes: dict[str, str]
) -> dict[str, tuple[str, np.ndarray]]:
    def as_json(array: np.ndarray) -> list[object]:
        flat = array.reshape(-1)
        return [x.decode() if isinstance(x, bytes) else x for x in flat.tolist()]

    inputs = [
        {"name": n, "datatype": datatypes[n], "shape": list(a.shape), "data": as_json(a)} for n, a in feed.items()
    ]
    answer = await client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]  # object arrays: UINT64 past INT64 survives
    return {o["name"]: (o["datatype"], np.array(o["data"], dtype=np.object_).reshape(o["shape"])) for o in outputs}


def ort_run(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


# ---- tensor models ---------------------------------------------------------------------------
async def test_every_datatype_round_trips_over_grpc_and_http(tmp_path: Path) -> None:
    source = tmp_path / "identity.onnx"
    onnx.save(identity_graph(), str(source))
    repo = tmp_path / "repo"
    import_model(source, repo, "identity")
    feed = identity_data()
    datatypes = {f"in_{n.lower()}": n for n in IDENTITY_TYPES}
    async with serving_stack(repo, ["identity"]) as stack, grpc_client(stack) as grpc_c, http_client(stack) as http_c:
        meta = stack.dataplane.model_metadata("identity")
        assert {t["name"]: t["datatype"] for t in meta["outputs"]} == {f"out_{n.lower()}": n for n in IDENTITY_TYPES}
        assert meta["parameters"]["max_batch_size"] == 32
        over_grpc = await grpc_infer(grpc_c, "identity", feed, datatypes)
        binary = await http_binary_infer(http_c, "identity", feed, datatypes)
        for name in IDENTITY_TYPES:
            sent = feed[f"in_{name.lower()}"]
            for answer in (over_grpc, binary):
                got = answer[f"out_{name.lower()}"]
                assert got.shape == sent.shape, name
                if name == "BYTES":
                    assert got.tolist() == sent.tolist()
                else:
                    assert got.dtype == sent.dtype and np.array_equal(got, sent), name
        json_feed = {k: v for k, v in feed.items()}
        as_json = await http_json_infer(http_c, "identity", json_feed, datatypes)
        for name in IDENTITY_TYPES:
            datatype, got = as_json[f"out_{name.lower()}"]
            sent = feed[f"in_{name.lower()}"]
            assert datatype == name
            if name == "BYTES":
                assert got.tolist() == [[x.decode() for x in row] for row in sent.tolist()]
            else:
                np.testing.assert_array_equal(got.astype(sent.dtype), sent)


async def test_two_input_two_output_graph_equals_onnx_runtime(tmp_path: Path) -> None:
    source = tmp_path / "two.onnx"
    onnx.save(two_in_two_out_graph(), str(source))
    repo = tmp_path / "repo"
    import_model(source, repo, "two")
    rng = np.random.default_rng(3)
    feed: dict[str, np.ndarray] = {
        "ids": rng.integers(-5, 5, (3, 3)).astype(np.int64),
        "x": rng.standard_normal((3, 3)).astype(np.float16),
    }
    datatypes = {"ids": "INT64", "x": "FP16"}
    expected = ort_run(source, feed)
    async with serving_stack(repo, ["two"]) as stack, grpc_client(stack) as grpc_c, http_client(stack) as http_c:
        for answer in (
            await grpc_infer(grpc_c, "two", feed, datatypes),
            await http_binary_infer(http_c, "two", feed, datatypes),
        ):
            assert set(answer) == {"total", "count"}  # every output by default
            np.testing.assert_allclose(answer["total"].astype(np.float32), expected["total"], atol=1e-5, rtol=0)
            np.testing.assert_array_equal(answer["count"], expected["count"])
        only = InferenceRequest(
            "two",
            inputs=[Tensor(n, datatypes[n], a) for n, a in feed.items()],
            outputs=[RequestedOutput("count")],
        )
        response = await stack.dataplane.infer(only, "test")
        assert [t.name for t in response.outputs] == ["count"]  # requested outputs honoured
        with pytest.raises(InvalidInput, match="no output 'probabilities'"):
            await stack.dataplane.infer(
                InferenceRequest("two", inputs=only.inputs, outputs=[RequestedOutput("probabilities")]), "test"
            )
        with pytest.raises(InvalidInput, match="datatype FP32, expected FP16"):
            wrong = [Tensor("ids", "INT64", feed["ids"]), Tensor("x", "FP32", feed["x"].astype(np.float32))]
            await stack.dataplane.infer(InferenceRequest("two", inputs=wrong), "test")


def fixed_shape_graph() -> onnx.ModelProto:
    """x FP32 (3, 2) -> y FP32 (3, 2) = x - mean over the first axis (rows depend on each other)."""
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


async def test_a_fixed_first_dimension_runs_each_request_alone(tmp_path: Path) -> None:
    source = tmp_path / "fixed.onnx"
    onnx.save(fixed_shape_graph(), str(source))
    repo = tmp_path / "repo"
    import_model(source, repo, "fixed")
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((3, 2)).astype(np.float32) for _ in range(4)]
    async with serving_stack(repo, ["fixed"]) as stack:
        assert stack.dataplane.model_metadata("fixed")["parameters"]["max_batch_size"] == 0
        import asyncio

        requests = [InferenceRequest("fixed", inputs=[Tensor("x", "FP32", f)]) for f in feeds]
        answers = await asyncio.gather(*(stack.dataplane.infer(r, "test") for r in requests))
        for feed, answer in zip(feeds, answers, strict=True):
            np.testing.assert_allclose(answer.outputs[0].data, feed - feed.mean(axis=0), atol=1e-6)
        assert stack.sample("lumenserve_model_max_batch_size", model="fixed", version="1") == 0
        with pytest.raises(InvalidInput, match="does not match"):
            bad = InferenceRequest("fixed", inputs=[Tensor("x", "FP32", np.zeros((2, 2), np.float32))])
            await stack.dataplane.infer(bad, "test")


# ---- classifiers from runtime-only sources ------------------------------------------------------
def jpeg(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")  # lossless: the reference decodes the same pixels
    return buffer.getvalue()


def reference_nhwc_bgr(data: bytes, resize: int) -> np.ndarray:
    """The preprocessing an NHWC/BGR model expects, written out by hand: (1, H, W, 3)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = round((new_h - IMAGE_SIZE) / 2.0), round((new_w - IMAGE_SIZE) / 2.0)
    image = image.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1] / 255.0  # (H, W, 3) BGR
    return ((bgr - np.array(MEAN, np.float32)) / np.array(STD, np.float32))[None].astype(np.float32)


async def test_nhwc_bgr_image_classifier_from_raw_images(tmp_path: Path) -> None:
    source, _ = onnx_nhwc_classifier(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("alpha\nbeta\ngamma\ndelta\n")
    repo = tmp_path / "repo"
    image = ImageFlags(image_size=IMAGE_SIZE, layout="NHWC", channels="BGR", mean=MEAN, std=STD)
    bundle = import_model(
        source, repo, "nhwc", ImportOptions(task="image-classification", image=image, labels_file=labels)
    )
    pre = bundle.manifest.preprocessing
    assert pre is not None and pre.kind == "image"
    images = [jpeg(1), jpeg(2, (40, 56))]
    expected = ort_run(source, {"image": np.concatenate([reference_nhwc_bgr(d, pre.resize_size) for d in images])})
    async with serving_stack(repo, ["nhwc"]) as stack, grpc_client(stack) as grpc_c, http_client(stack) as http_c:
        meta = stack.dataplane.model_metadata("nhwc")
        assert [o["name"] for o in meta["outputs"]] == ["scores", "probabilities"]
        raw = np.array(images, dtype=np.object_)
        over_grpc = await grpc_infer(grpc_c, "nhwc", {"image": raw}, {"image": "BYTES"})
        binary = await http_binary_infer(http_c, "nhwc", {"image": raw}, {"image": "BYTES"})
        for answer in (over_grpc, binary):
            assert set(answer) == {"scores", "probabilities"}
            np.testing.assert_allclose(answer["scores"], expected["scores"], atol=1e-4, rtol=0)
            np.testing.assert_allclose(answer["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
        pixels = np.concatenate([reference_nhwc_bgr(d, pre.resize_size) for d in images])
        tensors = await grpc_infer(grpc_c, "nhwc", {"image": pixels}, {"image": "FP32"})  # the model's own input
        np.testing.assert_allclose(tensors["scores"], expected["scores"], atol=1e-5, rtol=0)
        request = InferenceRequest(
            "nhwc",
            inputs=[Tensor("image", "BYTES", raw[:1])],
            outputs=[RequestedOutput("scores", {"classification": 2})],
        )
        (top,) = (await stack.dataplane.infer(request, "test")).outputs
        best = int(np.argmax(expected["scores"][0]))
        assert top.data.shape == (1, 2) and top.data[0, 0].decode().endswith(
            f":{best}:{['alpha', 'beta', 'gamma', 'delta'][best]}"
        )


async def test_fixed_length_text_classifier_from_raw_texts(tmp_path: Path) -> None:
    source = onnx_text_classifier(tmp_path, seq=16)
    labels = tmp_path / "labels.txt"
    labels.write_text("no\nyes\n")
    repo = tmp_path / "repo"
    options = ImportOptions(task="text-classification", tokenizer_dir=minilm_dir(), max_length=16, labels_file=labels)
    bundle = import_model(source, repo, "fixed-text", options)
    pre = bundle.manifest.preprocessing
    assert pre is not None and pre.kind == "text" and pre.pad_to_max_length
    from transformers import AutoTokenizer

    texts = ["a fine film", "dull and far too long for its own good"]
    encoded = AutoTokenizer.from_pretrained(minilm_dir())(
        texts, padding="max_length", truncation=True, max_length=16, return_tensors="np"
    )
    expected = ort_run(
        source,
        {
            "input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64),
        },
    )
    async with serving_stack(repo, ["fixed-text"]) as stack, grpc_client(stack) as grpc_c:
        raw = np.array([t.encode() for t in texts], dtype=np.object_)
        answer = await grpc_infer(grpc_c, "fixed-text", {"text": raw}, {"text": "BYTES"})
        np.testing.assert_allclose(answer["logits"], expected["logits"], atol=1e-5, rtol=0)


# ---- config.yaml ---------------------------------------------------------------------------------
async def test_config_yaml_takes_effect_on_a_load_call(tmp_path: Path) -> None:
    source = tmp_path / "two.onnx"
    onnx.save(two_in_two_out_graph(), str(source))
    repo = tmp_path / "repo"
    for _ in range(2):
        import_model(source, repo, "two")
    auth = {"authorization": "Bearer secret"}
    async with serving_stack(repo, ["two"], repository_token="secret") as stack, http_client(stack) as http_c:
        plane = stack.dataplane
        meta = plane.model_metadata("two")
        assert meta["versions"] == ["1", "2"]  # default policy: every version
        assert meta["parameters"]["version_policy"] == "all"
        (repo / "two" / "config.yaml").write_text(
            "batching:\n  max_batch_size: 4\n  max_queue_delay: 0.001\nversion_policy:\n  latest: 1\ninstances: 1\n"
        )
        assert plane.model_metadata("two")["versions"] == ["1", "2"]  # nothing changes before the load call
        loaded = await http_c.post("/v2/repository/models/two/load", headers=auth)
        assert loaded.status_code == 200, loaded.text
        meta = (await http_c.get("/v2/models/two")).json()
        assert meta["versions"] == ["2"]
        assert (meta["parameters"]["max_batch_size"], meta["parameters"]["instances"]) == (4, 1)
        assert stack.sample("lumenserve_model_max_batch_size", model="two", version="2") == 4
        assert stack.sample("lumenserve_model_ready", model="two", version="1") == 0
        served = stack.repository.get("two")
        assert (served.policy.max_batch_size, served.policy.max_queue_delay) == (4, 0.001)
        rows = InferenceRequest(
            "two",
            inputs=[
                Tensor("ids", "INT64", np.zeros((5, 3), np.int64)),
                Tensor("x", "FP16", np.zeros((5, 3), np.float16)),
            ],
        )
        with pytest.raises(InvalidInput, match="max_batch_size of 4"):
            await plane.infer(rows, "test")

        (repo / "two" / "config.yaml").write_text("batching:\n  max_batch_size: -2\nversion_policy:\n  specific: [1]\n")
        refused = await http_c.post("/v2/repository/models/two/load", headers=auth)
        assert refused.status_code == 400
        assert "config.yaml: batching.max_batch_size: Input should be greater than or equal to 0" in refused.text
        assert plane.model_metadata("two")["versions"] == ["2"]  # a refused config leaves the served versions alone
        (repo / "two" / "config.yaml").write_text("batching:\n  max_batch: 4\n")
        with pytest.raises(InvalidInput, match=r"batching.max_batch: Extra inputs are not permitted"):
            await stack.repository.load("two")
        (repo / "two" / "config.yaml").write_text("version_policy:\n  specific: [1, 7]\n")
        with pytest.raises(InvalidInput, match=r"version_policy.specific: versions \[7\] are not on disk"):
            await stack.repository.load("two")
        (repo / "two" / "config.yaml").write_text("version_policy:\n  specific: [1]\nbatching:\n  max_batch_size: 0\n")
        await stack.repository.load("two")
        meta = plane.model_metadata("two")
        assert meta["versions"] == ["1"] and meta["parameters"]["max_batch_size"] == 0


# ---- explanations on the served runtime -----------------------------------------------------------
PERTURBATION_METHODS = ("occlusion", "feature_ablation", "shapley_value_sampling", "kernel_shap", "lime")


async def test_runtime_only_classifier_is_explained_by_perturbation(tmp_path: Path) -> None:
    from serving.errors import Unimplemented
    from serving.explain_backend import CaptumEngine

    source, _ = onnx_nhwc_classifier(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("alpha\nbeta\ngamma\ndelta\n")
    repo = tmp_path / "repo"
    image = ImageFlags(image_size=IMAGE_SIZE, layout="NHWC", channels="BGR", mean=MEAN, std=STD)
    import_model(source, repo, "nhwc", ImportOptions(task="image-classification", image=image, labels_file=labels))
    raw = np.array([jpeg(5)], dtype=np.object_)
    async with serving_stack(repo, ["nhwc"], engine=CaptumEngine()) as stack, http_client(stack) as http_c:
        schema = (await http_c.get("/v2/models/nhwc/explain")).json()
        offered = sorted(m["name"] for m in schema["methods"])
        assert offered == sorted(PERTURBATION_METHODS) and schema["default_method"] == "occlusion"
        expected = ort_run(
            source, {"image": stack.repository.get("nhwc").io.prepare([Tensor("image", "BYTES", raw)])[0]["image"]}
        )
        for method in PERTURBATION_METHODS:
            params = {"method": method, "infidelity": False}
            if method in ("kernel_shap", "lime"):
                params["n_samples"] = 16
            request = InferenceRequest("nhwc", inputs=[Tensor("image", "BYTES", raw)], parameters=params)
            response = await stack.dataplane.explain(request, "test")
            out = {t.name: t for t in response.outputs}
            np.testing.assert_allclose(out["logits"].data, expected["scores"], atol=1e-5)
            assert out["attributions"].data.shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE), method
            assert np.abs(out["attributions"].data).sum() > 0, method
            png = __import__("base64").b64decode(out["overlay_png"].data[0])
            assert Image.open(io.BytesIO(png)).size == (40, 40) or png[:8] == b"\x89PNG\r\n\x1a\n", method
            assert np.isfinite(out["deletion_auc"].data).all(), method
        saliency = InferenceRequest("nhwc", inputs=[Tensor("image", "BYTES", raw)], parameters={"method": "saliency"})
        with pytest.raises(ExplainParameterError) as refused:
            await stack.dataplane.explain(saliency, "test")
        classified = classify(refused.value)
        assert (classified.http_status, classified.grpc_code) == (400, grpc.StatusCode.INVALID_ARGUMENT)
        assert "needs the model's eager weights" in classified.message and "kernel_shap" in classified.message

        (repo / "nhwc" / "config.yaml").write_text("explain:\n  methods: [occlusion]\n  max_samples: 8\n")
        await stack.repository.load("nhwc")
        lime = InferenceRequest("nhwc", inputs=[Tensor("image", "BYTES", raw)], parameters={"method": "lime"})
        with pytest.raises(InvalidInput, match=r"not enabled .*explain.methods: occlusion"):
            await stack.dataplane.explain(lime, "test")
        compare = InferenceRequest(
            "nhwc", inputs=[Tensor("image", "BYTES", raw)], parameters={"methods": "occlusion,lime"}
        )
        with pytest.raises(InvalidInput, match=r"method lime is not enabled"):  # a compare request too
            await stack.dataplane.explain(compare, "test")
        assert [m["name"] for m in (await http_c.get("/v2/models/nhwc/explain")).json()["methods"]] == ["occlusion"]
        (repo / "nhwc" / "config.yaml").write_text("explain:\n  enabled: false\n")
        await stack.repository.load("nhwc")
        with pytest.raises(Unimplemented, match="turned off"):
            await stack.dataplane.explain(lime, "test")


async def test_torchscript_tensor_model_equals_the_traced_module(tmp_path: Path) -> None:
    import torch

    from tests.import_sources import traced_tensor_model
    from training.importer.options import parse_input_spec

    source, module = traced_tensor_model(tmp_path)
    repo = tmp_path / "repo"
    options = ImportOptions(inputs=(parse_input_spec("a:FP32:-1,4"), parse_input_spec("b:FP32:-1,4")))
    bundle = import_model(source, repo, "traced", options)
    assert bundle.manifest.artifact("onnx") is None
    rng = np.random.default_rng(2)
    feed = {n: rng.standard_normal((3, 4)).astype(np.float32) for n in ("a", "b")}
    with torch.no_grad():
        expected = [t.numpy() for t in module(torch.from_numpy(feed["a"]), torch.from_numpy(feed["b"]))]
    names = [t.name for t in bundle.manifest.outputs]
    async with serving_stack(repo, ["traced"]) as stack, grpc_client(stack) as grpc_c, http_client(stack) as http_c:
        assert stack.dataplane.model_metadata("traced")["platform"] == "pytorch_torchscript"
        for answer in (
            await grpc_infer(grpc_c, "traced", feed, {"a": "FP32", "b": "FP32"}),
            await http_binary_infer(http_c, "traced", feed, {"a": "FP32", "b": "FP32"}),
        ):
            for name, want in zip(names, expected, strict=True):
                np.testing.assert_allclose(answer[name], want, atol=1e-5, rtol=0)


async def test_runtime_only_text_classifier_is_explained_by_token_occlusion(tmp_path: Path) -> None:
    from serving.explain_backend import CaptumEngine

    source = onnx_text_classifier(tmp_path, seq=16)
    labels = tmp_path / "labels.txt"
    labels.write_text("no\nyes\n")
    repo = tmp_path / "repo"
    options = ImportOptions(task="text-classification", tokenizer_dir=minilm_dir(), max_length=16, labels_file=labels)
    import_model(source, repo, "fixed-text", options)
    raw = np.array([b"a fine film with a dull end"], dtype=np.object_)
    async with serving_stack(repo, ["fixed-text"], engine=CaptumEngine()) as stack:
        request = InferenceRequest("fixed-text", inputs=[Tensor("text", "BYTES", raw)], parameters={"aopc": True})
        out = {t.name: t for t in (await stack.dataplane.explain(request, "test")).outputs}
        assert out["attributions"].data.shape == (1, 16)  # padded to max_length: the model's fixed axis
        tokens = [t.decode() for t in out["tokens"].data[0] if t]
        assert "fine" in tokens and "dull" in tokens
        assert np.abs(out["attributions"].data).sum() > 0
        assert b"fine" in out["token_html"].data[0] or b"fine" in bytes(out["token_html"].data[0])
        assert np.isfinite(out["deletion_auc"].data).all()
        ig = InferenceRequest(
            "fixed-text", inputs=[Tensor("text", "BYTES", raw)], parameters={"method": "integrated_gradients"}
        )
        with pytest.raises(ExplainParameterError, match="methods it can run: occlusion"):
            await stack.dataplane.explain(ig, "test")


# ---- imports with eager weights: served like our own bundles, gradient explanations ------------------
async def test_torchvision_import_served_and_explained_with_gradients(tmp_path: Path) -> None:
    import torch

    from serving.explain_backend import CaptumEngine
    from tests.import_sources import torchvision_weights

    weights = tmp_path / "resnet18.safetensors"
    source = torchvision_weights(weights, classes=5)
    repo = tmp_path / "repo"
    options = ImportOptions(architecture="resnet18", image=ImageFlags(image_size=IMAGE_SIZE, mean=MEAN, std=STD))
    bundle = import_model(weights, repo, "resnet", options)
    tolerance = max(p.tolerance for p in bundle.manifest.parity)
    raw = np.array([jpeg(7)], dtype=np.object_)
    async with serving_stack(repo, ["resnet"], engine=CaptumEngine()) as stack, grpc_client(stack) as grpc_c:
        pixels = stack.repository.get("resnet").io.prepare([Tensor("image", "BYTES", raw)])[0]["input"]
        with torch.no_grad():
            eager = source(torch.from_numpy(pixels)).numpy()
        answer = await grpc_infer(grpc_c, "resnet", {"image": raw}, {"image": "BYTES"})
        np.testing.assert_allclose(answer["logits"], eager, atol=tolerance, rtol=0)
        for method in ("saliency", "grad_cam", "kernel_shap"):
            params = {"method": method, "infidelity": False} | ({"n_samples": 16} if method == "kernel_shap" else {})
            request = InferenceRequest("resnet", inputs=[Tensor("image", "BYTES", raw)], parameters=params)
            out = {t.name: t for t in (await stack.dataplane.explain(request, "test")).outputs}
            png = __import__("base64").b64decode(out["overlay_png"].data[0])
            assert png[:8] == b"\x89PNG\r\n\x1a\n", method
            assert np.isfinite(out["deletion_auc"].data).all() and np.abs(out["attributions"].data).sum() > 0


async def test_hf_text_import_served_from_raw_text_and_explained(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from lumenserve.bundle.eager import load_tokenizer
    from serving.explain_backend import CaptumEngine
    from tests.import_sources import hf_text_folder

    folder = hf_text_folder(tmp_path / "hf-text", ["neg", "neu", "pos"])
    repo = tmp_path / "repo"
    bundle = import_model(folder, repo, "sentiment")
    tolerance = max(p.tolerance for p in bundle.manifest.parity)
    texts = ["a fine film", "dull and far too long"]
    encoded = load_tokenizer(bundle)(texts, padding=True, return_tensors="pt")
    source = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        eager = source(**encoded).logits.numpy()
    raw = np.array([t.encode() for t in texts], dtype=np.object_)
    async with serving_stack(repo, ["sentiment"], engine=CaptumEngine()) as stack, http_client(stack) as http_c:
        answer = await http_binary_infer(http_c, "sentiment", {"text": raw}, {"text": "BYTES"})
        np.testing.assert_allclose(answer["logits"], eager, atol=tolerance, rtol=0)
        request = InferenceRequest("sentiment", inputs=[Tensor("text", "BYTES", raw[:1])], parameters={"n_steps": 8})
        out = {t.name: t for t in (await stack.dataplane.explain(request, "test")).outputs}
        assert "fine" in [t.decode() for t in out["tokens"].data[0]]
        assert np.isfinite(out["deletion_auc"].data).all() and np.abs(out["attributions"].data).sum() > 0


async def test_hf_vit_import_served_over_grpc_and_explained(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForImageClassification

    from serving.explain_backend import CaptumEngine
    from tests.import_sources import vit_folder

    folder = vit_folder(tmp_path / "vit", ["cat", "dog", "fox"])
    repo = tmp_path / "repo"
    bundle = import_model(folder, repo, "vit")
    tolerance = max(p.tolerance for p in bundle.manifest.parity)
    raw = np.array([jpeg(11)], dtype=np.object_)
    source = AutoModelForImageClassification.from_pretrained(folder).eval()
    async with serving_stack(repo, ["vit"], engine=CaptumEngine()) as stack, grpc_client(stack) as grpc_c:
        pixels = stack.repository.get("vit").io.prepare([Tensor("image", "BYTES", raw)])[0]["input"]
        with torch.no_grad():
            eager = source(pixel_values=torch.from_numpy(pixels)).logits.numpy()
        answer = await grpc_infer(grpc_c, "vit", {"image": raw}, {"image": "BYTES"})
        np.testing.assert_allclose(answer["logits"], eager, atol=tolerance, rtol=0)
        for method in ("saliency", "gradient_rollout"):
            params = {"method": method, "infidelity": False}
            request = InferenceRequest("vit", inputs=[Tensor("image", "BYTES", raw)], parameters=params)
            out = {t.name: t for t in (await stack.dataplane.explain(request, "test")).outputs}
            assert __import__("base64").b64decode(out["overlay_png"].data[0])[:4] == b"\x89PNG", method
            assert np.isfinite(out["deletion_auc"].data).all(), method
