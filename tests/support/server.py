"""A real ``lumenserve serve`` process on port 0 for the tests that talk to it from outside.

The server binds port 0 for HTTP and gRPC and reports the ports it got in its ready line,
so no test picks ports for it. The ``server`` fixture in ``tests/conftest.py`` starts one per
module from the module's ``server_options`` fixture; tests that stop or kill their server
(drain, shutdown, soak) start their own with ``with ServerProcess(...)``.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-repository-token"
READY = re.compile(r"lumenserve ready: https?://[^:]+:(\d+) grpc=[^:]+:(\d+)")


@dataclass(frozen=True)
class ServerOptions:
    """How a module's ``server`` is started: extra ``lumenserve serve`` arguments and environment."""

    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    repo: Path | None = None  # None: the session's ``model_repo``


class ServerProcess:
    """``python -m lumenserve serve`` on port 0; its output is kept in ``lines``."""

    def __init__(self, repo: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.repo = repo
        self.args = args
        self.env = {**os.environ, "LUMENSERVE_REPOSITORY_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.http_port = self.grpc_port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 120) -> ServerProcess:
        command = [sys.executable, "-m", "lumenserve", "serve", "--repository", str(self.repo)]
        command += ["--http-port", "0", "--grpc-port", "0", "--log-level", "warning", *self.args]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or not self.http_port:
            self.stop(signal.SIGKILL)
            raise RuntimeError("server did not become ready:\n" + self.log_tail())
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = READY.search(line)
            if match:
                self.http_port, self.grpc_port = int(match.group(1)), int(match.group(2))
                self._ready.set()
        self._ready.set()

    def log_tail(self, count: int = 40) -> str:
        return "".join(self.lines[-count:])

    def wait_for_line(self, text: str, timeout: float = 10) -> str:
        """The first output line containing ``text`` (lines reach the reader thread a moment late)."""
        return wait_until(lambda: next((line for line in self.lines if text in line), None), timeout,
                          f"{text!r} in the server output", details=self.log_tail)  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_pool() -> ProcessPoolExecutor:
    """A separate client interpreter for load that must not share the test process's CPU time
    and GIL with what the test itself measures (drain, soak, shutdown under load)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
