"""Which kind of source a path holds, from its content (``--from`` overrides)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from lumenserve.bundle.manifest import SourceKind
from training.importer.options import ImportSourceError

PICKLE_FIX = "save a state dict as safetensors (safetensors.torch.save_file) or a model with torch.jit.save"
_PICKLE_HEADS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def is_torchscript_archive(path: Path) -> bool:
    """A TorchScript archive is a zip with ``code/``; a ``torch.save`` zip has none."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def is_safetensors(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"  # 8-byte little-endian header length, then JSON


def detect_source(path: Path, architecture: str | None) -> SourceKind:
    if not path.exists():
        raise ImportSourceError(
            f"{path}: no such file or folder;"
            f" give an ONNX file, a TorchScript file, a Hugging Face folder or a weights file"
        )
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        raise ImportSourceError(f"{path}: a folder without config.json; give a Hugging Face save_pretrained folder")
    if architecture is not None:
        return "torchvision"
    if zipfile.is_zipfile(path):
        if is_torchscript_archive(path):
            return "torchscript"
        raise ImportSourceError(
            f"{path}: a torch.save pickle, which is never loaded;"
            f" {PICKLE_FIX} (with --architecture for torchvision weights)"
        )
    with path.open("rb") as fh:
        head = fh.read(2)
    if head in _PICKLE_HEADS:
        raise ImportSourceError(f"{path}: a pickle, which is never loaded; {PICKLE_FIX}")
    if is_safetensors(path):
        raise ImportSourceError(
            f"{path}: safetensors weights without an architecture; add --architecture NAME (a torchvision model)"
        )
    if path.suffix.lower() == ".onnx" or _parses_as_onnx(path):
        return "onnx"
    raise ImportSourceError(
        f"{path}: not an ONNX file, TorchScript archive or weights file; pass --from to say what it is"
    )


def _parses_as_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return len(model.graph.node) > 0
