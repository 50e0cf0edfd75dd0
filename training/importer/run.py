"""``import_model``: detect the source kind, import it, leave the repository unchanged on failure."""

from __future__ import annotations

from pathlib import Path

from lumenserve.bundle import Bundle, check_model_name
from training.importer.detect import detect_source
from training.importer.options import ImportOptions
from training.importer.write import repository_unchanged_on_failure


def import_model(source: str | Path, repo: str | Path, name: str, options: ImportOptions | None = None) -> Bundle:
    """Import ``source`` as the next version of ``REPO/NAME`` (a verified bundle)."""
    options = options or ImportOptions()
    source, repo = Path(source), Path(repo)
    check_model_name(name)
    kind = options.source_kind or detect_source(source, options.architecture)
    with repository_unchanged_on_failure(repo, name):
        if kind == "onnx":
            from training.importer.onnx_source import import_onnx

            return import_onnx(source, repo, name, options)
        if kind == "torchscript":
            from training.importer.torchscript_source import import_torchscript

            return import_torchscript(source, repo, name, options)
        if kind == "hf":
            from training.importer.hf_source import import_hf

            return import_hf(source, repo, name, options)
        from training.importer.torchvision_source import import_torchvision

        return import_torchvision(source, repo, name, options)
