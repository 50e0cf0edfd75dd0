"""KServe: the serving runtime and InferenceService examples, and serving a mounted model folder.

The manifests are validated against the openAPIV3Schema of KServe's own CRDs (vendored in
k8s/schemas/ by scripts/vendor_kserve_schemas.py), made strict: every object the CRD
describes with properties refuses unknown fields (the API server would silently prune
them, so a typo would be lost without an error).
"""

from __future__ import annotations

import copy
import json
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import yaml

from lumenserve.bundle import BundleError, list_models, load_bundle, model_folder, single_model_name
from tests.support.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
KSERVE = ROOT / "k8s" / "kserve"
SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "clusterservingruntime-serving-kserve-v1alpha1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-serving-kserve-v1beta1.json",
}
MANIFESTS = sorted(p.name for p in KSERVE.glob("*.yaml"))

Manifest = dict[str, Any]


def strict(node: Any) -> Any:
    """KServe's structural schema as JSON Schema, with unknown fields refused.

    ``nullable`` becomes a null type; an object with ``properties`` and no
    ``additionalProperties`` gets ``additionalProperties: false``."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) if k != "properties" else {p: strict(s) for p, s in v.items()} for k, v in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@cache
def validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((ROOT / "k8s" / "schemas" / SCHEMAS[(api_version, kind)]).read_text())
    return jsonschema.Draft7Validator(strict(schema))


def load(name: str) -> Manifest:
    docs = [d for d in yaml.safe_load_all((KSERVE / name).read_text()) if d]
    assert len(docs) == 1, name
    return docs[0]


def validate(obj: Manifest) -> None:
    validator(obj["apiVersion"], obj["kind"]).validate(obj)


def runtime() -> Manifest:
    return load("clusterservingruntime.yaml")


def inference_services() -> list[Manifest]:
    return [m for m in map(load, MANIFESTS) if m["kind"] == "InferenceService"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_validate_strictly_against_kserve_crds(name: str) -> None:
    obj = load(name)
    assert (obj["apiVersion"], obj["kind"]) in SCHEMAS, name
    validate(obj)


def test_strict_validation_rejects_what_kserve_would_prune_or_refuse() -> None:
    bad = copy.deepcopy(runtime())
    bad["spec"]["supportedModelFormats"][0]["autoselect"] = True  # typo: pruned by the API server
    with pytest.raises(jsonschema.ValidationError, match="autoselect"):
        validate(bad)
    bad = copy.deepcopy(runtime())
    del bad["spec"]["supportedModelFormats"][0]["name"]
    with pytest.raises(jsonschema.ValidationError, match="'name' is a required property"):
        validate(bad)
    isvc = copy.deepcopy(inference_services()[0])
    isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://x"
    with pytest.raises(jsonschema.ValidationError, match="storageURI"):
        validate(isvc)
    isvc = copy.deepcopy(inference_services()[0])
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate(isvc)


def test_runtime_speaks_oip_v2_and_serves_mnt_models() -> None:
    spec = runtime()["spec"]
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"}
    assert {"name": "lumenserve", "version": "1", "autoSelect": True, "priority": 1} in spec["supportedModelFormats"]
    [container] = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe merges the predictor's fields into
    args = container["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert args[0] == "serve" and flags["--repository"] == "/mnt/models" and flags["--host"] == "0.0.0.0"
    http_port, grpc_port = int(flags["--http-port"]), int(flags["--grpc-port"])
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", http_port)]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == http_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]] and "emptyDir" in volumes[mounts["/var/lib/lumenserve"]]
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(http_port)
    # Every LUMENSERVE_* variable is a serving setting, and the gRPC port the GPU example routes exists.
    _check_settings(container["env"])
    gpu = next(i for i in inference_services() if i["spec"]["predictor"]["model"]["protocolVersion"] == "grpc-v2")
    assert gpu["spec"]["predictor"]["model"]["ports"] == [
        {"name": "h2c", "containerPort": grpc_port, "protocol": "TCP"}
    ]


def _check_settings(env: list[dict[str, Any]]) -> None:
    from serving.settings import ServingSettings

    values = {e["name"].removeprefix("LUMENSERVE_").lower(): e["value"] for e in env}
    assert all(e["name"].startswith("LUMENSERVE_") for e in env)
    parsed = ServingSettings(**values)  # extra="forbid": a misspelt name fails here
    assert parsed.model_fields_set == set(values)


def test_inference_services_pick_the_runtime_cpu_and_gpu() -> None:
    services = inference_services()
    runtime_name = runtime()["metadata"]["name"]
    formats = {(f["name"], f["version"]) for f in runtime()["spec"]["supportedModelFormats"]}
    devices = set()
    for isvc in services:
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime_name
        assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
        assert model["protocolVersion"] in runtime()["spec"]["protocolVersions"]
        assert model["storageUri"].split("://")[0] in {"s3", "gs", "pvc", "oci", "https", "hf"}
        _check_settings(model["env"])
        env = {e["name"]: e["value"] for e in model["env"]}
        devices.add(env["LUMENSERVE_DEVICE"])
        gpus = model["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus == 1) == (env["LUMENSERVE_DEVICE"] == "cuda")
    assert devices == {"cpu", "cuda"}


# ---- a single model folder mounted like /mnt/models ----------------------------------------


@pytest.fixture(scope="module")
def mounted_model(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mnt/models`` holding ``1/`` and ``2/`` of tiny-image (KServe's storage initializer layout)."""
    mount = tmp_path_factory.mktemp("mnt") / "models"
    shutil.copytree(model_repo / "tiny-image", mount)
    shutil.copytree(mount / "1", mount / "2")
    manifest = json.loads((mount / "2" / "manifest.json").read_text())
    manifest["version"] = 2
    (mount / "2" / "manifest.json").write_text(json.dumps(manifest))
    return mount


def test_single_model_folder_is_named_by_its_manifests(mounted_model: Path, model_repo: Path) -> None:
    assert single_model_name(mounted_model) == "tiny-image"
    assert list_models(mounted_model) == ["tiny-image"]
    assert model_folder(mounted_model, "tiny-image") == mounted_model
    # A repository root keeps its folder names; nothing about it changes.
    assert single_model_name(model_repo) is None
    assert list_models(model_repo) == ["tiny-image", "tiny-text"]
    assert model_folder(model_repo, "tiny-text") == model_repo / "tiny-text"
    # The bundle must carry the model's name; the folder's own name ("models") is not checked then.
    assert load_bundle(mounted_model / "2", model_name="tiny-image").manifest.version == 2
    with pytest.raises(BundleError, match="parent folder name"):
        load_bundle(mounted_model / "2")
    with pytest.raises(BundleError, match="not the model's name"):
        load_bundle(mounted_model / "2", model_name="other")


def test_single_model_folder_with_two_names_is_refused(mounted_model: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "models"
    shutil.copytree(mounted_model, mixed)
    manifest = json.loads((mixed / "2" / "manifest.json").read_text())
    manifest["name"] = "other-model"
    (mixed / "2" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="different models"):
        list_models(mixed)


def test_server_serves_a_single_model_folder_like_mnt_models(mounted_model: Path) -> None:
    image = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    body = {
        "inputs": [{"name": "input", "shape": list(image.shape), "datatype": "FP32", "data": image.ravel().tolist()}]
    }
    with ServerProcess(mounted_model) as server, httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as http:
        assert http.get("/v2/health/ready").status_code == 200
        metadata = http.get("/v2/models/tiny-image").json()
        assert metadata["name"] == "tiny-image" and sorted(metadata["versions"]) == ["1", "2"]
        latest = http.post("/v2/models/tiny-image/infer", json=body)
        assert latest.status_code == 200, latest.text
        assert latest.json()["model_version"] == "2"
        first = http.post("/v2/models/tiny-image/versions/1/infer", json=body).json()
        assert first["model_version"] == "1"
        np.testing.assert_allclose(first["outputs"][0]["data"], latest.json()["outputs"][0]["data"], rtol=1e-5)
        # The folder's own name is not a model; the repository index lists the manifest name.
        assert http.get("/v2/models/models").status_code == 404
        index = http.post("/v2/repository/index", headers={"Authorization": "Bearer test-repository-token"}, json={})
        assert index.status_code == 200, index.text
        assert {(row["name"], row["version"], row["state"]) for row in index.json()} == {
            ("tiny-image", "1", "READY"),
            ("tiny-image", "2", "READY"),
        }
