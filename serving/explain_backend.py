"""The server's explain engine, built on the ``explain`` library (docs/explain.md).

:class:`CaptumEngine` does an explanation's work in an explain thread of
:class:`serving.explain_service.ExplainService` (which holds admission, the cap, the deadline
and cancellation): it prepares the inputs with the model's own I/O layer
(:class:`serving.model.ModelIO`), answers from a response cache
(``lumenserve_explain_cache_total{result}``), explains with the model's eager twin (built and
checked against the served runtime once, :class:`TwinCache`) and converts the result to
response tensors (docs/explain.md lists them); a ``methods`` request (compare) answers every
method's tensors under ``<method>/`` names, sharing the prediction. :func:`method_listing`
lists the methods a model can run, from the explain library's ``method_schemas``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np

from explain.engine import BundleExplainer, ExplainResult
from explain.image_model import VIT_MODEL_TYPES
from explain.methods import DEFAULT_METHOD, RUNTIME_DEFAULT_METHOD
from explain.params import SCORE_NAMES, method_schemas
from lumenserve.bundle import Bundle, TransformersArchitecture
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

    def built(self, model: TwinSource) -> BundleExplainer | None:
        """The twin of ``model`` if it was built already (never builds)."""
        with self._lock:
            held = self._twins.get((model.name, model.version))
        return held[1] if held is not None and held[0] == id(model) else None


class CaptumEngine:
    """Explanations with the explain library on each model's eager twin, with a response cache."""

    def __init__(self, metrics: ServingMetrics | None = None) -> None:
        self.metrics = metrics
        self.cache = ExplainCache()
        self.twins = TwinCache()

    def warm(self, model: ServedModel) -> None:
        self.twins.get(model)

    def methods(self, model: ServedModel) -> dict[str, Any]:
        explain = model.config.explain  # the model's config.yaml: explanations on/off, methods allowed
        if not explain.enabled:
            return method_listing(model) | {
                "default_method": None,
                "methods": [],
                "reason": "explanations are turned off for this model (config.yaml explain.enabled)",
            }
        return method_listing(model, self.twins.built(model), allowed=explain.methods)

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
        asked = {o.name.rpartition("/")[2] for o in request.outputs or ()}
        if request.outputs and "render_png" not in params and not asked & set(PNG_OUTPUTS):
            params = {**params, "render_png": False}  # no PNG asked for: none is drawn

        def images() -> list[np.ndarray] | None:
            return _originals(model, request)  # decoded only if an overlay is drawn

        if parsed.methods is None:
            result = explainer.explain(feed, method=parsed.method, targets=targets, params=params, images=images)
            outputs = response_tensors(result, feed, png_base64=parsed.png_base64)
            parameters = {"method": result.method, "explain_parameters": json.dumps(result.params, sort_keys=True)}
        else:
            results = explainer.explain_methods(
                feed, targets=targets, params={**params, "methods": parsed.methods}, images=images
            )
            outputs = compare_tensors(results, feed, png_base64=parsed.png_base64)
            parameters = {
                "methods": ",".join(r.method for r in results),
                "explain_parameters": json.dumps({r.method: r.params for r in results}, sort_keys=True),
            }
        outputs = select_outputs(outputs, request)
        parameters |= {"png_encoding": "base64" if parsed.png_base64 else "raw", "explain_cache": "miss"}
        return InferenceResponse(model.name, model.version, request.id, outputs, parameters)


def check_model_config(model: ServedModel, parsed: ParsedRequest, feed: dict[str, np.ndarray], default: str) -> None:
    """The model's config.yaml ``explain`` section: on/off, the methods allowed, the limits."""
    config = model.config.explain
    if not config.enabled:
        raise Unimplemented(f"explanations are turned off for model {model.name!r} (config.yaml explain.enabled)")
    names = (parsed.methods if parsed.methods is not None else parsed.method or default).split(",")
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
def method_listing(
    model: TwinSource, twin: BundleExplainer | None = None, allowed: list[str] | None = None
) -> dict[str, Any]:
    """The discovery answer: per method this model can run, the explain library's schema
    (``explain.params.method_schemas``: description, gradients, parameters as JSON Schema,
    outputs, scores), with ``name`` added; an empty list with a ``reason`` when it can run none.
    ``twin``: the model's eager twin when already built (its check's refusal is the reason);
    ``allowed``: the methods the model's config.yaml enables (None: all). Without eager weights
    (an imported ONNX or TorchScript model) the gradient-free methods run on the served runtime."""
    manifest = model.bundle.manifest
    task, arch = manifest.task, manifest.architecture
    answer: dict[str, Any] = {
        "name": model.name,
        "version": model.version,
        "task": task,
        "default_method": None,
        "methods": [],
        "reason": "",
    }
    if task == "tensor":
        return answer | {"reason": "tensor models have no explanations: explain needs a classification task"}
    if arch is None:  # perturbation methods on the served runtime
        schemas = method_schemas(task, False)
        methods = [{"name": n, **schema} for n, schema in schemas.items() if allowed is None or n in allowed]
        return answer | {"default_method": RUNTIME_DEFAULT_METHOD[task], "methods": methods}
    if twin is not None and twin.refusal:
        return answer | {"reason": twin.refusal}
    if twin is not None:
        schemas = twin.method_schemas()
    else:  # from the manifest alone (the twin is built on the first explanation)
        vit = (
            isinstance(arch, TransformersArchitecture)
            and arch.head == "image-classification"
            and arch.model_type in VIT_MODEL_TYPES
        )
        schemas = method_schemas(task, True, vision_transformer=vit)
    methods = [{"name": name, **schema} for name, schema in schemas.items() if allowed is None or name in allowed]
    return answer | {"default_method": DEFAULT_METHOD[task], "methods": methods}


def check_parameter_max(parameter_max: dict[str, float]) -> None:
    """Refuse (RuntimeError: the server does not start) a server maximum below a parameter's default
    or one naming no parameter."""
    problems = []
    for name, cap in parameter_max.items():
        found = False
        for task in ("image-classification", "text-classification"):
            for vit in (False, True):
                for method, schema in method_schemas(task, True, vision_transformer=vit).items():
                    field = schema["parameters"]["properties"].get(name)
                    if field is None:
                        continue
                    found = True
                    default = field.get("default")
                    if isinstance(default, int | float) and not isinstance(default, bool) and default > cap:
                        problems.append(f"{name}={cap:g} is below {method}'s default {default}")
        if not found:
            problems.append(f"{name!r} is no explain parameter")
    if problems:
        raise RuntimeError("explain_parameter_max: " + "; ".join(sorted(set(problems))))


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
    """sha256 of (model, version, prepared inputs, raw images, method(s), parameters, targets, outputs)."""
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
    spec = [parsed.method, parsed.methods, parsed.params, targets, parsed.png_base64, wanted]
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
    """One method's answer: the prediction, then the method's tensors."""
    return prediction_tensors(result, feed) + method_tensors(result, feed, png_base64=png_base64)


def compare_tensors(results: list[ExplainResult], feed: dict[str, np.ndarray], *, png_base64: bool) -> list[Tensor]:
    """Several methods' answer: the shared prediction once, then each method's tensors named
    ``<method>/<output>`` (``grad_cam/overlay_png``, ``grad_cam/deletion_auc``), in the order asked."""
    out = prediction_tensors(results[0], feed)
    for result in results:
        for tensor in method_tensors(result, feed, png_base64=png_base64):
            out.append(Tensor(f"{result.method}/{tensor.name}", tensor.datatype, tensor.data, tensor.parameters))
    return out


def prediction_tensors(result: ExplainResult, feed: dict[str, np.ndarray]) -> list[Tensor]:
    """What every method of a request shares: the prediction, the class explained, the tokens."""
    items = result.items
    out = [
        Tensor("logits", "FP32", np.stack([i.logits for i in items]).astype(np.float32)),  # (batch, classes)
        Tensor("probabilities", "FP32", np.stack([i.probabilities for i in items]).astype(np.float32)),
        Tensor("predicted", "INT64", np.array([i.predicted for i in items], dtype=np.int64)),  # (batch,)
        Tensor("target", "INT64", np.array([i.target for i in items], dtype=np.int64)),  # (batch,)
    ]
    if "input_ids" in feed:
        seq = feed["input_ids"].shape[1]
        tokens = np.full((len(items), seq), b"", dtype=object)  # (batch, seq)
        for row, item in enumerate(items):
            tokens[row, : len(item.tokens or [])] = [t.encode() for t in item.tokens or []]
        out.append(Tensor("tokens", "BYTES", tokens))
    return out


def method_tensors(result: ExplainResult, feed: dict[str, np.ndarray], *, png_base64: bool) -> list[Tensor]:
    """One method's own outputs: attributions, pictures, scores (named as the library names them)."""
    items = result.items
    out = []
    if "input_ids" in feed:
        seq = feed["input_ids"].shape[1]
        attributions = np.zeros((len(items), seq), dtype=np.float32)  # (batch, seq), 0 at padding
        for row, item in enumerate(items):
            attributions[row, : len(item.attributions)] = item.attributions
        out.append(Tensor("attributions", "FP32", attributions))
        out.append(_bytes_tensor("token_html", [(i.token_html or "").encode() for i in items]))
    else:
        out.append(Tensor("attributions", "FP32", np.stack([i.attributions for i in items]).astype(np.float32)))
    for name in PNG_OUTPUTS:
        if name in items[0].pngs:
            out.append(_bytes_tensor(name, [i.pngs[name] for i in items], png=True, base64_png=png_base64))
    for name in SCORE_NAMES:  # deletion_auc, insertion_auc, ..., each when computed
        if name in items[0].scores:
            out.append(Tensor(name, "FP32", np.array([i.scores[name] for i in items], dtype=np.float32)))  # (batch,)
    if items[0].convergence_delta is not None:
        delta = np.array([i.convergence_delta for i in items], dtype=np.float32)  # (batch,)
        out.append(Tensor("convergence_delta", "FP32", delta))
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
