"""Explain's discovery, compare and scores through both transports, in-process: a real
repository with the tiny ONNX bundles, the data plane, the HTTP app (ASGI), a real grpc.aio
server and the real explain engine (the explain library on each model's eager twin)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from lumenserve.bundle import Bundle
from serving.explain_backend import CaptumEngine, method_listing
from serving.grpc.convert import to_request
from serving.http.app import build_app
from serving.protogen import explain_pb2, explain_pb2_grpc
from tests.support.inprocess import grpc_channel, serving_stack
from tests.test_inprocess_serving import grpc_image_request, http_client

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_body(rows: int = 1, **parameters: object) -> dict[str, object]:
    data = np.random.default_rng(0).normal(size=(rows, 3, 32, 32)).astype(np.float32)  # (batch, C, H, W)
    return {"parameters": parameters, "inputs": [{"name": "input", "datatype": "FP32", "shape": list(data.shape),
            "data": data.reshape(-1).tolist()}]}  # fmt: skip


def text_body(**parameters: object) -> dict[str, object]:
    return {"parameters": parameters, "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
            "data": ["a warm and funny film"]}]}  # fmt: skip


def by_name(answer: dict[str, object]) -> dict[str, dict[str, object]]:
    return {o["name"]: o for o in answer["outputs"]}  # type: ignore[attr-defined,index]


async def test_discovery_is_the_library_schema_on_both_transports(model_repo: Path) -> None:
    async with (
        serving_stack(model_repo, ["tiny-image", "tiny-text"], engine=CaptumEngine()) as stack,
        http_client(build_app(stack.dataplane)) as client,
        grpc_channel(stack) as channel,
    ):
        image = (await client.get("/v2/models/tiny-image/explain")).json()
        text = (await client.get("/v2/models/tiny-text/versions/1/explain")).json()
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        over_grpc = await stub.ModelExplainMethods(explain_pb2.ModelExplainMethodsRequest(name="tiny-image"))
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ModelExplainMethods(explain_pb2.ModelExplainMethodsRequest(name="nope"))
        config = (await client.get("/v2/models/tiny-image/config")).json()
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    listed = config["parameters"]["explain_methods"]["string_value"].split(",")
    assert listed == [m["name"] for m in image["methods"]]  # Triton's config names the same methods
    assert json.loads(over_grpc.methods_json) == image  # one document, two transports
    from explain.params import method_schemas

    assert {m.pop("name"): m for m in image["methods"]} == method_schemas("image-classification", True)
    assert image["default_method"] == "saliency" and image["reason"] == ""
    methods = {m["name"]: m for m in text["methods"]}
    assert "attention" in methods and "grad_cam" not in methods
    assert "comprehensiveness" in methods["integrated_gradients"]["scores"]
    assert "aopc" in methods["integrated_gradients"]["parameters"]["properties"]


def test_discovery_for_runtime_only_and_tensor_models(image_bundle: Bundle) -> None:
    def served(**changes: object) -> SimpleNamespace:
        bundle = SimpleNamespace(manifest=image_bundle.manifest.model_copy(update=changes))
        return SimpleNamespace(name="m", version="1", bundle=bundle)

    imported = method_listing(served(architecture=None))  # ONNX/TorchScript only: runs on the runtime
    assert {m["name"] for m in imported["methods"]} == {"occlusion", "feature_ablation", "shapley_value_sampling",
                                                        "kernel_shap", "lime"}  # fmt: skip
    assert not any(m["gradients"] for m in imported["methods"]) and imported["default_method"] == "occlusion"
    tensor = method_listing(served(task="tensor"))
    assert tensor["methods"] == [] and "tensor" in tensor["reason"] and tensor["default_method"] is None


async def test_compare_shares_the_prediction_and_names_each_method(model_repo: Path) -> None:
    engine = CaptumEngine()
    async with (
        serving_stack(model_repo, ["tiny-image"], engine=engine) as stack,
        http_client(build_app(stack.dataplane)) as client,
    ):
        scores = {"deletion_steps": 4, "insertion_steps": 4, "road_steps": 2, "infidelity": False}
        compare = (
            await client.post("/v2/models/tiny-image/explain", json=image_body(methods="saliency,grad_cam", **scores))
        ).json()
        alone = (
            await client.post("/v2/models/tiny-image/explain", json=image_body(method="grad_cam", **scores))
        ).json()
        again = (
            await client.post("/v2/models/tiny-image/explain", json=image_body(methods="saliency,grad_cam", **scores))
        ).json()
        swapped = (
            await client.post("/v2/models/tiny-image/explain", json=image_body(methods="grad_cam,saliency", **scores))
        ).json()
    outputs = by_name(compare)
    expected = ["logits", "probabilities", "predicted", "target"]
    for method in ("saliency", "grad_cam"):
        expected += [
            f"{method}/{n}"
            for n in ("attributions", "overlay_png", "deletion_auc", "insertion_auc", "road_morf", "road_lerf")
        ]
    assert list(outputs) == expected
    assert compare["parameters"]["methods"] == "saliency,grad_cam" and "method" not in compare["parameters"]
    used = json.loads(compare["parameters"]["explain_parameters"])
    assert set(used) == {"saliency", "grad_cam"} and used["grad_cam"]["road_steps"] == 2
    single = by_name(alone)  # each method as if asked alone: same numbers
    for name in ("attributions", "deletion_auc", "insertion_auc", "road_morf"):
        assert np.allclose(outputs[f"grad_cam/{name}"]["data"], single[name]["data"], atol=1e-5), name
    assert outputs["logits"]["data"] == single["logits"]["data"]
    assert outputs["grad_cam/overlay_png"]["parameters"]["content_type"] == "image/png"
    assert again["parameters"]["explain_cache"] == "hit" and swapped["parameters"]["explain_cache"] == "miss"
    assert [o["name"] for o in swapped["outputs"]][4].startswith("grad_cam/")
    assert (
        stack.sample("lumenserve_explain_duration_seconds_count", model="tiny-image", version="1", method="compare")
        == 3
    )


async def test_compare_and_scores_over_grpc(model_repo: Path) -> None:
    async with (
        serving_stack(model_repo, ["tiny-image"], engine=CaptumEngine()) as stack,
        grpc_channel(stack) as channel,
    ):
        stub = explain_pb2_grpc.ExplainServiceStub(channel)
        request = grpc_image_request(methods="saliency,occlusion", insertion_steps=3, png_encoding="raw")
        request.outputs.add(name="occlusion/insertion_auc")
        request.outputs.add(name="saliency/overlay_png")
        request.outputs.add(name="target")
        response = await stub.ModelExplain(request)
        with pytest.raises(grpc.aio.AioRpcError) as both:
            await stub.ModelExplain(grpc_image_request(method="saliency", methods="saliency,grad_cam"))
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ModelExplain(grpc_image_request(methods="saliency,nope"))
    assert [o.name for o in response.outputs] == ["occlusion/insertion_auc", "saliency/overlay_png", "target"]
    assert response.parameters["methods"].string_param == "saliency,occlusion"
    assert response.raw_output_contents[1][4:12] == b"\x89PNG\r\n\x1a\n"  # raw PNG, one length-prefixed element
    auc = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    assert auc.shape == (1,) and 0.0 <= float(auc[0]) <= 1.0
    assert both.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED and "nope" in (unknown.value.details() or "")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (image_body(road_steps=20), "road_steps"),
        (image_body(sensitivity_samples=0), "sensitivity_samples"),
        (image_body(sensitivity_radius=0), "sensitivity_radius"),
        (image_body(insertion_steps=1), "insertion_steps"),
        (image_body(aopc=True), "aopc"),
        (text_body(road_steps=2), "road_steps"),
        (image_body(methods=7), "methods"),
        (image_body(methods="saliency,saliency"), "each method once"),
    ],
)
async def test_score_parameters_are_bounded_by_the_library(
    model_repo: Path, body: dict[str, object], fragment: str
) -> None:
    async with (
        serving_stack(model_repo, ["tiny-image", "tiny-text"], engine=CaptumEngine()) as stack,
        http_client(build_app(stack.dataplane)) as client,
    ):
        model = "tiny-text" if body["inputs"][0]["name"] == "text" else "tiny-image"  # type: ignore[index]
        answer = await client.post(f"/v2/models/{model}/explain", json=body)
    assert answer.status_code == 400 and fragment in answer.json()["error"], answer.text


async def test_text_aopc_and_sensitivity_scores_are_response_tensors(model_repo: Path) -> None:
    async with (
        serving_stack(model_repo, ["tiny-image", "tiny-text"], engine=CaptumEngine()) as stack,
        http_client(build_app(stack.dataplane)) as client,
    ):
        text = (await client.post("/v2/models/tiny-text/explain", json=text_body(aopc=True, insertion_steps=2))).json()
        image_params = {"sensitivity_max": True, "sensitivity_samples": 2, "deletion_steps": 0}
        image = (await client.post("/v2/models/tiny-image/explain", json=image_body(**image_params))).json()
    text_out, image_out = by_name(text), by_name(image)
    for name in ("comprehensiveness", "sufficiency", "insertion_auc", "deletion_auc"):
        assert text_out[name]["datatype"] == "FP32" and text_out[name]["shape"] == [1], name
    assert "infidelity" not in text_out and "deletion_auc" not in image_out
    assert image_out["sensitivity_max"]["shape"] == [1] and image_out["sensitivity_max"]["data"][0] >= 0


def test_grpc_compare_parameter_travels_as_a_string() -> None:
    request = to_request(grpc_image_request(methods="saliency,grad_cam"), None)
    assert request.parameters["methods"] == "saliency,grad_cam"


async def test_a_server_maximum_is_published_and_enforced(model_repo: Path) -> None:
    caps = {"n_steps": 64, "stdevs": 1.0}
    async with (
        serving_stack(model_repo, ["tiny-image"], engine=CaptumEngine(), explain_parameter_max=caps) as stack,
        http_client(build_app(stack.dataplane)) as client,
    ):
        listed = {m["name"]: m for m in (await client.get("/v2/models/tiny-image/explain")).json()["methods"]}
        above = await client.post(
            "/v2/models/tiny-image/explain", json=image_body(method="integrated_gradients", n_steps=65)
        )
        routed = await client.post(
            "/v2/models/tiny-image/explain",
            json=image_body(methods="saliency,integrated_gradients", **{"integrated_gradients.n_steps": "100"}),
        )
    n_steps = listed["integrated_gradients"]["parameters"]["properties"]["n_steps"]
    assert (n_steps["maximum"], n_steps["minimum"], n_steps["default"]) == (64, 2, 32)
    stdevs = listed["noise_tunnel"]["parameters"]["properties"]["stdevs"]
    assert stdevs["maximum"] == 1.0 and "exclusiveMaximum" not in stdevs
    assert above.status_code == 400 and "at most 64" in above.json()["error"]
    assert routed.status_code == 400 and "integrated_gradients.n_steps" in routed.json()["error"]


def test_a_server_maximum_below_a_default_is_refused_at_startup() -> None:
    from serving.explain_backend import check_parameter_max

    check_parameter_max({"n_steps": 32, "nt_samples": 10})
    with pytest.raises(RuntimeError, match=r"below .*default 32"):
        check_parameter_max({"n_steps": 16})
    with pytest.raises(RuntimeError, match="no explain parameter"):
        check_parameter_max({"n_stepz": 16})


def test_discovery_recognises_a_vision_transformer(image_bundle: Bundle) -> None:
    """From the manifest (a Hugging Face ViT) before the twin exists; from the twin once built."""
    from explain.engine import BundleExplainer
    from lumenserve.bundle import TransformersArchitecture
    from tests.test_explain_vit import tiny_vit

    vit_arch = TransformersArchitecture(config_dir="hf", num_labels=3, model_type="vit", head="image-classification")
    manifest = image_bundle.manifest.model_copy(update={"architecture": vit_arch})
    served = SimpleNamespace(name="vit", version="1", bundle=SimpleNamespace(manifest=manifest))
    from_manifest = {m["name"] for m in method_listing(served)["methods"]}
    assert {"attention", "gradient_rollout", "grad_cam"} <= from_manifest
    cnn = {m["name"] for m in method_listing(SimpleNamespace(name="c", version="1", bundle=image_bundle))["methods"]}
    assert "attention" not in cnn

    twin = BundleExplainer(image_bundle, eager_model=tiny_vit())  # the twin's own answer wins once built
    from_twin = method_listing(SimpleNamespace(name="c", version="1", bundle=image_bundle), twin)
    assert {m["name"] for m in from_twin["methods"]} == from_manifest
