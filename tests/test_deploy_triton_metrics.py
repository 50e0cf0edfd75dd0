"""Triton-named recording rules (monitoring/triton-metrics.yml), process/Python collectors and
lumenserve_build_info on a real server.

promtool (Debian's prometheus package) checks the rules and runs their unit tests; a
weakened rule must make those tests fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.server import ServerProcess
from tests.test_deploy_monitoring import METRIC, base_metric, contract_metrics, promtool

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "triton-metrics.yml"
RULES_TEST = MONITORING / "triton-metrics.test.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "components" / "triton-metrics" / "prometheusrule.yaml"
# The per-model series Triton dashboards and autoscalers read.
TRITON_SERIES = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
    "nv_gpu_memory_used_bytes",
}


def records() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_rules_record_the_triton_series_from_contract_metrics() -> None:
    assert set(records()) == TRITON_SERIES
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(TRITON_SERIES)} rules found" in out.stdout
    used = {base_metric(m) for expr in records().values() for m in METRIC.findall(expr)}
    assert used <= contract_metrics(), used - contract_metrics()


def test_promtool_unit_tests_check_every_series() -> None:
    out = promtool("test", "rules", RULES_TEST.name, cwd=MONITORING)
    assert out.returncode == 0, out.stdout + out.stderr
    tested = set(re.findall(r"\bnv_[a-z_]+\b", RULES_TEST.read_text()))
    assert tested == TRITON_SERIES, TRITON_SERIES - tested


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('status!="OK"', 'status=~"INTERNAL|UNAVAILABLE"'),  # failures would miss client errors
        ("lumenserve_queue_duration_seconds_sum * 1e6", "lumenserve_queue_duration_seconds_sum * 1e3"),  # ms, not µs
        ("expr: lumenserve_batch_size_sum", "expr: lumenserve_batch_size_count"),  # batches, not rows
    ],
)
def test_unit_tests_fail_when_a_rule_is_broken(tmp_path: Path, old: str, new: str) -> None:
    text = RULES.read_text()
    assert text.count(old) == 1, old
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    out = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert out.returncode != 0, out.stdout


def test_prometheusrule_component_carries_the_same_rules() -> None:
    manifest = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert manifest["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], (
        "k8s/components/triton-metrics/prometheusrule.yaml differs from monitoring/triton-metrics.yml: "
        "regenerate it (docs/deployment.md, 'Triton metric names')"
    )


def test_server_exports_process_python_and_build_info(tmp_path: Path) -> None:
    """A real server (no models needed): the collectors are there and promtool accepts the page."""
    with ServerProcess(tmp_path) as server:
        text = httpx.get(f"http://{server.http_url}/metrics", timeout=30).text
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_gc_objects_collected_total",
        "python_info",
    ):
        assert re.search(rf"^{name}[{{ ]", text, re.M), f"{name} missing"
    [build] = re.findall(r"^lumenserve_build_info\{(.*)\} 1\.0$", text, re.M)
    labels = dict(re.findall(r'(\w+)="([^"]*)"', build))
    assert set(labels) == {"version", "python", "onnxruntime", "torch"}
    assert labels["version"] and labels["python"].startswith("3.11") and labels["onnxruntime"]
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
