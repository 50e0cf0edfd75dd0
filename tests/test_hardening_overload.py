"""Overload, deadlines and cancellation against a real server whose batcher holds requests.

The server waits ``max_queue_delay`` = 1 s for more rows before it runs a batch and keeps
at most ``max_queue_size`` = 8 requests waiting, so a burst deterministically overflows the
queue, and a request with a shorter deadline deterministically expires while queued.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest

from tests.hardening.grpc_load import cancel_after, flood, with_deadline
from tests.hardening.metrics import scrape, value
from tests.hardening.payloads import good_image_tensor
from tests.hardening.wire import Call, grpc_calls, http_body, http_path, http_send, tensor_input
from tests.support.server import ServerOptions, ServerProcess
from tests.support.waiting import wait_until

QUEUE = 8
DELAY = 1.0
IMAGE = good_image_tensor(11)  # (1, 3, 32, 32)
NORMAL = Call("tiny-image", [tensor_input("input", IMAGE, "FP32")], outputs=["logits"])
MODEL = {"model": "tiny-image", "version": "1"}


@pytest.fixture(scope="module")
def server_options() -> ServerOptions:
    env = {
        "LUMENSERVE_MAX_QUEUE_SIZE": str(QUEUE),
        "LUMENSERVE_MAX_BATCH_SIZE": "64",
        "LUMENSERVE_MAX_QUEUE_DELAY": str(DELAY),
    }
    return ServerOptions(("--models", "tiny-image"), env)


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as client:
        wait_idle(client)
        yield client


def queue_depth(client: httpx.Client) -> float:
    return value(scrape("", client), "lumenserve_queue_depth", **MODEL)


def wait_idle(client: httpx.Client, timeout: float = 30) -> None:
    wait_until(lambda: queue_depth(client) == 0, timeout, "the queue to drain")


def canary(client: httpx.Client) -> None:
    """One normal request, answered: any batch a refused request could have joined ran before it
    (so the counters read after it show whether that request ran; no sleeping past DELAY)."""
    assert http_send(client, NORMAL).status == "200"


def counters(client: httpx.Client) -> dict[str, float]:
    samples = scrape("", client)
    out = {
        r: value(samples, "lumenserve_requests_rejected_total", **MODEL, reason=r)
        for r in ("queue_full", "deadline", "cancelled")
    }
    out["batches"] = value(samples, "lumenserve_batch_size_count", **MODEL)
    out["rows"] = value(samples, "lumenserve_batch_size_sum", **MODEL)
    return out


async def http_burst(base: str, count: int) -> list[tuple[int, str, float]]:
    body, headers = http_body(NORMAL)
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one() -> tuple[int, str, float]:
            start = time.perf_counter()
            response = await client.post("/v2/models/tiny-image/infer", content=body, headers=headers)
            message = "" if response.status_code == 200 else response.json()["error"]
            return response.status_code, message, time.perf_counter() - start

        return list(await asyncio.gather(*(one() for _ in range(count))))


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def test_http_burst_over_the_queue_gets_fast_503s_and_accepted_p99_stays_bounded(
    server: ServerProcess, http: httpx.Client
) -> None:
    before = counters(http)
    results = asyncio.run(http_burst(f"http://{server.http_url}", 120))
    after = counters(http)
    ok = [t for s, _, t in results if s == 200]
    rejected = [(m, t) for s, m, t in results if s == 503]
    assert len(ok) + len(rejected) == len(results), {s for s, _, _ in results}
    assert ok and rejected, f"{len(ok)} accepted, {len(rejected)} rejected"
    assert all("queue full" in m for m, _ in rejected)
    assert after["queue_full"] - before["queue_full"] == len(rejected)
    reject_times = [t for _, t in rejected]
    print(
        f"\nHTTP burst of 120: {len(ok)} accepted (p50 {p(ok, 50):.3f} s, p99 {p(ok, 99):.3f} s), "
        f"{len(rejected)} rejected (p50 {p(reject_times, 50) * 1000:.1f} ms, p99 {p(reject_times, 99) * 1000:.1f} ms)"
    )
    # accepted requests wait at most the queue delay plus a few batches; rejections never wait for the model
    assert p(ok, 99) < DELAY + 2.5


def test_rejection_against_a_full_queue_is_fast(server: ServerProcess, http: httpx.Client) -> None:
    """Fill the queue (8 requests wait for the 1 s batch delay), then time single requests: each
    is refused at once, without waiting for the batch."""

    async def scenario() -> tuple[list[int], list[tuple[int, float]]]:
        body, headers = http_body(NORMAL)
        async with httpx.AsyncClient(base_url=f"http://{server.http_url}", timeout=60) as client:
            fill = [
                asyncio.create_task(client.post("/v2/models/tiny-image/infer", content=body, headers=headers))
                for _ in range(QUEUE)
            ]
            while value(scrape("", http), "lumenserve_queue_depth", **MODEL) < QUEUE:
                await asyncio.sleep(0.01)
            probes = []
            async with httpx.AsyncClient(base_url=f"http://{server.http_url}", timeout=60) as prober:
                await prober.get("/v2/health/live")  # connection set up before timing
                for _ in range(10):
                    start = time.perf_counter()
                    response = await prober.post("/v2/models/tiny-image/infer", content=body, headers=headers)
                    probes.append((response.status_code, time.perf_counter() - start))
            filled = [r.status_code for r in await asyncio.gather(*fill)]
        return filled, probes

    filled, probes = asyncio.run(scenario())
    assert filled == [200] * QUEUE
    assert [s for s, _ in probes] == [503] * len(probes)
    times = [t for _, t in probes]
    print(f"\nrejection latency against a full queue: p50 {p(times, 50) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert statistics.median(times) < 0.1 and max(times) < DELAY / 2


def test_grpc_burst_over_the_queue_gets_fast_unavailable(
    server: ServerProcess, worker: ThreadPoolExecutor, http: httpx.Client
) -> None:
    before = counters(http)
    results = worker.submit(flood, server.grpc_url, NORMAL, 120).result(120)
    after = counters(http)
    codes = {c for c, _, _ in results}
    assert codes <= {"OK", "UNAVAILABLE"}, codes
    rejected = [t for c, _, t in results if c == "UNAVAILABLE"]
    ok = [t for c, _, t in results if c == "OK"]
    assert ok and rejected
    assert all("queue full" in d for c, d, _ in results if c == "UNAVAILABLE")
    assert after["queue_full"] - before["queue_full"] == len(rejected)
    print(
        f"\ngRPC burst of 120: {len(ok)} accepted (p99 {p(ok, 99):.3f} s), "
        f"{len(rejected)} rejected (p50 {p(rejected, 50) * 1000:.1f} ms)"
    )
    assert p(ok, 99) < DELAY + 2.5
    assert statistics.median(rejected) < statistics.median(ok), "refusals must not wait for the batch"


@pytest.mark.slow  # 600 requests
def test_memory_stays_bounded_under_repeated_overload(server: ServerProcess, http: httpx.Client) -> None:
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    asyncio.run(http_burst(f"http://{server.http_url}", 150))  # warm-up: buffers, connections, metric children
    wait_idle(http)
    baseline = process.memory_info().rss
    for _ in range(3):
        asyncio.run(http_burst(f"http://{server.http_url}", 150))
        wait_idle(http)
    growth = process.memory_info().rss - baseline
    print(f"\nRSS {baseline / 2**20:.0f} MiB -> growth {growth / 2**20:.1f} MiB after 450 overload requests")
    assert growth < 40 * 2**20


def test_timeout_parameter_expires_in_the_queue_and_never_reaches_the_model(http: httpx.Client) -> None:
    before = counters(http)
    slow = Call(NORMAL.model, NORMAL.inputs, parameters={"timeout": 100_000}, outputs=["logits"])  # 100 ms
    start = time.perf_counter()
    answer = http_send(http, slow)
    elapsed = time.perf_counter() - start
    assert answer.status == "504", answer
    assert "deadline passed" in answer.message
    assert elapsed < DELAY, "answered at its deadline, not when the batch would have run"
    canary(http)
    after = counters(http)
    assert after["deadline"] - before["deadline"] == 1
    assert (after["batches"], after["rows"]) == (before["batches"] + 1, before["rows"] + 1), "the expired request ran"


def test_already_passed_timeout_is_refused_before_queueing(
    http: httpx.Client, server: ServerProcess, worker: ThreadPoolExecutor
) -> None:
    before = counters(http)
    expired = Call(NORMAL.model, NORMAL.inputs, parameters={"timeout": 1})  # 1 µs
    answers = [http_send(http, expired), *worker.submit(grpc_calls, server.grpc_url, [expired]).result(60)]
    assert [a.status for a in answers] == ["504", "DEADLINE_EXCEEDED"]
    assert all("deadline passed" in a.message for a in answers)
    canary(http)
    after = counters(http)
    assert after["deadline"] - before["deadline"] == 2
    assert after["rows"] == before["rows"] + 1


def test_grpc_deadline_passes_in_the_queue_and_never_reaches_the_model(
    server: ServerProcess, worker: ThreadPoolExecutor, http: httpx.Client
) -> None:
    before = counters(http)
    code, elapsed = worker.submit(with_deadline, server.grpc_url, NORMAL, 0.15).result(60)
    assert code == "DEADLINE_EXCEEDED"
    assert elapsed < DELAY
    canary(http)
    after = counters(http)
    # the server's timer (deadline) or the transport's cancellation at the same instant: counted once either way
    counted = (after["deadline"] - before["deadline"]) + (after["cancelled"] - before["cancelled"])
    assert counted == 1
    assert after["rows"] == before["rows"] + 1, "a request past its gRPC deadline ran"


def test_cancelled_grpc_request_leaves_the_queue_and_is_counted(
    server: ServerProcess, worker: ThreadPoolExecutor, http: httpx.Client
) -> None:
    before = counters(http)
    assert worker.submit(cancel_after, server.grpc_url, NORMAL, 0.15).result(60) == "CANCELLED"
    wait_until(lambda: queue_depth(http) == 0, 5, "the cancelled request to leave the queue")
    canary(http)
    after = counters(http)
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["rows"] == before["rows"] + 1, "the cancelled request ran"
    # and the server still answers normally over gRPC too
    assert worker.submit(grpc_calls, server.grpc_url, [NORMAL]).result(60)[0].status == "OK"


def test_http_client_that_hangs_up_leaves_the_queue_and_is_counted(server: ServerProcess, http: httpx.Client) -> None:
    before = counters(http)
    body, headers = http_body(NORMAL)
    host, port = server.http_url.rsplit(":", 1)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {http_path(NORMAL)} HTTP/1.1\r\nHost: {server.http_url}\r\n{head}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        wait_until(lambda: queue_depth(http) == 1, 5, "the request to be queued (the batcher holds it for DELAY)")
    # the client is gone
    wait_until(lambda: queue_depth(http) == 0, 5, "the abandoned request to leave the queue")
    canary(http)  # and the server still answers normally
    after = counters(http)
    assert after["cancelled"] - before["cancelled"] == 1
    assert after["rows"] == before["rows"] + 1, "the abandoned request ran"
