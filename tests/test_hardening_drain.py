"""Graceful drain: SIGTERM to ``lumenserve serve`` while 100 requests (50 HTTP + 50 gRPC) are in flight.

The batcher holds requests for ``max_queue_delay`` = 1 s, so all 100 are provably inside the
server (the ``lumenserve_inflight_requests`` gauge reads 100) when the signal arrives.
Readiness (gRPC health ``""``, watched on a stream opened before) must turn NOT_SERVING,
every request must be answered correctly, and the process must exit before the grace period.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.hardening.grpc_load import flood, health_watch
from tests.hardening.metrics import parse, value
from tests.hardening.payloads import good_image_tensor
from tests.hardening.wire import Call, grpc_calls, http_answer, http_body, tensor_input
from tests.support.server import ServerProcess

GRACE = 20.0
PER_TRANSPORT = 50
ATTEMPTS = 3
IMAGE = good_image_tensor(21)  # (1, 3, 32, 32)
NORMAL = Call("tiny-image", [tensor_input("input", IMAGE, "FP32")], outputs=["logits"])


async def burst_and_sigterm(server: ServerProcess, workers: ProcessPoolExecutor) -> tuple[Any, ...]:
    """Send 50 HTTP + 50 gRPC requests; once all 100 are inside the server, SIGTERM it.

    On a loaded machine the burst may straddle a batch window (some requests answered before the
    last arrives); then the burst is answered normally and repeated, at most ATTEMPTS times.
    """
    assert server.proc is not None
    proc = server.proc
    base = f"http://{server.http_url}"
    body, headers = http_body(NORMAL)
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=PER_TRANSPORT, max_keepalive_connections=PER_TRANSPORT)
    async with (
        httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client,
        httpx.AsyncClient(base_url=base, timeout=10) as probe,
    ):

        async def inflight() -> float:
            samples = parse((await probe.get("/metrics")).text)
            return value(samples, "lumenserve_inflight_requests", model="tiny-image")

        seen: list[float] = []
        for _ in range(ATTEMPTS):
            while await inflight() > 0:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.1)  # no batch window open
            await asyncio.gather(*(client.get("/v2/health/live") for _ in range(PER_TRANSPORT)))
            posts = [
                asyncio.create_task(client.post("/v2/models/tiny-image/infer", content=body, headers=headers))
                for _ in range(PER_TRANSPORT)
            ]
            grpc_side = loop.run_in_executor(
                None, lambda: workers.submit(flood, server.grpc_url, NORMAL, PER_TRANSPORT).result(120)
            )
            count, end = 0.0, time.monotonic() + 3
            while count < 2 * PER_TRANSPORT and time.monotonic() < end:
                count = await inflight()
            seen.append(count)
            if count == 2 * PER_TRANSPORT:
                os.kill(proc.pid, signal.SIGTERM)
                signalled = time.monotonic()
                responses = list(await asyncio.gather(*posts))
                grpc_results = await grpc_side
                code = await loop.run_in_executor(None, proc.wait, GRACE + 10)
                exited = time.monotonic() - signalled
                assert code == 0, "".join(server.lines[-30:])
                return responses, grpc_results, count, exited
            await asyncio.gather(*posts)
            await grpc_side
    raise AssertionError(f"never had all 100 requests in flight at once (peaks {seen})")


@pytest.mark.slow
def test_sigterm_with_100_requests_in_flight(model_repo: Path, image_bundle) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    expected = ort.InferenceSession(str(image_bundle.path("onnx")), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"input": IMAGE}
    )[0]
    env = {
        "LUMENSERVE_MAX_QUEUE_DELAY": "1.0",
        "LUMENSERVE_MAX_BATCH_SIZE": "256",
        "LUMENSERVE_MAX_QUEUE_SIZE": "256",
        "LUMENSERVE_GRACE_PERIOD": str(GRACE),
    }
    server = ServerProcess(model_repo, "--models", "tiny-image", env=env).start()
    assert server.proc is not None
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as workers:
            warm = [workers.submit(grpc_calls, server.grpc_url, [NORMAL]) for _ in range(2)]  # both processes up
            assert [w.result(120)[0].status for w in warm] == ["OK", "OK"]
            watch = workers.submit(health_watch, server.grpc_url, GRACE + 60)
            responses, grpc_results, inflight, exited = asyncio.run(burst_and_sigterm(server, workers))
            health = watch.result(GRACE + 60)
    finally:
        server.stop(signal.SIGKILL, timeout=10)

    print(f"\ndrain: {inflight:.0f} in flight at SIGTERM, process exited {exited:.2f} s later (grace {GRACE} s)")
    for response in responses:
        answer = http_answer(response)
        assert answer.status == "200", answer
        np.testing.assert_allclose(answer.outputs["logits"], expected, rtol=1e-4, atol=1e-5)
    failed = [(i, code, details) for i, (code, details, _) in enumerate(grpc_results) if code != "OK"]
    assert not failed, failed
    assert health[0] == "SERVING" and "NOT_SERVING" in health, health
    assert exited < GRACE
    log = "".join(server.lines)
    assert "Traceback" not in log, log[-3000:]
