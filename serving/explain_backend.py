"""The explain backend of the data plane, built on the ``explain`` library.

``DataPlane.explain`` looks the model up, enforces the explain concurrency cap and queue
(``explain_max_concurrency`` / ``explain_max_queue``) and records the per-method latency
histogram; this backend does the rest:

- parses the request parameters (``method``, ``targets``, the method's parameters);
- prepares the inputs with the model's own codecs (raw BYTES images/texts or tensors);
- answers from a cache keyed by (model, version, input hash, method, parameters, targets),
  counting ``lumenserve_explain_cache_total{result="hit"|"miss"}``;
- builds the model's eager twin in the background once the server has loaded it (or on first
  use, for models loaded later through the repository API) and checks it against the served runtime
  (``BundleExplainer.twin_check``); a model that fails is refused with UNIMPLEMENTED;
- runs the explanation in its own thread pool whose threads run at a lower CPU priority
  (nice +10), so prediction threads win the cores while an explanation runs;
- converts the result to response tensors (docs/explain.md lists them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from explain.engine import BundleExplainer, ExplainResult
from explain.errors import ExplainParameterError, UnsupportedMethodError
from serving.errors import InvalidInput, Unimplemented
from serving.metrics import ServingMetrics
from serving.model import LoadedModel
from serving.settings import ServingSettings
from serving.types import InferenceRequest, InferenceResponse, Tensor

log = logging.getLogger("lumenserve.explain")

PROTOCOL_PARAMETERS = frozenset(
    {"timeout", "binary_data_output", "priority", "sequence_id", "sequence_start", "sequence_end", "headers"}
)
"""Request parameters that belong to the protocol, not to the explanation."""
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


@dataclass(frozen=True)
class ParsedRequest:
    method: str | None
    targets: list[int] | None
    params: dict[str, Any]
    png_base64: bool


def _lower_priority(nice: int) -> None:
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):  # pragma: no cover - not Linux, or not permitted
        log.debug("could not lower the explain thread's priority")


class ExplainBackend:
    def __init__(self, settings: ServingSettings, metrics: ServingMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(
            max_workers=settings.explain_max_concurrency,
            thread_name_prefix="explain",
            initializer=_lower_priority,
            initargs=(settings.explain_nice,),
        )
        self.cache = ExplainCache()
        self._explainers: dict[tuple[str, str, int], BundleExplainer] = {}
        self._build_lock = threading.Lock()

    # ---- the data plane's call ----------------------------------------------------------
    async def explain(self, model: LoadedModel, request: InferenceRequest) -> InferenceResponse:
        parsed = parse_request(request)
        inputs = [t for t in request.inputs if t.name != "target"]
        targets = parsed.targets if parsed.targets is not None else _target_input(request)
        loop = asyncio.get_running_loop()
        feed, _rows = await loop.run_in_executor(self.pool, model.prepare, inputs)
        key = cache_key(model, feed, parsed, targets, request)
        cached = self.cache.get(key)
        self._count(model, "hit" if cached is not None else "miss")
        if cached is not None:
            return InferenceResponse(
                model.name, model.version, request.id, cached.outputs, {**cached.parameters, "explain_cache": "hit"}
            )
        response = await loop.run_in_executor(self.pool, self._compute, model, request, feed, parsed, targets)
        self.cache.put(key, response)
        return response

    def _count(self, model: LoadedModel, result: str) -> None:
        if self.metrics is not None:
            self.metrics.explain_cache.labels(model.name, result).inc()

    # ---- work in the explain threads ----------------------------------------------------
    def _compute(
        self,
        model: LoadedModel,
        request: InferenceRequest,
        feed: dict[str, np.ndarray],
        parsed: ParsedRequest,
        targets: list[int] | None,
    ) -> InferenceResponse:
        explainer = self.explainer_for(model)
        params = parsed.params
        if request.outputs and "render_png" not in params and not {o.name for o in request.outputs} & set(PNG_OUTPUTS):
            params = {**params, "render_png": False}  # no PNG asked for: none is drawn
        try:
            result = explainer.explain(
                feed,
                method=parsed.method,
                targets=targets,
                params=params,
                images=lambda: _originals(model, request),  # decoded only if an overlay is drawn
            )
        except ExplainParameterError as exc:
            raise InvalidInput(str(exc)) from None
        except UnsupportedMethodError as exc:
            raise Unimplemented(str(exc)) from None
        outputs = response_tensors(result, feed, png_base64=parsed.png_base64)
        outputs = select_outputs(outputs, request)
        parameters = {
            "method": result.method,
            "explain_parameters": json.dumps(result.params, sort_keys=True),
            "png_encoding": "base64" if parsed.png_base64 else "raw",
            "explain_cache": "miss",
        }
        return InferenceResponse(model.name, model.version, request.id, outputs, parameters)

    def prepare(self, model: LoadedModel) -> None:
        """Build the eager twin and run its check in the background right after the model
        loads, so the check happens at startup and the first explanation does not pay for it."""

        def report(future: Future[BundleExplainer]) -> None:
            if future.exception() is not None:
                log.error("explain twin for %s/%s failed: %r", model.name, model.version, future.exception())

        self.pool.submit(self.explainer_for, model).add_done_callback(report)

    def explainer_for(self, model: LoadedModel) -> BundleExplainer:
        """The model's eager twin, built and checked against the served runtime on first use."""
        key = (model.name, model.version, id(model))
        with self._build_lock:
            explainer = self._explainers.get(key)
            if explainer is None:
                explainer = BundleExplainer(model.bundle)
                check = explainer.twin_check(lambda feed: model.runtime.predict(feed)["logits"])
                log.info(
                    "explain twin check for %s/%s: %s (max |diff| %.3g, tolerance %g)",
                    model.name,
                    model.version,
                    "ok" if check.ok else "FAILED, explain refused",
                    check.max_abs_diff,
                    check.tolerance,
                )
                self._explainers = {k: v for k, v in self._explainers.items() if k[:2] != key[:2]}
                self._explainers[key] = explainer
            return explainer


# ---- request parsing ----------------------------------------------------------------------
def parse_request(request: InferenceRequest) -> ParsedRequest:
    params = {k: v for k, v in request.parameters.items() if k not in PROTOCOL_PARAMETERS}
    method = params.pop("method", None)
    if method is not None and not isinstance(method, str):
        raise InvalidInput(f"parameter 'method' must be a string, got {method!r}")
    targets = _parse_targets(params.pop("targets", None))
    encoding = params.pop("png_encoding", "base64")
    if encoding not in ("base64", "raw"):
        raise InvalidInput(f"parameter 'png_encoding' must be 'base64' or 'raw', got {encoding!r}")
    return ParsedRequest(method or None, targets, params, png_base64=encoding == "base64")


def _parse_targets(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InvalidInput(f"parameter 'targets' must be a JSON list of class indices, got {value!r}") from None
    if isinstance(value, int):  # one target (bools are refused below)
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise InvalidInput(f"parameter 'targets' must be a list of class indices, got {value!r}")
    return value


def _target_input(request: InferenceRequest) -> list[int] | None:
    for tensor in request.inputs:
        if tensor.name == "target":
            if tensor.data.dtype.kind not in "iu":
                raise InvalidInput("input 'target' must be an integer tensor [batch]")
            return [int(t) for t in tensor.data.reshape(-1)]
    return None


def _originals(model: LoadedModel, request: InferenceRequest) -> list[np.ndarray] | None:
    """For raw image requests: each image's center-crop region at the photo's own resolution."""
    if model.image_codec is None:
        return None
    raw = next((t for t in request.inputs if t.name == model.raw_input), None)
    if raw is None:
        return None
    from explain.originals import crop_region

    return [crop_region(bytes(item), model.image_codec.pre) for item in raw.data.reshape(-1)]


def cache_key(
    model: LoadedModel,
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
    if model.image_codec is not None:  # overlays are drawn on the original photos: they count too
        for tensor in request.inputs:
            if tensor.name == model.raw_input:
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


def create_explain_backend(settings: ServingSettings, metrics: ServingMetrics) -> ExplainBackend:
    return ExplainBackend(settings, metrics)
