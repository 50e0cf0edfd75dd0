"""All serving settings in one pydantic-settings class.

Precedence (highest first): CLI flags, ``LUMENSERVE_*`` environment variables, the optional
YAML/JSON config file (``--config`` or ``LUMENSERVE_CONFIG``), the defaults below.
Every field is documented in docs/serving.md.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lumenserve.env import DEFAULT_GOMP_SPINCOUNT

RuntimeName = Literal["onnx", "torchscript"]
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
MiB = 1 << 20


class ServingSettings(BaseSettings):
    """Settings of ``lumenserve serve`` (env prefix ``LUMENSERVE_``)."""

    model_config = SettingsConfigDict(env_prefix="LUMENSERVE_", extra="forbid", validate_default=True)

    repository: Path = Path("model_repository")
    """Model repository folder holding ``NAME/VERSION/`` bundles."""
    models: list[str] = []
    """Model names to load at startup; empty loads every model in the repository."""
    host: str = "127.0.0.1"
    """Address both transports bind to. Default loopback; use 0.0.0.0 only behind a firewall."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """HTTP (REST) port; 0 picks a free port (printed in the ready line)."""
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    """gRPC port; 0 picks a free port (printed in the ready line)."""
    device: str = "auto"
    """auto (first GPU when present, else CPU), cpu, cuda or cuda:N."""
    runtime: RuntimeName = "onnx"
    """Default runtime for every model: onnx (ONNX Runtime) or torchscript."""
    model_runtimes: dict[str, RuntimeName] = {}
    """Per-model runtime override, e.g. {"tiny-text": "torchscript"}."""
    intra_op_threads: int = Field(default=0, ge=0)
    """ONNX Runtime / torch intra-op threads per model call. 0: for ONNX on CPU, a call that
    runs alone uses every core and calls that overlap use cores / ``model_instances`` each
    (two sessions); otherwise one per physical core."""
    model_instances: int = Field(default=0, ge=0, le=64)
    """Batches one ONNX model runs at once on CPU: concurrent calls on one session (weights
    shared, Triton's instance count). 0: auto, min(cores, 4) on CPU; always 1 on a GPU and
    for TorchScript. On 2 cores, 2 calls x 1 thread gave 300 img/s against 278 for 1 call x 2
    threads, and no thread waits on a preempted sibling at every operator."""
    inter_op_threads: int = Field(default=1, ge=1)
    """ONNX Runtime inter-op threads per model."""
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    """The asyncio event loop: ``auto`` uses uvloop when installed (the ``serve`` extra installs
    it; less CPU per request on both transports), else the standard library's."""
    omp_wait_policy: Literal["PASSIVE", "ACTIVE", ""] = ""
    """OMP_WAIT_POLICY set before torch loads; "" (default) leaves it to ``gomp_spincount``."""
    gomp_spincount: int = Field(default=DEFAULT_GOMP_SPINCOUNT, ge=0)
    """libgomp's GOMP_SPINCOUNT, set before torch loads when ``omp_wait_policy`` is "" and the
    environment sets neither: torch's OpenMP threads spin this many times between parallel
    regions, then sleep. 10000 (~tens of µs) keeps explanations as fast as ACTIVE (PASSIVE made
    Saliency 2.2x slower) while idle threads stop spinning against ONNX Runtime at once."""
    malloc_arenas: int = Field(default=0, ge=0, le=64)
    """glibc malloc arenas for the whole server process, set at startup before any thread
    allocates (0: glibc's default, eight per core; the ``MALLOC_ARENA_MAX`` environment variable
    wins). 1 makes explanations faster: the large buffers torch frees during one are reused by
    the next, where in an explain thread's own arena they go back to the kernel and are faulted
    in again page by page (Integrated Gradients at 224 px: 0.90-0.96x instead of 1.11-1.28x
    in-process Captum). It costs predictions under overload, where every thread then takes one
    lock to allocate: steady goodput at 2x saturation 0.85-1.00 instead of 0.91-1.05 of the
    peak (224 px JPEG). For a server that mostly explains."""
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """Most rows one model call may carry; a single request above it is refused (400)."""
    cpu_call_input_bytes: int = Field(default=5 * 2**19, ge=0)
    """Most input bytes one ONNX Runtime call on CPU carries (default 2.5 MiB, four 224 px
    RGB images; 0: no limit): a larger batch runs as consecutive calls of fewer rows, with
    the same answers. ONNX Runtime's memory arena keeps the peak of its largest call for the
    process's life, and on CPU a few large images already fill the cores: MobileNetV2 at
    224 px on 2 cores, calls of 4 rows instead of up to 32 held 342-379 instead of 532-711 MiB
    resident for 0-7 % fewer images/s at concurrency 16. Small inputs (a 64 px image is 48 KiB,
    a 64-token text 1 KiB) keep whole batches. Not applied on a GPU, where large calls pay."""
    inline_call_ms: float = Field(default=2.0, ge=0)
    """A batch the model is expected to run in under this many milliseconds (from its recent
    calls) runs on the event loop itself when nothing else is queued or running: no hop to a
    compute thread and back for a small model at low load (64 px MobileNetV2: 0.3-0.5 ms less
    per request at concurrency 1, measured in-process). Larger calls, and any call while
    others wait, run in a compute thread so the server keeps accepting requests. 0: always in
    a compute thread."""
    max_queue_delay: float = Field(default=0.0, ge=0, le=1.0)
    """Seconds the batcher waits for more requests after the first one arrives. 0: no wait,
    batches form from whatever queued while the previous batch ran (measured best for
    closed-loop clients; see docs/serving.md)."""
    max_queue_size: int = Field(default=256, ge=1)
    """Requests waiting per model beyond which new ones get UNAVAILABLE/503 at once."""
    max_queue_wait: float = Field(default=0.5, ge=0)
    """Seconds from arrival to the model. A newcomer gets UNAVAILABLE/503 at once when the rows
    already waiting are more than the model gets through in that time at its recent pace (never
    fewer than one full batch), and while a standing queue lasts: every request started in the
    last 100 ms waited longer (CoDel's test). 0: off."""
    default_timeout: float = Field(default=30.0, gt=0)
    """Seconds a request may wait for the model; the `timeout` request parameter
    (microseconds) or the gRPC deadline can shorten it. Expired requests never run."""
    max_message_size: int = Field(default=64 * MiB, ge=MiB)
    """Largest gRPC message / HTTP body in bytes; above it RESOURCE_EXHAUSTED/413."""
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    """Images declaring more pixels than this are refused before decoding (bomb guard)."""
    image_draft: bool = True
    """Decode JPEGs at reduced size (DCT scaling) when the target size allows it."""
    max_text_chars: int = Field(default=100_000, ge=1)
    """Longest text element accepted (characters) before tokenisation."""
    repository_token: str = ""
    """Bearer token for the repository API (load/unload/index); empty disables the API."""
    grace_period: float = Field(default=30.0, gt=0)
    """Seconds SIGTERM waits for accepted requests before the process exits."""
    tls_cert: Path | None = None
    """PEM certificate for TLS on both transports (with tls_key)."""
    tls_key: Path | None = None
    """PEM private key for TLS on both transports."""
    explain: bool = True
    """Serve explanations (the explain library, on each model's eager twin, loaded on first use,
    see ``explain_warm``); false answers every explain call UNIMPLEMENTED/501."""
    explain_warm: bool = False
    """Load the explain library and build every model's eager twin (with its twin check) in the
    background at startup, so the first explanation does not wait for them. Off by default: a
    server that only predicts never imports torch (about 0.5 GiB less memory, a faster start)
    and the first explain or discovery call loads the library (seconds) and the model's twin."""
    explain_max_concurrency: int = Field(default=1, ge=1)
    """Explanations computed at once: the number of explain threads, the only cap (explain has
    its own, so predictions keep flowing)."""
    explain_max_queue: int = Field(default=16, ge=0)
    """Explanations allowed to wait for an explain thread; beyond it UNAVAILABLE/503."""
    compute_nice: int = Field(default=5, ge=0, le=19)
    """How much lower the compute and preprocessing threads' CPU priority is than the event
    loop's (Linux nice; the model runtime's own threads inherit it). On a saturated machine
    the event loop still takes every arrival at once: at 2x saturation (224 px MobileNetV2,
    JPEG, 2 cores) refusals were answered in 24-38 instead of 47-72 ms at p99, and at
    concurrency 16 the server answered 114 instead of 103 req/s. 0: equal priority."""
    explain_nice: int = Field(default=10, ge=0, le=19)
    """How much lower the explain threads' CPU priority is than the predictions' (Linux nice,
    on top of ``compute_nice``). 10 keeps predictions flowing during explanations; 0 gives
    explanations the predictions' priority on a host that runs nothing else."""
    explain_parameter_max: dict[str, float] = {}
    """Lower maxima for explain parameters on this server, e.g. ``{"n_steps": 64, "nt_samples":
    16}``: discovery publishes them (the page's forms follow) and a request above one gets
    INVALID_ARGUMENT/400. Each must be at least the parameter's default (checked at startup)."""
    preprocess_threads: int = Field(default=0, ge=0)
    """Threads decoding images / tokenising texts (0: one per CPU)."""
    static_dir: Path | None = None
    """Folder served at ``/`` (the demo page); default ``serving/static`` when present."""
    grpc_max_connection_age: float = Field(default=0.0, ge=0)
    """Seconds after which the gRPC server asks a client to reconnect (GOAWAY); 0: never. A gRPC
    client keeps one connection per server, so behind a Kubernetes Service it stays on the
    replica it met first; an age (e.g. 120) spreads clients over replicas the autoscaler adds."""
    grpc_max_connection_age_grace: float = Field(default=30.0, ge=0)
    """Seconds calls in flight may still finish on a connection past its age before it closes."""
    log_format: Literal["text", "json"] = "text"
    """Log lines on stderr: text (readable) or json (one object per line, for log collectors);
    lines written while a request is answered carry its request id (docs/serving.md, Logs)."""
    access_log: bool = False
    """One log line per infer/explain request (request id, trace id, model, version, protocol,
    status, duration) on the ``lumenserve.access`` logger."""

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):  # LUMENSERVE_MODELS=a,b
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    _check_tls_pair: ClassVar[bool] = True

    @model_validator(mode="after")
    def _tls_pair(self) -> ServingSettings:
        """TLS needs both files; one alone would silently serve plaintext."""
        if not self._check_tls_pair:
            return self
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for TLS, or neither")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    def runtime_for(self, model: str) -> RuntimeName:
        return self.model_runtimes.get(model, self.runtime)


class _EnvOnly(ServingSettings):
    """The environment's part alone (the TLS pair may be completed by the file or the flags)."""

    _check_tls_pair: ClassVar[bool] = False


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or JSON config file as a dict of setting values."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config file must hold a mapping of settings")
    return data


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> ServingSettings:
    """Defaults < config file < environment < ``overrides`` (None values are ignored)."""
    config_file = config_file or os.environ.get("LUMENSERVE_CONFIG") or None
    from_file = read_config_file(config_file) if config_file else {}
    from_env = _EnvOnly()  # fields set here came from LUMENSERVE_* variables
    env_values = {k: getattr(from_env, k) for k in from_env.model_fields_set}
    explicit = {k: v for k, v in overrides.items() if v is not None}
    return ServingSettings(**{**from_file, **env_values, **explicit})
