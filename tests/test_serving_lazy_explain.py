"""A server that only predicts never loads torch; explain loads it on first use.

Checked on a real server process through ``/proc/PID/maps`` (libtorch is mapped once torch
is imported), and the serving tokenizer against transformers' on the tiny text bundle.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from lumenserve.bundle import Bundle, TextPreprocessing
from lumenserve.bundle.eager import load_serving_tokenizer, load_tokenizer
from lumenserve.bundle.text import FileTokenizer, tokenize
from tests.support.clients import jpeg_bytes
from tests.support.server import ServerProcess


def _torch_mapped(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _predict(url: str) -> None:
    """A JPEG and a sentence, as BYTES over tritonclient's HTTP client (binary extension)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url)
    try:
        for model, name, item in (("tiny-image", "image", jpeg_bytes(1)), ("tiny-text", "text", b"a fine film")):
            tensor = httpclient.InferInput(name, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([item], dtype=np.object_))
            result = client.infer(model, [tensor])
            assert result.as_numpy("probabilities").shape[0] == 1
    finally:
        client.close()


def test_predictions_never_load_torch_and_explain_loads_it_on_first_use(model_repo: Path) -> None:
    with ServerProcess(model_repo) as server, httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as client:
        assert server.proc is not None
        pid = server.proc.pid
        for _ in range(3):
            _predict(server.http_url)
        assert client.get("/v2/models/tiny-image/stats").status_code == 200
        assert not _torch_mapped(pid), "a prediction-only server loaded torch"

        listing = client.get("/v2/models/tiny-image/explain")  # discovery loads the explain library
        assert listing.status_code == 200, listing.text
        assert "saliency" in [m["name"] for m in listing.json()["methods"]]
        assert _torch_mapped(pid)
        explained = client.post(
            "/v2/models/tiny-text/explain",
            json={
                "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a fine film"]}],
                "parameters": {"method": "occlusion", "render_png": False, "deletion_steps": 0, "infidelity": False},
            },
        )
        assert explained.status_code == 200, explained.text
        names = [o["name"] for o in explained.json()["outputs"]]
        assert "attributions" in names


TEXTS = [
    "a fine film",
    "",
    "UPPER Case, héllo wörld; 日本語 🙂 tabs\tand\nnewlines",
    "word " * 400,  # truncated at max_length
    "x",
]


@pytest.mark.parametrize("variant", ["as-is", "pad-to-max-length", "lowercase"])
def test_serving_tokenizer_matches_transformers(text_bundle: Bundle, variant: str) -> None:
    pre = text_bundle.manifest.preprocessing
    assert isinstance(pre, TextPreprocessing)
    if variant == "pad-to-max-length":
        pre = pre.model_copy(update={"pad_to_max_length": True, "max_length": 24})
    elif variant == "lowercase":
        pre = pre.model_copy(update={"lowercase": True})
    served = FileTokenizer(text_bundle.subdir(pre.tokenizer_dir), pre)
    reference = load_tokenizer(text_bundle)
    assert isinstance(load_serving_tokenizer(text_bundle), FileTokenizer)
    assert len(served) == len(reference) and served.pad_token_id == reference.pad_token_id
    for batch in (TEXTS, TEXTS[:1], TEXTS[3:4], TEXTS[1:3]):
        ours, theirs = tokenize(served, pre, batch), tokenize(reference, pre, batch)
        for key in ("input_ids", "attention_mask"):
            assert ours[key].dtype == np.int64
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=f"{variant} {key} {batch[:1]}")
    if variant == "pad-to-max-length":
        assert tokenize(served, pre, ["x"])["input_ids"].shape == (1, 24)
