"""KServe and MLServer as children of the benchmark, each in its own venv, holding the
bundle's ONNX file. Cold start is the wall time from spawning the process until
``/v2/models/<name>/ready`` answers 200; the servers get SIGTERM when the benchmark dies
(``die_with_parent``) and listen on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.peers.venvs import ensure_venv
from bench.procstat import tree_cpu_s, tree_rss_bytes
from bench.servers import ServerStartError, free_port
from lumenserve.bundle import Bundle, ImagePreprocessing
from lumenserve.children import die_with_parent

HERE = Path(__file__).resolve().parent
PEERS = ("kserve", "mlserver")
PEER_ENV = {"ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class PeerProcess:
    """A running peer server; ``stop()`` sends SIGTERM to it (and its workers) and waits."""

    proc: subprocess.Popen[bytes]
    label: str
    model: str
    http_url: str
    grpc_target: str
    cold_start_s: float
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        return tree_rss_bytes(self.proc.pid)

    def cpu_s(self) -> float:
        return tree_cpu_s(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def write_model_config(bundle: Bundle, folder: Path) -> Path:
    """The JSON both peers' model code reads: ONNX path, preprocessing numbers, labels."""
    pre = bundle.manifest.preprocessing
    if not isinstance(pre, ImagePreprocessing) or pre.layout != "NCHW" or pre.channel_order != "RGB":
        raise ValueError(f"{bundle.name}: the peers serve image classifiers with RGB or L NCHW inputs only")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.json"
    config = {"onnx": str(bundle.path("onnx").resolve()), "resize_size": pre.resize_size, "crop_size": pre.crop_size,
              "mean": pre.mean, "std": pre.std, "labels": bundle.manifest.labels}  # fmt: skip
    path.write_text(json.dumps(config))
    return path


def start_peer(name: str, bundle: Bundle, work_dir: Path, *, log=print, timeout_s: float = 180.0) -> PeerProcess:  # type: ignore[no-untyped-def]
    """Install the peer's venv if needed, write its files under ``work_dir/name`` and start it."""
    python = ensure_venv(name, log)
    work_dir = work_dir.resolve()
    folder = work_dir / f"{name}-{bundle.name}"
    shutil.rmtree(folder, ignore_errors=True)
    config = write_model_config(bundle, folder)
    http_port, grpc_port = free_port(), free_port()
    env = dict(os.environ) | PEER_ENV | {"PYTHONPATH": str(folder if name == "mlserver" else HERE)}
    env.pop("VIRTUAL_ENV", None)
    if name == "kserve":
        # The per-request latency log line is off (lumenserve runs at --log-level warning too).
        cmd = [str(python), str(HERE / "kserve_server.py"), "--onnx_model_config", str(config),
               "--model_name", bundle.name, "--http_port", str(http_port), "--grpc_port", str(grpc_port),
               "--protocol", "v2", "--enable_latency_logging", "false"]  # fmt: skip
    elif name == "mlserver":
        for script in ("mlserver_runtime.py", "onnx_image_model.py"):
            shutil.copyfile(HERE / script, folder / script)
        settings = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
                    "metrics_port": free_port(), "debug": False}  # fmt: skip
        (folder / "settings.json").write_text(json.dumps(settings))
        model_settings = {"name": bundle.name, "implementation": "mlserver_runtime.OnnxImageRuntime",
                          "parameters": {"extra": {"config": str(config)}}}  # fmt: skip
        (folder / "model-settings.json").write_text(json.dumps(model_settings))
        cmd = [str(python), "-m", "mlserver.cli.main", "start", str(folder)]
    else:
        raise ValueError(f"unknown peer {name!r}: expected one of {PEERS}")
    log_path = work_dir / f"{name}-{bundle.name}.log"
    preexec = die_with_parent()

    def child_setup() -> None:  # its own process group, so stop() reaches MLServer's workers too
        os.setpgrp()
        if preexec is not None:
            preexec()

    with log_path.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=child_setup)  # fmt: skip
    server = PeerProcess(proc, name, bundle.name, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", 0.0,
                         log_path)  # fmt: skip
    ready_url = f"{server.http_url}/v2/models/{bundle.name}/ready"
    deadline = start + timeout_s
    with httpx.Client(timeout=2) as client:
        while time.perf_counter() < deadline and proc.poll() is None:
            try:
                if client.get(ready_url).status_code == 200:
                    server.cold_start_s = time.perf_counter() - start
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    server.stop(5)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise ServerStartError(f"{name} did not become ready within {timeout_s} s (exit {proc.returncode}):\n{tail}")
