"""Copy the OpenAPI schemas of KServe's ClusterServingRuntime and InferenceService CRDs.

    python scripts/vendor_kserve_schemas.py KSERVE_CHECKOUT COMMIT

reads config/crd/full/serving.kserve.io_{clusterservingruntimes,inferenceservices}.yaml from a
KServe checkout and writes k8s/schemas/*-serving-kserve-*.json: the served version's
openAPIV3Schema, descriptions dropped (they do not validate anything), ``status`` dropped, and
for the InferenceService only ``spec.predictor`` kept (our examples use no transformer or
explainer, so the tests refuse them). tests/test_deploy_kserve.py adds
``additionalProperties: false`` to every structural object before validating.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRDS = {
    "clusterservingruntimes": ("v1alpha1", "clusterservingruntime-serving-kserve-v1alpha1.json"),
    "inferenceservices": ("v1beta1", "inferenceservice-serving-kserve-v1beta1.json"),
}


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


def main(checkout: str, commit: str) -> None:
    for plural, (version, target) in CRDS.items():
        path = Path(checkout) / "config" / "crd" / "full" / f"serving.kserve.io_{plural}.yaml"
        crd = yaml.safe_load(path.read_text())
        served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
        schema = without_descriptions(served["schema"]["openAPIV3Schema"])
        schema["properties"].pop("status", None)
        if plural == "inferenceservices":
            spec = schema["properties"]["spec"]
            spec["properties"] = {"predictor": spec["properties"]["predictor"]}
        schema["$comment"] = (
            f"openAPIV3Schema of {crd['metadata']['name']} {version} from KServe {commit} "
            f"({path.relative_to(checkout)}); regenerate with scripts/vendor_kserve_schemas.py"
        )
        (ROOT / "k8s" / "schemas" / target).write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
