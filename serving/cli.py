"""``lumenserve serve``: flags override the environment and the config file (serving/settings.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from lumenserve.env import apply_omp_policy, limit_malloc_arenas


@click.command("serve")
@click.option("--repository", type=click.Path(path_type=Path), help="Model repository (REPO/NAME/VERSION bundles).")
@click.option("--models", multiple=True, help="Model to load (repeatable; default: every model in the repository).")
@click.option("--host", help="Bind address for both transports (default 127.0.0.1).")
@click.option("--http-port", type=int, help="HTTP port (default 8080; 0 picks a free one).")
@click.option("--grpc-port", type=int, help="gRPC port (default 8081; 0 picks a free one).")
@click.option("--device", help="auto | cpu | cuda | cuda:N (default auto).")
@click.option("--runtime", type=click.Choice(["onnx", "torchscript"]), help="Default runtime (default onnx).")
@click.option("--max-batch-size", type=int, help="Most rows per model call.")
@click.option("--max-queue-delay", type=float, help="Seconds to wait for more requests before a batch runs.")
@click.option("--max-queue-size", type=int, help="Waiting requests per model before UNAVAILABLE/503.")
@click.option("--grace-period", type=float, help="Seconds SIGTERM waits for accepted requests.")
@click.option("--config", "config_file", type=click.Path(exists=True, path_type=Path), help="YAML or JSON settings.")
@click.option("--log-level", default="info", show_default=True, help="Python log level.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log lines as text or JSON (default text).")
@click.option("--access-log/--no-access-log", default=None, help="One log line per infer/explain request.")
def serve_command(config_file: Path | None, models: tuple[str, ...], log_level: str, **flags: Any) -> None:
    """Serve bundles over the Open Inference Protocol v2 (gRPC + HTTP) until SIGTERM."""
    import logging

    from serving.logs import configure_logging
    from serving.settings import load_settings

    settings = load_settings(config_file, models=list(models) or None, **flags)
    limit_malloc_arenas(settings.malloc_arenas)  # before any other thread allocates
    # before torch loads anywhere in this process
    apply_omp_policy("serve", wait_policy=settings.omp_wait_policy, spincount=settings.gomp_spincount)
    configure_logging(log_level, settings.log_format)
    import asyncio

    from serving.server import LumenServer, event_loop_factory

    async def main() -> None:
        server = LumenServer(settings)
        await server.serve_forever(on_ready=lambda s: click.echo(s.ready_line()))

    from lumenserve.bundle import BundleError
    from serving.errors import ServingError

    try:
        with asyncio.Runner(loop_factory=event_loop_factory(settings.event_loop)) as runner:
            runner.run(main())
    except (BundleError, ServingError, OSError, RuntimeError) as exc:  # bad repository, port taken, ...
        raise click.ClickException(f"lumenserve serve failed: {exc}") from exc
    # Drained: every accepted request is answered. What may still run is background work no
    # client waits for (the explain twin check, a warm-up); the interpreter would join those
    # threads at exit and push the exit past the grace period on a busy machine, so leave now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
