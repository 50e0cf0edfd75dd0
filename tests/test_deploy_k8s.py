"""Kubernetes manifests: the kustomize overlays build, validate strictly, and hang together.

Every object is validated with kubernetes-validate (strict: unknown fields are errors) for
the oldest and newest Kubernetes versions we support (image volumes from 1.33); the Prometheus Operator's CRDs
(ServiceMonitor, PrometheusRule) have no schema there and are validated against the subset
schemas shipped in k8s/schemas/. An object of any other kind fails the test.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
# Native gRPC probes are GA from 1.27; 1.32 is the kubectl here.
KUBERNETES_VERSIONS = ("1.27", "1.32")
# Variants using newer API fields are validated against at least this version.
MINIMUM_VERSION = {"repository-image-volume": "1.33"}
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): K8S / "schemas" / "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): K8S / "schemas" / "prometheusrule-monitoring-v1.json",
}
# An overlay, plus the components (k8s/components/) an overlay of the user's would add.
VARIANTS = (
    "cpu",
    "gpu",
    "cpu+repository-claim",
    "cpu+repository-image-volume",
    "cpu+headless-service+kube-prometheus-stack",
    "gpu+nvidia-runtime-class+triton-metrics",
)
GRPC_PORT = 8081
HTTP_PORT = 8080
PRESTOP_SLEEP_S = 5

Manifest = dict[str, Any]


def kustomize(directory: Path) -> list[Manifest]:
    assert shutil.which("kubectl"), "kubectl (with its built-in kustomize) is needed: see docs/deployment.md"
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@cache
def build(variant: str) -> tuple[Manifest, ...]:
    overlay, *components = variant.split("+")
    if components:
        # An overlay as a user writes it: one of ours plus components.
        scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"lumenserve-kustomize-{os.getpid()}-{variant}"
        scratch.mkdir(parents=True, exist_ok=True)
        listed = "".join(f"  - {os.path.relpath(K8S / 'components' / c, scratch)}\n" for c in components)
        (scratch / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {os.path.relpath(K8S / 'overlays' / overlay, scratch)}\n"
            f"components:\n{listed}"
        )
        try:
            return tuple(kustomize(scratch))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return tuple(kustomize(K8S / "overlays" / overlay))


def main_service(objects: tuple[Manifest, ...]) -> Manifest:
    """The Service clients and the ServiceMonitor use (the headless one is optional)."""
    return next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "lumenserve")


def one(objects: tuple[Manifest, ...], kind: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(objects: tuple[Manifest, ...]) -> Manifest:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["lumenserve"]
    return containers[0]


def settings(objects: tuple[Manifest, ...]) -> dict[str, str]:
    return one(objects, "ConfigMap")["data"]


def validate(obj: Manifest, version: str) -> None:
    """kubernetes-validate --strict, or our CRD schema; any other kind is an error."""
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        schema = json.loads(CRD_SCHEMAS[key].read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)
        return
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_strictly(variant: str, version: str) -> None:
    objects = build(variant)
    for component, minimum in MINIMUM_VERSION.items():
        if component in variant.split("+"):
            version = max(version, minimum, key=lambda v: tuple(map(int, v.split("."))))
    kinds = sorted(o["kind"] for o in objects)
    expected = {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    }
    assert expected <= set(kinds), kinds
    for obj in objects:
        validate(obj, version)


def test_strict_validation_rejects_what_it_should() -> None:
    """The validators would catch a typo: an unknown field, a bad CRD field, a bad duration."""
    objects = build("cpu")
    deployment = copy.deepcopy(one(objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": GRPC_PORT}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment, KUBERNETES_VERSIONS[-1])
    monitor = copy.deepcopy(one(objects, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor, KUBERNETES_VERSIONS[-1])
    rule = copy.deepcopy(one(objects, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(rule, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_use_native_grpc_health(variant: str) -> None:
    c = container(build(variant))
    ready = c["readinessProbe"]["grpc"]
    startup = c["startupProbe"]["grpc"]
    live = c["livenessProbe"]["grpc"]
    assert ready == {"port": GRPC_PORT, "service": ""}  # overall: NOT_SERVING until warm / draining
    assert startup == {"port": GRPC_PORT, "service": ""}
    # Liveness must not follow readiness, or draining and reloading would kill the pod.
    assert live["port"] == GRPC_PORT and live["service"] != ""
    startup_budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert startup_budget >= 120, "model loading and warm-up need minutes, not seconds"


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_is_locked_down(variant: str) -> None:
    objects = build(variant)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "limits" in c["resources"] and "requests" in c["resources"], c["name"]
    # Writable places are emptyDirs at /tmp and LUMENSERVE_HOME; the repository is read-only.
    main = container(objects)
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert "emptyDir" in volumes[mounts["/var/lib/lumenserve"]["name"]]
    assert mounts["/models"]["readOnly"] is True


@pytest.mark.parametrize("variant", VARIANTS)
def test_server_flags_ports_and_token(variant: str) -> None:
    objects = build(variant)
    c = container(objects)
    args = c["args"]
    assert args[0] == "serve"
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags == {
        "--repository": "/models",
        "--host": "0.0.0.0",
        "--http-port": str(HTTP_PORT),
        "--grpc-port": str(GRPC_PORT),
    }
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": HTTP_PORT, "grpc": GRPC_PORT}
    service = main_service(objects)
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        "http": (HTTP_PORT, "http"),
        "grpc": (GRPC_PORT, "grpc"),
    }
    token = next(e for e in c["env"] if e["name"] == "LUMENSERVE_REPOSITORY_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "lumenserve-repository-token"
    # The settings ConfigMap is the one kustomize generated (hash-suffixed: changes roll pods).
    refs = [e["configMapRef"]["name"] for e in c["envFrom"]]
    assert refs == [one(objects, "ConfigMap")["metadata"]["name"]]
    assert refs[0].startswith("lumenserve-settings-")


@pytest.mark.parametrize("variant", VARIANTS)
def test_termination_grace_covers_the_drain(variant: str) -> None:
    objects = build(variant)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    drain = float(settings(objects)["LUMENSERVE_GRACE_PERIOD"])
    assert container(objects)["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP_S)]
    # The kubelet's clock includes the preStop hook; a little slack, not minutes of it.
    assert PRESTOP_SLEEP_S + drain <= pod["terminationGracePeriodSeconds"] <= PRESTOP_SLEEP_S + drain + 10


@pytest.mark.parametrize("variant", VARIANTS)
def test_selectors_and_ports_line_up(variant: str) -> None:
    objects = build(variant)
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(main_service(objects)["spec"]["selector"])
    assert selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    policy = one(objects, "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"])
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == {HTTP_PORT, GRPC_PORT}
    assert policy["egress"] == [] and "Egress" in policy["policyTypes"]  # no phone-home
    service = main_service(objects)
    monitor = one(objects, "ServiceMonitor")["spec"]
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
    assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert monitor["endpoints"][0]["path"] == "/metrics"
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lumenserve"}
    assert hpa["minReplicas"] >= 1 and hpa["maxReplicas"] > hpa["minReplicas"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaler_uses_cpu_and_a_lumenserve_pods_metric(variant: str) -> None:
    hpa = one(build(variant), "HorizontalPodAutoscaler")["spec"]
    by_type = {m["type"]: m for m in hpa["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    pods_metric = by_type["Pods"]["pods"]["metric"]["name"]
    # The Prometheus adapter rule we ship must expose exactly that name.
    adapter = yaml.safe_load((ROOT / "monitoring" / "prometheus-adapter-rules.yml").read_text())
    exposed = {rule["name"]["as"]: rule for rule in adapter["rules"]}
    assert pods_metric in exposed
    assert exposed[pods_metric]["seriesQuery"].startswith(pods_metric + "{")
    assert set(exposed[pods_metric]["resources"]["overrides"]) == {"namespace", "pod"}


def test_gpu_overlay_asks_for_a_gpu_and_batches_more() -> None:
    cpu, gpu = build("cpu"), build("gpu")
    gpu_pod = one(gpu, "Deployment")["spec"]["template"]["spec"]
    resources = container(gpu)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert gpu_pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in gpu_pod["tolerations"])
    assert container(gpu)["image"].endswith("-gpu")
    assert not container(cpu)["image"].endswith("-gpu")
    cpu_pod = one(cpu, "Deployment")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in container(cpu)["resources"]["limits"]
    assert "tolerations" not in cpu_pod and "nodeSelector" not in cpu_pod
    assert settings(gpu)["LUMENSERVE_DEVICE"] == "cuda" and settings(cpu)["LUMENSERVE_DEVICE"] == "cpu"
    assert int(settings(gpu)["LUMENSERVE_MAX_BATCH_SIZE"]) > int(settings(cpu)["LUMENSERVE_MAX_BATCH_SIZE"])


def pod_spec(objects: tuple[Manifest, ...]) -> Manifest:
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def test_model_repository_comes_from_an_image_by_default() -> None:
    """Works on any cluster: an init container copies the repository image into an emptyDir."""
    objects = build("cpu")
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    pod = pod_spec(objects)
    volume = next(v for v in pod["volumes"] if v["name"] == "model-repository")
    assert set(volume) == {"name", "emptyDir"}
    [init] = pod["initContainers"]
    assert init["image"].startswith("lumenserve-models:")
    assert init["command"] == ["cp", "-R", "/models/.", "/repository/"]
    assert [(m["name"], m["mountPath"]) for m in init["volumeMounts"]] == [("model-repository", "/repository")]
    # The example image puts the repository where the init container copies from, as uid 10001.
    dockerfile = (K8S / "model-image" / "Dockerfile").read_text()
    assert "COPY --chown=10001:10001 . /models/" in dockerfile


def test_repository_claim_component_replaces_the_copy() -> None:
    objects = build("cpu+repository-claim")
    [claim] = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    pod = pod_spec(objects)
    assert "initContainers" not in pod
    volume = next(v for v in pod["volumes"] if v["name"] == "model-repository")
    assert volume == {
        "name": "model-repository",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"], "readOnly": True},
    }
    assert set(claim["spec"]["accessModes"]) <= {"ReadOnlyMany", "ReadWriteMany"}


def test_repository_image_volume_component_mounts_the_image() -> None:
    objects = build("cpu+repository-image-volume")
    pod = pod_spec(objects)
    assert "initContainers" not in pod
    volume = next(v for v in pod["volumes"] if v["name"] == "model-repository")
    assert set(volume) == {"name", "image"} and volume["image"]["reference"].startswith("lumenserve-models:")
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "model-repository")
    assert mount == {"name": "model-repository", "mountPath": "/models", "subPath": "models", "readOnly": True}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_autoscaler_alone_owns_the_replica_count(variant: str) -> None:
    objects = build(variant)
    assert "replicas" not in one(objects, "Deployment")["spec"]
    assert one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "lumenserve"


@pytest.mark.parametrize("variant", VARIANTS)
def test_grpc_connections_are_aged_for_balancing(variant: str) -> None:
    from serving.settings import ServingSettings

    data = settings(build(variant))
    parsed = ServingSettings(
        grpc_max_connection_age=data["LUMENSERVE_GRPC_MAX_CONNECTION_AGE"],
        grpc_max_connection_age_grace=data["LUMENSERVE_GRPC_MAX_CONNECTION_AGE_GRACE"],
    )
    assert parsed.grpc_max_connection_age > 0
    # Calls in flight on an aged connection get as long as the drain would give them.
    assert parsed.grpc_max_connection_age_grace >= float(data["LUMENSERVE_GRACE_PERIOD"])


def test_headless_service_component_lists_every_pod_and_is_not_scraped_twice() -> None:
    objects = build("cpu+headless-service+kube-prometheus-stack")
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    headless = services["lumenserve-headless"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"] == main_service(objects)["spec"]["selector"]
    assert {p["name"]: p["port"] for p in headless["ports"]} == {"grpc": GRPC_PORT, "http": HTTP_PORT}
    selector = one(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    scraped = [
        name
        for name, svc in services.items()
        if all(svc["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
    ]
    assert scraped == ["lumenserve"]


def test_kube_prometheus_stack_component_labels_what_its_prometheus_selects() -> None:
    plain = build("cpu")
    labelled = build("cpu+headless-service+kube-prometheus-stack")
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(labelled, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert "release" not in one(plain, kind)["metadata"]["labels"]


def test_nvidia_runtime_class_is_an_option_of_the_gpu_overlay() -> None:
    assert pod_spec(build("gpu+nvidia-runtime-class+triton-metrics"))["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in pod_spec(build("gpu"))
    assert "nvidia-runtime-class" in (K8S / "overlays" / "gpu" / "kustomization.yaml").read_text()


@pytest.mark.parametrize("variant", VARIANTS)
def test_settings_are_real_serving_settings(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ConfigMap key is a ServingSettings field (a typo would be silently ignored)."""
    from serving.settings import ServingSettings

    data = settings(build(variant))
    for key in [k for k in os.environ if k.startswith("LUMENSERVE_")]:
        monkeypatch.delenv(key)
    for key, value in data.items():
        assert key.startswith("LUMENSERVE_"), key
        monkeypatch.setenv(key, value)
    parsed = ServingSettings()
    assert {f"LUMENSERVE_{name.upper()}" for name in parsed.model_fields_set} == set(data)
    # Thread pools sized to the container's CPU limit, not the node's cores.
    cpu_limit = float(container(build(variant))["resources"]["limits"]["cpu"])
    assert 1 <= parsed.intra_op_threads <= cpu_limit
    assert 1 <= parsed.preprocess_threads <= cpu_limit
    assert parsed.device == ("cuda" if variant.startswith("gpu") else "cpu")
