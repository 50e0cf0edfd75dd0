"""Shared by every source kind: datatypes, generated check inputs, the check run record,
labels against the model's output, and publishing with nothing left behind on failure."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lumenserve.bundle import Bundle, TensorSpec
from lumenserve.bundle.manifest import Datatype, SourceKind
from training.importer.options import ImportSourceError

# OIP v2 datatype -> numpy dtype (BF16 has no numpy dtype here: refused where a run needs it)
NUMPY_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}  # fmt: skip
_FROM_NUMPY: dict[str, Datatype] = {np.dtype(v).str: k for k, v in NUMPY_DTYPES.items() if k != "BYTES"}  # type: ignore[misc]

CHECK_BATCH = 2
"""Batch size of the check run where the batch axis is variable."""
CHECK_DIM = 8
"""Size given to any other variable axis in the check run."""


def datatype_of(array: np.ndarray, source: str) -> Datatype:
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        return "BYTES"
    found = _FROM_NUMPY.get(array.dtype.str)
    if found is None:
        raise ImportSourceError(
            f"{source}: the model answers dtype {array.dtype}, which has no Open Inference Protocol datatype"
        )
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def concrete_shape(spec: TensorSpec, fixed: Mapping[int, int] | None = None) -> list[int]:
    """Variable dims filled in: axis 0 -> CHECK_BATCH, ``fixed[axis]`` where given, else CHECK_DIM."""
    fixed = fixed or {}
    return [d if d != -1 else fixed.get(i, CHECK_BATCH if i == 0 else CHECK_DIM) for i, d in enumerate(spec.shape)]


def generated_input(spec: TensorSpec, shape: Sequence[int], source: str, seed: int = 0) -> np.ndarray:
    """Random values of the spec's datatype: normal floats, small non-negative ints, random bools."""
    rng = np.random.default_rng(seed)
    dt = spec.datatype
    if dt == "BF16":
        raise ImportSourceError(
            f"{source}: input {spec.name!r} is BF16, which the check run cannot generate; use FP16 or FP32 inputs"
        )
    if dt == "BYTES":
        return np.array([f"text {i}" for i in range(int(np.prod(shape)))], dtype=np.object_).reshape(shape)
    if dt == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dt.startswith(("INT", "UINT")):
        return rng.integers(0, 4, size=shape).astype(NUMPY_DTYPES[dt])  # small: safe as indices
    return rng.standard_normal(size=shape).astype(NUMPY_DTYPES[dt])


def spec_of(name: str, array: np.ndarray, source: str) -> dict[str, Any]:
    return {"name": name, "datatype": datatype_of(array, source), "shape": list(array.shape)}


def import_record(
    kind: SourceKind,
    source: Path,
    check_inputs: Mapping[str, np.ndarray],
    check_outputs: Mapping[str, np.ndarray],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The manifest's ``imported`` field."""
    return {
        "source_kind": kind,
        "source": source.name,
        "source_sha256": sha256_of(source) if source.is_file() else None,
        "check_inputs": [spec_of(n, a, str(source)) for n, a in check_inputs.items()],
        "check_outputs": [spec_of(n, a, str(source)) for n, a in check_outputs.items()],
        "notes": list(notes),
    }


def class_count(source: str, name: str, scores: np.ndarray) -> int:
    """Number of classes in a (batch, classes) score output."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ImportSourceError(
            f"{source}: output {name!r} has shape {list(scores.shape)}, not (batch, classes); "
            "a classifier's first output must hold the class scores (or import with --task tensor)"
        )
    return int(scores.shape[1])


def labels_for(source: str, classes: int, labels: list[str] | None, labels_source: str) -> list[str]:
    """The given labels, checked against the output; class indices as names when none are given."""
    if labels is None:
        return [str(i) for i in range(classes)]
    if len(labels) != classes:
        raise ImportSourceError(
            f"{labels_source}: {len(labels)} labels but {source} outputs {classes} classes; give one label per class"
        )
    return labels


@contextlib.contextmanager
def repository_unchanged_on_failure(repo: Path, name: str) -> Iterator[None]:
    """Remove REPO and REPO/NAME again when they were created by a failed import (the staging
    folder itself is removed by whoever staged)."""
    created = [p for p in (repo, repo / name) if not p.exists()]
    try:
        yield
    except BaseException:
        for folder in reversed(created):
            for staging in folder.glob(".staging-*") if folder.is_dir() else ():
                shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


@contextlib.contextmanager
def staged(staging: Path) -> Iterator[Path]:
    """Yield ``staging``; remove it when the block fails (finish_bundle renames it on success)."""
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def describe(bundle: Bundle) -> str:
    m = bundle.manifest
    ins = ", ".join(f"{t.name} {t.datatype} {t.shape}" for t in m.inputs)
    outs = ", ".join(f"{t.name} {t.datatype} {t.shape}" for t in m.outputs)
    parity = "; parity " + ", ".join(f"{p.runtime} {p.max_abs_diff:.1e}" for p in m.parity) if m.parity else ""
    notes = "".join(f"\n  note: {n}" for n in (m.imported.notes if m.imported else []))
    return f"imported {bundle.root} ({m.task}; inputs {ins}; outputs {outs}{parity}){notes}"


def spec_dicts(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [s.model_dump() for s in specs]
