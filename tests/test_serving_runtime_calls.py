"""ONNX Runtime on CPU runs a batch whose inputs exceed ``cpu_call_input_bytes`` as consecutive
smaller calls, with the answers of one whole-batch call."""

from __future__ import annotations

import numpy as np

from lumenserve.bundle import Bundle
from lumenserve.bundle.eager import load_tokenizer
from serving.runtimes import load_runtime
from serving.runtimes.onnx import OnnxRuntime
from serving.settings import ServingSettings


def _runtime(bundle: Bundle, call_input_bytes: int) -> OnnxRuntime:
    runtime = load_runtime(bundle, ServingSettings(cpu_call_input_bytes=call_input_bytes, device="cpu"))
    assert isinstance(runtime, OnnxRuntime)
    return runtime


def test_a_large_image_batch_runs_in_calls_with_the_same_answers(image_bundle: Bundle) -> None:
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)  # 12 KiB a row
    whole = _runtime(image_bundle, 0)
    split = _runtime(image_bundle, 2 * images[0].nbytes + 100)  # two rows fit
    assert whole.rows_per_call({"input": images}) is None
    assert split.rows_per_call({"input": images}) == 2  # calls of 2, 2 and 1 rows
    assert split.rows_per_call({"input": images[:2]}) is None  # fits: one call
    expected, got = whole.predict({"input": images}), split.predict({"input": images})
    assert set(got) == set(expected)
    for name in expected:
        assert got[name].shape == expected[name].shape
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)
    tiny = _runtime(image_bundle, 1)  # under one row: still one row per call, never zero
    assert tiny.rows_per_call({"input": images}) == 1
    np.testing.assert_allclose(tiny.predict({"input": images})["logits"], expected["logits"], rtol=1e-5, atol=1e-5)


def test_text_inputs_split_together(text_bundle: Bundle) -> None:
    tokenizer = load_tokenizer(text_bundle)
    texts = ["a fine film", "dull", "not bad at all, really", "bad", "a long and tiresome story"]
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    feed = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    row = sum(a[0].nbytes for a in feed.values())
    split = _runtime(text_bundle, 3 * row)
    assert split.rows_per_call(feed) == 3
    expected = _runtime(text_bundle, 0).predict(feed)
    got = split.predict(feed)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-5)


def test_the_default_keeps_small_batches_whole(image_bundle: Bundle) -> None:
    runtime = _runtime(image_bundle, ServingSettings().cpu_call_input_bytes)
    images = np.zeros((32, 3, 32, 32), np.float32)  # 32 rows of 12 KiB: under 2.5 MiB
    assert runtime.rows_per_call({"input": images}) is None
    large = np.zeros((32, 3, 224, 224), np.float32)  # 588 KiB a row: 4 rows per call
    assert runtime.rows_per_call({"input": large}) == 4
