"""The work behind the TorchServe handler, on lumenserve's own parts.

One TorchServe batch (a list of request rows) becomes ONE runtime call: every row is
decoded into v2 tensors, checked and preprocessed by :class:`serving.model.ModelIO` (the same
I/O layer as ``lumenserve serve``), the per-row feeds are joined by the batcher's own
:func:`serving.batching.stack_rows` (texts padded to the longest row), and the answer is split
back into one JSON object per row (top-k by :func:`serving.codecs.classification.top_k`). A bad row
gets its own error status; the other rows of the batch are still answered.

Explanations go through the bundle's eager twin from the server's own
:class:`serving.explain_backend.TwinCache` (built on first use, after its twin check against
the served runtime); rows asking for the same method and parameters are explained in one
call, each with its own target.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lumenserve.bundle import Bundle, BundleError, load_bundle
from serving.batching import stack_rows
from serving.codecs.classification import softmax, top_k
from serving.codecs.tensors import bytes_array, decode_list
from serving.errors import InvalidInput, classify, log_internal
from serving.served import load_parts
from serving.settings import RuntimeName, load_settings
from serving.torchserve.config import BUNDLE_DIR_IN_MAR, HANDLER_CONFIG
from serving.torchserve.payload import ItemRequest, parse_row
from serving.types import Feed, Tensor

log = logging.getLogger("lumenserve.torchserve")

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Answer:
    """One row's reply: HTTP status and the JSON body TorchServe sends back."""

    status: int
    body: dict[str, Any]


def find_bundle(model_dir: Path) -> Path:
    """The single ``lumenserve_bundle/NAME/VERSION`` folder inside an extracted archive."""
    found = sorted(p.parent for p in (model_dir / BUNDLE_DIR_IN_MAR).glob("*/*/manifest.json"))
    if len(found) != 1:
        raise BundleError(
            f"{model_dir}: expected one bundle under {BUNDLE_DIR_IN_MAR}/NAME/VERSION, found {len(found)}"
        )
    if model_dir.resolve() not in found[0].resolve().parents:
        raise BundleError(f"{model_dir}: the bundle {found[0]} leaves the extracted archive (symlink)")
    return found[0]


def read_handler_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / HANDLER_CONFIG
    return json.loads(path.read_text()) if path.is_file() else {}


def _error(exc: BaseException) -> Answer:
    """One row's error through the one error table (internal details logged here, once)."""
    classified = classify(exc)
    if classified.internal:
        log_internal(exc, "a TorchServe row")
    return Answer(classified.http_status, {"error": classified.message})


class TorchServeModel:
    """A bundle served through TorchServe: predictions and explanations for batches of rows."""

    def __init__(self, bundle: Bundle, *, runtime: RuntimeName = "onnx", device: str = "cpu") -> None:
        settings = load_settings(runtime=runtime, device=device)  # LUMENSERVE_* limits apply here too
        self.bundle = bundle
        self.io, self.runtime = load_parts(bundle, settings)
        self.labels = self.io.labels
        self.task = bundle.manifest.task
        self.name = bundle.name
        self.version = str(bundle.version)
        self._twins: Any = None

    @classmethod
    def from_model_dir(cls, model_dir: Path, *, device: str = "cpu") -> TorchServeModel:
        """Load (and checksum-verify) the bundle shipped inside an extracted ``.mar``."""
        config = read_handler_config(model_dir)
        return cls(load_bundle(find_bundle(model_dir)), runtime=config.get("runtime", "onnx"), device=device)

    # ---- rows -> feeds -------------------------------------------------------------------
    def _tensors(self, item: ItemRequest) -> list[Tensor]:
        """One request's input as batch-of-one v2 tensors for ``ModelIO.prepare``."""
        raw_input = self.io.raw_input or "image"  # the handler serves classifiers
        if item.kind == "encoded":
            return [Tensor(raw_input, "BYTES", bytes_array([item.value], [1]))]
        if item.kind == "text":
            return [Tensor(raw_input, "BYTES", bytes_array([item.value.encode("utf-8")], [1]))]
        tensors = []
        for raw in item.value:
            name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
            if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
                raise InvalidInput("each tensor needs a string 'name', a string 'datatype' and a list 'shape'")
            spec = self.io.input_specs.get(name)
            array = decode_list(datatype, shape, raw.get("data"), name)
            if spec is not None and array.ndim == len(spec.shape) - 1:
                array = array[None]  # (1, ...): the item without its batch axis
            if array.ndim == 0 or array.shape[0] != 1:
                raise InvalidInput(f"input {name!r}: one item per request (shape {shape}); TorchServe batches requests")
            tensors.append(Tensor(name, datatype, array))
        names = {t.name for t in tensors}
        if "input_ids" in names and "attention_mask" not in names and "attention_mask" in self.io.input_specs:
            ids = next(t for t in tensors if t.name == "input_ids")
            tensors.append(Tensor("attention_mask", "INT64", np.ones(ids.data.shape, dtype=np.int64)))
        return tensors

    def _feed(self, item: ItemRequest) -> Feed:
        feed, rows = self.io.prepare(self._tensors(item))
        if rows != 1:
            raise InvalidInput(f"one item per request, got {rows}")
        return feed

    def _join(self, feeds: Sequence[Feed]) -> Feed:
        """Per-row feeds -> one batch, exactly as the batcher joins them (texts right-padded)."""
        return stack_rows(feeds, self.io.pad_values)[0]

    def _top(self, probabilities: np.ndarray, k: int | None) -> list[dict[str, Any]]:
        """(classes,) probabilities -> the k best as {label, index, probability}, best first."""
        order = top_k(probabilities[None], min(k or DEFAULT_TOP_K, len(self.labels)))[0]
        return [{"label": self.labels[i], "index": int(i), "probability": float(probabilities[i])} for i in order]

    # ---- the batch ---------------------------------------------------------------------
    def handle(self, rows: Sequence[dict[str, Any]], explain: Sequence[bool]) -> list[Answer]:
        """Answer every row of one TorchServe batch (``explain[i]``: row i came on /explanations)."""
        answers: list[Answer | None] = [None] * len(rows)
        items: dict[int, ItemRequest] = {}
        feeds: dict[int, Feed] = {}
        for i, row in enumerate(rows):
            try:
                items[i] = parse_row(row, task=self.task)
                feeds[i] = self._feed(items[i])
            except Exception as exc:
                answers[i] = _error(exc)
        if feeds:
            order = sorted(feeds)
            try:
                logits = self.runtime.predict(self._join([feeds[i] for i in order]))[self.io.scores or "logits"]
                probabilities = softmax(np.asarray(logits, dtype=np.float32))  # (batch, classes)
            except Exception as exc:
                for i in order:
                    answers[i] = _error(exc)
            else:
                predicted = {i: probabilities[row] for row, i in enumerate(order)}
                for i in order:
                    if not explain[i]:
                        answers[i] = Answer(200, self._prediction_body(predicted[i], items[i]))
                wanted = [i for i in order if explain[i]]
                for i, answer in self._explain(wanted, items, feeds, predicted).items():
                    answers[i] = answer
        return [a if a is not None else Answer(500, {"error": "no answer"}) for a in answers]

    def _prediction_body(self, probabilities: np.ndarray, item: ItemRequest) -> dict[str, Any]:
        return {
            "model": self.bundle.name,
            "version": str(self.bundle.version),
            "predictions": self._top(probabilities, item.top_k),
        }

    # ---- explanations --------------------------------------------------------------------
    def explainer(self) -> Any:
        """The bundle's eager twin, checked against the served runtime once (refuses on mismatch)."""
        if self._twins is None:
            from serving.explain_backend import TwinCache  # loads torch: only once a row asks to explain

            self._twins = TwinCache()
        return self._twins.get(self)

    def _explain(
        self,
        wanted: Sequence[int],
        items: dict[int, ItemRequest],
        feeds: dict[int, Feed],
        predicted: dict[int, np.ndarray],
    ) -> dict[int, Answer]:
        groups: dict[tuple[str | None, str], list[int]] = {}
        answers: dict[int, Answer] = {}
        for i in wanted:
            target = items[i].target
            if target is not None and not 0 <= target < len(self.labels):
                # checked per row so one bad target never fails its batch-mates
                answers[i] = _error(
                    InvalidInput(f"target {target} is not a class index in [0, {len(self.labels) - 1}]")
                )
                continue
            key = (items[i].method, json.dumps(items[i].params, sort_keys=True, default=str))
            groups.setdefault(key, []).append(i)
        for (method, _), members in groups.items():
            try:
                targets = [
                    items[i].target if items[i].target is not None else int(np.argmax(predicted[i])) for i in members
                ]
                result = self.explainer().explain(
                    self._join([feeds[i] for i in members]),
                    method=method,
                    targets=targets,
                    params=dict(items[members[0]].params),
                )
            except Exception as exc:
                for i in members:
                    answers[i] = _error(exc)
                continue
            for row, i in enumerate(members):
                answers[i] = Answer(200, self._explanation_body(result, result.items[row], items[i]))
        return answers

    def _explanation_body(self, result: Any, item: Any, request: ItemRequest) -> dict[str, Any]:
        pngs = {name: base64.b64encode(data).decode("ascii") for name, data in item.pngs.items()}
        main = "overlay_png" if "overlay_png" in pngs else "token_png"
        faithfulness: dict[str, float] = {}
        if item.deletion_auc is not None:
            faithfulness["deletion_auc"] = item.deletion_auc
        if item.infidelity is not None:
            faithfulness["infidelity"] = item.infidelity
        if item.convergence_delta is not None:
            faithfulness["convergence_delta"] = item.convergence_delta
        body: dict[str, Any] = {
            "model": self.bundle.name,
            "version": str(self.bundle.version),
            "method": result.method,
            "parameters": _jsonable(result.params),
            "target": item.target,
            "target_label": self.labels[item.target],
            "predictions": self._top(np.asarray(item.probabilities), request.top_k),
            "png": pngs.get(main),
            "pngs": pngs,
            "faithfulness": faithfulness,
        }
        if item.tokens is not None:
            body["tokens"] = item.tokens
            body["html"] = item.token_html
        if not pngs:  # render_png false: the raw attributions instead, as little-endian float32
            attributions = np.ascontiguousarray(item.attributions, dtype="<f4")
            body["attributions"] = {
                "dtype": "float32",
                "shape": list(attributions.shape),
                "base64": base64.b64encode(attributions.tobytes()).decode("ascii"),
            }
        return body


def _jsonable(value: Any) -> Any:
    """Parameters as JSON values (tuples -> lists, numpy scalars -> numbers, the rest as text)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
