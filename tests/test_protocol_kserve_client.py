"""KServe's own Python SDK v2 clients (``InferenceGRPCClient``, ``InferenceRESTClient``) against a
real lumenserve: readiness, metadata and infer, with results equal to tritonclient's.

The SDK pins packages that clash with ours, so it lives in its own venv under
``$LUMENSERVE_HOME/peers/kserve`` (the benchmark's KServe peer venv, bench/peers/venvs.py:
created on first use from the package registry, reused after) and runs as a script
(tests/support/kserve_client_check.py) that prints what it read.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.peers.venvs import ensure_venv
from tests.support.clients import triton_infer
from tests.support.server import ServerOptions, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the first run installs the kserve SDK venv
CHECK_SCRIPT = Path(__file__).parent / "support" / "kserve_client_check.py"


def kserve_python() -> Path:
    """The venv holding the kserve SDK: the benchmark's KServe peer venv (built once, reused)."""
    return ensure_venv("kserve", log=lambda _line: None)


@pytest.fixture(scope="module")
def server_options() -> ServerOptions:
    return ServerOptions(env={"LUMENSERVE_EXPLAIN": "false"})


def run_check(server: ServerProcess, model: str, inputs: list[dict[str, object]]) -> dict[str, object]:
    spec = {"http": f"http://{server.http_url}", "grpc": server.grpc_url, "model": model, "inputs": inputs}
    done = subprocess.run(
        [str(kserve_python()), str(CHECK_SCRIPT), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_kserve_clients_read_metadata_and_infer_tensors(server: ServerProcess) -> None:
    image = np.random.default_rng(7).random((2, 3, 32, 32), dtype=np.float32)
    result = run_check(
        server,
        "tiny-image",
        [{"name": "input", "datatype": "FP32", "shape": [2, 3, 32, 32], "data": image.ravel().tolist()}],
    )
    for key in ("grpc_live", "grpc_ready", "grpc_model_ready", "rest_live", "rest_ready", "rest_model_ready"):
        assert result[key] is True, key
    assert result["server_metadata"]["name"] == "lumenserve"  # type: ignore[index]
    assert result["model_metadata"]["inputs"] == [  # type: ignore[index]
        {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
    ]
    expected = triton_infer("http", server.http_url, "tiny-image", {"input": (image, "FP32")})
    for key in ("grpc_infer", "rest_infer_json", "rest_infer_binary"):
        outputs = result[key]
        assert set(outputs) == set(expected)  # type: ignore[arg-type]
        for name, array in expected.items():
            np.testing.assert_allclose(np.array(outputs[name]), array.reshape(-1), rtol=1e-6, atol=1e-6)  # type: ignore[index]


def test_kserve_clients_infer_raw_text(server: ServerProcess) -> None:
    texts = ["a fine film", "dull and long"]
    result = run_check(server, "tiny-text", [{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}])
    expected = triton_infer(
        "http", server.http_url, "tiny-text", {"text": (np.array([t.encode() for t in texts], dtype=object), "BYTES")}
    )
    for key in ("grpc_infer", "rest_infer_json", "rest_infer_binary"):
        for name, array in expected.items():
            np.testing.assert_allclose(np.array(result[key][name]), array.reshape(-1), rtol=1e-6, atol=1e-6)  # type: ignore[index]
