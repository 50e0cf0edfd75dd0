"""Start and stop a real TorchServe on a model store written by ``lumenserve archive``.

TorchServe's ``torchserve --start`` spawns the Java frontend and returns; the frontend
spawns one Python worker per model worker. The pid file lives in ``$TMPDIR`` and
``torchserve --stop`` only signals the frontend, so :meth:`TorchServe.stop` waits for the
frontend and every worker it had to be gone and reports any survivor.

Environment for the whole tree (workers inherit the frontend's environment):
``ORT_DISABLE_TELEMETRY=1`` (config.properties cannot set worker variables), and
``TEMP``/``TMPDIR`` plus ``LOG_LOCATION``/``METRICS_LOCATION`` inside a scratch folder so
nothing lands in ``/tmp`` or the current directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from serving.torchserve.config import CONFIG_NAME, TorchServeConfig

PID_FILE = ".model_server.pid"


def torchserve_executable() -> str:
    """``torchserve`` next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).with_name("torchserve")
    if local.is_file():
        return str(local)
    found = shutil.which("torchserve")
    if found is None:
        raise FileNotFoundError("torchserve is not installed (pip install torchserve==0.12.*)")
    return found


def torchserve_env(scratch: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to start TorchServe with (the workers inherit it)."""
    env = dict(os.environ if base is None else base)
    scratch = scratch.resolve()
    env.update(
        ORT_DISABLE_TELEMETRY="1",
        TEMP=str(scratch),
        TMPDIR=str(scratch),
        TMP=str(scratch),
        LOG_LOCATION=str(scratch / "logs"),
        METRICS_LOCATION=str(scratch / "logs"),
    )
    return env


def start_command(config: TorchServeConfig) -> list[str]:
    """The documented start line: no config snapshots, token auth off, every archive loaded."""
    models = [f"{m.name}={m.mar_name}" for m in config.models]
    return [
        "torchserve",
        "--start",
        "--ncs",
        "--ts-config",
        str(config.model_store / CONFIG_NAME),
        "--model-store",
        str(config.model_store),
        *(["--models", *models] if models else []),
        "--disable-token-auth",
    ]


class TorchServeError(RuntimeError):
    """TorchServe did not come up, or did not go away."""


@dataclass
class TorchServe:
    """One TorchServe process tree for ``config``; scratch files go to ``scratch``."""

    config: TorchServeConfig
    scratch: Path
    log_path: Path = field(init=False)
    _procs: list[psutil.Process] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.scratch = self.scratch.resolve()
        self.log_path = self.scratch / "torchserve.log"

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.config.ports.metrics}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.config.ports.grpc_inference}"

    def _run_script(self, *args: str) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        cmd = [torchserve_executable(), *args]
        with self.log_path.open("ab") as log:
            subprocess.run(cmd, env=torchserve_env(self.scratch), stdout=log, stderr=subprocess.STDOUT, check=True)

    def frontend_pid(self) -> int | None:
        pid_file = self.scratch / PID_FILE
        if not pid_file.is_file():
            return None
        text = pid_file.read_text().strip()
        return int(text) if text.isdigit() else None

    def processes(self) -> list[psutil.Process]:
        """The Java frontend and its (worker) descendants that are alive now."""
        pid = self.frontend_pid()
        if pid is None:
            return []
        try:
            frontend = psutil.Process(pid)
            return [frontend, *frontend.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def start(self, timeout_s: float = 90.0) -> None:
        """Start TorchServe and wait until every configured model has a READY worker."""
        start = start_command(self.config)
        self._run_script(*start[1:])
        deadline = time.monotonic() + timeout_s
        pending = {m.name for m in self.config.models}
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                self._procs = self.processes() or self._procs
                if self._procs and not self._procs[0].is_running():
                    break
                pending = {name for name in pending if not self._model_ready(client, name)}
                if not pending and self._pinged(client):
                    self._procs = self.processes()
                    return
                time.sleep(0.25)
        log_tail = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
        self.stop()
        raise TorchServeError(f"TorchServe not ready within {timeout_s} s (waiting for {sorted(pending)}):\n{log_tail}")

    def _pinged(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.inference_url}/ping").status_code == 200
        except httpx.HTTPError:
            return False

    def _model_ready(self, client: httpx.Client, name: str) -> bool:
        try:
            response = client.get(f"{self.management_url}/models/{name}")
        except httpx.HTTPError:
            return False
        if response.status_code != 200:
            return False
        described = response.json()
        workers = described[0].get("workers", []) if described else []
        return any(w.get("status") == "READY" for w in workers)

    def stop(self, timeout_s: float = 30.0) -> list[psutil.Process]:
        """``torchserve --stop``, then wait for the frontend and workers; returns survivors."""
        procs = self.processes() or [p for p in self._procs if p.is_running()]
        if self.frontend_pid() is not None:
            self._run_script("--stop")
        _gone, alive = psutil.wait_procs(procs, timeout=timeout_s)
        self._procs = []
        return list(alive)

    def __enter__(self) -> TorchServe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
