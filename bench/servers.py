"""The servers under test, as real subprocesses: ``lumenserve serve`` and TorchServe 0.12.

Cold start is the wall time from spawning the process to ready: for lumenserve the ready
line it prints once every model is loaded and warmed (checked against
``/v2/health/ready``); for TorchServe until its model has a READY worker and ``/ping``
answers (:class:`serving.torchserve.launcher.TorchServe`, which polls every 0.25 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from lumenserve.bundle import Bundle
from lumenserve.children import die_with_parent
from serving.torchserve.config import ModelEntry, Ports, read_config
from serving.torchserve.launcher import TorchServe

READY = re.compile(r"lumenserve ready: http://(?P<http>\S+) grpc=(?P<grpc>\S+)")
BUILTIN_MODEL = "builtin-image-classifier"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerStartError(RuntimeError):
    """A server under test did not become ready."""


@dataclass
class LumenProcess:
    """A running ``lumenserve serve``; ``stop()`` sends SIGTERM and waits."""

    proc: subprocess.Popen[bytes]
    http_url: str
    grpc_target: str
    cold_start_s: float
    log_path: Path
    label: str

    def rss_bytes(self) -> int:
        try:
            return int(psutil.Process(self.proc.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            return 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 40.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def start_lumenserve(
    repository: Path,
    model: str | Sequence[str],
    log_dir: Path,
    *,
    label: str = "lumenserve",
    env_extra: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    timeout_s: float = 120.0,
) -> LumenProcess:
    """Spawn ``python -m lumenserve serve`` (``model``: one name or several) on free ports and
    wait for its ready line."""
    models = [model] if isinstance(model, str) else list(model)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{label}.log"
    env = dict(os.environ) | {"ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"} | (env_extra or {})
    cmd = [sys.executable, "-m", "lumenserve", "serve", "--repository", str(repository),
           *(arg for name in models for arg in ("--models", name)),
           "--http-port", "0", "--grpc-port", "0", "--log-level", "warning", *extra_args]  # fmt: skip
    with log_path.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent())
    deadline = start + timeout_s
    while time.perf_counter() < deadline:
        match = READY.search(log_path.read_text(errors="replace"))
        if match:
            ready_s = time.perf_counter() - start
            server = LumenProcess(proc, f"http://{match['http']}", match["grpc"], ready_s, log_path, label)
            with httpx.Client(timeout=5) as client:
                if client.get(f"{server.http_url}/v2/health/ready").status_code != 200:
                    server.stop()
                    raise ServerStartError(f"{label}: printed its ready line but /v2/health/ready is not 200")
            return server
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise ServerStartError(f"{label} did not become ready within {timeout_s} s (exit {proc.returncode}):\n{tail}")


@dataclass
class TorchServeSetup:
    """A model store holding our handler's archive and, for image models, the built-in one."""

    store: Path
    ours: str
    builtin: str | None
    servers: list[TorchServe] = field(default_factory=list)
    entries: tuple[ModelEntry, ...] = ()
    """Every archive of the store (``start`` rewrites config.properties with a subset)."""

    def __post_init__(self) -> None:
        self.entries = self.entries or read_config(self.store).models

    def start(self, scratch: Path, models: list[str] | None = None) -> tuple[TorchServe, float]:
        """Start TorchServe with ``models`` (default all) on fresh ports; returns it and its cold start."""
        config = read_config(self.store)
        ports = Ports(free_port(), free_port(), free_port(), free_port(), free_port())
        wanted = [m for m in self.entries if models is None or m.name in models]
        config = config.__class__(model_store=self.store, ports=ports, models=tuple(wanted), extra=config.extra)
        config.write()
        server = TorchServe(config, scratch)
        start = time.perf_counter()
        server.start(timeout_s=180)
        cold = time.perf_counter() - start
        self.servers.append(server)
        return server, cold

    def rss_bytes(self, server: TorchServe) -> int:
        total = 0
        for p in server.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def stop_all(self) -> list[str]:
        """Stop every TorchServe started here; returns a note per survivor."""
        notes = []
        for server in self.servers:
            survivors = server.stop()
            notes += [f"TorchServe process {p.pid} still running" for p in survivors]
        self.servers.clear()
        return notes


def prepare_torchserve(bundle: Bundle, store: Path, *, batch_size: int, max_batch_delay_ms: int) -> TorchServeSetup:
    """Archive the bundle with our handler (ONNX Runtime) and, for image models, with
    TorchServe's built-in ``image_classifier`` on the bundle's TorchScript file."""
    from serving.torchserve.archive import archive_bundle

    store.mkdir(parents=True, exist_ok=True)
    archive_bundle(bundle.root, store, batch_size=batch_size, max_batch_delay_ms=max_batch_delay_ms)
    builtin = None
    # image_classifier always asks torch.topk for 5 classes: it cannot serve fewer.
    if bundle.manifest.task == "image-classification" and len(bundle.manifest.labels) >= 5:
        builtin = _archive_builtin(bundle, store, batch_size=batch_size, max_batch_delay_ms=max_batch_delay_ms)
    return TorchServeSetup(store=store.resolve(), ours=bundle.name, builtin=builtin)


def _archive_builtin(bundle: Bundle, store: Path, *, batch_size: int, max_batch_delay_ms: int) -> str:
    """``image_classifier`` + the TorchScript file + ``index_to_name.json``, as its docs say."""
    import shutil
    import tempfile

    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    with tempfile.TemporaryDirectory(prefix="bench-mar-", dir=store) as staging:
        labels = Path(staging) / "index_to_name.json"
        labels.write_text(json.dumps({str(i): name for i, name in enumerate(bundle.manifest.labels)}))
        scripted = Path(staging) / "model.pt"  # its base handler loads TorchScript only from *.pt
        shutil.copyfile(bundle.path("torchscript"), scripted)
        config = ModelArchiverConfig(
            model_name=BUILTIN_MODEL,
            handler="image_classifier",
            serialized_file=str(scripted),
            extra_files=str(labels),
            version="1",
            export_path=str(store),
            archive_format="default",
            force=True,
        )
        generate_model_archive(config)
    entry = ModelEntry(
        name=BUILTIN_MODEL,
        version="1",
        mar_name=f"{BUILTIN_MODEL}.mar",
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
    )
    read_config(store.resolve()).with_model(entry).write()
    return BUILTIN_MODEL
