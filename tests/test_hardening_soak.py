"""Soak: 2+ minutes at concurrency 8 (4 HTTP + 4 gRPC callers), predictions and explanations
mixed on both tiny bundles: zero unexpected errors, stable answers, resident memory growth
under 10 % after warm-up."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from tests.hardening.grpc_load import explain_variant, soak
from tests.hardening.payloads import bytes_raw, good_image_tensor, jpeg
from tests.hardening.wire import Call, In, http_send, tensor_input
from tests.support.server import ServerProcess, spawn_pool

WARM_UP = 20.0
MEASURED = 120.0
PER_TRANSPORT = 4


def text(items: list[bytes], endpoint: str = "infer", **parameters: Any) -> Call:
    return Call(
        "tiny-text", [In("text", "BYTES", [len(items)], raw=bytes_raw(items))], endpoint=endpoint, parameters=parameters
    )


def mix() -> list[Call]:
    """Four predictions for every explanation; each explanation gets inputs of its own (explain_variant)."""
    calls: list[Call] = []
    for i in range(4):
        image = good_image_tensor(100 + i)  # (1, 3, 32, 32)
        calls.append(Call("tiny-image", [tensor_input("input", image, "FP32")]))
        calls.append(Call("tiny-image", [In("image", "BYTES", [2], raw=bytes_raw([jpeg(i), jpeg(i + 7, (80, 50))]))]))
        calls.append(text([f"soak text number {i}".encode(), b"short"]))
        calls.append(text([("word " * (5 + 10 * i)).encode()]))
        if i % 2 == 0:
            calls.append(
                Call(
                    "tiny-image",
                    [tensor_input("input", image, "FP32")],
                    endpoint="explain",
                    parameters={"method": "saliency"},
                )
            )
        else:
            calls.append(text([f"explain me {i}".encode()], "explain", method="integrated_gradients", n_steps=8))
    return calls


def http_soak(base: str, calls: list[Call], seconds: float, offset: int, out: dict[str, Any]) -> None:
    first: dict[int, np.ndarray] = {}
    end = time.monotonic() + seconds
    index = offset
    with httpx.Client(base_url=base, timeout=120) as client:
        while time.monotonic() < end:
            slot = index % len(calls)
            index += 1
            call = explain_variant(calls[slot], index + 1_000_000)
            answer = http_send(client, call)
            key = f"{call.endpoint}:{answer.status}"
            out["counts"][key] = out["counts"].get(key, 0) + 1
            if answer.status != "200":
                out["errors"].append(f"{call.model} {call.endpoint}: {answer.status} {answer.message[:200]}")
                continue
            logits = answer.outputs["logits"]
            if call.endpoint == "explain":
                continue
            if slot not in first:
                first[slot] = logits
            elif not np.allclose(logits, first[slot], rtol=1e-3, atol=1e-4):
                out["errors"].append(f"{call.model} {call.endpoint}: logits changed between calls")


@pytest.mark.soak
@pytest.mark.slow
def test_soak_mixed_predict_and_explain(model_repo: Path) -> None:
    calls = mix()
    env = {"LUMENSERVE_EXPLAIN_MAX_QUEUE": "16"}
    with ServerProcess(model_repo, env=env) as server, spawn_pool() as worker:
        assert server.proc is not None
        process = psutil.Process(server.proc.pid)
        total = WARM_UP + MEASURED
        grpc_side = worker.submit(soak, server.grpc_url, calls, total, PER_TRANSPORT)
        http_out: dict[str, Any] = {"counts": {}, "errors": []}
        threads = [
            threading.Thread(target=http_soak, args=(f"http://{server.http_url}", calls, total, i * 3, http_out))
            for i in range(PER_TRANSPORT)
        ]
        for thread in threads:
            thread.start()
        time.sleep(WARM_UP)
        baseline = process.memory_info().rss
        samples = [baseline]
        while any(t.is_alive() for t in threads):
            time.sleep(5)
            samples.append(process.memory_info().rss)
        for thread in threads:
            thread.join()
        grpc_out = grpc_side.result(total + 180)
        final = process.memory_info().rss
        log = "".join(server.lines)

    growth = (final - baseline) / baseline
    counts = {"http": http_out["counts"], "grpc": grpc_out["counts"]}
    print(
        f"\nsoak {total:.0f} s at concurrency {2 * PER_TRANSPORT}: {counts}; RSS {baseline / 2**20:.0f} MiB -> "
        f"{final / 2**20:.0f} MiB ({growth:+.1%}), peak {max(samples) / 2**20:.0f} MiB"
    )
    assert not http_out["errors"], http_out["errors"][:10]
    assert grpc_out["error_count"] == 0, grpc_out["errors"]
    for side in counts.values():
        assert side.get("infer:OK", 0) + side.get("infer:200", 0) > 50
        assert side.get("explain:OK", 0) + side.get("explain:200", 0) > 5
    assert growth < 0.10
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
