"""A model version's I/O layer: the bundle's input and output rules, with its codecs.

Accepted inputs (docs/CONTRACTS.md): the manifest's tensors (image ``input`` FP32
[B, C, H, W]; text ``input_ids`` + ``attention_mask`` INT64 [B, S]) or one raw BYTES input
(``image``: encoded JPEG/PNG/WebP, ``text``: UTF-8) of shape [B] (or [B, 1]).
Outputs: ``logits``, ``probabilities`` (softmax) and on request any other model output;
``parameters.classification = k`` on a requested output gives top-k strings.

:class:`ModelIO` needs no runtime: the served model (:mod:`serving.served`), the explain
backend and the TorchServe handler all prepare inputs and shape outputs through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lumenserve.bundle import Bundle, ImagePreprocessing, TensorSpec, TextPreprocessing
from serving.codecs.classification import softmax, top_k_strings
from serving.codecs.image import ImageCodec
from serving.codecs.tensors import datatype_of
from serving.codecs.text import TextCodec
from serving.errors import InvalidInput
from serving.settings import ServingSettings
from serving.types import Feed, RequestedOutput, Tensor

RAW_IMAGE_INPUT = "image"
RAW_TEXT_INPUT = "text"
PROBABILITIES = "probabilities"
DEFAULT_OUTPUTS = ("logits", PROBABILITIES)


class ModelIO:
    """Inputs -> model feed and model outputs -> response tensors, for one bundle."""

    def __init__(self, bundle: Bundle, settings: ServingSettings) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.name = bundle.name
        self.version = str(bundle.version)
        self.labels = list(self.manifest.labels)
        self.input_specs = {t.name: t for t in self.manifest.inputs}
        self.output_specs = {t.name: t for t in self.manifest.outputs}
        pre = self.manifest.preprocessing
        self.image_codec: ImageCodec | None = None
        self.text_codec: TextCodec | None = None
        self.vocab_size: int | None = None
        self.max_length: int | None = None
        if isinstance(pre, ImagePreprocessing):
            self.raw_input = RAW_IMAGE_INPUT
            self.image_codec = ImageCodec(pre, max_pixels=settings.max_image_pixels, draft=settings.image_draft)
        else:
            assert isinstance(pre, TextPreprocessing)
            from lumenserve.bundle.eager import load_tokenizer

            self.raw_input = RAW_TEXT_INPUT
            tokenizer = load_tokenizer(bundle)
            self.text_codec = TextCodec(tokenizer, pre, max_chars=settings.max_text_chars)
            self.vocab_size = len(tokenizer)
            self.max_length = pre.max_length

    @property
    def pad_values(self) -> Mapping[str, int]:
        """Fill value per input when rows of different lengths are stacked (default 0)."""
        return {"input_ids": self.text_codec.pad_id} if self.text_codec is not None else {}

    @property
    def dynamic_output_dims(self) -> Mapping[str, list[int]]:
        """Per output, the non-batch dims of variable length (cut back per caller after padding)."""
        return {spec.name: [i for i, d in enumerate(spec.shape) if d == -1 and i > 0] for spec in self.manifest.outputs}

    # ---- inputs -------------------------------------------------------------------------
    def needs_decoding(self, inputs: Sequence[Tensor]) -> bool:
        """True when the request carries raw BYTES (decode/tokenise in the worker pool)."""
        return any(t.name == self.raw_input for t in inputs)

    def prepare(self, inputs: Sequence[Tensor]) -> tuple[Feed, int]:
        """Request tensors -> (model feed, rows). Raises InvalidInput naming the problem."""
        names = [t.name for t in inputs]
        if len(set(names)) != len(names):
            raise InvalidInput(f"duplicate input names in {names}")
        if self.raw_input in names:
            if len(inputs) != 1:
                raise InvalidInput(f"send either {self.raw_input!r} alone or the tensors {list(self.input_specs)}")
            return self._prepare_raw(inputs[0])
        unknown = [n for n in names if n not in self.input_specs]
        missing = [n for n in self.input_specs if n not in names]
        if unknown or missing:
            raise InvalidInput(
                f"model {self.name!r} takes {list(self.input_specs)} (or raw BYTES {self.raw_input!r}); "
                f"unknown {unknown}, missing {missing}"
            )
        feed: Feed = {}
        rows: int | None = None
        for tensor in inputs:
            spec = self.input_specs[tensor.name]
            self._check_tensor(tensor, spec)
            if rows is not None and tensor.data.shape[0] != rows:
                raise InvalidInput(f"inputs disagree on the batch size ({rows} vs {tensor.data.shape[0]})")
            rows = tensor.data.shape[0]
            feed[tensor.name] = tensor.data
        if self.text_codec is not None:
            self._check_tokens(feed)
        assert rows is not None
        return feed, rows

    def _check_tensor(self, tensor: Tensor, spec: TensorSpec) -> None:
        data = tensor.data
        if tensor.datatype != spec.datatype:
            raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype}, expected {spec.datatype}")
        if data.ndim != len(spec.shape) or any(d != -1 and d != s for d, s in zip(spec.shape, data.shape, strict=True)):
            raise InvalidInput(f"input {tensor.name!r}: shape {list(data.shape)} does not match {spec.shape}")
        if data.shape[0] == 0:
            raise InvalidInput(f"input {tensor.name!r}: empty batch")
        if 0 in data.shape:
            raise InvalidInput(f"input {tensor.name!r}: zero-sized dimension in {list(data.shape)}")
        if data.dtype.kind == "f" and not np.isfinite(data.sum()) and not np.isfinite(data).all():
            raise InvalidInput(f"input {tensor.name!r}: contains NaN or Inf")

    def _check_tokens(self, feed: Feed) -> None:
        ids, mask = feed["input_ids"], feed["attention_mask"]
        if ids.shape != mask.shape:
            raise InvalidInput(f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} differ in shape")
        assert self.max_length is not None and self.vocab_size is not None
        if ids.shape[1] > self.max_length:
            raise InvalidInput(f"sequence of {ids.shape[1]} tokens exceeds the model's max_length {self.max_length}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise InvalidInput(f"input_ids must lie in [0, {self.vocab_size})")
        if mask.min() < 0 or mask.max() > 1:
            raise InvalidInput("attention_mask must hold only 0 and 1")

    def _prepare_raw(self, tensor: Tensor) -> tuple[Feed, int]:
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype}, expected BYTES")
        shape = tensor.data.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(f"input {tensor.name!r}: shape {list(shape)}, expected [batch] or [batch, 1]")
        items = [bytes(x) for x in tensor.data.reshape(-1)]
        if not items:
            raise InvalidInput(f"input {tensor.name!r}: empty batch")
        if self.image_codec is not None:
            return {"input": self.image_codec(items)}, len(items)
        assert self.text_codec is not None
        return self.text_codec(items), len(items)

    # ---- outputs ------------------------------------------------------------------------
    def output_names(self) -> list[str]:
        return [*self.output_specs, PROBABILITIES]

    def postprocess(self, outputs: Feed, requested: Sequence[RequestedOutput] | None) -> list[Tensor]:
        """Model outputs (this caller's rows) -> the tensors asked for (default logits + probabilities)."""
        wanted = list(requested) if requested else [RequestedOutput(n) for n in DEFAULT_OUTPUTS]
        result: list[Tensor] = []
        cache: dict[str, np.ndarray] = {}
        for out in wanted:
            array = self._output_array(out.name, outputs, cache)
            k = out.classification
            if k:
                if array.ndim != 2:
                    raise InvalidInput(f"output {out.name!r}: classification needs a [batch, classes] output")
                result.append(Tensor(out.name, "BYTES", top_k_strings(array, k, self.labels), dict(out.parameters)))
            else:
                result.append(Tensor(out.name, datatype_of(array), array, dict(out.parameters)))
        return result

    def _output_array(self, name: str, outputs: Feed, cache: dict[str, np.ndarray]) -> np.ndarray:
        if name in outputs:
            return outputs[name]
        if name == PROBABILITIES:
            if name not in cache:
                cache[name] = softmax(outputs["logits"])  # (batch, classes)
            return cache[name]
        raise InvalidInput(f"model {self.name!r} has no output {name!r} (outputs: {self.output_names()})")

    # ---- warm-up and metadata ---------------------------------------------------------
    def warm_feed(self) -> Feed:
        """A one-row feed that runs the whole path (codec + model) once."""
        if self.image_codec is not None:
            pre = self.image_codec.pre
            return {"input": np.zeros((1, pre.channels, pre.crop_size, pre.crop_size), dtype=np.float32)}
        assert self.text_codec is not None
        return self.text_codec([b"warm up"])

    def output_metadata(self) -> list[TensorSpec]:
        """The manifest's outputs plus ``probabilities`` (when the model has logits)."""
        outputs = [*self.manifest.outputs]
        logits = self.output_specs.get("logits")
        if logits is not None:
            outputs.append(TensorSpec(name=PROBABILITIES, datatype="FP32", shape=list(logits.shape)))
        return outputs
