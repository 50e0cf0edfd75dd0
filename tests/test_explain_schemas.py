"""Method discovery: every method's parameters as JSON Schema, from the same models that validate them."""

from __future__ import annotations

import pytest

from explain.errors import ExplainParameterError
from explain.methods import REGISTRY, supported_methods
from explain.methods.integrated_gradients import IntegratedGradientsParams
from explain.params import ScoreParams, method_schemas, validate_params


def test_image_schemas_carry_bounds_defaults_and_outputs() -> None:
    schemas = method_schemas("image-classification", True)
    assert list(schemas) == supported_methods("image-classification")
    ig = schemas["integrated_gradients"]
    props = ig["parameters"]["properties"]
    assert ig["parameters"]["additionalProperties"] is False and ig["gradients"] is True
    assert props["n_steps"] == {
        "type": "integer", "minimum": 2, "maximum": 512, "default": 32,
        "description": IntegratedGradientsParams.model_fields["n_steps"].description,
    }  # fmt: skip
    assert (
        props["internal_batch_size"]["type"] == ["integer", "null"] and props["internal_batch_size"]["default"] is None
    )
    assert props["baselines"]["enum"] == ["zero", "black", "white"]
    assert props["percentile"]["exclusiveMinimum"] == 0.0 and props["alpha"]["maximum"] == 1.0
    assert props["road_steps"]["maximum"] == 19 and "aopc" not in props
    assert "convergence_delta" in ig["outputs"] and "overlay_png" in ig["outputs"]
    assert set(ig["scores"]) == {
        "deletion_auc",
        "insertion_auc",
        "road_morf",
        "road_lerf",
        "infidelity",
        "sensitivity_max",
    }
    assert schemas["noise_tunnel"]["parameters"]["properties"]["base_method"]["enum"] == [
        "saliency", "integrated_gradients", "gradient_shap",
    ]  # fmt: skip
    assert all(s["description"] and not s["description"].startswith("\n") for s in schemas.values())


def test_text_vit_and_runtime_only_listings() -> None:
    text = method_schemas("text", True)
    assert list(text) == ["attention", "integrated_gradients", "layer_integrated_gradients", "occlusion"]
    assert text["occlusion"]["gradients"] is False
    props = text["integrated_gradients"]["parameters"]["properties"]
    assert "aopc" in props and "road_steps" not in props and "colormap" not in props and "render_png" in props
    assert {"attention_grid_png", "rollout_png"} <= set(text["attention"]["outputs"])
    vit = method_schemas("image", True, vision_transformer=True)
    assert {"attention", "gradient_rollout"} <= set(vit) and "grad_cam" in vit
    assert vit["grad_cam"]["parameters"]["properties"]["layer"]["type"] == ["string", "null"]
    # without eager weights only the gradient-free methods remain
    assert list(method_schemas("image", False)) == [
        "feature_ablation", "kernel_shap", "lime", "occlusion", "shapley_value_sampling",
    ]  # fmt: skip
    assert list(method_schemas("text", False)) == ["occlusion"]  # attention maps need the eager model
    assert set(REGISTRY) <= set(method_schemas("image", True)) | set(text)


@pytest.mark.parametrize(
    "name", ["deletion_steps", "insertion_steps", "road_steps", "infidelity_samples", "sensitivity_samples"]
)
def test_the_published_bounds_are_the_enforced_ones(name: str) -> None:
    schema = method_schemas("image", True)["saliency"]["parameters"]["properties"][name]
    validate_params(ScoreParams, "saliency", {name: schema["maximum"]})
    with pytest.raises(ExplainParameterError, match=name):
        validate_params(ScoreParams, "saliency", {name: schema["maximum"] + 1})
    with pytest.raises(ExplainParameterError, match=name):
        validate_params(ScoreParams, "saliency", {name: schema["minimum"] - 1})
