"""``lumenserve import`` (a thin click layer over :func:`training.importer.import_model`)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import click

from lumenserve.bundle import BundleError
from lumenserve.env import apply_omp_policy


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: expected comma-separated numbers, e.g. 0.5,0.5,0.5") from exc


def _default_name(source: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", source.stem if source.is_file() else source.name).strip(".-") or "model"


@click.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--repository", required=True, type=click.Path(file_okay=False, path_type=Path), help="Model repository.")
@click.option("--name", help="Model name (default: the source's file or folder name).")
@click.option(
    "--from",
    "source_kind",
    type=click.Choice(["onnx", "torchscript", "hf", "torchvision"]),
    help="Source kind (default: detected).",
)
@click.option(
    "--task", type=click.Choice(["tensor", "image-classification", "text-classification"]), help="What the model does."
)
@click.option("--architecture", help="torchvision architecture of a weights file (e.g. resnet18).")
@click.option(
    "--labels",
    "labels_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Labels: one per line or a JSON list.",
)
@click.option("--image-size", type=int, help="Side of the square model input (center crop).")
@click.option(
    "--resize-size", type=int, help="Shorter side after resizing, before the crop (default image size / 0.875)."
)
@click.option("--mean", help="Per-channel mean after scaling to [0, 1], e.g. 0.5,0.5,0.5.")
@click.option("--std", help="Per-channel std, e.g. 0.5,0.5,0.5.")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), help="Axis order of the image input.")
@click.option("--channels", type=click.Choice(["RGB", "BGR", "L"]), help="Colour channels of the image input.")
@click.option(
    "--tokenizer",
    "tokenizer_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Tokenizer folder (save_pretrained).",
)
@click.option("--max-length", type=int, help="Tokens per text (default: the model's fixed length, else 128).")
@click.option(
    "--input",
    "input_specs",
    multiple=True,
    metavar="NAME:DATATYPE:SHAPE",
    help="TorchScript input, e.g. x:FP32:-1,3,224,224 (repeat per input).",
)
@click.option(
    "--tolerance", type=float, default=1e-4, show_default=True, help="Parity tolerance against the eager model."
)
def import_command(
    source: Path,
    repository: Path,
    name: str | None,
    source_kind: str | None,
    task: str | None,
    architecture: str | None,
    labels_file: Path | None,
    image_size: int | None,
    resize_size: int | None,
    mean: str | None,
    std: str | None,
    layout: str | None,
    channels: str | None,
    tokenizer_dir: Path | None,
    max_length: int | None,
    input_specs: tuple[str, ...],
    tolerance: float,
) -> None:
    """Import SOURCE "
    "(ONNX file, TorchScript file, Hugging Face folder or torchvision weights) as the next bundle version."""
    apply_omp_policy("train")  # before torch loads
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' load/save bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation notices
    from pydantic import ValidationError

    from training.export import ExportParityError
    from training.importer import ImportOptions, ImportSourceError, import_model
    from training.importer.options import ImageFlags, parse_input_spec
    from training.importer.write import describe

    try:
        options = ImportOptions.model_validate(
            {
                "source_kind": source_kind,
                "task": task,
                "architecture": architecture,
                "labels_file": labels_file,
                "image": ImageFlags(
                    image_size=image_size,
                    resize_size=resize_size,
                    mean=_floats(mean),
                    std=_floats(std),
                    layout=layout,  # type: ignore[arg-type]
                    channels=channels,  # type: ignore[arg-type]
                ),
                "tokenizer_dir": tokenizer_dir,
                "max_length": max_length,
                "inputs": [parse_input_spec(s) for s in input_specs],
                "tolerance": tolerance,
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise click.UsageError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        bundle = import_model(source, repository, name or _default_name(source), options)
    except (ImportSourceError, BundleError, ExportParityError) as exc:
        raise click.ClickException(str(exc).replace("\n", " ")) from exc
    click.echo(describe(bundle))
