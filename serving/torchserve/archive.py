"""``lumenserve archive REPO/NAME/VERSION --out MODEL_STORE``: a TorchServe ``.mar`` of a bundle.

The archive holds our handler (``serving/torchserve/handler.py`` as ``handler.py``) and the
whole bundle folder as ``lumenserve_bundle/NAME/VERSION/`` (manifest, ONNX, TorchScript,
safetensors for explanations, tokenizer), so the worker verifies checksums with
``load_bundle`` exactly as lumenserve's own server does. ``config.properties`` next to it is
(re)written with this model's batching; other models already in the store are kept.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import click

import lumenserve.env  # noqa: F401  (scratch dirs before the archiver writes to TMPDIR)
from lumenserve.bundle import Bundle, BundleError, check_model_name, load_bundle
from serving.settings import RuntimeName
from serving.torchserve.config import (
    BUNDLE_DIR_IN_MAR,
    HANDLER_CONFIG,
    ModelEntry,
    Ports,
    TorchServeConfig,
    read_config,
)
from serving.torchserve.launcher import start_command, torchserve_env

HANDLER_FILE = Path(__file__).with_name("handler.py")
_PORT = click.IntRange(1, 65535)


def build_archive(
    bundle: Bundle, model_store: Path, *, model_name: str | None = None, runtime: RuntimeName = "onnx"
) -> Path:
    """Write ``MODEL_STORE/<name>.mar`` for ``bundle`` with torch-model-archiver; returns its path."""
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    name = model_name or bundle.name
    model_store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lumenserve-mar-") as staging:
        extra = Path(staging) / "extra"
        shutil.copytree(bundle.root, extra / BUNDLE_DIR_IN_MAR / bundle.name / str(bundle.version))
        (extra / HANDLER_CONFIG).write_text(json.dumps({"runtime": runtime}) + "\n")
        config = ModelArchiverConfig(
            model_name=name,
            handler=str(HANDLER_FILE),
            version=str(bundle.version),
            extra_files=str(extra),
            export_path=str(model_store),
            archive_format="default",
            force=True,
        )
        generate_model_archive(config)
    mar = model_store / f"{name}.mar"
    if not mar.is_file():  # pragma: no cover - the archiver raises before this
        raise click.ClickException(f"torch-model-archiver wrote no {mar}")
    return mar


def archive_bundle(
    bundle_dir: Path,
    model_store: Path,
    *,
    batch_size: int = 1,
    max_batch_delay_ms: int = 5,
    workers: int = 1,
    ports: Ports | None = None,
    model_name: str | None = None,
    runtime: RuntimeName = "onnx",
) -> tuple[Path, TorchServeConfig]:
    """Archive the bundle and merge it into ``MODEL_STORE/config.properties``."""
    bundle = load_bundle(bundle_dir)
    if model_name is not None:
        check_model_name(model_name)
    model_store = model_store.resolve()
    mar = build_archive(bundle, model_store, model_name=model_name, runtime=runtime)
    entry = ModelEntry(
        name=model_name or bundle.name,
        version=str(bundle.version),
        mar_name=mar.name,
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        workers=workers,
    )
    config = read_config(model_store).with_model(entry)
    if ports is not None:
        config = replace(config, ports=ports)
    config.write()
    return mar, config


def _printable_start(config: TorchServeConfig) -> str:
    env = torchserve_env(config.model_store / "tmp")
    exports = " ".join(
        f"{k}={shlex.quote(env[k])}" for k in ("ORT_DISABLE_TELEMETRY", "TEMP", "TMPDIR", "LOG_LOCATION")
    )
    return f"mkdir -p {shlex.quote(env['TEMP'])} && {exports} " + shlex.join(start_command(config))


@click.command("archive")
@click.argument(
    "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="REPO/NAME/VERSION"
)
@click.option("--out", "model_store", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="TorchServe model store folder (created if missing).")  # fmt: skip
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1, 1024),
              help="TorchServe batch_size for this model.")  # fmt: skip
@click.option("--max-batch-delay", "max_batch_delay_ms", default=5, show_default=True, type=click.IntRange(0, 60_000),
              help="TorchServe max_batch_delay in milliseconds.")  # fmt: skip
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes for this model (one is fastest on 2 cores).")  # fmt: skip
@click.option("--runtime", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True,
              help="Runtime the handler runs the bundle with.")  # fmt: skip
@click.option("--model-name", default=None, help="Name in TorchServe (default: the bundle's name).")
@click.option("--inference-port", type=_PORT, default=None, help="HTTP inference port (default 8080 or as configured).")
@click.option("--management-port", type=_PORT, default=None, help="HTTP management port (default 8081).")
@click.option("--metrics-port", type=_PORT, default=None, help="Prometheus metrics port (default 8082).")
@click.option("--grpc-inference-port", type=_PORT, default=None, help="gRPC inference port (default 7070).")
@click.option("--grpc-management-port", type=_PORT, default=None, help="gRPC management port (default 7071).")
def archive_command(
    bundle_dir: Path,
    model_store: Path,
    batch_size: int,
    max_batch_delay_ms: int,
    workers: int,
    runtime: RuntimeName,
    model_name: str | None,
    inference_port: int | None,
    management_port: int | None,
    metrics_port: int | None,
    grpc_inference_port: int | None,
    grpc_management_port: int | None,
) -> None:
    """Build a TorchServe .mar of a lumenserve bundle and write a matching config.properties."""
    current = read_config(model_store.resolve()).ports
    ports = Ports(
        inference=inference_port or current.inference,
        management=management_port or current.management,
        metrics=metrics_port or current.metrics,
        grpc_inference=grpc_inference_port or current.grpc_inference,
        grpc_management=grpc_management_port or current.grpc_management,
    )
    try:
        mar, config = archive_bundle(
            bundle_dir,
            model_store,
            batch_size=batch_size,
            max_batch_delay_ms=max_batch_delay_ms,
            workers=workers,
            ports=ports,
            model_name=model_name,
            runtime=runtime,
        )
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {mar}")
    click.echo(f"wrote {config.model_store / 'config.properties'}")
    click.echo("start TorchServe with:")
    click.echo(f"  {_printable_start(config)}")
    click.echo("stop it with:")
    env = torchserve_env(config.model_store / "tmp")
    click.echo(f"  TMPDIR={shlex.quote(env['TMPDIR'])} torchserve --stop")
