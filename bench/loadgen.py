"""Load generators: closed loop (N clients, each sends its next request when the last one
answers) and fixed rate (arrivals on a clock, whatever the answers do), both asyncio.

A sender is ``async send(i)`` for request number ``i`` (the contender picks the photo
``i % len(photos)``); it raises on any failure. Only requests that finish inside the
measured window count; the warm-up before it is discarded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

Send = Callable[[int], Awaitable[Any]]


def percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 and mean in milliseconds (None when nothing finished)."""
    if not latencies_s:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(ms.mean())}


@dataclass
class LoadResult:
    """One measured point: throughput and latency of one contender at one load."""

    requests_per_s: float
    completed: int
    errors: int
    window_s: float
    client_cpu_s: float
    """CPU the load generator process used in the window (gRPC/HTTP client work)."""
    latencies_s: list[float] = field(repr=False)
    first_error: str | None = None

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "latencies_s"}
        return out | percentiles_ms(self.latencies_s)


async def closed_loop(send: Send, concurrency: int, duration_s: float, warmup_s: float) -> LoadResult:
    """``concurrency`` clients back to back for ``warmup_s + duration_s``; measures the last part."""
    counter = iter(range(1 << 62))
    start = time.perf_counter()
    window_start = start + warmup_s
    end = window_start + duration_s
    latencies: list[float] = []
    errors: list[str] = []

    async def client() -> None:
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            try:
                await send(next(counter))
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                await asyncio.sleep(0.001)  # a failing contender must not spin the client
                continue
            done = time.perf_counter()
            if window_start <= done <= end:
                latencies.append(done - sent)

    await asyncio.sleep(0)
    cpu_before = None
    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
    cpu_before = time.process_time()
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu_before
    return LoadResult(
        requests_per_s=len(latencies) / duration_s,
        completed=len(latencies),
        errors=len(errors),
        window_s=duration_s,
        client_cpu_s=cpu,
        latencies_s=latencies,
        first_error=errors[0] if errors else None,
    )


@dataclass
class RateResult:
    """Fixed-rate load: answered (goodput), rejected (with their latency) and failed."""

    offered_per_s: float
    goodput_per_s: float
    steady_goodput_per_s: float
    """Answers completed in the second half of the window, per second: the saturated steady
    state, without the first seconds in which the server's queue fills."""
    ok: int
    rejected: int
    failed: int
    duration_s: float
    unfinished: int
    """Requests still unanswered ``grace_s`` after the window (cancelled, not counted)."""
    ok_latencies_s: list[float] = field(repr=False)
    reject_latencies_s: list[float] = field(repr=False)
    first_failure: str | None = None

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.endswith("latencies_s")}
        ok = {f"ok_{k}": v for k, v in percentiles_ms(self.ok_latencies_s).items()}
        rejected = {f"reject_{k}": v for k, v in percentiles_ms(self.reject_latencies_s).items()}
        return out | ok | rejected


async def fixed_rate(
    send: Send,
    rate_per_s: float,
    duration_s: float,
    is_rejection: Callable[[BaseException], bool],
    grace_s: float = 5.0,
) -> RateResult:
    """Arrivals every ``1 / rate_per_s`` s for ``duration_s``; goodput counts answers that
    arrive before the end of the window. Requests unanswered ``grace_s`` after it are cancelled."""
    interval = 1.0 / rate_per_s
    start = time.perf_counter()
    end = start + duration_s
    ok: list[float] = []
    ok_done: list[float] = []
    rejected: list[float] = []
    failures: list[str] = []

    async def one(i: int) -> None:
        sent = time.perf_counter()
        try:
            await send(i)
        except Exception as exc:
            if is_rejection(exc):
                rejected.append(time.perf_counter() - sent)
            else:
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
            return
        done = time.perf_counter()
        if done <= end:
            ok.append(done - sent)
            ok_done.append(done)

    tasks: list[asyncio.Task[None]] = []
    i = 0
    while True:
        due = start + i * interval
        if due >= end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
        i += 1
    _done, pending = await asyncio.wait(tasks, timeout=max(0.0, end + grace_s - time.perf_counter()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return RateResult(
        offered_per_s=i / duration_s,
        goodput_per_s=len(ok) / duration_s,
        steady_goodput_per_s=sum(1 for t in ok_done if t >= start + duration_s / 2) / (duration_s / 2),
        ok=len(ok),
        rejected=len(rejected),
        failed=len(failures),
        duration_s=duration_s,
        unfinished=len(pending),
        ok_latencies_s=ok,
        reject_latencies_s=rejected,
        first_failure=failures[0] if failures else None,
    )
