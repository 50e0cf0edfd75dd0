"""Per-model configuration: ``REPO/NAME/config.yaml``, beside the versions, outside the bundles.

Operators edit it without touching the checksummed bundles; it is read (and validated) on
every load of the model: at startup and on each repository load call. Every field is
optional; an absent field takes the server-wide setting (:class:`ServingSettings`).
Documented field by field in docs/serving.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.settings import DEVICE_PATTERN, RuntimeName, ServingSettings

CONFIG_NAME = "config.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchingConfig(_Strict):
    max_batch_size: int | None = Field(default=None, ge=0, le=4096)
    """Most rows one model call may carry; 0 turns batching off (Triton's ``max_batch_size: 0``:
    each request runs alone, with its full shape). Models whose inputs have a fixed first
    dimension never batch, whatever this says."""
    max_queue_delay: float | None = Field(default=None, ge=0, le=1.0)
    """Seconds the batcher waits for more requests after the first one arrives."""
    max_queue_size: int | None = Field(default=None, ge=1)
    """Requests waiting for this model beyond which new ones get UNAVAILABLE/503."""
    max_queue_wait: float | None = Field(default=None, ge=0)
    """Seconds from arrival to the model beyond which a standing queue refuses arrivals (0: off)."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds a request may wait for this model (the server's ``default_timeout`` otherwise)."""


class VersionPolicy(_Strict):
    """Which versions on disk load: exactly one of ``latest``, ``specific``, ``all``."""

    latest: int | None = Field(default=None, ge=1)
    """The N highest versions."""
    specific: list[int] | None = Field(default=None, min_length=1)
    """These version numbers (each must exist on disk)."""
    all: bool | None = None
    """Every version on disk (``all: true``)."""

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        chosen = [n for n in ("latest", "specific", "all") if getattr(self, n) not in (None, False)]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of latest, specific, all (got {chosen or 'none'})")
        if self.specific is not None and any(v < 1 for v in self.specific):
            raise ValueError("specific versions are numbers >= 1")
        return self

    def select(self, on_disk: list[int]) -> list[int]:
        """The versions of ``on_disk`` (ascending) this policy loads; ValueError for a missing listed one."""
        if self.latest is not None:
            return sorted(on_disk)[-self.latest :]
        if self.specific is not None:
            missing = sorted(set(self.specific) - set(on_disk))
            if missing:
                raise ValueError(f"version_policy.specific: versions {missing} are not on disk (found {on_disk})")
            return sorted(set(self.specific))
        return sorted(on_disk)

    def triton(self) -> dict[str, Any]:
        """The JSON form of Triton's ``ModelVersionPolicy``."""
        if self.latest is not None:
            return {"latest": {"num_versions": self.latest}}
        if self.specific is not None:
            return {"specific": {"versions": list(self.specific)}}
        return {"all": {}}

    def describe(self) -> str:
        if self.latest is not None:
            return f"latest {self.latest}"
        if self.specific is not None:
            return "specific " + ",".join(map(str, self.specific))
        return "all"


class ExplainConfig(_Strict):
    enabled: bool = True
    """False refuses every explanation of this model (UNIMPLEMENTED/501)."""
    methods: list[str] | None = None
    """The methods allowed (default: every method the model can run); others are refused."""
    max_items: int | None = Field(default=None, ge=1, le=64)
    """Most items (images or texts) one explanation request may carry."""
    max_samples: int | None = Field(default=None, ge=1)
    """Largest ``n_samples`` a request may ask for (KernelShap, Lime, Shapley value sampling,
    noise tunnel): the explanation's cost per item; larger requests are refused (400)."""


class ModelConfig(_Strict):
    """``REPO/NAME/config.yaml``."""

    batching: BatchingConfig = BatchingConfig()
    runtime: RuntimeName | None = None
    """onnx or torchscript (the bundle must hold that artifact)."""
    device: str | None = None
    """auto, cpu, cuda or cuda:N."""
    instances: int | None = Field(default=None, ge=0, le=64)
    """Batches this model runs at once (ONNX on CPU; 0: auto), like ``model_instances``."""
    intra_op_threads: int | None = Field(default=None, ge=0)
    """Intra-op threads per model call (0: auto), like the server setting."""
    inter_op_threads: int | None = Field(default=None, ge=1)
    """ONNX Runtime inter-op threads."""
    version_policy: VersionPolicy = VersionPolicy(all=True)
    """Which versions load; default every version on disk."""
    warmup: bool = True
    """Run the whole path twice on a generated input before the version is marked ready."""
    explain: ExplainConfig = ExplainConfig()

    @model_validator(mode="after")
    def _device(self) -> ModelConfig:
        if self.device is not None and not DEVICE_PATTERN.match(self.device):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self

    def effective_settings(self, name: str, settings: ServingSettings) -> ServingSettings:
        """The server settings with this model's overrides applied (the model's own copy)."""
        b = self.batching
        update: dict[str, Any] = {
            "max_queue_delay": b.max_queue_delay,
            "max_queue_size": b.max_queue_size,
            "max_queue_wait": b.max_queue_wait,
            "default_timeout": b.timeout,
            "device": self.device,
            "model_instances": self.instances,
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
        }
        if b.max_batch_size:  # 0 (no batching) is carried by the served model, not the settings
            update["max_batch_size"] = b.max_batch_size
        if self.runtime is not None:
            update["model_runtimes"] = {**settings.model_runtimes, name: self.runtime}
        return settings.model_copy(update={k: v for k, v in update.items() if v is not None})


class ModelConfigError(ValueError):
    """A config.yaml that does not parse or validate; the message names the file and the field."""


def read_model_config(model_dir: Path) -> ModelConfig:
    """``model_dir/config.yaml`` validated, or the defaults when the file is absent."""
    path = model_dir / CONFIG_NAME
    if not path.is_file():
        return ModelConfig()
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: must hold a mapping of fields")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ModelConfigError(f"{path}: {problems}") from None
