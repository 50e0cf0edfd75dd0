"""Explain over a real ``lumenserve serve`` process: HTTP and gRPC, image and text bundles,
errors from the table, the cache, and predictions that keep flowing during an explanation."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from explain.cli import build_body, explain_command
from explain.originals import crop_region
from lumenserve.bundle import Bundle, ImagePreprocessing
from tests.support.clients import jpeg_bytes
from tests.support.server import ServerOptions, ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_options() -> ServerOptions:
    return ServerOptions(env={"LUMENSERVE_GRACE_PERIOD": "5", "LUMENSERVE_EXPLAIN_MAX_CONCURRENCY": "1"})


def http_explain(server: ServerProcess, model: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"http://{server.http_url}/v2/models/{model}/explain", content=body, headers=headers, timeout=120)


def json_explain(server: ServerProcess, model: str, doc: dict[str, Any]) -> httpx.Response:
    return http_explain(server, model, json.dumps(doc).encode(), {"Content-Type": "application/json"})


def outputs_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in doc["outputs"]}


def png_sizes(entry: dict[str, Any]) -> list[tuple[int, int]]:
    assert entry["datatype"] == "BYTES" and entry["parameters"]["content_encoding"] == "base64"
    sizes = []
    for item in entry["data"]:
        with Image.open(io.BytesIO(base64.b64decode(item))) as image:
            assert image.format == "PNG"
            image.load()
            sizes.append(image.size)
    return sizes


def grpc_explain(url: str, model: str, inputs: list[tuple[str, str, list[int], bytes]], params: dict[str, Any]) -> Any:
    """ModelExplain with raw contents -> (code, details, outputs, parameters)."""
    import grpc

    from serving.protogen import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    for key, value in params.items():
        if isinstance(value, bool):
            request.parameters[key].bool_param = value
        elif isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = str(value)
    for name, datatype, shape, raw in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    with grpc.insecure_channel(url) as channel:
        call = channel.unary_unary(
            "/lumenserve.explain.ExplainService/ModelExplain",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        try:
            reply = call(request, timeout=120)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details(), {}, {}
    outputs = {
        o.name: (o.datatype, list(o.shape), raw, {k: v.string_param for k, v in o.parameters.items()})
        for o, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }
    parameters = {k: v.string_param for k, v in reply.parameters.items()}
    return "OK", "", outputs, parameters


def split_bytes(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (n,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + n])
        offset += 4 + n
    return items


def bytes_raw(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_http_image_explain_raw_jpegs_overlay_at_photo_resolution(server: ServerProcess, image_bundle: Bundle) -> None:
    photos = [jpeg_bytes(1, (61, 47)), jpeg_bytes(2, (80, 120))]
    raw = bytes_raw(photos)
    header = {
        "parameters": {"method": "integrated_gradients", "n_steps": 16, "targets": "[2, 0]"},
        "inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}],
    }
    head = json.dumps(header).encode()
    reply = http_explain(server, "tiny-image", head + raw, {"Inference-Header-Content-Length": str(len(head))})
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    out = outputs_of(doc)
    pre = image_bundle.manifest.preprocessing
    assert isinstance(pre, ImagePreprocessing)
    expected = [crop_region(p, pre).shape[1::-1] for p in photos]  # (W, H) of each photo's crop region
    assert png_sizes(out["overlay_png"]) == [tuple(e) for e in expected]
    assert expected[0] == (42, 42)  # 47 px short side * 32 / 36
    assert out["target"]["data"] == [2, 0] and out["attributions"]["shape"] == [2, 3, 32, 32]
    assert out["logits"]["shape"] == [2, 3] and len(out["deletion_auc"]["data"]) == 2
    assert {"convergence_delta", "infidelity", "probabilities", "predicted"} <= set(out)
    assert doc["parameters"]["method"] == "integrated_gradients"
    used = json.loads(doc["parameters"]["explain_parameters"])
    assert used["n_steps"] == 16 and used["internal_batch_size"] >= 2


def test_http_tensor_input_gives_pngs_of_the_input_size_and_cache_hits(server: ServerProcess) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    doc = {
        "parameters": {"method": "grad_cam"},
        "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x.reshape(-1).tolist()}],
    }
    first = json_explain(server, "tiny-image", doc)
    assert first.status_code == 200, first.text
    assert png_sizes(outputs_of(first.json())["overlay_png"]) == [(32, 32)]
    assert first.json()["parameters"]["explain_cache"] == "miss"
    second = json_explain(server, "tiny-image", doc)
    assert second.json()["parameters"]["explain_cache"] == "hit"
    assert outputs_of(second.json())["overlay_png"]["data"] == outputs_of(first.json())["overlay_png"]["data"]
    metrics = httpx.get(f"http://{server.http_url}/metrics", timeout=10).text
    hits = re.search(r'lumenserve_explain_cache_total\{model="tiny-image",result="hit"\} (\d+)', metrics)
    assert hits and int(hits.group(1)) >= 1
    assert 'lumenserve_explain_duration_seconds_count{method="grad_cam"' in metrics or re.search(
        r'lumenserve_explain_duration_seconds_count\{[^}]*method="grad_cam"', metrics
    )


def test_lean_explain_skips_scores_and_pngs_on_request(server: ServerProcess) -> None:
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    tensor = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x.reshape(-1).tolist()}
    params = {"method": "saliency", "deletion_steps": 0, "infidelity": False, "render_png": False}
    lean = json_explain(server, "tiny-image", {"parameters": params, "inputs": [tensor]})
    assert lean.status_code == 200, lean.text
    names = set(outputs_of(lean.json()))
    assert {"attributions", "predicted", "target", "logits"} <= names
    assert not names & {"overlay_png", "deletion_auc", "infidelity"}, names
    assert json.loads(lean.json()["parameters"]["explain_parameters"])["render_png"] is False
    # asking only for outputs that are no PNG draws none; asking for a PNG that was switched off is a 400
    wanted = [{"name": "attributions"}, {"name": "deletion_auc"}]
    picked = json_explain(
        server, "tiny-image", {"parameters": {"method": "saliency"}, "inputs": [tensor], "outputs": wanted}
    )
    assert picked.status_code == 200, picked.text
    assert [o["name"] for o in picked.json()["outputs"]] == ["attributions", "deletion_auc"]
    assert json.loads(picked.json()["parameters"]["explain_parameters"])["render_png"] is False
    refused = json_explain(server, "tiny-image", {"parameters": params, "inputs": [tensor],
                                                  "outputs": [{"name": "overlay_png"}]})  # fmt: skip
    assert refused.status_code == 400 and "overlay_png" in refused.json()["error"], refused.text


def test_http_text_explain_attention_views(server: ServerProcess) -> None:
    doc = {
        "parameters": {"method": "attention"},
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a fine film", "dull & <b>long</b>"]}],
    }
    reply = json_explain(server, "tiny-text", doc)
    assert reply.status_code == 200, reply.text
    out = outputs_of(reply.json())
    assert len(png_sizes(out["attention_grid_png"])) == 2 and len(png_sizes(out["rollout_png"])) == 2
    assert all(w == 640 for w, _ in png_sizes(out["token_png"]))
    seq = out["attributions"]["shape"][1]
    tokens = out["tokens"]["data"]
    assert out["tokens"]["shape"] == [2, seq] and tokens[0] == "[CLS]"
    assert "&lt;" in out["token_html"]["data"][1]


@pytest.mark.parametrize(
    ("model", "params", "status", "message"),
    [
        ("tiny-image", {"method": "integrated_gradients", "n_steps": 0}, 400, "n_steps"),
        ("tiny-image", {"method": "occlusion", "window": 64}, 400, "larger than the image"),
        ("tiny-image", {"targets": "[7]"}, 400, "class index"),
        ("tiny-image", {"method": "attention"}, 501, "does not apply"),
        ("tiny-text", {"method": "grad_cam"}, 501, "does not apply"),
        ("tiny-text", {"method": "no_such_method"}, 501, "unknown explain method"),
    ],
)
def test_http_errors_follow_the_table(
    server: ServerProcess, model: str, params: dict[str, Any], status: int, message: str
) -> None:
    if model == "tiny-image":
        x = np.zeros((1, 3, 32, 32), np.float32).reshape(-1).tolist()
        inputs = [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x}]
    else:
        inputs = [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]
    reply = json_explain(server, model, {"parameters": params, "inputs": inputs})
    assert reply.status_code == status and message in reply.json()["error"]


def test_grpc_explain_image_and_text_and_errors(server: ServerProcess, worker: ThreadPoolExecutor) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    code, _, out, params = worker.submit(
        grpc_explain, server.grpc_url, "tiny-image", [("input", "FP32", [2, 3, 32, 32], x.tobytes())],
        {"method": "saliency", "png_encoding": "raw"},
    ).result(120)  # fmt: skip
    assert code == "OK" and params["method"] == "saliency" and params["png_encoding"] == "raw"
    datatype, shape, raw, out_params = out["overlay_png"]
    assert datatype == "BYTES" and shape == [2] and out_params["content_encoding"] == "identity"
    assert [Image.open(io.BytesIO(p)).size for p in split_bytes(raw)] == [(32, 32), (32, 32)]
    saliency = np.frombuffer(out["attributions"][2], dtype="<f4").reshape(out["attributions"][1])
    assert saliency.shape == (2, 3, 32, 32) and (saliency >= 0).all()

    text = bytes_raw([b"a wonderful, moving film"])
    code, _, out, params = worker.submit(
        grpc_explain, server.grpc_url, "tiny-text", [("text", "BYTES", [1], text)], {"n_steps": 8}
    ).result(120)
    assert code == "OK" and params["method"] == "integrated_gradients"
    png = base64.b64decode(split_bytes(out["token_png"][2])[0])
    assert Image.open(io.BytesIO(png)).width == 640
    assert "convergence_delta" in out

    bad = worker.submit(
        grpc_explain, server.grpc_url, "tiny-text", [("text", "BYTES", [1], text)], {"n_steps": 100_000}
    ).result(120)
    assert bad[0] == "INVALID_ARGUMENT" and "n_steps" in bad[1]
    unsupported = worker.submit(
        grpc_explain, server.grpc_url, "tiny-text", [("text", "BYTES", [1], text)], {"method": "grad_cam"}
    ).result(120)
    assert unsupported[0] == "UNIMPLEMENTED"


def test_predictions_keep_flowing_while_an_explanation_runs(server: ServerProcess) -> None:
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32).reshape(-1).tolist()
    infer_doc = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x}]})
    client = httpx.Client(timeout=30)
    infer_url = f"http://{server.http_url}/v2/models/tiny-image/infer"

    def one_infer() -> float:
        start = time.perf_counter()
        assert client.post(infer_url, content=infer_doc).status_code == 200
        return time.perf_counter() - start

    baseline = [one_infer() for _ in range(20)]
    # A long explanation on any machine: 4 items x 512 IG steps in passes of 4 (not cached:
    # the inputs differ from every earlier request).
    batch = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
    explain_doc = {
        "parameters": {"method": "integrated_gradients", "n_steps": 512, "internal_batch_size": 4},
        "inputs": [{"name": "input", "shape": [4, 3, 32, 32], "datatype": "FP32", "data": batch.ravel().tolist()}],
    }
    done: dict[str, float] = {}

    def run_explain() -> None:
        start = time.perf_counter()
        reply = json_explain(server, "tiny-image", explain_doc)
        done["status"], done["seconds"] = reply.status_code, time.perf_counter() - start

    thread = threading.Thread(target=run_explain)
    thread.start()
    time.sleep(0.3)  # the explanation is underway
    during = []
    while thread.is_alive() and len(during) < 300:  # measure for as long as it runs
        during.append(one_infer())
    thread.join(180)
    client.close()
    assert done.get("status") == 200
    p50_before, p50_during = float(np.median(baseline)), float(np.median(during))
    print(
        f"infer p50 {p50_before * 1e3:.1f} ms before, {p50_during * 1e3:.1f} ms during an IG explain "
        f"of {done['seconds']:.1f} s; max during {max(during) * 1e3:.0f} ms; {len(during)} calls"
    )
    assert len(during) >= 10, f"only {len(during)} predictions answered during a {done['seconds']:.1f} s explanation"
    assert p50_during < max(5 * p50_before, 0.05)
    assert max(during) < 1.0


def test_cli_saves_pngs_and_prints_scores(server: ServerProcess, tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(jpeg_bytes(5, (64, 48)))
    runner = CliRunner()
    url = f"http://{server.http_url}"
    result = runner.invoke(
        explain_command,
        ["--url", url, "--model", "tiny-image", "--image", str(image), "--method", "grad_cam", "--target", "1",
         "--out", str(tmp_path / "img")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "explained class 1" in result.output and "deletion_auc" in result.output
    with Image.open(tmp_path / "img" / "overlay.png") as png:
        assert png.size == (43, 43)  # 48 px short side * 32 / 36
    result = runner.invoke(
        explain_command,
        ["--url", url, "--model", "tiny-text", "--text", "what a film", "--method", "attention",
         "--out", str(tmp_path / "txt")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {"token.png", "attention_grid.png", "rollout.png", "tokens.html"} <= {
        p.name for p in (tmp_path / "txt").iterdir()
    }
    bad = runner.invoke(
        explain_command,
        ["--url", url, "--model", "tiny-text", "--text", "x", "--param", "n_steps=0", "--out", str(tmp_path)],
    )
    assert bad.exit_code == 1 and "error 400" in bad.output


def test_build_body_frames_the_image_as_one_bytes_element() -> None:
    body, headers = build_body(b"\x89PNG...", None, {"method": "saliency"})
    head_len = int(headers["Inference-Header-Content-Length"])
    assert json.loads(body[:head_len])["inputs"][0]["parameters"]["binary_data_size"] == 4 + 7
    assert body[head_len:] == struct.pack("<I", 7) + b"\x89PNG..."


def test_explain_cache_is_bounded_by_entries_and_bytes() -> None:
    from serving.explain_backend import ExplainCache
    from serving.types import InferenceResponse, Tensor

    def response(n: int) -> InferenceResponse:
        return InferenceResponse("m", "1", outputs=[Tensor("x", "UINT8", np.zeros(n, np.uint8))])

    cache = ExplainCache(entries=2, max_bytes=100)
    cache.put("a", response(10))
    cache.put("b", response(10))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", response(10))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("d", response(95))  # fits alone: everything older goes
    assert cache.get("a") is None and cache.get("c") is None and cache.get("d") is not None
    cache.put("e", response(101))  # larger than the whole cache: not stored
    assert cache.get("e") is None


def test_discovery_and_compare_over_a_real_server(server: ServerProcess, tmp_path: Path) -> None:
    import grpc

    from serving.protogen import explain_pb2, explain_pb2_grpc

    listed = httpx.get(f"http://{server.http_url}/v2/models/tiny-image/explain", timeout=30).json()
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        answer = stub.ModelExplainMethods(explain_pb2.ModelExplainMethodsRequest(name="tiny-image"), timeout=30)
    assert json.loads(answer.methods_json) == listed and "grad_cam" in {m["name"] for m in listed["methods"]}

    runner = CliRunner()
    url = f"http://{server.http_url}"
    listing = runner.invoke(explain_command, ["--url", url, "--model", "tiny-text", "--list"])
    assert listing.exit_code == 0, listing.output
    assert "default method: integrated_gradients" in listing.output
    assert "n_steps: integer [2, 512], default 32" in listing.output and "\ngrad_cam" not in listing.output

    image = tmp_path / "photo.jpg"
    image.write_bytes(jpeg_bytes(7, (40, 40)))
    compared = runner.invoke(
        explain_command,
        ["--url", url, "--model", "tiny-image", "--image", str(image), "--methods", "saliency,grad_cam",
         "--param", "insertion_steps=3", "--out", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert compared.exit_code == 0, compared.output
    assert "method saliency:" in compared.output and "method grad_cam:" in compared.output
    assert compared.output.count("insertion_auc = ") == 2
    assert (tmp_path / "cmp" / "saliency" / "overlay.png").exists()
    assert (tmp_path / "cmp" / "grad_cam" / "overlay.png").exists()


def bench_compare(url: str) -> dict[str, Any]:
    """The bench's compare section against the server (runs in the worker: tritonclient's messages)."""
    from bench.explain_bench import LumenExplainClient, run_compare
    from bench.photos import Workload

    jpegs = [jpeg_bytes(seed, (40, 40)) for seed in (11, 12, 13)]
    workload = Workload([str(i) for i in range(len(jpegs))], jpegs, [], codec=None)  # type: ignore[arg-type]
    lumen = LumenExplainClient(url, "tiny-image", workload)
    try:
        return run_compare(lumen, len(workload), 2, lambda _line: None)
    finally:
        lumen.close()


def test_bench_compare_section_runs(server: ServerProcess, worker: ThreadPoolExecutor) -> None:
    from bench.explain_bench import COMPARE_METHODS
    from bench.report import _explain_table

    result = worker.submit(bench_compare, server.grpc_url).result(300)
    assert result["methods"] == list(COMPARE_METHODS)
    assert len(result["samples_s"]["methods_request"]) == len(result["samples_s"]["one_by_one"]) == 2
    assert result["methods_request_s"] > 0 and result["one_by_one_s"] > 0 and result["ratio"] > 0
    table = "\n".join(_explain_table({"explain": {"cases": {}, "compare": result}}))
    assert f"ratio {result['ratio']:.2f}" in table
