"""An ONNX file (with or without external data) -> a runtime-only bundle.

Inputs and outputs are read from the graph; the file and its external data are copied
unchanged (external data files renamed ``model.onnx.data[.N]``, the graph's references
rewritten to match), so ONNX Runtime on the bundle computes exactly what it computes on
the source.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import lumenserve.env  # noqa: F401  (ORT_DISABLE_TELEMETRY before onnxruntime)
from lumenserve.bundle import Bundle, TensorSpec, finish_bundle, new_staging_dir, tree_artifacts
from lumenserve.bundle.manifest import ArtifactKind, Datatype
from training.importer.options import ImportOptions, ImportSourceError, read_labels
from training.importer.tasks import check_image_input, load_user_tokenizer, text_preprocessing
from training.importer.write import (
    class_count,
    concrete_shape,
    generated_input,
    import_record,
    labels_for,
    spec_dicts,
    staged,
)

# onnx.TensorProto element type -> OIP v2 datatype
ONNX_DATATYPES: dict[int, Datatype] = {
    1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "BYTES",
    9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64", 16: "BF16",
}  # fmt: skip


def _spec(source: str, value: Any) -> TensorSpec:
    """A graph input/output (ValueInfoProto) as a TensorSpec; unknown dims are -1."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        raise ImportSourceError(
            f"{source}: {value.name!r} is a {kind}, not a tensor; only tensor inputs and outputs are served"
        )
    tensor = value.type.tensor_type
    datatype = ONNX_DATATYPES.get(tensor.elem_type)
    if datatype is None:
        raise ImportSourceError(
            f"{source}: {value.name!r} has ONNX element type {tensor.elem_type}, "
            "which has no Open Inference Protocol datatype"
        )
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim]
    return TensorSpec(name=value.name, datatype=datatype, shape=shape)


def _external_files(source: Path, model: Any) -> list[str]:
    """Relative paths of the external data files the graph refers to (checked to exist beside it)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    locations: set[str] = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            locations.add(info.get("location", ""))
    for loc in locations:
        target = (source.parent / loc).resolve()
        if not loc or Path(loc).is_absolute() or source.parent.resolve() not in target.parents:
            raise ImportSourceError(
                f"{source}: external data location {loc!r} leaves the model's folder; re-save with a relative location"
            )
        if not target.is_file():
            raise ImportSourceError(f"{source}: external data file {loc!r} is missing; keep it next to the model file")
    return sorted(locations)


def _rename_external_data(model: Any, locations: list[str]) -> dict[str, str]:
    """Point the graph's external data at ``model.onnx.data[.N]`` beside model.onnx (the bytes
    are copied unchanged; the names avoid suffixes the bundle reader refuses, such as .bin)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    renamed = {loc: "model.onnx.data" + (f".{i}" if i else "") for i, loc in enumerate(locations)}
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = renamed[entry.value]
    return renamed


def _session(model_path: Path, source: str, opsets: dict[str, int]) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        opset = opsets.get("", opsets.get("ai.onnx"))
        raise ImportSourceError(
            f"{source}: ONNX Runtime {ort.__version__} cannot run it (opset {opset}: {first[:200]}); "
            "re-export with an opset and operators ONNX Runtime supports"
        ) from exc


def import_onnx(source: Path, repo: Path, name: str, options: ImportOptions) -> Bundle:
    import onnx

    src = str(source)
    try:
        model = onnx.load(src, load_external_data=False)
    except Exception as exc:
        raise ImportSourceError(
            f"{source}: not a readable ONNX file ({exc.__class__.__name__}); check the file or pass --from"
        ) from exc
    opsets = {o.domain: int(o.version) for o in model.opset_import}
    newest = onnx.defs.onnx_opset_version()
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    if opset > newest:
        raise ImportSourceError(
            f"{source}: ONNX opset {opset} is newer than this installation knows ({newest});"
            f" re-export with opset <= {newest}"
        )
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_spec(src, v) for v in model.graph.input if v.name not in initializers]
    outputs = [_spec(src, v) for v in model.graph.output]
    data_files = _external_files(source, model)
    task = options.task or "tensor"
    labels = read_labels(options.labels_file) if options.labels_file else None
    feed: dict[str, np.ndarray]
    preprocessing: dict[str, Any] | None = None
    tokenizer: Any = None
    notes: list[str] = []
    if task == "image-classification":
        pre = options.image.preprocessing(src)
        feed = {inputs[0].name: check_image_input(src, inputs, pre)}
        preprocessing = pre.model_dump()
    elif task == "text-classification":
        tokenizer = load_user_tokenizer(options.tokenizer_dir, src)
        preprocessing, feed = text_preprocessing(src, inputs, options, tokenizer)
    else:
        feed = {s.name: generated_input(s, concrete_shape(s), src, seed=i) for i, s in enumerate(inputs)}
        notes.append("check run on generated inputs: variable batch axes 2, other variable axes 8")

    staging = new_staging_dir(repo, name)
    with staged(staging):
        artifacts: list[tuple[str, ArtifactKind]] = [("model.onnx", "onnx")]
        if data_files:
            renamed = _rename_external_data(model, data_files)
            (staging / "model.onnx").write_bytes(model.SerializeToString())
            for old, new in renamed.items():
                shutil.copyfile(source.parent / old, staging / new)
                artifacts.append((new, "onnx_data"))
            notes.append(f"external data {sorted(renamed)} stored as {sorted(renamed.values())}")
        else:
            shutil.copyfile(source, staging / "model.onnx")
        session = _session(staging / "model.onnx", src, opsets)
        try:
            answered = session.run(None, feed)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise ImportSourceError(
                f"{source}: the check run on generated inputs failed ({first[:200]}); check the input specs or flags"
            ) from exc
        check_outputs = {o.name: np.asarray(a) for o, a in zip(outputs, answered, strict=True)}
        outputs = [_known_shape(o, check_outputs[o.name], inputs) for o in outputs]
        if task != "tensor":
            first_out = outputs[0].name
            labels = labels_for(
                src, class_count(src, first_out, check_outputs[first_out]), labels, str(options.labels_file)
            )
            (staging / "labels.json").write_text(json.dumps(labels, indent=1))
            artifacts.append(("labels.json", "config"))
        if tokenizer is not None:
            tokenizer.save_pretrained(staging / "tokenizer")
            artifacts += tree_artifacts(staging, "tokenizer", "tokenizer")
        return finish_bundle(
            staging,
            artifacts,
            name=name,
            task=task,
            architecture=None,
            labels=labels or [],
            inputs=spec_dicts(inputs),
            outputs=spec_dicts(outputs),
            preprocessing=preprocessing,
            imported=import_record("onnx", source, feed, check_outputs, notes),
        )


def _known_shape(spec: TensorSpec, answered: np.ndarray, inputs: list[TensorSpec]) -> TensorSpec:
    """The graph's output shape, or (when the graph does not say) the answered one with a
    variable batch axis where the inputs have one."""
    if spec.shape and len(spec.shape) == answered.ndim:
        return spec
    batch_varies = any(i.shape and i.shape[0] == -1 for i in inputs)
    shape = [(-1 if i == 0 and batch_varies else d) for i, d in enumerate(answered.shape)]
    return TensorSpec(name=spec.name, datatype=spec.datatype, shape=[max(d, 1) if d != -1 else -1 for d in shape])
