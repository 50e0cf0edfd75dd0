"""A TorchScript file -> a runtime-only bundle.

TorchScript keeps no input shapes, so input specs come from the task's preprocessing
(image, text) or from ``--input NAME:DATATYPE:SHAPE`` (tensor); output specs come from a
check run on generated inputs (recorded in ``imported.notes``).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lumenserve.bundle import Bundle, TensorSpec, finish_bundle, new_staging_dir, tree_artifacts
from lumenserve.bundle.manifest import ArtifactKind
from training.importer.options import ImportOptions, ImportSourceError, read_labels
from training.importer.tasks import check_image_input, image_input_shape, load_user_tokenizer, text_preprocessing
from training.importer.write import (
    CHECK_BATCH,
    class_count,
    concrete_shape,
    datatype_of,
    generated_input,
    import_record,
    labels_for,
    spec_dicts,
    staged,
)


def _load(path: Path, source: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise ImportSourceError(
            f"{source}: torch.jit.load cannot read it ({first[:160]}); save it with torch.jit.save"
        ) from exc


def _argument_names(module: torch.jit.ScriptModule) -> list[str]:
    """Names of forward's arguments (without self)."""
    schema: Any = module.forward.schema  # type: ignore[attr-defined]
    return [a.name for a in schema.arguments[1:]]


def _as_outputs(answer: Any, task: str, source: str) -> dict[str, np.ndarray]:
    """Tensor -> logits/output_0; tuple/list -> output_i; dict -> its keys."""
    if isinstance(answer, torch.Tensor):
        return {"logits" if task != "tensor" else "output_0": answer.detach().numpy()}
    if isinstance(answer, tuple | list) and all(isinstance(t, torch.Tensor) for t in answer):
        return {f"output_{i}": t.detach().numpy() for i, t in enumerate(answer)}
    if isinstance(answer, dict) and all(isinstance(t, torch.Tensor) for t in answer.values()):
        return {str(k): t.detach().numpy() for k, t in answer.items()}
    raise ImportSourceError(
        f"{source}: forward returns {type(answer).__name__}; return a tensor, a tuple of tensors or a dict of tensors"
    )


def import_torchscript(source: Path, repo: Path, name: str, options: ImportOptions) -> Bundle:
    src = str(source)
    module = _load(source, src)
    arg_names = _argument_names(module)
    task = options.task or "tensor"
    labels = read_labels(options.labels_file) if options.labels_file else None
    preprocessing: dict[str, Any] | None = None
    tokenizer: Any = None
    notes: list[str] = []
    if task == "image-classification":
        pre = options.image.preprocessing(src)
        inputs = [
            TensorSpec(name=arg_names[0] if arg_names else "input", datatype="FP32", shape=image_input_shape(pre))
        ]
        feed = {inputs[0].name: check_image_input(src, inputs, pre)}
        preprocessing = pre.model_dump()
        notes.append(f"input spec from the image flags: {inputs[0].shape}")
    elif task == "text-classification":
        inputs = [TensorSpec(name=n, datatype="INT64", shape=[-1, -1]) for n in arg_names]
        tokenizer = load_user_tokenizer(options.tokenizer_dir, src)
        preprocessing, feed = text_preprocessing(src, inputs, options, tokenizer)
        notes.append(f"inputs {arg_names}: INT64 (batch, sequence) from the tokenizer")
    else:
        if not options.inputs:
            raise ImportSourceError(
                f"{source}: TorchScript keeps no input shapes; add --input NAME:DATATYPE:SHAPE for each of {arg_names}"
            )
        inputs = list(options.inputs)
        if [s.name for s in inputs] != arg_names[: len(inputs)]:
            raise ImportSourceError(
                f"{source}: --input names {[s.name for s in inputs]} do not match forward's arguments {arg_names};"
                f" give them in that order"
            )
        feed = {s.name: generated_input(s, concrete_shape(s), src, seed=i) for i, s in enumerate(inputs)}
        notes.append(f"input specs from --input; check run with variable batch axes {CHECK_BATCH}")
    with torch.no_grad():
        try:
            answer = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in feed.values()])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise ImportSourceError(
                f"{source}: the check run on generated inputs failed ({first[:200]}); check --input or the task flags"
            ) from exc
    check_outputs = _as_outputs(answer, task, src)
    batch_varies = any(s.shape and s.shape[0] == -1 for s in inputs)
    outputs = [
        {
            "name": n,
            "datatype": datatype_of(a, src),
            "shape": [-1 if i == 0 and batch_varies else d for i, d in enumerate(a.shape)],
        }
        for n, a in check_outputs.items()
    ]
    notes.append("output specs from the check run" + (" (axis 0 marked variable)" if batch_varies else ""))
    if task != "tensor":
        first_out = next(iter(check_outputs))
        labels = labels_for(
            src, class_count(src, first_out, check_outputs[first_out]), labels, str(options.labels_file)
        )
    staging = new_staging_dir(repo, name)
    with staged(staging):
        shutil.copyfile(source, staging / "model.torchscript")
        artifacts: list[tuple[str, ArtifactKind]] = [("model.torchscript", "torchscript")]
        if labels is not None and task != "tensor":
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
            outputs=outputs,
            preprocessing=preprocessing,
            imported=import_record("torchscript", source, feed, check_outputs, notes),
        )
