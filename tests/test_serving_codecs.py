"""Codecs, batcher and settings on their own (no server): hand-checkable cases."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lumenserve.bundle import ImagePreprocessing
from serving.batching import Batcher, BatchPolicy
from serving.codecs.classification import top_k_strings
from serving.codecs.image import ImageCodec
from serving.codecs.tensors import MAX_ELEMENTS, MAX_RANK, decode_list, decode_raw, encode_bytes_raw, tensor_header
from serving.errors import DeadlineExceeded, InvalidInput, Unavailable
from serving.metrics import ServingMetrics
from serving.settings import load_settings

PRE = ImagePreprocessing(resize_size=36, crop_size=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])


def test_raw_contents_are_a_view_not_a_copy() -> None:
    raw = np.arange(24, dtype=np.float32).tobytes()
    array = decode_raw("FP32", [2, 3, 4], raw, "x")
    assert array.shape == (2, 3, 4) and array[1, 2, 3] == 23
    assert np.shares_memory(array, np.frombuffer(raw, dtype=np.uint8))


@pytest.mark.parametrize(
    ("shape", "size", "words"),
    [
        ([2, 3], 20, "needs 24"),
        ([2, 3], 28, "needs 24"),
        ([-1, 3], 12, "negative"),
        ([1 << 20, 1 << 20], 4, "more than"),
    ],
)
def test_raw_length_must_equal_shape_times_itemsize(shape: list[int], size: int, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        decode_raw("FP32", shape, b"\0" * size, "x")


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ([0, 1 << 60], "more than"),  # numpy alone: "array is too big"
        ([0, 1 << 31, 1 << 31], "more than"),
        ([1 << 31, 0, 2], "more than"),
        ([0, (1 << 63) - 1], "more than"),
        ([0, -1], "negative"),
        ([1] * (MAX_RANK + 1), "dimensions, more than"),
    ],
)
def test_shape_is_checked_before_anything_is_decoded(shape: list[int], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        tensor_header("x", "UINT64", shape)
    for decode, contents in ((decode_raw, b""), (decode_list, [])):
        with pytest.raises(InvalidInput, match=words):
            decode("UINT64", shape, contents, "x")  # type: ignore[operator,arg-type]


def test_empty_tensors_within_the_limits_decode() -> None:
    header = tensor_header("x", "UINT64", [0, MAX_ELEMENTS])
    assert header.count == 0 and header.shape == (0, MAX_ELEMENTS)
    assert header.from_raw(b"").shape == (0, MAX_ELEMENTS) and header.from_list([]).shape == (0, MAX_ELEMENTS)
    assert tensor_header("x", "BYTES", [2, 0, 3]).from_raw(b"").shape == (2, 0, 3)


def test_http_input_with_data_and_binary_data_size_is_refused() -> None:
    from serving.http.convert import to_request

    head = b'{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[1],"parameters":{"binary_data_size":1}}]}'
    with pytest.raises(InvalidInput, match="not both"):
        to_request(head + b"\x01", str(len(head)), "m", "")


def test_bytes_elements_round_trip_and_lying_prefixes() -> None:
    items = [b"", b"a", "héllo".encode(), b"\x00\xff" * 10]
    raw = encode_bytes_raw(np.array(items, dtype=np.object_))
    assert list(decode_raw("BYTES", [4], raw, "t")) == items
    with pytest.raises(InvalidInput, match="claims 1000 bytes"):
        decode_raw("BYTES", [1], struct.pack("<I", 1000) + b"abc", "t")
    with pytest.raises(InvalidInput, match="inside a 4-byte length prefix"):
        decode_raw("BYTES", [2], struct.pack("<I", 1) + b"a" + b"\x01\x00", "t")
    with pytest.raises(InvalidInput, match="3 BYTES elements for shape"):
        decode_raw("BYTES", [2], encode_bytes_raw(np.array([b"a", b"b", b"c"], dtype=np.object_)), "t")


def test_json_lists_are_checked_against_shape_and_type() -> None:
    assert decode_list("INT64", [2, 2], [[1, 2], [3, 4]], "x").dtype == np.int64
    for data, words in [([1, 2, 3], "3 elements"), (["a", "b"], "does not fit"), ([1.5, 2], "non-integer"),
                        ([[1], [2, 3]], "does not fit"), ([1 << 70, 0], "does not fit")]:  # fmt: skip
        with pytest.raises(InvalidInput, match=words):
            decode_list("INT64", [2], data, "x")
    with pytest.raises(InvalidInput, match="unknown datatype"):
        decode_list("FLOAT", [1], [1.0], "x")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [50_000, 10_000])
def test_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match="over the limit of 40000000"):
        ImageCodec(PRE, max_pixels=40_000_000)([bomb])
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("data", [b"", b"GIF89a-not-allowed", b"\xff\xd8\xff\xe0 truncated jpeg"])
def test_undecodable_images_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        ImageCodec(PRE, max_pixels=10**7)([data])


def test_top_k_strings() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)
    top = top_k_strings(scores, 2, ["a", "b", "c"])
    assert top.tolist() == [[b"0.700000:1:b", b"0.200000:2:c"], [b"0.500000:0:a", b"0.300000:2:c"]]


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("http_port: 9000\ngrpc_port: 9001\nmax_batch_size: 8\nmodels: [a, b]\n")
    monkeypatch.setenv("LUMENSERVE_GRPC_PORT", "9101")
    monkeypatch.setenv("LUMENSERVE_MAX_BATCH_SIZE", "4")
    settings = load_settings(config, max_batch_size=2, host=None)
    assert (settings.http_port, settings.grpc_port, settings.max_batch_size) == (9000, 9101, 2)
    assert settings.models == ["a", "b"] and settings.host == "127.0.0.1"
    with pytest.raises(ValueError, match="device"):
        load_settings(None, device="tpu")


# ---- batcher ------------------------------------------------------------------------------


def _row_model(calls: list[int], gate: tuple[threading.Event, threading.Event] | None = None) -> Batcher:
    """A real numpy model: per row, the sum of its valid tokens, and a (rows, seq, seq) map.

    With ``gate = (started, release)`` each call signals ``started`` and holds until ``release``.
    """

    def predict(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, mask = feed["input_ids"], feed["attention_mask"]  # (rows, seq) each
        calls.append(ids.shape[0])
        if gate is not None:
            gate[0].set()
            gate[1].wait(10)
        else:
            time.sleep(0.02)
        grid = ids[:, :, None] * mask[:, None, :]  # (rows, seq, seq)
        return {"total": (ids * mask).sum(axis=1, keepdims=True), "grid": grid}

    policy = BatchPolicy(max_batch_size=8, max_queue_delay=0.0, max_queue_size=6,
                         pad_values={"input_ids": 0}, dynamic_output_dims={"grid": [1, 2]})  # fmt: skip
    return Batcher(predict, policy, ServingMetrics().for_model("m", "1"), ThreadPoolExecutor(1))


def test_batcher_pads_batches_and_returns_each_caller_its_rows() -> None:
    async def scenario() -> None:
        calls: list[int] = []
        batcher = _row_model(calls)
        batcher.start()
        feeds = []
        for caller in range(6):
            rows, seq = 1 + caller % 2, 2 + caller
            ids = np.arange(1, rows * seq + 1, dtype=np.int64).reshape(rows, seq) * (caller + 1)
            feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
        deadline = time.monotonic() + 10
        results = await asyncio.gather(*(batcher.submit(f, f["input_ids"].shape[0], deadline) for f in feeds))
        for feed, out in zip(feeds, results, strict=True):
            ids = feed["input_ids"]
            np.testing.assert_array_equal(out["total"][:, 0], ids.sum(axis=1))
            assert out["grid"].shape == (ids.shape[0], ids.shape[1], ids.shape[1])  # cut back to its own length
            np.testing.assert_array_equal(out["grid"], ids[:, :, None] * np.ones_like(ids)[:, None, :])
        assert max(calls) > 2, calls  # requests were batched together
        await batcher.stop()

    asyncio.run(scenario())


def test_batcher_rejects_when_full_and_never_runs_expired_requests() -> None:
    async def scenario() -> None:
        calls: list[int] = []
        started, release = threading.Event(), threading.Event()
        batcher = _row_model(calls, (started, release))
        batcher.start()
        one = {"input_ids": np.ones((1, 3), np.int64), "attention_mask": np.ones((1, 3), np.int64)}
        far = time.monotonic() + 10

        async def model_running() -> None:
            while not started.is_set():
                await asyncio.sleep(0.001)
            started.clear()

        with pytest.raises(DeadlineExceeded):
            await batcher.submit(one, 1, time.monotonic() - 1)
        # the model is held: one request runs, six wait, the last two find the queue full
        tasks = [asyncio.ensure_future(batcher.submit(one, 1, far))]
        await model_running()
        tasks += [asyncio.ensure_future(batcher.submit(one, 1, far)) for _ in range(8)]
        await asyncio.sleep(0.01)
        assert batcher.depth == 6
        release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(o, Unavailable) for o in outcomes) == 2
        assert sum(isinstance(o, dict) for o in outcomes) == 7
        release.clear()
        started.clear()
        # a request that expires while queued behind a running batch never reaches the model
        calls.clear()
        blocker = asyncio.ensure_future(batcher.submit(one, 1, far))
        await model_running()
        with pytest.raises(DeadlineExceeded, match="in the queue"):
            await batcher.submit(one, 1, time.monotonic() + 0.01)
        release.set()
        await blocker
        await asyncio.sleep(0.05)
        assert calls == [1]
        release.clear()
        started.clear()
        # a cancelled caller leaves the queue
        blocker = asyncio.ensure_future(batcher.submit(one, 1, far))
        await model_running()
        cancelled = asyncio.ensure_future(batcher.submit(one, 1, far))
        await asyncio.sleep(0.01)
        assert batcher.depth == 1
        cancelled.cancel()
        await asyncio.sleep(0.01)
        assert batcher.depth == 0
        release.set()
        await blocker
        assert calls == [1, 1]
        await batcher.stop()

    asyncio.run(scenario())


def test_batch_over_the_maximum_is_invalid() -> None:
    async def scenario() -> None:
        batcher = _row_model([])
        big = {"input_ids": np.ones((9, 2), np.int64), "attention_mask": np.ones((9, 2), np.int64)}
        with pytest.raises(InvalidInput, match="max_batch_size of 8"):
            await batcher.submit(big, 9, time.monotonic() + 1)

    asyncio.run(scenario())


def test_batcher_refuses_arrivals_while_a_standing_queue_waits_too_long() -> None:
    async def scenario() -> None:
        started, release = threading.Event(), threading.Event()
        batcher = _row_model([], (started, release))
        batcher.policy.max_queue_size = 100
        batcher.policy.max_queue_wait = 0.05
        batcher.start()
        one = {"input_ids": np.ones((1, 3), np.int64), "attention_mask": np.ones((1, 3), np.int64)}
        far = time.monotonic() + 10

        def admitted() -> float:  # what the data plane does: admit, decode (nothing here), release
            at = batcher.admit()
            batcher.release()
            return at

        first = asyncio.ensure_future(batcher.submit(one, 1, far, admitted()))
        while not started.is_set():
            await asyncio.sleep(0.001)
        # two requests admitted a second ago (their decoding took that long) queue behind it: a
        # burst is absorbed, nothing has been measured against the limit yet
        late = [asyncio.ensure_future(batcher.submit(one, 1, far, admitted() - 1.0)) for _ in range(2)]
        decoding = batcher.admit()  # one more arrives and is still being decoded
        await asyncio.sleep(0.12)  # past the first window
        release.set()
        await asyncio.gather(first, *late)  # the model started them 1 s after admission: standing queue
        with pytest.raises(Unavailable, match="wait over 50 ms"):
            batcher.admit()
        del decoding
        batcher.release()  # the decoded one leaves (answered or failed): nothing waits any more
        fresh = asyncio.ensure_future(batcher.submit(one, 1, far, admitted()))  # welcome again
        await fresh
        await batcher.stop()

    asyncio.run(scenario())


def test_batcher_refuses_arrivals_its_model_cannot_reach_within_the_wait_bound() -> None:
    def predict(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.01 * len(feed["x"]))  # 10 ms per row
        return {"y": feed["x"] * 2}

    async def scenario() -> None:
        policy = BatchPolicy(max_batch_size=2, max_queue_delay=0.0, max_queue_size=100, max_queue_wait=0.1)
        batcher = Batcher(predict, policy, ServingMetrics().for_model("m", "1"), ThreadPoolExecutor(1))
        batcher.start()
        far = time.monotonic() + 10
        for _ in range(40):  # the pace is unknown yet: a burst up to max_queue_size is taken
            batcher.admit()
        for _ in range(40):
            batcher.release()
        out = await batcher.submit({"x": np.ones((1, 2), np.float32)}, 1, far)  # one call: ~10 ms a row
        np.testing.assert_array_equal(out["y"], 2)
        admitted = 0
        with pytest.raises(Unavailable, match="wait over 100 ms"):
            while admitted < 100:  # held as being decoded: each is a row the next would wait behind
                batcher.admit()
                admitted += 1
        assert 2 <= admitted <= 10  # what one slot gets through in 100 ms at 10 ms a row (sleeps overshoot)
        for _ in range(admitted):
            batcher.release()
        batcher.admit()  # nothing waits any more: welcome again
        batcher.release()
        batcher.policy.max_queue_wait = 0  # the bound off: only max_queue_size counts
        for _ in range(100):
            batcher.admit()
        with pytest.raises(Unavailable, match="100 requests waiting"):
            batcher.admit()
        for _ in range(100):
            batcher.release()
        await batcher.stop()

    asyncio.run(scenario())


def test_batcher_runs_parallel_batches_on_free_slots() -> None:
    barrier = threading.Barrier(2, timeout=5)  # passes only when two model calls run at once
    rows_seen: list[int] = []

    def predict(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows_seen.append(len(feed["x"]))
        barrier.wait()
        return {"y": feed["x"] * 2}

    async def scenario() -> None:
        policy = BatchPolicy(max_batch_size=8, max_queue_delay=0.0, max_queue_size=10)
        executors = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
        batcher = Batcher(predict, policy, ServingMetrics().for_model("m", "1"), executors)
        batcher.start()
        far = time.monotonic() + 10
        feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(2)]
        first = asyncio.ensure_future(batcher.submit(feeds[0], 1, far))
        await asyncio.sleep(0.05)  # the first batch holds one slot, waiting at the barrier
        second = await batcher.submit(feeds[1], 1, far)  # runs in the other slot, releasing both
        assert (await first)["y"][0, 0] == 0 and second["y"][0, 0] == 2
        assert rows_seen == [1, 1]
        await batcher.stop()

    asyncio.run(scenario())


def test_available_cores_honours_a_container_cpu_quota(tmp_path: Path) -> None:
    from serving.runtimes import available_cores

    unlimited = available_cores(tmp_path / "absent")
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == unlimited
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one thread
    assert available_cores(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (unlimited + 8)} 100000\n")  # a quota above the mask: the mask
    assert available_cores(cpu_max) == unlimited
