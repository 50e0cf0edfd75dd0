"""A model version's I/O layer: the bundle's input and output rules, with its codecs.

Accepted inputs (docs/CONTRACTS.md): the manifest's tensors, by the manifest's names and
datatypes (any number, any OIP v2 datatype), or for a classifier one raw BYTES input
(``image``: encoded JPEG/PNG/WebP, ``text``: UTF-8) of shape [B] (or [B, 1]) that the
bundle's preprocessing turns into its tensors (NCHW or NHWC, RGB, BGR or L; texts padded to
the longest or to ``max_length``).
Outputs: the manifest's outputs; a classifier adds ``probabilities`` (softmax of its score
output, the manifest's first); ``parameters.classification = k`` on a requested
output gives top-k strings. Default outputs: a classifier's scores + probabilities, every
output of a tensor model.

Batching: a model whose inputs all have a dynamic first dimension (-1) is batched on that
dimension; any other model (or one configured with ``max_batch_size: 0``) runs each request
alone with its full shape, Triton's ``max_batch_size 0``.

:class:`ModelIO` needs no runtime: the served model (:mod:`serving.served`), the explain
backend and the TorchServe handler all prepare inputs and shape outputs through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lumenserve.bundle import Bundle, ImagePreprocessing, TensorSpec, TextPreprocessing
from serving.codecs.classification import softmax, top_k_strings
from serving.codecs.image import ImageCodec
from serving.codecs.tensors import NUMPY_DTYPES, datatype_of
from serving.codecs.text import TextCodec
from serving.errors import InvalidInput
from serving.settings import ServingSettings
from serving.types import Feed, RequestedOutput, Tensor

RAW_IMAGE_INPUT = "image"
RAW_TEXT_INPUT = "text"
PROBABILITIES = "probabilities"
TEXT_TENSORS = ("input_ids", "attention_mask")
"""What the tokenizer gives; a model input ``token_type_ids`` is fed zeros."""


def classifier_output(outputs: Sequence[TensorSpec]) -> str:
    """The classifier's score output, (batch, classes): the manifest's first output (docs/bundle.md)."""
    return outputs[0].name


def _as_text(tensor: Tensor) -> np.ndarray:
    """A BYTES model input as an object array of str: the runtimes' string tensors hold UTF-8 text."""
    flat = tensor.data.reshape(-1)
    out = np.empty(flat.shape, dtype=np.object_)
    for i, item in enumerate(flat):
        try:
            out[i] = bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"input {tensor.name!r}: element {i} is not UTF-8 text ({exc.reason})") from None
    return out.reshape(tensor.data.shape)


class ModelIO:
    """Inputs -> model feed and model outputs -> response tensors, for one bundle."""

    def __init__(self, bundle: Bundle, settings: ServingSettings, *, batching: bool = True) -> None:
        """``batching``: False runs every request alone (``max_batch_size: 0``) even when the
        model's first dimension is dynamic."""
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.name = bundle.name
        self.version = str(bundle.version)
        self.task = self.manifest.task
        self.labels = list(self.manifest.labels)
        self.input_specs = {t.name: t for t in self.manifest.inputs}
        self.output_specs = {t.name: t for t in self.manifest.outputs}
        self.batching = batching and all(t.shape and t.shape[0] == -1 for t in self.manifest.inputs)
        """Requests are joined on the first dimension; else each runs alone with its full shape."""
        self.scores: str | None = None if self.task == "tensor" else classifier_output(self.manifest.outputs)
        """A classifier's score output (``probabilities`` is its softmax); None for tensor models."""
        pre = self.manifest.preprocessing
        self.raw_input: str | None = None
        self.image_input: str | None = None
        self.image_codec: ImageCodec | None = None
        self.text_codec: TextCodec | None = None
        self.vocab_size: int | None = None
        self.max_length: int | None = None
        if isinstance(pre, ImagePreprocessing):
            self.raw_input = RAW_IMAGE_INPUT
            self.image_input = self.manifest.inputs[0].name
            self.image_codec = ImageCodec(pre, max_pixels=settings.max_image_pixels, draft=settings.image_draft)
        elif isinstance(pre, TextPreprocessing):
            from lumenserve.bundle.eager import load_serving_tokenizer

            self.raw_input = RAW_TEXT_INPUT
            tokenizer = load_serving_tokenizer(bundle)
            self.text_codec = TextCodec(tokenizer, pre, max_chars=settings.max_text_chars)
            self.vocab_size = len(tokenizer)
            self.max_length = pre.max_length

    @property
    def default_outputs(self) -> list[str]:
        return [self.scores, PROBABILITIES] if self.scores is not None else list(self.output_specs)

    @property
    def pad_values(self) -> Mapping[str, int]:
        """Fill value per input when rows of different lengths are stacked (default 0)."""
        return {"input_ids": self.text_codec.pad_id} if self.text_codec is not None else {}

    @property
    def pads_rows(self) -> bool:
        """Whether requests of different lengths may share a batch (padded): only tokenised texts;
        a tensor model's requests of different shapes run in separate batches."""
        return self.text_codec is not None

    @property
    def dynamic_output_dims(self) -> Mapping[str, list[int]]:
        """Per output, the non-batch dims of variable length (cut back per caller after padding)."""
        return {spec.name: [i for i, d in enumerate(spec.shape) if d == -1 and i > 0] for spec in self.manifest.outputs}

    # ---- inputs -------------------------------------------------------------------------
    def is_raw(self, tensor: Tensor) -> bool:
        """A raw image/text input (not a model tensor that happens to share the name)."""
        if self.raw_input is None or tensor.name != self.raw_input:
            return False
        spec = self.input_specs.get(tensor.name)
        return spec is None or (tensor.datatype == "BYTES" and spec.datatype != "BYTES")

    def needs_decoding(self, inputs: Sequence[Tensor]) -> bool:
        """True when the request carries raw BYTES (decode/tokenise in the worker pool)."""
        return any(self.is_raw(t) for t in inputs)

    def prepare(self, inputs: Sequence[Tensor]) -> tuple[Feed, int]:
        """Request tensors -> (model feed, rows). Raises InvalidInput naming the problem.
        ``rows`` is 1 for a model that does not batch (the request is one unit)."""
        names = [t.name for t in inputs]
        if len(set(names)) != len(names):
            raise InvalidInput(f"duplicate input names in {names}")
        if any(self.is_raw(t) for t in inputs):
            if len(inputs) != 1:
                raise InvalidInput(f"send either {self.raw_input!r} alone or the tensors {list(self.input_specs)}")
            decoded, items = self._prepare_raw(inputs[0])
            for name, array in decoded.items():
                self._check_shape(name, array, self.input_specs[name])
            return decoded, items if self.batching else 1
        unknown = [n for n in names if n not in self.input_specs]
        missing = [n for n in self.input_specs if n not in names]
        if unknown or missing:
            raw = f" (or raw BYTES {self.raw_input!r})" if self.raw_input else ""
            raise InvalidInput(
                f"model {self.name!r} takes {list(self.input_specs)}{raw}; unknown {unknown}, missing {missing}"
            )
        feed: Feed = {}
        rows: int | None = None
        for tensor in inputs:
            spec = self.input_specs[tensor.name]
            self._check_tensor(tensor, spec)
            if self.batching and rows is not None and tensor.data.shape[0] != rows:
                raise InvalidInput(f"inputs disagree on the batch size ({rows} vs {tensor.data.shape[0]})")
            rows = tensor.data.shape[0] if tensor.data.ndim else 1
            feed[tensor.name] = _as_text(tensor) if spec.datatype == "BYTES" else tensor.data
        if self.text_codec is not None and all(n in feed for n in TEXT_TENSORS):
            self._check_tokens(feed)
        assert rows is not None
        return feed, rows if self.batching else 1

    def _check_shape(self, name: str, data: np.ndarray, spec: TensorSpec) -> None:
        if data.ndim != len(spec.shape) or any(d != -1 and d != s for d, s in zip(spec.shape, data.shape, strict=True)):
            raise InvalidInput(f"input {name!r}: shape {list(data.shape)} does not match {spec.shape}")

    def _check_tensor(self, tensor: Tensor, spec: TensorSpec) -> None:
        data = tensor.data
        if tensor.datatype != spec.datatype:
            raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype}, expected {spec.datatype}")
        self._check_shape(tensor.name, data, spec)
        if data.ndim and data.shape[0] == 0:
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
            assert self.image_input is not None
            return {self.image_input: self.image_codec(items)}, len(items)
        assert self.text_codec is not None
        return self.text_feed(self.text_codec(items)), len(items)

    def text_feed(self, tokens: Feed) -> Feed:
        """Tokenizer output -> the model's text inputs (``token_type_ids`` zeros when it takes them)."""
        ids = tokens["input_ids"]  # (batch, seq)
        extra = {"token_type_ids": np.zeros_like(ids)} if "token_type_ids" in self.input_specs else {}
        return {name: array for name, array in {**tokens, **extra}.items() if name in self.input_specs}

    # ---- outputs ------------------------------------------------------------------------
    def derive(self, outputs: Feed) -> Feed:
        """A whole batch's model outputs plus what every caller may ask for beside them (a
        classifier's ``probabilities``), computed once per batch in the compute thread."""
        if self.scores is None or PROBABILITIES in outputs:
            return outputs
        scores = outputs[self.scores]  # (batch, classes)
        return {**outputs, PROBABILITIES: softmax(scores.astype(np.float32, copy=False))}

    def output_names(self) -> list[str]:
        return [*self.output_specs, PROBABILITIES] if self.scores is not None else list(self.output_specs)

    def postprocess(self, outputs: Feed, requested: Sequence[RequestedOutput] | None) -> list[Tensor]:
        """Model outputs (this caller's rows) -> the tensors asked for (default: see the module)."""
        wanted = list(requested) if requested else [RequestedOutput(n) for n in self.default_outputs]
        if PROBABILITIES not in outputs and any(out.name == PROBABILITIES for out in wanted):
            outputs = self.derive(outputs)  # outside the batcher (warm-up, explain, TorchServe handler)
        result: list[Tensor] = []
        for out in wanted:
            if out.name not in outputs:
                raise InvalidInput(f"model {self.name!r} has no output {out.name!r} (outputs: {self.output_names()})")
            array = outputs[out.name]
            k = out.classification
            if k:
                if array.ndim != 2:
                    raise InvalidInput(f"output {out.name!r}: classification needs a [batch, classes] output")
                result.append(Tensor(out.name, "BYTES", top_k_strings(array, k, self.labels), dict(out.parameters)))
            else:
                result.append(Tensor(out.name, self._datatype(out.name, array), array, dict(out.parameters)))
        return result

    def _datatype(self, name: str, array: np.ndarray) -> str:
        spec = self.output_specs.get(name)
        if spec is not None and spec.datatype == "BF16":  # numpy has no bfloat16: its 16-bit pattern travels
            return "BF16"
        return datatype_of(array)

    # ---- warm-up and metadata ---------------------------------------------------------
    def warm_feed(self) -> Feed:
        """A one-row feed that runs the whole path (codec + model) once."""
        if self.image_codec is not None:
            assert self.image_input is not None
            pre = self.image_codec.pre
            size, channels = pre.crop_size, pre.channels
            shape = (1, size, size, channels) if pre.layout == "NHWC" else (1, channels, size, size)
            return {self.image_input: np.zeros(shape, dtype=np.float32)}
        if self.text_codec is not None:
            return self.text_feed(self.text_codec([b"warm up"]))
        return self.sample_feed()

    def sample_feed(self) -> Feed:
        """Zeros of every input (one row; the import check run's shapes where they are known)."""
        record = self.manifest.imported
        known = {t.name: t.shape for t in record.check_inputs} if record is not None else {}
        feed: Feed = {}
        for spec in self.manifest.inputs:
            shape = [d if d != -1 else 1 for d in known.get(spec.name, spec.shape)]
            if self.batching and shape:
                shape[0] = 1
            if spec.datatype == "BYTES":
                feed[spec.name] = np.full(shape, b"", dtype=np.object_)
            else:
                feed[spec.name] = np.zeros(shape, dtype=NUMPY_DTYPES[spec.datatype])
        return feed

    def output_metadata(self) -> list[TensorSpec]:
        """The manifest's outputs plus ``probabilities`` (a classifier's)."""
        outputs = [*self.manifest.outputs]
        if self.scores is not None:
            shape = list(self.output_specs[self.scores].shape)
            outputs.append(TensorSpec(name=PROBABILITIES, datatype="FP32", shape=shape))
        return outputs
