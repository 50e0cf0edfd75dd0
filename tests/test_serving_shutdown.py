"""SIGTERM during load: every accepted request is answered, then the process exits in time."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.hardening.metrics import scrape, value
from tests.support.clients import closed_loop
from tests.support.server import ServerProcess, spawn_pool
from tests.support.waiting import wait_until

GRACE = 8.0
# What a client may see from a request the server never accepted: its port already closed, a
# gRPC call refused by the stopping server (UNAVAILABLE: never processed, safe to retry), or a
# keep-alive HTTP connection closed before the request was read (geventhttpclient says
# "HTTPConnectionClosed", http.client "RemoteDisconnected").
# Whether an accepted request was lost is decided by the server's own accounting (the
# "drained" line) below.
NOT_ACCEPTED = ("connection refused", "failed to connect", "unavailable", "remotedisconnected",
                "connection reset", "connectionreseterror", "connectionclosed")  # fmt: skip


@pytest.mark.slow  # seconds of real waiting: make test runs it, test-fast does not
def test_sigterm_during_load_loses_no_accepted_request(model_repo: Path) -> None:
    env = {"LUMENSERVE_GRACE_PERIOD": str(GRACE), "LUMENSERVE_MAX_QUEUE_DELAY": "0.05"}  # requests sit queued
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    inputs = {"input": (x, "FP32")}
    with spawn_pool() as worker:
        server = ServerProcess(model_repo, "--models", "tiny-image", "--log-level", "info", env=env).start()
        grpc_results = [worker.submit(closed_loop, "grpc", server.grpc_url, "tiny-image", inputs, 3.0)
                        for _ in range(1)]  # fmt: skip
        http_results: list[list[tuple[str, str, float]]] = []

        def http_caller() -> None:
            http_results.append(closed_loop("http", server.http_url, "tiny-image", inputs, 3.0))

        threads = [threading.Thread(target=http_caller) for _ in range(6)]
        for thread in threads:
            thread.start()
        wait_until(lambda: answered(server) > 10, 60, "requests answered under load", details=server.log_tail)
        sent_at = time.time()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        code = server.stop(timeout=GRACE + 5)
        exited_after = time.time() - sent_at
        for thread in threads:
            thread.join(30)
        results = [r for future in grpc_results for r in future.result(60)] + [r for rs in http_results for r in rs]
    assert code == 0, "".join(server.lines[-30:])
    assert any("drained: 0 accepted requests left unanswered" in line for line in server.lines), server.lines[-10:]
    assert exited_after < GRACE, exited_after
    ok_before = [r for r in results if r[0] == "OK" and r[2] < sent_at]
    ok_after = [r for r in results if r[0] == "OK" and r[2] >= sent_at]
    failures = [r for r in results if r[0] != "OK"]
    assert len(ok_before) > 10
    assert ok_after, "requests in flight at SIGTERM were answered"
    for status, message, finished in failures:
        assert finished >= sent_at, f"failure before SIGTERM: {status} {message}"
        text = f"{status} {message}".lower()
        assert any(word in text for word in NOT_ACCEPTED), f"an accepted request was lost: {status} {message}"


def answered(server: ServerProcess) -> float:
    return value(scrape(f"http://{server.http_url}"), "lumenserve_requests_total", model="tiny-image", status="OK")
