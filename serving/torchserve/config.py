"""Write TorchServe's ``config.properties`` for a model store of lumenserve archives.

Every address binds to 127.0.0.1 (TorchServe's own defaults are loopback for HTTP but
0.0.0.0 for gRPC), per-model ``pip install`` is off (the handler needs only what is
installed with lumenserve), token auth is off (the documented start command passes
``--disable-token-auth``; put a proxy in front to guard the management API), and each
model gets one worker: two workers on 2 cores ran 3x slower than one (docs/torchserve.md).

``models=`` holds per-model batching (``batchSize``, ``maxBatchDelay`` in ms) as TorchServe
reads it at startup. Writing a second model into the same store merges with the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.properties"
LOOPBACK = "127.0.0.1"
BUNDLE_DIR_IN_MAR = "lumenserve_bundle"
"""The bundle sits at ``lumenserve_bundle/NAME/VERSION/`` inside the archive."""
HANDLER_CONFIG = "lumenserve_handler.json"
"""Handler options inside the archive: ``{"runtime": "onnx" | "torchscript"}``."""


@dataclass(frozen=True)
class Ports:
    """TorchServe's five listeners (its defaults)."""

    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071


@dataclass(frozen=True)
class ModelEntry:
    """One archive in the store and how TorchServe batches it."""

    name: str
    version: str
    mar_name: str
    batch_size: int = 1
    """Most requests TorchServe hands the handler at once."""
    max_batch_delay_ms: int = 5
    """How long TorchServe waits to fill a batch."""
    workers: int = 1
    """Worker processes (min = max); one is fastest on a 2-core machine."""
    response_timeout_s: int = 120
    """Seconds a worker may take for one batch before TorchServe restarts it."""

    def as_json(self) -> dict[str, Any]:
        return {
            "marName": self.mar_name,
            "minWorkers": self.workers,
            "maxWorkers": self.workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
        }

    @classmethod
    def from_json(cls, name: str, version: str, raw: dict[str, Any]) -> ModelEntry:
        return cls(
            name=name,
            version=version,
            mar_name=str(raw["marName"]),
            batch_size=int(raw.get("batchSize", 1)),
            max_batch_delay_ms=int(raw.get("maxBatchDelay", 5)),
            workers=int(raw.get("minWorkers", 1)),
            response_timeout_s=int(raw.get("responseTimeout", 120)),
        )


@dataclass(frozen=True)
class TorchServeConfig:
    """Everything ``config.properties`` says; ``render()`` gives the file text."""

    model_store: Path
    ports: Ports = Ports()
    models: tuple[ModelEntry, ...] = field(default_factory=tuple)
    extra: dict[str, str] = field(default_factory=dict)
    """Further properties, written verbatim after ours (e.g. ``vmargs``)."""

    def with_model(self, entry: ModelEntry) -> TorchServeConfig:
        """This config with ``entry`` added (replacing a model of the same name)."""
        kept = tuple(m for m in self.models if m.name != entry.name)
        return replace(self, models=(*kept, entry))

    def render(self) -> str:
        p = self.ports
        models: dict[str, dict[str, Any]] = {}
        for m in self.models:
            models.setdefault(m.name, {})[m.version] = m.as_json()
        lines = [
            "# Written by `lumenserve archive` (docs/torchserve.md). Every listener is loopback-only.",
            f"inference_address=http://{LOOPBACK}:{p.inference}",
            f"management_address=http://{LOOPBACK}:{p.management}",
            f"metrics_address=http://{LOOPBACK}:{p.metrics}",
            f"grpc_inference_address={LOOPBACK}",
            f"grpc_inference_port={p.grpc_inference}",
            f"grpc_management_address={LOOPBACK}",
            f"grpc_management_port={p.grpc_management}",
            "enable_grpc_ssl=false",
            "# The handler runs on the lumenserve installation; never pip-install per model.",
            "install_py_dep_per_model=false",
            "# One worker per model: two workers on 2 cores ran 3x slower than one.",
            "default_workers_per_model=1",
            "disable_token_authorization=true",
            "enable_metrics_api=true",
            "metrics_mode=prometheus",
            f"model_store={self.model_store}",
            *([f"load_models={','.join(sorted({m.mar_name for m in self.models}))}"] if self.models else []),
            f"models={json.dumps(models, sort_keys=True)}",
            *(f"{key}={value}" for key, value in self.extra.items()),
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: Path | None = None) -> Path:
        target = path or self.model_store / CONFIG_NAME
        target.write_text(self.render())
        return target


_OURS = {
    "inference_address",
    "management_address",
    "metrics_address",
    "grpc_inference_address",
    "grpc_inference_port",
    "grpc_management_address",
    "grpc_management_port",
    "enable_grpc_ssl",
    "install_py_dep_per_model",
    "default_workers_per_model",
    "disable_token_authorization",
    "enable_metrics_api",
    "metrics_mode",
    "model_store",
    "load_models",
    "models",
}


def parse_properties(text: str) -> dict[str, str]:
    """``key=value`` lines (comments and blanks skipped), as TorchServe's launcher reads them."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def _port(address: str | None, default: int) -> int:
    if not address:
        return default
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return default


def read_config(model_store: Path) -> TorchServeConfig:
    """The config already in ``model_store`` (an empty one with default ports when absent)."""
    path = model_store / CONFIG_NAME
    if not path.is_file():
        return TorchServeConfig(model_store=model_store)
    props = parse_properties(path.read_text())
    d = Ports()
    ports = Ports(
        inference=_port(props.get("inference_address"), d.inference),
        management=_port(props.get("management_address"), d.management),
        metrics=_port(props.get("metrics_address"), d.metrics),
        grpc_inference=int(props.get("grpc_inference_port", d.grpc_inference)),
        grpc_management=int(props.get("grpc_management_port", d.grpc_management)),
    )
    raw_models = json.loads(props.get("models") or "{}")
    models = tuple(
        ModelEntry.from_json(name, version, entry)
        for name, versions in raw_models.items()
        for version, entry in versions.items()
    )
    extra = {k: v for k, v in props.items() if k not in _OURS}
    return TorchServeConfig(model_store=model_store, ports=ports, models=models, extra=extra)
