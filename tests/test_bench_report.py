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


def _peer_point(rps: float, p50: float, cpu_ms: float) -> dict[str, object]:
    return _point(rps, p50) | {"server_cpu_ms_per_request": cpu_ms}


PEERS_224 = {
    "model": "imagenet",
    "image_size": 224,
    "servers": {
        "lumenserve": {"cold_start_s": 2.0, "rss_ready_bytes": 300 << 20, "rss_after_load_bytes": 400 << 20},
        "kserve": {"cold_start_s": 3.0, "rss_ready_bytes": 150 << 20, "rss_after_load_bytes": 200 << 20},
        "mlserver": {"cold_start_s": 5.0, "rss_ready_bytes": 350 << 20, "rss_after_load_bytes": 800 << 20},
    },
    "throughput": {
        "lumenserve_grpc_tensor": {"1": _peer_point(100.0, 9.0, 5.0), "8": _peer_point(300.0, 20.0, 4.0)},
        "lumenserve_grpc_bytes": {"1": _peer_point(60.0, 15.0, 9.0), "8": _peer_point(200.0, 30.0, 8.0)},
        "kserve_grpc_tensor": {"1": _peer_point(100.0, 10.0, 6.0), "8": _peer_point(100.0, 80.0, 6.0)},
        "kserve_grpc_bytes": {"1": _peer_point(50.0, 20.0, 12.0), "8": _peer_point(50.0, 60.0, 12.0)},
        "mlserver_grpc_tensor": {"1": _peer_point(40.0, 25.0, 20.0), "8": _peer_point(50.0, 160.0, 20.0)},
        "mlserver_grpc_bytes": {"1": _peer_point(30.0, 33.0, 25.0), "8": _peer_point(40.0, 200.0, 25.0)},
    },
}


def test_peer_targets_and_table() -> None:
    result = {"peers": {"224px": PEERS_224}}
    targets = {t["target"]: t for t in evaluate_targets(result)}
    rps = targets["224px: lumenserve / KServe req/s at concurrency 8"]  # worst of 300/100 and 200/50
    assert rps["value"] == 3.0 and rps["met"] is True
    p50 = targets["224px: lumenserve / KServe p50 at concurrency 8"]  # worst of 20/80 and 30/60
    assert p50["value"] == 0.5 and p50["met"] is True
    assert targets["224px: lumenserve / KServe p50 at concurrency 1"]["value"] == 0.9  # 9/10 vs 15/20
    rss = targets["224px: lumenserve / KServe RSS after load"]
    assert rss["value"] == 2.0 and rss["met"] is True
    text = render_markdown(result | {"targets": list(targets.values())}, "lumenserve bench --peers")
    assert "### 224px (`imagenet`)" in text
    assert "| kserve | 3.00 | 150 | 200 | 2.00 |" in text and "| mlserver | 5.00 | 350 | 800 | 0.50 |" in text
    assert "| tensor | 8 | 300.0 / 100.0 / 50.0 | 3.00 | 6.00 | 20.00 / 80.00 / 160.00 | 0.25 | 0.12 |" in text
    assert "| 4.00 / 6.00 / 20.00 | 0 |" in text


def _runtime_method(params: dict[str, int], ours: float, bare: dict[str, float]) -> dict[str, object]:
    best = min(bare, key=bare.__getitem__)
    return {"params": params, "perturbations_per_eval": 1, "forward_rows": 227, "lumenserve_s": ours,
            "captum_ort_s": bare, "reference_per_eval": int(best), "ratio": ours / bare[best]}  # fmt: skip


RUNTIME_EXPLAIN = {
    "model": "mobilenet_v2, random weights, 10 classes",
    "image_size": 224,
    "rounds": 4,
    "device": "cpu",
    "instances": 2,
    "lean_params": {"infidelity": False, "deletion_steps": 0, "render_png": False},
    "methods": {
        "occlusion": _runtime_method({"window": 28, "stride": 14}, 3.3, {"1": 3.0, "8": 3.5, "64": 3.6}),
        "kernel_shap": _runtime_method({"patch": 28, "n_samples": 128}, 2.6, {"1": 2.4, "8": 2.0, "64": 3.0}),
    },
}


def test_runtime_explain_target_and_table() -> None:
    targets = {t["target"]: t for t in evaluate_targets({"runtime_explain": RUNTIME_EXPLAIN})}
    name = "explain {} of an imported 224 px ONNX model: lumenserve / fastest bare Captum + ORT"
    occlusion, kernel_shap = targets[name.format("occlusion")], targets[name.format("kernel_shap")]
    assert abs(occlusion["value"] - 1.1) < 1e-9 and occlusion["met"] is True  # 3.3 / 3.0 (pe 1)
    assert abs(kernel_shap["value"] - 1.3) < 1e-9 and kernel_shap["met"] is False  # 2.6 / 2.0 (pe 8)
    skipped = [t for t in evaluate_targets({}) if "imported" in t["target"]]
    assert len(skipped) == 1 and skipped[0]["met"] is None  # --no-runtime-explain: listed, not measured
    text = render_markdown({"runtime_explain": RUNTIME_EXPLAIN}, "lumenserve bench")
    assert "## Explanations of an imported ONNX model on the served runtime (224 px" in text
    assert (
        "| occlusion (window 28, stride 14, pe 1) | 227 | 3.300 | 3.000 | 3.500 | 3.600 | 1.10x | <= 1.2x | **met** |"
        in text
    )
    assert "| kernel_shap (patch 28, n_samples 128, pe 1) | 227 | 2.600 | 2.400 | 2.000 | 3.000 | 1.30x |" in text
