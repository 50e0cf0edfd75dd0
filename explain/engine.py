"""Explain a bundle's model: the eager twin, any registered method, rendering and scores.

``BundleExplainer(bundle)`` rebuilds the eager PyTorch model from the bundle (ONNX Runtime
has no gradients and TorchScript blocks hooks). ``twin_check(runtime)`` compares the twin's
logits with the served runtime's on probe inputs; if they differ by more than the
tolerance, every later ``explain`` is refused with :class:`UnsupportedMethodError` (we do
not explain a model other than the one that answers predictions).

``explain(inputs, method=..., targets=..., params=...)`` takes preprocessed inputs (image:
``input`` FP32 [B, C, H, W]; text: ``input_ids`` + ``attention_mask`` INT64 [B, S]) and
returns, per item: prediction, attributions, PNGs / HTML, faithfulness scores, and the
parameters actually used. ``explain_methods`` answers several methods on the same inputs
(a comma-separated ``method`` or a ``methods`` parameter), sharing the input checks, the
prediction pass and the decoding of the original images.

A vision transformer (a Hugging Face ViT-style image classifier, recognised by its config)
gets attention maps, rollouts and token-grid Grad-CAM; CNNs and text models are unchanged.

A bundle without eager weights (imported ONNX or TorchScript) is explained on the served
runtime itself (``BundleExplainer(bundle, runtime=...)``, :mod:`explain.runtime_model`):
only the methods that need no gradients (occlusion, feature ablation, Shapley value
sampling, KernelShap, Lime; token occlusion for text) are offered; the others are refused
with the list of those it can run. Its inputs are the model's own (any input name, NCHW or
NHWC); the methods see (batch, C, H, W).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from explain import faithfulness, render
from explain.errors import ExplainParameterError, UnsupportedMethodError
from explain.explanation import Explanation, TextInputs
from explain.image_model import as_image_classifier, find_vision_transformer
from explain.memory import DEFAULT_BUDGET_BYTES
from explain.methods import DEFAULT_METHOD, RUNTIME_DEFAULT_METHOD, ModelContext, build_explainer, supported_methods
from explain.methods.base import IMAGE, TEXT
from explain.params import IMAGE_ONLY_SCORE_PARAMS, MethodParams, ScoreParams, method_schemas, validate_params
from explain.runtime_model import RuntimeImageClassifier, RuntimeTextClassifier
from explain.text_model import TextClassifier
from lumenserve.bundle import Bundle, ImagePreprocessing, TextPreprocessing
from lumenserve.bundle.eager import build_eager_model, load_tokenizer
from lumenserve.bundle.text import tokenize

MAX_ITEMS = 64
"""Most items one explain request may carry."""
MAX_METHODS = 8
"""Most methods one request may compare."""
DEFAULT_TWIN_TOLERANCE = 1e-3
"""Largest |eager - runtime| logit difference the twin check accepts."""
TWIN_PROBE_TEXTS = ("a short probe sentence", "another, somewhat longer probe sentence for the twin check")

Runtime = Callable[[dict[str, np.ndarray]], np.ndarray]
"""The served model as a function: named input arrays -> logits (batch, classes)."""


@dataclass(frozen=True)
class TwinCheck:
    ok: bool
    max_abs_diff: float
    tolerance: float
    detail: str = ""


@dataclass(frozen=True)
class ItemExplanation:
    logits: np.ndarray  # (classes,)
    probabilities: np.ndarray  # (classes,)
    predicted: int
    target: int
    attributions: np.ndarray  # image (C or 1, H, W); text (seq,)
    deletion_auc: float | None = None  # None when deletion_steps is 0
    pngs: dict[str, bytes] = field(default_factory=dict)
    """``overlay_png`` for images; ``token_png`` (+ ``attention_grid_png``, ``rollout_png``) for text."""
    token_html: str | None = None
    tokens: list[str] | None = None
    convergence_delta: float | None = None
    infidelity: float | None = None
    insertion_auc: float | None = None
    road_morf: float | None = None
    road_lerf: float | None = None
    comprehensiveness: float | None = None
    sufficiency: float | None = None
    sensitivity_max: float | None = None

    @property
    def scores(self) -> dict[str, float]:
        """Every faithfulness score computed for this item, by name (``faithfulness.SCORE_NAMES``)."""
        values = {name: getattr(self, name) for name in faithfulness.SCORE_NAMES}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class ExplainResult:
    method: str
    params: dict[str, Any]
    items: list[ItemExplanation]


def parse_methods(method: str | Sequence[str] | None, default: str) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (distinct, at most ``MAX_METHODS``); None -> ``[default]``."""
    names = method.split(",") if isinstance(method, str) else list(method or [])
    names = [n.strip() for n in names if n.strip()] or [default]
    if len(set(names)) != len(names):
        raise ExplainParameterError(f"methods: each method once, got {','.join(names)}")
    if len(names) > MAX_METHODS:
        raise ExplainParameterError(f"methods: at most {MAX_METHODS} per request, got {len(names)}")
    return names


class BundleExplainer:
    def __init__(
        self,
        bundle: Bundle,
        *,
        memory_budget_bytes: int = DEFAULT_BUDGET_BYTES,
        eager_model: torch.nn.Module | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        """``eager_model``: the model to explain instead of the one rebuilt from the bundle (which
        still gives the labels, preprocessing and tokenizer), e.g. one already in memory.
        ``runtime``: the served model's forward (feed -> scores); a bundle without eager weights
        is explained through it with the gradient-free methods."""
        self.bundle = bundle
        manifest = bundle.manifest
        task = manifest.task
        if task == "tensor":
            raise UnsupportedMethodError(f"{bundle.root}: tensor models have no explanations yet")
        self.task = task
        self.labels = manifest.labels
        self.refusal: str | None = None
        self.tokenizer: Any = None
        pre = manifest.preprocessing
        arch = manifest.architecture
        self.image_pre = pre if isinstance(pre, ImagePreprocessing) else None
        self.text_pre = pre if isinstance(pre, TextPreprocessing) else None
        self.image_input = manifest.inputs[0].name
        """The image model's input name (its feed key; ``input`` for our own bundles)."""
        self.gradients = arch is not None or eager_model is not None
        """False: no eager weights; explained on ``runtime`` with the gradient-free methods."""
        if self.task == TEXT:
            self.tokenizer = load_tokenizer(bundle)
        model: torch.nn.Module
        if not self.gradients:
            if runtime is None:
                raise UnsupportedMethodError(
                    f"{bundle.root}: no eager weights (ONNX/TorchScript only); explain it on the served runtime"
                )
            names = [t.name for t in manifest.inputs]
            if self.task == TEXT:
                model = RuntimeTextClassifier.for_tokenizer(runtime, self.tokenizer, names)
            else:
                assert self.image_pre is not None
                model = RuntimeImageClassifier(runtime, input_name=self.image_input, layout=self.image_pre.layout)
        elif self.task == TEXT:
            hf = build_eager_model(bundle) if eager_model is None else eager_model.eval()
            model = TextClassifier.from_tokenizer(hf, self.tokenizer).eval()
        else:
            model = as_image_classifier(build_eager_model(bundle) if eager_model is None else eager_model.eval())
        self.model = model
        self.vision_transformer = find_vision_transformer(model) if self.task == IMAGE and self.gradients else None
        self.default_method = (DEFAULT_METHOD if self.gradients else RUNTIME_DEFAULT_METHOD)[self.task]
        self.context = ModelContext(
            model=model,
            task=self.task,
            mean=self.image_pre.mean if self.image_pre else None,
            std=self.image_pre.std if self.image_pre else None,
            gradcam_layer=arch.gradcam_layer if arch is not None else None,
            memory_budget_bytes=memory_budget_bytes,
            vision_transformer=self.vision_transformer,
            gradients=self.gradients,
        )
        self._explainers: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.Lock()

    @property
    def methods(self) -> list[str]:
        return supported_methods(self.task, self.vision_transformer is not None, self.gradients)

    def method_schemas(self) -> dict[str, dict[str, Any]]:
        """Each method this model can run with its parameters' JSON Schema and its outputs."""
        return method_schemas(self.task, self.gradients, vision_transformer=self.vision_transformer is not None)

    # -- the startup check --------------------------------------------------------------
    def probe_inputs(self) -> dict[str, np.ndarray]:
        if self.image_pre is not None:
            c, s = self.image_pre.channels, self.image_pre.crop_size
            g = torch.Generator().manual_seed(0)
            probe = torch.randn(2, c, s, s, generator=g)  # (2, C, H, W)
            if self.image_pre.layout == "NHWC":
                probe = probe.permute(0, 2, 3, 1).contiguous()  # (2, H, W, C)
            return {self.image_input: probe.numpy()}
        return self.encode_texts(TWIN_PROBE_TEXTS)

    def twin_check(self, runtime: Runtime, *, tolerance: float = DEFAULT_TWIN_TOLERANCE) -> TwinCheck:
        """Compare eager logits with ``runtime``'s on probe inputs; refuse explain on mismatch.
        Without eager weights the model explained is the runtime itself: nothing to compare."""
        if not self.gradients:
            return TwinCheck(True, 0.0, tolerance, "explained on the served runtime")
        probe = self.probe_inputs()
        expected = self._logits(self._to_inputs(probe)).numpy()  # (batch, classes)
        try:
            got = np.asarray(runtime(probe), dtype=np.float32)
        except Exception as exc:
            self.refusal = f"explain is disabled for {self.bundle.name}: the twin check could not run ({exc})"
            return TwinCheck(False, float("inf"), tolerance, str(exc))
        if got.shape != expected.shape:
            self.refusal = (
                f"explain is disabled for {self.bundle.name}: runtime logits {list(got.shape)} "
                f"!= eager {list(expected.shape)}"
            )
            return TwinCheck(False, float("inf"), tolerance, self.refusal)
        diff = float(np.max(np.abs(got - expected)))
        ok = diff <= tolerance
        self.refusal = (
            None
            if ok
            else f"explain is disabled for {self.bundle.name}: the eager twin differs from the served runtime "
            f"by {diff:.3g} (tolerance {tolerance:g})"
        )
        return TwinCheck(ok, diff, tolerance, self.refusal or "")

    # -- helpers for callers -------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenise like the server does (the bundle's ``lowercase``, padding, ``max_length``)."""
        assert self.tokenizer is not None and self.text_pre is not None
        return tokenize(self.tokenizer, self.text_pre, texts)

    # -- explain -------------------------------------------------------------------------
    def explain(
        self,
        inputs: Mapping[str, np.ndarray | torch.Tensor],
        *,
        method: str | None = None,
        targets: list[int] | None = None,
        params: Mapping[str, Any] | None = None,
        images: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray] | None] | None = None,
    ) -> ExplainResult:
        """Explain a batch with one method; ``images`` are the original uint8 (H, W, 3) pixels to
        draw overlays on, or a function returning them, called only when an overlay is drawn."""
        results = self.explain_methods(inputs, method=method, targets=targets, params=params, images=images)
        if len(results) != 1:
            raise ExplainParameterError(f"{len(results)} methods asked for: use explain_methods to compare")
        return results[0]

    def explain_methods(
        self,
        inputs: Mapping[str, np.ndarray | torch.Tensor],
        *,
        method: str | Sequence[str] | None = None,
        targets: list[int] | None = None,
        params: Mapping[str, Any] | None = None,
        images: Sequence[np.ndarray] | Callable[[], Sequence[np.ndarray] | None] | None = None,
    ) -> list[ExplainResult]:
        """One result per method, in the order asked. The methods come from ``method`` (one name,
        comma-separated names or a list) or the ``methods`` parameter (comma-separated). The
        input checks, the prediction pass and the original images are shared. A parameter
        goes to every method that takes it (``name.param`` to one method only); one that no
        method takes is an error."""
        if self.refusal:
            raise UnsupportedMethodError(self.refusal)
        all_params = dict(params or {})
        listed = all_params.pop("methods", None)
        if listed is not None and method is not None:
            raise ExplainParameterError("give either method or methods, not both")
        if listed is not None and not isinstance(listed, str):
            raise ExplainParameterError(f"methods must be a comma-separated string, got {listed!r}")
        names = parse_methods(listed if listed is not None else method, self.default_method)
        base_method = all_params.pop("base_method", None)
        label = ",".join(names)
        score_p = validate_params(ScoreParams, label, _take(all_params, ScoreParams))
        render_p = validate_params(render.RenderParams, label, _take(all_params, render.RenderParams))
        faithfulness.check_applies(score_p, text=self.task == TEXT)
        explainers = {n: self._explainer(n, None if base_method is None else str(base_method)) for n in names}
        per_method = _route(all_params, explainers)
        batch = self._to_inputs(inputs)
        if callable(images):
            images = images() if render_p.render_png else None
        if images is not None and len(images) != len(batch):
            raise ExplainParameterError(f"{len(images)} original images for {len(batch)} items")
        logits = self._logits(batch)  # (batch, classes): the one prediction pass
        shared: dict[str, torch.Tensor] = {}  # what every method's scores reuse
        results = []
        for name, explainer in explainers.items():
            kwargs = per_method[name]
            explanation: Explanation = explainer.explain(batch, targets, logits=logits, **kwargs)
            scores = self._scores(batch, logits, explanation, score_p, explainer, kwargs, shared)
            items = self._items(batch, logits, explanation, scores, render_p, images)
            used = explanation.params | score_p.model_dump()
            if self.task == IMAGE:
                used |= render_p.model_dump()
                used = {k: v for k, v in used.items() if k != "aopc"}
            else:  # the pixel scores do not apply to text
                used = {k: v for k, v in used.items() if k not in IMAGE_ONLY_SCORE_PARAMS}
            if explanation.method != name:
                used["algorithm"] = explanation.method
            results.append(ExplainResult(method=name, params=used, items=items))
        return results

    def _scores(
        self,
        batch: torch.Tensor | TextInputs,
        logits: torch.Tensor,
        explanation: Explanation,
        score_p: ScoreParams,
        explainer: Any,
        kwargs: dict[str, Any],
        shared: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        def again(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
            return explainer.explain(x, rows, **kwargs).attributions.detach()  # type: ignore[no-any-return]

        attributions = explanation.attributions.detach().float()
        return faithfulness.score_batch(
            self.model, batch, attributions, explanation.targets, logits, score_p, explain_fn=again, shared=shared
        )

    def _explainer(self, name: str, base_method: str | None) -> Any:
        with self._lock:
            key = (name, base_method)
            if key not in self._explainers:
                self._explainers[key] = build_explainer(name, self.context, base_method=base_method)
            return self._explainers[key]

    def _to_inputs(self, inputs: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor | TextInputs:
        def tensor(key: str) -> torch.Tensor:
            if key not in inputs:
                raise ExplainParameterError(f"missing input {key!r} (have: {', '.join(inputs) or 'none'})")
            value = inputs[key]
            if isinstance(value, torch.Tensor):
                return value
            return torch.from_numpy(np.require(value, requirements=["C", "W"]))  # copies read-only arrays only

        if self.image_pre is not None:
            image = tensor(self.image_input)
            c, s = self.image_pre.channels, self.image_pre.crop_size
            nhwc = self.image_pre.layout == "NHWC"
            expected = [s, s, c] if nhwc else [c, s, s]
            if image.dim() != 4 or list(image.shape[1:]) != expected or image.dtype != torch.float32:
                raise ExplainParameterError(
                    f"{self.image_input} must be FP32 [B, {', '.join(map(str, expected))}], "
                    f"got {image.dtype} {list(image.shape)}"
                )
            if nhwc:
                image = image.permute(0, 3, 1, 2).contiguous()  # (batch, C, H, W): what every method sees
            _check_batch(len(image))
            return image
        assert self.text_pre is not None
        ids, mask = tensor("input_ids").long(), tensor("attention_mask").long()
        batch = TextInputs(ids, mask)
        _check_batch(len(batch))
        assert isinstance(self.model, TextClassifier)
        vocab = (
            self.model.vocab_size
            if isinstance(self.model, RuntimeTextClassifier)
            else int(self.model.hf.config.vocab_size)
        )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ExplainParameterError(f"input_ids must lie in [0, {vocab - 1}]")
        if ids.shape[1] > self.text_pre.max_length:
            raise ExplainParameterError(f"sequence length {ids.shape[1]} exceeds max_length {self.text_pre.max_length}")
        return batch

    def _logits(self, batch: torch.Tensor | TextInputs) -> torch.Tensor:
        with torch.no_grad():
            if isinstance(batch, TextInputs):
                return self.model(batch.input_ids, batch.attention_mask)  # type: ignore[no-any-return]
            return self.model(batch)  # type: ignore[no-any-return]

    def _items(
        self,
        batch: torch.Tensor | TextInputs,
        logits: torch.Tensor,
        explanation: Explanation,
        scores: dict[str, torch.Tensor],
        render_p: render.RenderParams,
        images: Sequence[np.ndarray] | None,
    ) -> list[ItemExplanation]:
        targets = explanation.targets
        attributions = explanation.attributions.detach().float()
        probs = logits.softmax(dim=-1)  # (batch, classes)
        delta = explanation.convergence_delta
        items = []
        draw = render_p.render_png
        for i in range(len(attributions)):
            pngs: dict[str, bytes] = {}
            html: str | None = None
            tokens: list[str] | None = None
            attr_i = attributions[i].numpy()
            if isinstance(batch, TextInputs):
                n = int(batch.attention_mask[i].sum())
                tokens = self.tokenizer.convert_ids_to_tokens(batch.input_ids[i, :n].tolist())
                attr_i = attr_i[:n]  # (real tokens,)
                html = render.token_html(tokens, attr_i)
                if draw:
                    pngs["token_png"] = render.token_png(tokens, attr_i)
                if draw and "attention" in explanation.extras:
                    attn = explanation.extras["attention"][i, :, :, :n, :n].numpy()  # (L, H, n, n)
                    pngs["attention_grid_png"] = render.attention_grid_png(attn)
                    pngs["rollout_png"] = render.rollout_png(explanation.extras["rollout"][i, :n, :n].numpy(), tokens)
            elif draw:
                assert self.image_pre is not None
                photo = (
                    images[i]
                    if images is not None
                    else render.denormalize(batch[i].numpy(), self.image_pre.mean, self.image_pre.std)
                )
                pngs["overlay_png"] = render.overlay_png(attr_i, photo, render_p)
                if "attention_grid" in explanation.extras:  # a vision transformer's (layers, heads, h, w)
                    pngs["attention_grid_png"] = render.attention_grid_png(
                        explanation.extras["attention_grid"][i].numpy()
                    )
            items.append(
                ItemExplanation(
                    logits=logits[i].numpy(),
                    probabilities=probs[i].numpy(),
                    predicted=int(logits[i].argmax()),
                    target=targets[i],
                    attributions=attr_i,
                    pngs=pngs,
                    token_html=html,
                    tokens=tokens,
                    convergence_delta=None if delta is None else float(delta[i]),
                    **{name: float(values[i]) for name, values in scores.items()},  # type: ignore[arg-type]
                )
            )
        return items


def _route(params: dict[str, Any], explainers: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's own parameters: ``name.param`` to that method, a plain name to every method
    that takes it. With one method everything goes to it (its validation names what is wrong)."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in explainers}
    for key, value in params.items():
        owner, dot, param = key.partition(".")
        if dot and owner in explainers:
            routed[owner][param] = value
            continue
        if dot:
            raise ExplainParameterError(f"parameter {key!r}: {owner!r} is not one of the methods asked for")
        takers = [n for n, e in explainers.items() if len(explainers) == 1 or key in e.param_names()]
        if not takers:
            raise ExplainParameterError(f"unknown parameter {key!r}: none of {', '.join(explainers)} takes it")
        for name in takers:
            routed[name][key] = value
    return routed


def _take(params: dict[str, Any], model: type[MethodParams]) -> dict[str, Any]:
    """Remove and return the entries of ``params`` that belong to ``model``."""
    return {k: params.pop(k) for k in list(params) if k in model.model_fields}


def _check_batch(n: int) -> None:
    if not 1 <= n <= MAX_ITEMS:
        raise ExplainParameterError(f"explain takes 1 to {MAX_ITEMS} items per request, got {n}")
