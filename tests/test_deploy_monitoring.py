"""Alert rules, their unit tests, the PrometheusRule copy, the adapter rule and the dashboard.

Uses Debian's promtool (`apt-get install prometheus`, done by scripts/setup.sh).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "lumenserve-rules.yml"
RULES_TEST = MONITORING / "lumenserve-rules.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ADAPTER = MONITORING / "prometheus-adapter-rules.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "prometheusrule.yaml"
METRIC = re.compile(r"\blumenserve_[a-z_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Grafana's variables, replaced by plain values so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$model": ".*"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert shutil.which("promtool"), "promtool is needed: apt-get install prometheus (scripts/setup.sh does)"
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def contract_metrics() -> set[str]:
    """The metric names docs/CONTRACTS.md promises."""
    return set(re.findall(r"^\| `(lumenserve_[a-z_]+)` \|", (ROOT / "docs" / "CONTRACTS.md").read_text(), re.M))


def base_metric(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in contract_metrics():
            return name.removesuffix(suffix)
    return name


def rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rules()["groups"] for r in g["rules"] if "alert" in r}


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_rules_pass_promtool_check() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout


def test_rules_cover_the_failure_modes() -> None:
    assert {
        "LumenserveHighErrorRate",
        "LumenserveHighLatencyP99",
        "LumenserveQueueSaturated",
        "LumenserveModelNotReady",
    } <= set(alerts())
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert "for" in rule, f"{name} would fire on a single bad evaluation"


def test_promtool_unit_tests_pass_and_prove_every_alert_fires() -> None:
    out = promtool("test", "rules", RULES_TEST.name, cwd=MONITORING)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert fired == set(alerts()), f"alerts without a firing test: {set(alerts()) - fired}"


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("LumenserveHighErrorRate", ") > 0.05", ") > 0.5"),  # a threshold the synthetic 16.7 % misses
        ("LumenserveModelNotReady", "lumenserve_model_ready == 0", "lumenserve_model_ready < 0"),
    ],
)
def test_unit_tests_fail_when_an_alert_is_broken(tmp_path: Path, alert: str, old: str, new: str) -> None:
    """The promtool tests are not vacuous: weaken an alert and they fail."""
    text = RULES.read_text()
    assert text.count(old) == 1
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    out = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert out.returncode != 0
    assert f"alertname: {alert}" in out.stdout + out.stderr


def test_prometheusrule_carries_the_same_rules() -> None:
    manifest = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert manifest["spec"]["groups"] == rules()["groups"], (
        "k8s/base/prometheusrule.yaml differs from monitoring/lumenserve-rules.yml: "
        "regenerate it (docs/deployment.md, 'Alerts')"
    )
    # And textually: the generated form (header, then the rules file's groups indented).
    text = PROMETHEUS_RULE.read_text()
    header = text[: text.index("\nspec:\n") + len("\nspec:\n")]
    groups = RULES.read_text()[RULES.read_text().index("groups:\n") :]
    assert text == header + "".join(f"  {line}" for line in groups.splitlines(True))  # as the sed does


def test_every_metric_used_is_in_the_contract() -> None:
    used = {
        "alerts": METRIC.findall(RULES.read_text()),
        "dashboard": [m for _, expr in dashboard_exprs() for m in METRIC.findall(expr)],
        "adapter": METRIC.findall(ADAPTER.read_text()),
    }
    contract = contract_metrics()
    assert len(contract) >= 10
    for where, names in used.items():
        unknown = {base_metric(n) for n in names} - contract
        assert not unknown, f"{where} uses metrics docs/CONTRACTS.md does not define: {unknown}"


def test_dashboard_is_well_formed_and_covers_the_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] == "lumenserve"
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), p["title"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "model"} <= variables
    used = {base_metric(m) for _, expr in dashboard_exprs() for m in METRIC.findall(expr)}
    wanted = {
        "lumenserve_requests_total",  # requests and errors
        "lumenserve_request_duration_seconds",  # latency quantiles
        "lumenserve_queue_depth",
        "lumenserve_batch_size",
        "lumenserve_explain_duration_seconds",
        "lumenserve_explain_cache_total",  # cache hits
        "lumenserve_model_ready",
    }
    assert wanted <= used, wanted - used
    assert any("histogram_quantile(0.99" in expr for _, expr in dashboard_exprs())
    assert any('result="hit"' in expr for _, expr in dashboard_exprs())


def test_dashboard_and_adapter_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query and the adapter's query (as recording rules)."""
    records = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    adapter_rule = yaml.safe_load(ADAPTER.read_text())["rules"][0]
    series = adapter_rule["seriesQuery"]
    adapter_query = (
        adapter_rule["metricsQuery"]
        .replace("<<.Series>>", series.split("{")[0])
        .replace("<<.LabelMatchers>>", 'namespace="default",pod=~"lumenserve-.*"')
        .replace("<<.GroupBy>>", "pod")
    )
    records.append({"record": "adapter:query", "expr": adapter_query})
    records.append({"record": "adapter:series", "expr": series})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": records}]}))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(records)} rules found" in out.stdout
