"""A real Prometheus scrapes a real lumenserve: the request counter shows the test's traffic.

Starts `lumenserve serve` (the session's tiny model repository) and Debian's `prometheus`
on 127.0.0.1 with a temporary config and TSDB, sends known traffic over HTTP and gRPC,
then asks Prometheus' HTTP API. Also: `promtool check metrics` on /metrics, the alert
rules load and evaluate on live data, every dashboard query runs, the gRPC health
services the Kubernetes probes ask for answer SERVING, and the image's HEALTHCHECK
command passes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.support.ports import raise_if_port_clash, retry_on_port_clash, unused_port
from tests.support.server import ServerOptions, ServerProcess
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "monitoring" / "lumenserve-rules.yml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
HTTP_OK, GRPC_OK, HTTP_BAD = 7, 5, 3  # the traffic this test sends to tiny-image

pytestmark = pytest.mark.slow

T = TypeVar("T")


def log_tail(log: Path) -> Callable[[], str]:
    return lambda: log.read_text()[-3000:] if log.exists() else ""


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server_options() -> ServerOptions:
    return ServerOptions(("--host", "127.0.0.1", "--grace-period", "5"))


def send_traffic(server: ServerProcess) -> None:
    # Our own generated stubs (the same messages tritonclient uses).
    import grpc

    from serving.protogen import grpc_service_pb2 as inference_pb2
    from serving.protogen import grpc_service_pb2_grpc as inference_pb2_grpc

    image = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)  # (batch, C, H, W)
    body = {
        "inputs": [{"name": "input", "shape": list(image.shape), "datatype": "FP32", "data": image.ravel().tolist()}]
    }
    bad = {"inputs": [{"name": "input", "shape": [1, 3, 31, 32], "datatype": "FP32", "data": [0.0] * (3 * 31 * 32)}]}
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as client:
        for _ in range(HTTP_OK):
            response = client.post("/v2/models/tiny-image/infer", json=body)
            assert response.status_code == 200, response.text
        for _ in range(HTTP_BAD):
            assert client.post("/v2/models/tiny-image/infer", json=bad).status_code == 400
    request = inference_pb2.ModelInferRequest(
        model_name="tiny-image",
        inputs=[inference_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=image.shape)],
        raw_input_contents=[image.tobytes()],
    )
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(GRPC_OK):
            response = stub.ModelInfer(request, timeout=30)
            logits = next(o for o in response.outputs if o.name == "logits")
            assert list(logits.shape) == [1, 3]


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        payload = response.json()
        assert response.status_code == 200 and payload["status"] == "success", f"{promql}: {payload}"
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is needed: apt-get install prometheus (scripts/setup.sh does)"
    home = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "lumenserve", "static_configs": [{"targets": [server.http_url]}]}],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = home / "prometheus.log"

    def start(ports: list[int]) -> tuple[subprocess.Popen[bytes], str]:
        cmd = [
            binary,
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{ports[0]}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with log.open("wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=home)
        url = f"http://127.0.0.1:{ports[0]}"

        def ready() -> bool:
            if process.poll() is not None:
                raise_if_port_clash(log.read_text())
                raise AssertionError(f"prometheus exited:\n{log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, 60, "prometheus /-/ready", interval=0.2, details=log_tail(log))
        except BaseException:
            stop(process)
            raise
        return process, url

    process, url = retry_on_port_clash(start, 1)
    try:
        yield Prometheus(url, log)
    finally:
        stop(process)


def test_metrics_endpoint_passes_promtool(server: ServerProcess) -> None:
    send_traffic(server)  # so every counter and histogram has samples
    text = httpx.get(f"http://{server.http_url}/metrics", timeout=10).text
    assert "lumenserve_requests_total{" in text
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def test_prometheus_sees_the_traffic(server: ServerProcess, prometheus: Prometheus) -> None:
    # The module's first test sent one round already (or not, if run alone); send another
    # and expect the counter to move by exactly it.
    def counts() -> dict[tuple[str, str], float]:
        rows = prometheus.query(
            'sum by (protocol, status) (lumenserve_requests_total{model="tiny-image",endpoint="infer"})'
        )
        return {(r["metric"]["protocol"], r["metric"]["status"]): float(r["value"][1]) for r in rows}

    def scraped_and_settled() -> dict[tuple[str, str], float] | None:
        if not prometheus.query('up{job="lumenserve"} == 1'):
            return None  # not scraped yet
        first = counts()  # empty when this test runs alone
        time.sleep(2.5)  # two scrapes later: settled means unchanged across them
        return (first,) if counts() == first else None

    (before,) = wait_until(scraped_and_settled, 60, "a first scrape of lumenserve", details=log_tail(prometheus.log))
    send_traffic(server)
    expected = {
        ("http", "OK"): before.get(("http", "OK"), 0) + HTTP_OK,
        ("grpc", "OK"): before.get(("grpc", "OK"), 0) + GRPC_OK,
        ("http", "INVALID_ARGUMENT"): before.get(("http", "INVALID_ARGUMENT"), 0) + HTTP_BAD,
    }
    wait_until(lambda: counts() == expected, 30, f"Prometheus to report {expected}", details=log_tail(prometheus.log))
    assert all(float(r["value"][1]) == 1 for r in prometheus.query("lumenserve_model_ready"))
    assert {r["metric"]["model"] for r in prometheus.query("lumenserve_model_ready")} == {"tiny-image", "tiny-text"}
    targets = httpx.get(f"{prometheus.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]


def test_alert_rules_evaluate_on_live_data(server: ServerProcess, prometheus: Prometheus) -> None:
    expected = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}

    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = wait_until(evaluated, 30, "the alert rules to be evaluated", details=log_tail(prometheus.log))
    assert {r["name"] for r in rules} == expected
    for rule in rules:
        assert rule["health"] == "ok", rule
    states = {r["name"]: r["state"] for r in rules}
    assert states["LumenserveModelNotReady"] == "inactive"  # both models are ready
    assert states["LumenserveDown"] == "inactive"


def test_every_dashboard_query_runs(server: ServerProcess, prometheus: Prometheus) -> None:
    from tests.test_deploy_monitoring import dashboard_exprs, grafana_to_promql

    def with_data() -> set[str]:  # every query runs (query() asserts success); these have data
        return {title for title, expr in dashboard_exprs() if prometheus.query(grafana_to_promql(expr))}

    # polled: an instant query answers nothing for a moment after a scrape that timed out
    wanted = {"Requests per second by model and status", "Models ready", "Queue depth"}
    wait_until(lambda: wanted <= with_data(), 30, f"{wanted} to have data", details=lambda: str(with_data()))


def test_probe_targets_and_image_healthcheck_answer(server: ServerProcess) -> None:
    """What Kubernetes' gRPC probes and Docker's HEALTHCHECK ask, against the live server."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_url)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        deployment = yaml.safe_load((ROOT / "k8s" / "base" / "deployment.yaml").read_text())
        c = deployment["spec"]["template"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            service = c[probe]["grpc"]["service"]
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING, (probe, service)
    finally:
        channel.close()
    with (ROOT / "Dockerfile").open("rb") as fileobj:
        healthcheck = [
            i["value"] for i in DockerfileParser(fileobj=fileobj).structure if i["instruction"] == "HEALTHCHECK"
        ]
    command = json.loads(healthcheck[-1].split("CMD", 1)[1])
    assert command[0] == "python"
    env = {**os.environ, "LUMENSERVE_HTTP_PORT": str(server.http_port)}
    result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    with unused_port() as port:  # nothing listens there: the check must fail
        env["LUMENSERVE_HTTP_PORT"] = str(port)
        result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False)
    assert result.returncode != 0
