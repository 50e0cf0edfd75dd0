"""Targets and markdown of ``lumenserve bench`` on hand-made figures (no servers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.loadgen import closed_loop, fixed_rate, percentiles_ms
from bench.report import ANALYSIS_MARKER, evaluate_targets, render_markdown, write_markdown


def _point(rps: float, p50: float) -> dict[str, object]:
    return {"requests_per_s": rps, "p50_ms": p50, "p90_ms": p50 * 1.2, "p99_ms": p50 * 1.5,
            "client_cpu_fraction": 0.1, "errors": 0}  # fmt: skip


RESULT = {
    "ceiling": {
        "best": {"bytes": {"images_per_s": 100.0}, "tensor": {"images_per_s": 200.0}},
        "batch1_p50_ms": {"bytes": 6.0},
        "sweep": {},
    },
    "throughput": {
        "lumenserve_grpc_bytes": {"1": _point(95.0, 6.5), "4": _point(96.0, 40.0)},
        "lumenserve_grpc_tensor": {"1": _point(150.0, 5.0)},
        "lumenserve_http_bytes": {"1": _point(70.0, 9.0), "4": _point(85.0, 45.0)},
        "torchserve_ours_http_bytes": {"1": _point(30.0, 30.0), "4": _point(40.0, 100.0)},
        "torchserve_builtin_http_bytes": {"1": _point(35.0, 25.0), "4": _point(38.0, 90.0)},
    },
    "cold_start": {"lumenserve_s": [2.5, 3.0, 3.5], "lumenserve_median_s": 3.0},
    "overload": {
        "goodput_fraction_of_peak": 0.8,
        "steady_goodput_fraction_of_peak": 0.97,
        "reject_p99_ms": 7.0,
        "server_alive_after": True,
    },
    "training": {"ratio": 0.99},
}


def test_targets_are_ratios_of_the_same_run() -> None:
    targets = {t["target"]: t for t in evaluate_targets(RESULT)}
    grpc = targets["GRPC (bytes) peak / in-process ceiling"]
    assert grpc["value"] == 0.96 and grpc["met"] is True
    assert targets["HTTP (bytes) peak / in-process ceiling"]["met"] is True  # 0.85 >= 0.80
    assert targets["GRPC (tensor) peak / in-process ceiling"]["met"] is False  # 0.75
    assert targets["HTTP (tensor) peak / in-process ceiling"]["met"] is None  # not measured
    # worst concurrency against the faster TorchServe handler: 70 / 35 = 2.0 at concurrency 1
    http_ts = targets["HTTP throughput / TorchServe's, worst concurrency (same transport)"]
    assert abs(http_ts["value"] - 2.0) < 1e-9 and http_ts["met"] is False
    added = targets["added p50 at concurrency 1, GRPC (bytes)"]
    assert abs(added["value"] - 0.5) < 1e-9 and added["met"] is True
    assert targets["added p50 at concurrency 1, HTTP (bytes)"]["met"] is False  # 3 ms > 2 ms
    assert targets["2x saturation: rejection p99"]["met"] is False
    assert targets["2x saturation: goodput / peak, whole window (incl. the queue filling)"]["met"] is False
    assert targets["2x saturation: steady goodput / peak (second half of the window)"]["met"] is True
    assert targets["training: Trainer / bare loop samples/s"]["met"] is True


def test_markdown_keeps_the_analysis(tmp_path: Path) -> None:
    result = dict(RESULT, targets=evaluate_targets(RESULT), machine={"cpu_model": "test cpu"})
    path = tmp_path / "benchmarks.md"
    path.write_text(f"stale\n{ANALYSIS_MARKER}\nwhy the gaps exist\n")
    write_markdown(path, render_markdown(result, "lumenserve bench --quick"))
    text = path.read_text()
    assert "stale" not in text and text.count(ANALYSIS_MARKER) == 1
    assert text.rstrip().endswith("why the gaps exist")
    assert "| lumenserve_grpc_bytes | 1 | 95.0 |" in text and "**missed**" in text and "**met**" in text


def test_load_generators_count_only_the_window() -> None:
    calls: list[int] = []

    async def send(i: int) -> None:
        calls.append(i)
        await asyncio.sleep(0.01)
        if i % 5 == 4:
            raise RuntimeError("UNAVAILABLE: queue full")

    result = asyncio.run(closed_loop(send, concurrency=2, duration_s=0.3, warmup_s=0.1))
    assert result.errors > 0 and result.first_error and "queue full" in result.first_error
    assert 0 < result.completed < len(calls)  # warm-up requests are not counted
    assert result.summary()["p50_ms"] >= 10.0
    rate = asyncio.run(fixed_rate(send, 100.0, 0.3, lambda exc: "UNAVAILABLE" in str(exc)))
    assert rate.rejected > 0 and rate.ok > 0 and rate.failed == 0
    assert 25 <= rate.ok + rate.rejected <= 31
    assert 0 < rate.steady_goodput_per_s <= 2 * rate.goodput_per_s  # the second half's answers, per second
    assert percentiles_ms([]) == {"p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None}
