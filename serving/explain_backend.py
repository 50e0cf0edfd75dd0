"""Explain in the data plane: the same guarantees as predict, and the explain library's work.

:class:`ExplainService` (``DataPlane.explain`` calls its :meth:`~ExplainService.explain`) holds
the guarantees, whatever engine computes:

- **validation** of the request parameters (``method``, ``targets``, ``png_encoding``) once,
  before admission (:func:`parse_request`); the method's own parameters are checked by the
  explain library, and its errors are in the one error table;
- **admission** against explain's own queue: at most ``explain_max_concurrency`` running plus
  ``explain_max_queue`` waiting, beyond it UNAVAILABLE/503 (``reason="queue_full"``);
- **one concurrency cap**: the explain threads (``explain_max_concurrency`` of them, at a lower
  CPU priority, ``explain_nice``) are the only limit on explanations running at once;
- **a deadline** (the ``timeout`` parameter, the gRPC deadline, ``default_timeout``): an
  explanation still queued at its deadline leaves the queue; one already running is answered
  DEADLINE_EXCEEDED at once and its thread finishes in the background (``reason="deadline"``);
- **cancellation**: a caller that goes away (gRPC cancel, HTTP disconnect) takes its queued
  explanation out of the queue (``reason="cancelled"``);
- **its own metrics**: ``lumenserve_explain_queue_depth``, ``lumenserve_explain_inflight``,
  ``lumenserve_explain_rejected_total{reason}``, ``lumenserve_explain_duration_seconds{method}``.

:class:`CaptumEngine` (the default :class:`ExplainEngine`) does the work in an explain thread:
prepares the inputs with the model's own I/O layer (:class:`serving.model.ModelIO`), answers
from a response cache (``lumenserve_explain_cache_total{result}``), explains with the model's
eager twin (built and checked against the served runtime once, :class:`TwinCache`) and converts
the result to response tensors (docs/explain.md lists them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from explain.engine import BundleExplainer, ExplainResult, ScoreParams
from explain.methods import DEFAULT_METHOD, NOISE_TUNNEL_BASES, REGISTRY, supported_methods
from explain.methods.noise_tunnel import NoiseTunnel
from explain.params import MethodParams
from explain.render import RenderParams
from serving.errors import DeadlineExceeded, InvalidInput, Unavailable
from serving.metrics import ServingMetrics
from serving.served import ServedModel
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


class ExplainEngine(Protocol):
    """The blocking work of explanations; every call runs in an explain thread."""

    def explain(self, model: ServedModel, request: InferenceRequest, parsed: ParsedRequest) -> InferenceResponse:
        """One explanation. Raise :mod:`serving.errors` or explain library errors for clients."""
        ...

    def warm(self, model: ServedModel) -> None:
        """Build what the model's explanations need, so the first one does not pay for it."""
        ...


def _lower_priority(nice: int) -> None:
    if nice <= 0:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (OSError, AttributeError):  # pragma: no cover - not Linux, or not permitted
        log.debug("could not lower the explain thread's priority")


JobState = Literal["queued", "running", "done", "abandoned"]


@dataclass(slots=True, eq=False)
class _Job:
    state: JobState = "queued"


class ExplainService:
    """Explanations with admission, one cap, deadline, cancellation and their own metrics."""

    def __init__(self, settings: ServingSettings, metrics: ServingMetrics, engine: ExplainEngine) -> None:
        self.metrics = metrics
        self.engine = engine
        self.max_running = settings.explain_max_concurrency
        self.max_waiting = settings.explain_max_queue
        self.pool = ThreadPoolExecutor(
            max_workers=self.max_running,
            thread_name_prefix="explain",
            initializer=_lower_priority,
            initargs=(settings.explain_nice,),
        )
        self._lock = threading.Lock()
        self._pending = 0
        """Explanations in the explain threads' hands: queued or running (abandoned running ones too)."""

    async def explain(self, model: ServedModel, request: InferenceRequest, deadline: float) -> InferenceResponse:
        parsed = parse_request(request)
        self._admit(model)
        job = _Job()
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.pool, self._run, job, model, request, parsed)
        began = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):  # loop.time() is time.monotonic()
                response = await work  # cancelling it cancels a job not started yet
            assert response is not None  # None only for a job abandoned before it ran
        except TimeoutError:
            where = self._abandon(job)
            self.metrics.explain_rejected.labels(model.name, model.version, "deadline").inc()
            raise DeadlineExceeded(f"explain deadline passed while {where}") from None
        except asyncio.CancelledError:
            self._abandon(job)
            self.metrics.explain_rejected.labels(model.name, model.version, "cancelled").inc()
            raise
        method = str(response.parameters.get("method", "default"))
        self.metrics.explain_seconds.labels(model.name, model.version, method).observe(time.perf_counter() - began)
        return response

    def _admit(self, model: ServedModel) -> None:
        with self._lock:
            if self._pending >= self.max_running + self.max_waiting:
                self.metrics.explain_rejected.labels(model.name, model.version, "queue_full").inc()
                raise Unavailable(
                    f"explain queue full ({self.max_running} running, {self.max_waiting} waiting); retry later"
                )
            self._pending += 1
        self.metrics.explain_queue_depth.inc()

    def _abandon(self, job: _Job) -> str:
        """The caller left: a queued job leaves the queue; a running one finishes unread."""
        with self._lock:
            if job.state != "queued":
                return "running"
            job.state = "abandoned"
            self._pending -= 1
        self.metrics.explain_queue_depth.dec()
        return "queued"

    def _run(
        self, job: _Job, model: ServedModel, request: InferenceRequest, parsed: ParsedRequest
    ) -> InferenceResponse | None:
        """In an explain thread."""
        with self._lock:
            if job.state == "abandoned":
                return None
            job.state = "running"
        self.metrics.explain_queue_depth.dec()
        self.metrics.explain_inflight.inc()
        try:
            return self.engine.explain(model, request, parsed)
        finally:
            self.metrics.explain_inflight.dec()
            with self._lock:
                job.state = "done"
                self._pending -= 1

    def warm(self, model: ServedModel) -> None:
        """Run the engine's preparation for ``model`` in the background (an explain thread)."""

        def report(future: Future[None]) -> None:
            if future.exception() is not None:
                log.error("explain preparation for %s/%s failed: %r", model.name, model.version, future.exception())

        self.pool.submit(self.engine.warm, model).add_done_callback(report)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class TwinCache:
    """Each served model version's eager twin, built and checked once: the only place they are kept."""

    def __init__(self) -> None:
        self._twins: dict[tuple[str, str], tuple[int, BundleExplainer]] = {}
        self._lock = threading.Lock()

    def get(self, model: ServedModel) -> BundleExplainer:
        key = (model.name, model.version)
        with self._lock:
            held = self._twins.get(key)
            if held is not None and held[0] == id(model):
                return held[1]
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


# ---- the methods a model offers, as JSON Schema --------------------------------------------
def explain_schema(model: ServedModel) -> dict[str, Any]:
    """Per method this model can run, its parameters as JSON Schema (bounds from explain's
    pydantic parameter models: the one source the page builds its form from)."""
    task = model.bundle.manifest.task
    methods = []
    for name in supported_methods(task):
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
        "default_method": DEFAULT_METHOD[task],
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


def _originals(model: ServedModel, request: InferenceRequest) -> list[np.ndarray] | None:
    """For raw image requests: each image's center-crop region at the photo's own resolution."""
    codec = model.io.image_codec
    if codec is None:
        return None
    raw = next((t for t in request.inputs if t.name == model.io.raw_input), None)
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
            if tensor.name == model.io.raw_input:
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
