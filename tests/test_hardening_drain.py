"""Graceful drain: SIGTERM to ``lumenserve serve`` while 100 requests (50 HTTP + 50 gRPC) are in flight.

The batcher holds requests for ``max_queue_delay`` = 1 s, so all 100 are provably inside the
server (the ``lumenserve_inflight_requests`` gauge reads 100) when the signal arrives.
Readiness (gRPC health ``""``, watched on a stream opened before) must turn NOT_SERVING,
every request must be answered correctly, and the process must exit before the grace period.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.hardening.grpc_load import drain_watch
from tests.hardening.metrics import parse, value
from tests.hardening.payloads import good_image_tensor
from tests.hardening.wire import Call, grpc_calls, http_answer, http_body, tensor_input
from tests.test_serving_support import ServerProcess, spawn_pool

GRACE = 20.0
PER_TRANSPORT = 50
IMAGE = good_image_tensor(21)  # (1, 3, 32, 32)
NORMAL = Call("tiny-image", [tensor_input("input", IMAGE, "FP32")], outputs=["logits"])


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
    try:
        with spawn_pool() as worker:
            assert worker.submit(grpc_calls, server.grpc_url, [NORMAL]).result(60)[0].status == "OK"  # warm worker
            time.sleep(1.2)  # the warm-up's batch window is over
            base = f"http://{server.http_url}"
            body, headers = http_body(NORMAL)

            async def scenario() -> tuple[list[httpx.Response], float, float]:
                limits = httpx.Limits(max_connections=PER_TRANSPORT, max_keepalive_connections=PER_TRANSPORT)
                async with (
                    httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client,
                    httpx.AsyncClient(base_url=base, timeout=10) as probe,
                ):
                    await asyncio.gather(*(client.get("/v2/health/live") for _ in range(PER_TRANSPORT)))
                    grpc_side = asyncio.get_running_loop().run_in_executor(
                        None, lambda: worker.submit(drain_watch, server.grpc_url, NORMAL, PER_TRANSPORT).result(120)
                    )
                    posts = [
                        asyncio.create_task(client.post("/v2/models/tiny-image/infer", content=body, headers=headers))
                        for _ in range(PER_TRANSPORT)
                    ]
                    inflight = 0.0
                    end = time.monotonic() + 5
                    while inflight < 2 * PER_TRANSPORT and time.monotonic() < end:
                        samples = parse((await probe.get("/metrics")).text)
                        inflight = value(samples, "lumenserve_inflight_requests", model="tiny-image")
                        await asyncio.sleep(0.005)
                    assert inflight == 2 * PER_TRANSPORT, f"only {inflight} requests in flight at once"
                    assert server.proc is not None
                    os.kill(server.proc.pid, signal.SIGTERM)
                    signalled = time.monotonic()
                    responses = list(await asyncio.gather(*posts))
                    grpc_result = await grpc_side
                    code = await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, GRACE + 10)
                    exited = time.monotonic() - signalled
                    assert code == 0, "".join(server.lines[-30:])
                    scenario.grpc = grpc_result  # type: ignore[attr-defined]
                    return responses, exited, inflight

            responses, exited, inflight = asyncio.run(scenario())
            grpc_result = scenario.grpc  # type: ignore[attr-defined]
    finally:
        server.stop(signal.SIGKILL, timeout=10)

    print(f"\ndrain: {inflight:.0f} in flight at SIGTERM, process exited {exited:.2f} s later (grace {GRACE} s)")
    for response in responses:
        answer = http_answer(response)
        assert answer.status == "200", answer
        np.testing.assert_allclose(answer.outputs["logits"], expected, rtol=1e-4, atol=1e-5)
    codes = [code for code, _, _ in grpc_result["results"]]
    assert codes == ["OK"] * PER_TRANSPORT, codes
    health = grpc_result["health"]
    assert health[0] == "SERVING" and "NOT_SERVING" in health, health
    assert exited < GRACE
    log = "".join(server.lines)
    assert "Traceback" not in log, log[-3000:]
