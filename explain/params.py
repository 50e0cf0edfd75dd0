"""Parameters: each method declares a pydantic model whose fields carry the bounds.

Values arrive from the wire as int/float/bool/str; pydantic's lax mode coerces "32" -> 32.
Unknown names are refused so a typo never silently falls back to a default.
:func:`method_schemas` publishes every method's parameters as JSON Schema (types, bounds,
defaults, descriptions) with the outputs and scores it returns: the one source that forms
and clients read.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from explain.errors import ExplainParameterError

P = TypeVar("P", bound=BaseModel)

SCORE_NAMES = (
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
    "comprehensiveness",
    "sufficiency",
    "infidelity",
    "sensitivity_max",
)
"""Every score's name, the same for every method (and the item field that carries it)."""
HIGHER_IS_BETTER = frozenset({"insertion_auc", "road_lerf", "comprehensiveness"})
"""The scores where a larger value means a more faithful explanation (the others: smaller)."""
IMAGE_ONLY_SCORES = frozenset({"road_morf", "road_lerf", "infidelity", "sensitivity_max"})
TEXT_ONLY_SCORES = frozenset({"comprehensiveness", "sufficiency"})


class MethodParams(BaseModel):
    """Base of every method's parameter model (unknown names are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _steps(name: str, steps: int) -> int:
    if steps == 1:
        raise ValueError(f"must be 0 (no {name} curve) or 2 to 50 (one slice is no curve)")
    return steps


class ScoreParams(MethodParams):
    """Which faithfulness scores to compute (docs/explain.md defines each and its cost)."""

    deletion_steps: int = Field(
        default=10, ge=0, le=50, description="slices of the deletion curve (0: no deletion curve, no deletion_auc)"
    )
    insertion_steps: int = Field(
        default=0, ge=0, le=50, description="slices of the insertion curve (0: no insertion_auc)"
    )
    road_steps: int = Field(
        default=0,
        ge=0,
        le=19,
        description="ROAD removal fractions k/(n+1), k=1..n, for road_morf and road_lerf (0: none; images only)",
    )
    aopc: bool = Field(default=False, description="also compute comprehensiveness and sufficiency (text only)")
    infidelity: bool = Field(default=True, description="also compute Captum's infidelity (images only)")
    infidelity_samples: int = Field(default=8, ge=1, le=64, description="noise samples per item for infidelity")
    sensitivity_max: bool = Field(
        default=False,
        description="Captum's sensitivity_max (images only; runs the method sensitivity_samples + 1 more times)",
    )
    sensitivity_samples: int = Field(default=4, ge=1, le=32, description="perturbations per item for sensitivity_max")
    sensitivity_radius: float = Field(
        default=0.02, gt=0.0, le=1.0, description="L-infinity radius of the sensitivity_max perturbations"
    )

    @field_validator("deletion_steps")
    @classmethod
    def _deletion(cls, steps: int) -> int:
        return _steps("deletion", steps)

    @field_validator("insertion_steps")
    @classmethod
    def _insertion(cls, steps: int) -> int:
        return _steps("insertion", steps)


IMAGE_ONLY_SCORE_PARAMS = frozenset(
    {"road_steps", "infidelity", "infidelity_samples", "sensitivity_max", "sensitivity_samples", "sensitivity_radius"}
)
TEXT_ONLY_SCORE_PARAMS = frozenset({"aopc"})


def validate_params(model: type[P], method: str, params: dict[str, Any]) -> P:
    """``model(**params)`` or an :class:`ExplainParameterError` naming each bad field and its bound."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(x) for x in err["loc"]) or "parameters"
            if err["type"] == "extra_forbidden":
                known = ", ".join(sorted(model.model_fields))
                problems.append(f"unknown parameter {name!r} (known: {known})")
            else:
                problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ExplainParameterError(f"{method}: " + "; ".join(problems)) from None


def field_schemas(model: type[BaseModel], only: frozenset[str] | None = None) -> dict[str, dict[str, Any]]:
    """name -> JSON Schema of each field: ``type`` (with ``"null"`` where None is allowed),
    ``minimum``/``maximum`` (``exclusiveMinimum``/``exclusiveMaximum``), ``enum``, ``default``,
    ``description``."""
    properties = model.model_json_schema()["properties"]
    out: dict[str, dict[str, Any]] = {}
    for name, raw in properties.items():
        if only is not None and name not in only:
            continue
        schema = {k: v for k, v in raw.items() if k != "title"}
        options = schema.pop("anyOf", None)
        if options:  # X | None -> X's schema with "null" added to its type
            real = [o for o in options if o.get("type") != "null"]
            merged = dict(real[0]) if len(real) == 1 else {"anyOf": real}
            if len(real) < len(options) and "type" in merged:
                merged["type"] = [merged["type"], "null"]
            schema = merged | schema
        out[name] = schema
    return out


def _object(properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False}


def method_schemas(kind: str, has_eager: bool, *, vision_transformer: bool = False) -> dict[str, dict[str, Any]]:
    """Per method a model of this ``kind`` can run: ``description``, ``gradients`` (needs eager
    weights), ``parameters`` (a JSON Schema object: the method's own, the scores', the
    rendering's), ``outputs`` (response fields) and ``scores`` (the faithfulness scores it can
    return). ``kind``: ``image`` / ``text`` or the task name; ``has_eager``: whether the model
    has eager (gradient-capable) weights; without them only gradient-free methods are listed.
    ``vision_transformer``: a ViT-style image model (attention methods, token-grid Grad-CAM)."""
    from explain.methods import method_classes  # the registry imports this module
    from explain.render import RenderParams

    text = kind.startswith("text")
    image_only = IMAGE_ONLY_SCORE_PARAMS
    score_fields = field_schemas(
        ScoreParams,
        frozenset(ScoreParams.model_fields) - (image_only if text else TEXT_ONLY_SCORE_PARAMS),
    )
    render_fields = field_schemas(RenderParams, frozenset({"render_png"}) if text else None)
    scores = [n for n in SCORE_NAMES if n not in (IMAGE_ONLY_SCORES if text else TEXT_ONLY_SCORES)]
    out: dict[str, dict[str, Any]] = {}
    for name, cls in method_classes(
        "text-classification" if text else "image-classification", vision_transformer, has_eager
    ):
        own = field_schemas(cls.Params)
        if name in ("noise_tunnel", "smoothgrad"):  # the tunnel's parameters and its base method's
            from explain.methods import NOISE_TUNNEL_BASES
            from explain.methods.saliency import SaliencyParams

            own |= field_schemas(SaliencyParams)
            if name == "noise_tunnel":
                own["base_method"] = {
                    "type": "string",
                    "enum": list(NOISE_TUNNEL_BASES),
                    "default": "saliency",
                    "description": "the gradient method averaged over noisy copies (its own parameters apply too)",
                }
        outputs = ["logits", "probabilities", "predicted", "target", "attributions", *cls.outputs(text)]
        out[name] = {
            "description": _first_line(cls),
            "gradients": cls.gradients,
            "parameters": _object(own | score_fields | render_fields),
            "outputs": outputs,
            "scores": scores,
        }
    return out


def _first_line(cls: type) -> str:
    """A method's one-line description: its class docstring's first paragraph, else its module's."""
    import sys

    doc = cls.__dict__.get("__doc__") or sys.modules[cls.__module__].__doc__ or cls.__name__
    return " ".join(doc.strip().split("\n\n")[0].split())
