"""The server's explain engine, built on the ``explain`` library (docs/explain.md).

:class:`CaptumEngine` does an explanation's work in an explain thread of
:class:`serving.explain_service.ExplainService` (which holds admission, the cap, the deadline
and cancellation): it prepares the inputs with the model's own I/O layer
(:class:`serving.model.ModelIO`), answers from a response cache
(``lumenserve_explain_cache_total{result}``), explains with the model's eager twin (built and
checked against the served runtime once, :class:`TwinCache`) and converts the result to
response tensors (docs/explain.md lists them). :func:`explain_schema` lists the methods a
model can run with their parameters as JSON Schema.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import threading
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from explain.engine import BundleExplainer, ExplainResult, ScoreParams
from explain.methods import DEFAULT_METHOD, NOISE_TUNNEL_BASES, REGISTRY, RUNTIME_DEFAULT_METHOD, supported_methods
from explain.methods.noise_tunnel import NoiseTunnel
from explain.params import MethodParams
from explain.render import RenderParams
from lumenserve.bundle import Bundle
from serving.errors import InvalidInput, Unimplemented
from serving.explain_service import ParsedRequest
from serving.metrics import ServingMetrics
from serving.model import classifier_output
from serving.runtimes import Runtime
from serving.served import ServedModel
from serving.types import InferenceRequest, InferenceResponse, Tensor

log = logging.getLogger("lumenserve.explain")

PNG_OUTPUTS = ("overlay_png", "token_png", "attention_grid_png", "rollout_png")
CACHE_ENTRIES = 128
CACHE_BYTES = 64 << 20


class ExplainCache:
    """A small LRU of finished responses, bounded by entry count and bytes."""

    def __init__(self, entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.entries = entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[InferenceResponse, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> InferenceResponse | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: str, response: InferenceResponse) -> None:
        size = sum(_nbytes(t.data) for t in response.outputs)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._data:
                return
            self._data[key] = (response, size)
            self._bytes += size
            while len(self._data) > self.entries or self._bytes > self.max_bytes:
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped


class TwinSource(Protocol):
    """What an eager twin is built from and checked against (a served model, the TorchServe model)."""

    name: str
    version: str
    bundle: Bundle
    runtime: Runtime


class TwinCache:
    """Each served model version's eager twin, built and checked once: the only place they are kept."""

    def __init__(self) -> None:
        self._twins: dict[tuple[str, str], tuple[int, BundleExplainer]] = {}
        self._lock = threading.Lock()

    def get(self, model: TwinSource) -> BundleExplainer:
        """The twin of ``model``, built and checked against its runtime on first use (blocking)."""
        key = (model.name, model.version)
        with self._lock:
            held = self._twins.get(key)
            if held is not None and held[0] == id(model):
                return held[1]
            scores = classifier_output(model.bundle.manifest.outputs)

            def forward(feed: dict[str, np.ndarray]) -> np.ndarray:
                return model.runtime.predict(feed)[scores]  # (batch, classes)

            # no eager weights (imported ONNX/TorchScript): explained on the served runtime itself
            runtime = forward if model.bundle.manifest.architecture is None else None
            explainer = BundleExplainer(model.bundle, runtime=runtime)
            check = explainer.twin_check(forward)
            log.info(
                "explain twin check for %s/%s: %s (max |diff| %.3g, tolerance %g)",
                model.name,
                model.version,
                "ok" if check.ok else "FAILED, explain refused",
                check.max_abs_diff,
                check.tolerance,
            )
            self._twins[key] = (id(model), explainer)  # a reloaded version replaces the old twin
            return explainer


class CaptumEngine:
    """Explanations with the explain library on each model's eager twin, with a response cache."""

    def __init__(self, metrics: ServingMetrics | None = None) -> None:
        self.metrics = metrics
        self.cache = ExplainCache()
        self.twins = TwinCache()

    def warm(self, model: ServedModel) -> None:
        self.twins.get(model)

    def explain(self, model: ServedModel, request: InferenceRequest, parsed: ParsedRequest) -> InferenceResponse:
        inputs = [t for t in request.inputs if t.name != "target"]
        targets = parsed.targets if parsed.targets is not None else _target_input(request)
        feed, _rows = model.io.prepare(inputs)
        check_model_config(model, parsed, feed, self.twins.get(model).default_method)
        key = cache_key(model, feed, parsed, targets, request)
        cached = self.cache.get(key)
        if self.metrics is not None:
            self.metrics.explain_cache.labels(model.name, "hit" if cached is not None else "miss").inc()
        if cached is not None:
            return InferenceResponse(
                model.name, model.version, request.id, cached.outputs, {**cached.parameters, "explain_cache": "hit"}
            )
        response = self._compute(model, request, feed, parsed, targets)
        self.cache.put(key, response)
        return response

    def _compute(
        self,
        model: ServedModel,
        request: InferenceRequest,
        feed: dict[str, np.ndarray],
        parsed: ParsedRequest,
        targets: list[int] | None,
    ) -> InferenceResponse:
        explainer = self.twins.get(model)
        params = parsed.params
        if request.outputs and "render_png" not in params and not {o.name for o in request.outputs} & set(PNG_OUTPUTS):
            params = {**params, "render_png": False}  # no PNG asked for: none is drawn
        result = explainer.explain(
            feed,
            method=parsed.method,
            targets=targets,
            params=params,
            images=lambda: _originals(model, request),  # decoded only if an overlay is drawn
        )
        outputs = response_tensors(result, feed, png_base64=parsed.png_base64)
        outputs = select_outputs(outputs, request)
        parameters = {
            "method": result.method,
            "explain_parameters": json.dumps(result.params, sort_keys=True),
            "png_encoding": "base64" if parsed.png_base64 else "raw",
            "explain_cache": "miss",
        }
        return InferenceResponse(model.name, model.version, request.id, outputs, parameters)


def check_model_config(model: ServedModel, parsed: ParsedRequest, feed: dict[str, np.ndarray], default: str) -> None:
    """The model's config.yaml ``explain`` section: on/off, the methods allowed, the limits."""
    config = model.config.explain
    if not config.enabled:
        raise Unimplemented(f"explanations are turned off for model {model.name!r} (config.yaml explain.enabled)")
    listed = parsed.params.get("methods")
    names = str(listed if listed is not None else parsed.method or default).split(",")
    if config.methods is not None:
        refused = [n.strip() for n in names if n.strip() not in config.methods]
        if refused:
            raise InvalidInput(
                f"method {', '.join(refused)} is not enabled for model {model.name!r} "
                f"(config.yaml explain.methods: {', '.join(config.methods)})"
            )
    rows = len(next(iter(feed.values())))
    if config.max_items is not None and rows > config.max_items:
        raise InvalidInput(f"{rows} items; model {model.name!r} explains at most {config.max_items} per request")
    samples = parsed.params.get("n_samples")
    if config.max_samples is not None and isinstance(samples, int) and samples > config.max_samples:
        raise InvalidInput(f"n_samples {samples} is above model {model.name!r}'s limit of {config.max_samples}")


# ---- the methods a model offers, as JSON Schema --------------------------------------------
def explain_schema(model: ServedModel) -> dict[str, Any]:
    """Per method this model can run, its parameters as JSON Schema (bounds from explain's
    pydantic parameter models: the one source the page builds its form from)."""
    task = model.bundle.manifest.task
    if task == "tensor":
        raise Unimplemented(f"model {model.name!r} is a tensor model: explanations need a classifier")
    gradients = model.bundle.manifest.architecture is not None
    allowed = model.config.explain.methods
    methods = []
    for name in supported_methods(task, gradients=gradients):
        if allowed is not None and name not in allowed:
            continue
        cls = REGISTRY[name][task]
        parameters = _object_schema(cls.Params)
        if cls is NoiseTunnel:
            parameters["properties"]["base_method"] = {
                "type": "string",
                "enum": list(NOISE_TUNNEL_BASES),
                "default": "saliency",
                "description": "the method whose attributions are averaged over noisy copies",
            }
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0]
        methods.append({"name": name, "description": " ".join(doc.split()), "parameters": parameters})
    return {
        "name": model.name,
        "version": model.version,
        "task": task,
        "default_method": (DEFAULT_METHOD if gradients else RUNTIME_DEFAULT_METHOD)[task],
        "methods": methods,
        "common": {"render": _object_schema(RenderParams), "scores": _object_schema(ScoreParams)},
    }


def _object_schema(params: type[MethodParams]) -> dict[str, Any]:
    schema = params.model_json_schema()
    return {
        "type": "object",
        "properties": schema.get("properties", {}),
        "additionalProperties": False,
        **({"$defs": schema["$defs"]} if "$defs" in schema else {}),
    }


# ---- request inputs -----------------------------------------------------------------------
def _target_input(request: InferenceRequest) -> list[int] | None:
    for tensor in request.inputs:
        if tensor.name == "target":
            if tensor.data.dtype.kind not in "iu":
                raise InvalidInput("input 'target' must be an integer tensor [batch]")
            return [int(t) for t in tensor.data.reshape(-1)]
    return None


def _originals(model: ServedModel, request: InferenceRequest) -> list[np.ndarray] | None:
    """For raw image requests: each image's center-crop region at the photo's own resolution."""
    codec = model.io.image_codec
    if codec is None:
        return None
    raw = next((t for t in request.inputs if model.io.is_raw(t)), None)
    if raw is None:
        return None
    from explain.originals import crop_region

    return [crop_region(bytes(item), codec.pre) for item in raw.data.reshape(-1)]


def cache_key(
    model: ServedModel,
    feed: dict[str, np.ndarray],
    parsed: ParsedRequest,
    targets: list[int] | None,
    request: InferenceRequest,
) -> str:
    """sha256 of (model, version, prepared inputs, raw images, method, parameters, targets, outputs)."""
    digest = hashlib.sha256()
    digest.update(f"{model.name}\0{model.version}\0".encode())
    for name in sorted(feed):
        array = np.ascontiguousarray(feed[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}\0".encode())
        digest.update(array.data)
    if model.io.image_codec is not None:  # overlays are drawn on the original photos: they count too
        for tensor in request.inputs:
            if model.io.is_raw(tensor):
                for item in tensor.data.reshape(-1):
                    digest.update(len(item).to_bytes(8, "little") + bytes(item))
    wanted = [o.name for o in request.outputs] if request.outputs else None
    spec = [parsed.method, parsed.params, targets, parsed.png_base64, wanted]
    digest.update(json.dumps(spec, sort_keys=True, default=str).encode())
    return digest.hexdigest()


# ---- response -----------------------------------------------------------------------------
def _bytes_tensor(name: str, items: list[bytes], png: bool = False, base64_png: bool = True) -> Tensor:
    params: dict[str, Any] = {}
    if png:
        params = {"content_type": "image/png", "content_encoding": "base64" if base64_png else "identity"}
        items = [base64.b64encode(i) if base64_png else i for i in items]
    data = np.empty(len(items), dtype=object)  # (batch,)
    data[:] = items
    return Tensor(name, "BYTES", data, params)


def response_tensors(result: ExplainResult, feed: dict[str, np.ndarray], *, png_base64: bool) -> list[Tensor]:
    items = result.items
    out = [
        Tensor("logits", "FP32", np.stack([i.logits for i in items]).astype(np.float32)),  # (batch, classes)
        Tensor("probabilities", "FP32", np.stack([i.probabilities for i in items]).astype(np.float32)),
        Tensor("predicted", "INT64", np.array([i.predicted for i in items], dtype=np.int64)),  # (batch,)
        Tensor("target", "INT64", np.array([i.target for i in items], dtype=np.int64)),  # (batch,)
    ]
    if "input_ids" in feed:
        seq = feed["input_ids"].shape[1]
        attributions = np.zeros((len(items), seq), dtype=np.float32)  # (batch, seq), 0 at padding
        tokens = np.full((len(items), seq), b"", dtype=object)  # (batch, seq)
        for row, item in enumerate(items):
            n = len(item.attributions)
            attributions[row, :n] = item.attributions
            tokens[row, :n] = [t.encode() for t in item.tokens or []]
        out.append(Tensor("attributions", "FP32", attributions))
        out.append(Tensor("tokens", "BYTES", tokens))
        out.append(_bytes_tensor("token_html", [(i.token_html or "").encode() for i in items]))
    else:
        out.append(Tensor("attributions", "FP32", np.stack([i.attributions for i in items]).astype(np.float32)))
    for name in PNG_OUTPUTS:
        if name in items[0].pngs:
            out.append(_bytes_tensor(name, [i.pngs[name] for i in items], png=True, base64_png=png_base64))
    if items[0].deletion_auc is not None:  # deletion_steps 0: no curve asked for
        out.append(Tensor("deletion_auc", "FP32", np.array([i.deletion_auc for i in items], dtype=np.float32)))
    if items[0].convergence_delta is not None:
        delta = np.array([i.convergence_delta for i in items], dtype=np.float32)  # (batch,)
        out.append(Tensor("convergence_delta", "FP32", delta))
    if items[0].infidelity is not None:
        out.append(Tensor("infidelity", "FP32", np.array([i.infidelity for i in items], dtype=np.float32)))
    return out


def select_outputs(outputs: list[Tensor], request: InferenceRequest) -> list[Tensor]:
    """Only the requested outputs (all when none are named), with the client's output parameters."""
    if not request.outputs:
        return outputs
    by_name = {t.name: t for t in outputs}
    chosen = []
    for wanted in request.outputs:
        tensor = by_name.get(wanted.name)
        if tensor is None:
            raise InvalidInput(f"explain has no output {wanted.name!r} here (outputs: {', '.join(by_name)})")
        chosen.append(Tensor(tensor.name, tensor.datatype, tensor.data, {**tensor.parameters, **wanted.parameters}))
    return chosen


def _nbytes(array: np.ndarray) -> int:
    if array.dtype == object:
        return sum(len(x) for x in array.reshape(-1))
    return int(array.nbytes)
