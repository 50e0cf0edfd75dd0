"""``lumenserve bench --quick --peers`` on the tiny image bundle: lumenserve, KServe 0.21 and
MLServer 1.7.1 (each in its own venv under $LUMENSERVE_HOME/peers, installed on first use)
hold the same ONNX file and answer the same gRPC load; asserts that every peer figure exists,
that every request succeeded and that the peers listened on 127.0.0.1 only, never a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the first run installs both peers' venvs (a few minutes each)
def test_quick_bench_measures_the_peers(model_repo: Path, tmp_path: Path) -> None:
    out, markdown = tmp_path / "results.json", tmp_path / "benchmarks.md"
    cmd = [sys.executable, "-m", "lumenserve", "bench", "--repository", str(model_repo), "--model", "tiny-image",
           "--quick", "--peers", "--no-torchserve", "--no-training", "--out", str(out), "--markdown", str(markdown),
           "--work-dir", str(tmp_path / "work")]  # fmt: skip
    env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(out.read_text())
    assert "peers_tiny-image" not in result["errors"], result["errors"]

    section = result["peers"]["32px"]
    assert section["model"] == "tiny-image"
    for label in ("lumenserve", "kserve", "mlserver"):
        server = section["servers"][label]
        assert server["cold_start_s"] > 0 and server["rss_ready_bytes"] > 0 and server["rss_after_load_bytes"] > 0
        assert server["alive_after_load"] is True
        if label != "lumenserve":
            loopback = ("127.0.0.1:", "::ffff:127.0.0.1:")  # gRPC reports an IPv4-mapped address
            assert server["listening"] and all(a.startswith(loopback) for a in server["listening"])
        for mode in ("bytes", "tensor"):
            name = f"{label}_grpc_{mode}"
            labels = [answer.split(":")[2] for answer in section["sample_answers"][name]]
            assert labels and set(labels) <= {"cat", "dog", "bird"}, section["sample_answers"][name]
            for point in section["throughput"][name].values():
                assert point["errors"] == 0, point["first_error"]
                assert point["requests_per_s"] > 0 and point["p50_ms"] > 0
                assert point["server_cpu_ms_per_request"] > 0
    assert section["exit_codes"]["kserve"] is not None and section["exit_codes"]["mlserver"] is not None
    ceiling = section["ceiling"]
    assert ceiling["images_per_s"] > 0 and ceiling["batch1_p50_ms"] > 0 and ceiling["best"] in ceiling["points"]
    http = section["throughput"]["lumenserve_http_tensor"]["1"]
    assert http["errors"] == 0 and http["p50_ms"] > 0
    added = {t["target"]: t["value"] for t in result["targets"]}
    assert isinstance(added["32px: added p50 at concurrency 1, HTTP tensors"], float)
    assert isinstance(added["32px: added p50 at concurrency 1, GRPC tensors"], float)

    targets = {t["target"] for t in result["targets"]}
    assert any(t.startswith("32px: lumenserve / KServe req/s") for t in targets)
    text = markdown.read_text()
    assert "## Peers: KServe 0.21 and MLServer 1.7.1" in text and "### 32px (`tiny-image`)" in text
    assert "In-process tensor ceiling" in text
