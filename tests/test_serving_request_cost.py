"""What keeps a request cheap: a lone small batch runs on the event loop (no thread hop), the
heavy threads run below the event loop's priority, the lone-call session spins only inside a
call, and a classifier's probabilities are computed once per batch."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lumenserve.bundle import Bundle
from serving.batching import Batcher, BatchPolicy
from serving.codecs.classification import softmax
from serving.metrics import ServingMetrics
from serving.runtimes import load_runtime
from serving.runtimes.onnx import OnnxRuntime
from serving.settings import ServingSettings
from tests.support.inprocess import image_request, serving_stack


def _threads_of(seconds: float, inline_call_s: float, runs: int) -> list[int]:
    """The thread each of ``runs`` lone one-row calls of a model taking ``seconds`` ran on."""
    seen: list[int] = []

    def predict(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(threading.get_ident())
        time.sleep(seconds)
        return {"y": feed["x"] * 2}

    async def scenario() -> None:
        policy = BatchPolicy(max_batch_size=4, max_queue_delay=0.0, max_queue_size=8, inline_call_s=inline_call_s)
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(predict, policy, ServingMetrics().for_model("m", "1"), pool)
            batcher.start()
            for row in range(runs):
                x = np.full((1, 3), row, dtype=np.float32)
                out = await batcher.submit({"x": x}, 1, time.monotonic() + 10)
                np.testing.assert_array_equal(out["y"], x * 2)
            await batcher.stop()
        assert threading.get_ident() not in seen[:1]  # the first call: no estimate yet, a compute thread

    asyncio.run(scenario())
    return seen


def test_a_lone_cheap_batch_runs_on_the_event_loop_once_its_cost_is_known() -> None:
    loop_thread = threading.get_ident()  # asyncio.run runs its loop on the calling thread
    seen = _threads_of(0.0, inline_call_s=0.05, runs=4)
    assert seen[0] != loop_thread
    assert seen[1:] == [loop_thread] * 3


def test_a_slow_batch_or_the_setting_at_zero_keeps_compute_threads() -> None:
    loop_thread = threading.get_ident()
    assert loop_thread not in _threads_of(0.02, inline_call_s=0.005, runs=3)  # 20 ms calls over a 5 ms limit
    assert loop_thread not in _threads_of(0.0, inline_call_s=0.0, runs=3)


def test_a_batch_with_others_waiting_behind_it_uses_the_compute_thread() -> None:
    """Several requests at once: the loop keeps taking them while the model works."""
    seen: list[int] = []
    gate = threading.Event()

    def predict(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(threading.get_ident())
        gate.wait(5)
        return {"y": feed["x"] + 1}

    async def scenario() -> None:
        policy = BatchPolicy(max_batch_size=1, max_queue_delay=0.0, max_queue_size=8, inline_call_s=10.0)
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(predict, policy, ServingMetrics().for_model("m", "1"), pool)
            batcher.start()
            feeds = [{"x": np.full((1, 2), i, dtype=np.float32)} for i in range(3)]
            calls = [asyncio.ensure_future(batcher.submit(f, 1, time.monotonic() + 10)) for f in feeds]
            await asyncio.sleep(0.05)  # the first call holds the model, two wait in the queue
            gate.set()
            results = await asyncio.gather(*calls)
            for feed, out in zip(feeds, results, strict=True):
                np.testing.assert_array_equal(out["y"], feed["x"] + 1)
            await batcher.stop()

    asyncio.run(scenario())
    loop_thread = threading.get_ident()
    assert len(seen) == 3
    assert loop_thread not in seen[:2]  # the first (cost unknown) and the one with another behind it
    assert seen[2] == loop_thread  # the last, alone and known to be cheap


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities are a Linux feature")
async def test_compute_and_preprocessing_threads_run_below_the_event_loop(model_repo: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    async with serving_stack(model_repo, ["tiny-image"], compute_nice=3, inline_call_ms=0) as stack:
        await stack.dataplane.infer(image_request(rows=1), "test")
        threads = {thread.name: thread.native_id for thread in threading.enumerate()}
        compute = [tid for name, tid in threads.items() if name.startswith("compute-tiny-image-")]
        assert compute, sorted(threads)
        for tid in compute:
            assert tid is not None and os.getpriority(os.PRIO_PROCESS, tid) == min(19, base + 3)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the event loop keeps its own


def test_the_lone_call_session_spins_only_inside_a_call(image_bundle: Bundle) -> None:
    runtime = load_runtime(image_bundle, ServingSettings(device="cpu", model_instances=2, intra_op_threads=0))
    assert isinstance(runtime, OnnxRuntime)
    shared = runtime.session.get_session_options()
    assert shared.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    if runtime.solo is not None:  # a machine with more cores than one call's threads
        solo = runtime.solo.get_session_options()
        assert solo.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert solo.get_session_config_entry("session.force_spinning_stop") == "1"


async def test_probabilities_are_derived_once_per_batch(model_repo: Path) -> None:
    async with serving_stack(model_repo, ["tiny-image"], inline_call_ms=0) as stack:
        model = stack.repository.get("tiny-image", "")
        calls: list[set[str]] = []
        derive = model.io.derive

        def counting(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            derived = derive(outputs)
            calls.append(set(derived))
            return derived

        model.io.derive = counting  # type: ignore[method-assign]
        responses = await asyncio.gather(*(stack.dataplane.infer(image_request(rows=2), "test") for _ in range(4)))
        assert 1 <= len(calls) <= 4 and all("probabilities" in names for names in calls)
        for response in responses:
            by_name = {t.name: t.data for t in response.outputs}
            assert by_name["probabilities"].shape[0] == 2
            np.testing.assert_allclose(by_name["probabilities"], softmax(by_name["logits"]), rtol=1e-5, atol=1e-6)
