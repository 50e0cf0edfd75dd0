"""Shared machinery of the methods: parameter validation, per-item targets, memory fitting."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch

from explain.errors import ExplainParameterError, UnsupportedMethodError
from explain.explanation import ExplainInputs, Explanation, TargetType, TextInputs
from explain.memory import DEFAULT_BUDGET_BYTES, activation_bytes_per_item, fit_batch
from explain.params import MethodParams, validate_params
from explain.text_model import TextClassifier

Task = Literal["image-classification", "text-classification"]
IMAGE: Task = "image-classification"
TEXT: Task = "text-classification"

P = TypeVar("P", bound=MethodParams)


class Explainer(ABC, Generic[P]):
    """Built from the model; ``explain(inputs, targets, **params)`` returns an :class:`Explanation`."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[Task]]
    Params: ClassVar[type[MethodParams]]
    gradients: ClassVar[bool] = True
    """Whether the method needs gradients (eager weights); perturbation methods do not."""
    needs_eager: ClassVar[bool] = True
    """Whether the method needs the eager model (gradients, attention maps, layers); False for
    the methods that run on a bare forward function, e.g. the served runtime."""

    @classmethod
    def outputs(cls, text: bool) -> list[str]:
        """The response fields this method adds to the common ones (logits ... attributions)."""
        return ["tokens", "token_html", "token_png"] if text else ["overlay_png"]

    def __init__(self, model: torch.nn.Module, *, memory_budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.model = model
        self.memory_budget_bytes = memory_budget_bytes
        self._item_bytes: dict[tuple[int, ...], int] = {}

    # -- what subclasses provide -------------------------------------------------------
    @abstractmethod
    def _explain(self, inputs: Any, targets: list[int], params: Any) -> Explanation: ...

    def _check_inputs(self, inputs: ExplainInputs) -> None:
        """Refuse inputs of the wrong kind (image methods need a tensor, text methods TextInputs)."""

    # -- the public call -----------------------------------------------------------------
    def explain(
        self, inputs: ExplainInputs, targets: TargetType = None, *, logits: torch.Tensor | None = None, **params: Any
    ) -> Explanation:
        """``logits`` (batch, classes): the caller's prediction pass over ``inputs``, if it ran
        one, so the targets are resolved without a second forward pass."""
        checked = self.validate(params)
        self._check_inputs(inputs)
        if isinstance(inputs, torch.Tensor):  # a leaf that wants gradients (the caller's tensor is untouched)
            inputs = inputs.detach().requires_grad_(True)
        logits = self.logits(inputs) if logits is None else logits  # (batch, classes)
        return self._explain_given(inputs, resolve_targets(logits, targets), checked, logits)

    def _explain_given(self, inputs: Any, targets: list[int], params: Any, logits: torch.Tensor) -> Explanation:
        """``_explain`` knowing the prediction pass's logits (batch, classes) over ``inputs``;
        a method that can reuse them overrides this one."""
        return self._explain(inputs, targets, params)

    def param_names(self) -> set[str]:
        """The parameter names ``explain`` accepts."""
        return set(self.Params.model_fields)

    def validate(self, params: dict[str, Any]) -> Any:
        return validate_params(self.Params, self.name, params)

    def logits(self, inputs: ExplainInputs) -> torch.Tensor:
        """The model's logits without gradients: (batch, classes)."""
        with torch.no_grad():
            if isinstance(inputs, TextInputs):
                return self.model(inputs.input_ids, inputs.attention_mask)  # type: ignore[no-any-return]
            return self.model(inputs)  # type: ignore[no-any-return]

    def fit(self, inputs: ExplainInputs, wanted: int, *, with_grad: bool = True) -> int:
        """Evaluations per forward pass for ``wanted`` copies within the memory budget (and, for a
        model that is the served runtime, at most the rows it runs fastest per call)."""
        rows_per_call = getattr(self.model, "rows_per_call", None)
        if rows_per_call is not None:
            return max(1, min(wanted, int(rows_per_call)))
        return fit_batch(self.item_bytes(inputs), wanted, self.memory_budget_bytes, with_grad=with_grad)

    def item_bytes(self, inputs: ExplainInputs) -> int:
        if isinstance(inputs, TextInputs):
            key = tuple(inputs.input_ids.shape[1:])
            one: Any = (inputs.input_ids[:1], inputs.attention_mask[:1])
        else:
            key = tuple(inputs.shape[1:])
            one = (inputs[:1],)
        if key not in self._item_bytes:
            self._item_bytes[key] = activation_bytes_per_item(self.model, lambda: self.model(*one))
        return self._item_bytes[key]


class ImageExplainer(Explainer[P]):
    """Methods over pixels: the model maps (batch, C, H, W) float to (batch, classes) logits.

    ``mean``/``std`` describe the normalisation applied before the model, so baselines
    such as ``black`` and ``white`` can be expressed in the model's input space.
    """

    tasks = frozenset({IMAGE})

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        memory_budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        super().__init__(model, memory_budget_bytes=memory_budget_bytes)
        self.mean = list(mean) if mean is not None else None
        self.std = list(std) if std is not None else None

    def _check_inputs(self, inputs: ExplainInputs) -> None:
        if isinstance(inputs, TextInputs):
            raise UnsupportedMethodError(f"{self.name} explains images; this model takes text")
        if inputs.dim() != 4 or not inputs.is_floating_point():
            raise ExplainParameterError(
                f"{self.name}: expected a float image batch [B, C, H, W], got {inputs.dtype} {list(inputs.shape)}"
            )

    def baseline(self, name: str, inputs: torch.Tensor) -> torch.Tensor:
        """A reference image in model-input space: ``zero`` (the mean colour after
        normalisation), ``black`` (pixel value 0) or ``white`` (pixel value 1)."""
        if name == "zero":
            return torch.zeros_like(inputs)  # (batch, C, H, W)
        pixel = 0.0 if name == "black" else 1.0
        c = inputs.shape[1]
        mean = torch.tensor(self.mean if self.mean is not None else [0.0] * c).view(1, c, 1, 1)
        std = torch.tensor(self.std if self.std is not None else [1.0] * c).view(1, c, 1, 1)
        return ((pixel - mean) / std).expand_as(inputs).to(inputs.dtype).contiguous()  # (batch, C, H, W)


class TextExplainer(Explainer[P]):
    """Methods over tokens: the model is a :class:`TextClassifier`."""

    tasks = frozenset({TEXT})
    model: TextClassifier

    def __init__(self, model: TextClassifier, *, memory_budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        if not isinstance(model, TextClassifier):
            raise UnsupportedMethodError(f"{self.name} needs a TextClassifier (a transformers sequence classifier)")
        super().__init__(model, memory_budget_bytes=memory_budget_bytes)

    def _check_inputs(self, inputs: ExplainInputs) -> None:
        if not isinstance(inputs, TextInputs):
            raise UnsupportedMethodError(f"{self.name} explains text; this model takes images")


def resolve_targets(logits: torch.Tensor, targets: TargetType) -> list[int]:
    """One class per item: the given ones (checked), else each item's predicted class."""
    batch, classes = logits.shape  # (batch, classes)
    if targets is None:
        return [int(t) for t in logits.argmax(dim=1)]
    if isinstance(targets, int | str) or not isinstance(targets, Sequence):
        raise ExplainParameterError(f"targets must be a list of {batch} class indices, got {targets!r}")
    if len(targets) != batch:
        raise ExplainParameterError(f"targets has {len(targets)} entries for {batch} items (one per item)")
    out = []
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < classes:
            raise ExplainParameterError(f"target {t!r} is not a class index in [0, {classes - 1}]")
        out.append(int(t))
    return out
