"""``lumenserve bench --quick`` end to end on the tiny image bundle: real servers
(lumenserve x2, TorchServe), real clients; asserts that every section produced numbers
and both output files, never a speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.slow
@pytest.mark.torchserve
def test_quick_bench_produces_every_figure(model_repo: Path, tmp_path: Path) -> None:
    out, markdown = tmp_path / "results.json", tmp_path / "benchmarks.md"
    markdown.write_text("old tables\n<!-- analysis: everything below this line is kept when the harness rewrites "
                        "the file -->\nHAND-WRITTEN ANALYSIS\n")  # fmt: skip
    cmd = [sys.executable, "-m", "lumenserve", "bench", "--repository", str(model_repo), "--model", "tiny-image",
           "--quick", "--out", str(out), "--markdown", str(markdown), "--work-dir", str(tmp_path / "work"),
           "--cold-start-models", "tiny-image,tiny-text"]  # fmt: skip
    env = dict(os.environ, ORT_DISABLE_TELEMETRY="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    result = json.loads(out.read_text())
    assert result["errors"] == {}, result["errors"]

    assert result["machine"]["logical_cpus"] >= 1 and result["machine"]["packages"]["onnxruntime"]
    assert _positive(result["ceiling"]["best"]["bytes"]["images_per_s"])
    assert _positive(result["ceiling"]["best"]["tensor"]["images_per_s"])
    for name in ("lumenserve_grpc_bytes", "lumenserve_grpc_tensor", "lumenserve_http_bytes",
                 "lumenserve_http_tensor", "torchserve_ours_http_bytes"):  # fmt: skip
        for conc in ("1", "4"):
            point = result["throughput"][name][conc]
            assert _positive(point["requests_per_s"]), (name, conc, point)
            assert point["errors"] == 0, (name, point["first_error"])
            assert point["p50_ms"] <= point["p90_ms"] <= point["p99_ms"]
    # the top-5 answer really came back (3 classes in the tiny model: all of them)
    assert len(result["sample_answers"]["lumenserve_grpc_bytes"]) == 3
    assert _positive(result["omp_wait_policy"]["PASSIVE"]["1"]["requests_per_s"])

    for key, case in result["explain"]["cases"].items():
        for contender in ("captum_in_process", "lumenserve_lean", "lumenserve_default", "torchserve_ours"):
            assert _positive(case["median_s"][contender]), (key, contender, result["explain"]["errors"])
    assert _positive(result["cold_start"]["lumenserve_median_s"])
    assert _positive(result["cold_start"]["torchserve_median_s"])
    defaults = result["cold_start_defaults"]  # one server holding both bundles, started alone
    assert defaults["models"] == ["tiny-image", "tiny-text"] and len(defaults["runs_s"]) == 1
    assert _positive(defaults["median_s"]) and all(map(_positive, defaults["rss_ready_bytes"]))
    overload = result["overload"]
    assert _positive(overload["goodput_per_s"]) and overload["server_alive_after"] is True
    assert overload["ok"] + overload["rejected"] + overload["failed"] > 0
    assert _positive(result["training"]["ratio"])
    runtime_explain = result["runtime_explain"]  # the quick plan: a 32 px imported ONNX model
    assert runtime_explain["image_size"] == 32 and set(runtime_explain["methods"]) == {"occlusion", "kernel_shap"}
    for method, m in runtime_explain["methods"].items():
        assert _positive(m["lumenserve_s"]) and _positive(m["ratio"]), (method, m)
        assert set(m["captum_ort_s"]) == {"1", "8", "64"} and all(map(_positive, m["captum_ort_s"].values()))
        assert m["forward_rows"] > 1, (method, m)  # the perturbations really ran on the runtime

    targets = {t["target"]: t for t in result["targets"]}
    assert "cold start to ready, lumenserve (median)" in targets
    unmeasured = [name for name, t in targets.items() if t["met"] is None]
    # a 2 s overload may see no rejection at all; every other target must have been judged
    assert unmeasured in ([], ["2x saturation: rejection p99"]), unmeasured
    if unmeasured:
        assert overload["rejected"] == 0

    text = markdown.read_text()
    assert "## Targets" in text and "| lumenserve_grpc_bytes | 1 |" in text
    assert "Ready with the default bundles (tiny-image, tiny-text)" in text
    assert "## Explanations of an imported ONNX model on the served runtime (32 px" in text
    assert "| occlusion (window 4, stride 2, pe " in text
    assert "HAND-WRITTEN ANALYSIS" in text and "old tables" not in text
