"""Prometheus metrics (names and labels as docs/CONTRACTS.md lists them).

Each server owns one :class:`ServingMetrics` with its own registry (several servers can live
in one test process). Label children are bound once per model/version/protocol so the hot
path pays no label lookups.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
EXPLAIN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
REJECT_REASONS = ("queue_full", "deadline", "cancelled", "draining")
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class ModelMetrics:
    """The children one served model version and its batcher touch on every prediction."""

    queue_seconds: Any
    compute_seconds: Any
    batch_size: Any
    _rejected: dict[str, Any]
    queued: int = 0
    """Requests waiting in the batcher: the ``lumenserve_queue_depth`` gauge reads it when scraped."""
    inflight: int = 0
    """Requests inside this version: the ``lumenserve_inflight_requests`` gauge reads it when scraped."""

    def rejected(self, reason: str) -> None:
        self._rejected[reason].inc()


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lumenserve_requests",
            "Requests answered, by model, version, protocol, endpoint and status (OK or the gRPC code name).",
            ["model", "version", "protocol", "endpoint", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "lumenserve_request_duration_seconds",
            "Time from a request entering the data plane to its answer.",
            ["model", "version", "protocol", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "lumenserve_queue_duration_seconds",
            "Time a request waited in the batcher's queue.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "lumenserve_compute_duration_seconds",
            "Time of one model call (stacking, inference, splitting) per batch.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "lumenserve_batch_size", "Rows per model call.", ["model", "version"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "lumenserve_queue_depth", "Requests waiting in the batcher.", ["model", "version"], registry=r
        )
        self.inflight = Gauge(
            "lumenserve_inflight_requests", "Requests inside the data plane.", ["model", "version"], registry=r
        )
        self.rejected_total = Counter(
            "lumenserve_requests_rejected",
            "Requests refused before reaching the model, by reason (queue_full, deadline, cancelled, draining).",
            ["model", "version", "reason"],
            registry=r,
        )
        self.model_ready = Gauge(
            "lumenserve_model_ready", "1 when the model version is loaded and warm.", ["model", "version"], registry=r
        )
        self.model_max_batch_size = Gauge(
            "lumenserve_model_max_batch_size",
            "Most rows per model call in effect (config.yaml over the server setting; 0: no batching).",
            ["model", "version"],
            registry=r,
        )
        self.model_instances = Gauge(
            "lumenserve_model_instances", "Batches the model version runs at once.", ["model", "version"], registry=r
        )
        self.model_load_seconds = Gauge(
            "lumenserve_model_load_duration_seconds",
            "Seconds the last load (verify, session, warm-up) took.",
            ["model", "version"],
            registry=r,
        )
        self.explain_seconds = Histogram(
            "lumenserve_explain_duration_seconds",
            "Time of one explain call, by method.",
            ["model", "version", "method"],
            buckets=EXPLAIN_BUCKETS,
            registry=r,
        )
        self.explain_queue_depth = Gauge(
            "lumenserve_explain_queue_depth", "Explanations admitted and waiting for an explain thread.", registry=r
        )
        self.explain_inflight = Gauge(
            "lumenserve_explain_inflight", "Explanations running in the explain threads now.", registry=r
        )
        self.explain_rejected = Counter(
            "lumenserve_explain_rejected",
            "Explanations refused or abandoned before they finished, by reason (queue_full, deadline, cancelled).",
            ["model", "version", "reason"],
            registry=r,
        )
        self.explain_cache = Counter(
            "lumenserve_explain_cache",
            "Explanation cache lookups by result (hit/miss).",
            ["model", "result"],
            registry=r,
        )
        self._request_children: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._gpu_enabled = False
        add_process_metrics(r)

    def enable_gpu_memory(self) -> None:
        """Add ``lumenserve_gpu_memory_bytes`` per visible GPU (called once a model runs on CUDA)."""
        if self._gpu_enabled:
            return
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            return
        self._gpu_enabled = True
        gauge = Gauge(
            "lumenserve_gpu_memory_bytes", "GPU memory in use (total - free).", ["device"], registry=self.registry
        )
        for index in range(count):

            def used(i: int = index) -> float:
                free, total = torch.cuda.mem_get_info(i)
                return float(total - free)

            gauge.labels(device=f"cuda:{index}").set_function(used)

    def for_model(self, model: str, version: str) -> ModelMetrics:
        labels = {"model": model, "version": version}
        metrics = ModelMetrics(
            queue_seconds=self.queue_seconds.labels(**labels),
            compute_seconds=self.compute_seconds.labels(**labels),
            batch_size=self.batch_size.labels(**labels),
            _rejected={reason: self.rejected_total.labels(**labels, reason=reason) for reason in REJECT_REASONS},
        )
        # the two gauges read plain counters when scraped: no lock taken per request
        self.queue_depth.labels(**labels).set_function(lambda: metrics.queued)
        self.inflight.labels(**labels).set_function(lambda: metrics.inflight)
        return metrics

    def observe_request(
        self, model: str, version: str, protocol: str, endpoint: str, status: str, seconds: float
    ) -> None:
        key = (model, version, protocol, endpoint, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(model, version, protocol, endpoint, status),
                self.request_seconds.labels(model, version, protocol, endpoint),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _installed_version(*distributions: str) -> str:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return ""


def add_process_metrics(registry: CollectorRegistry) -> None:
    """``process_*`` (CPU seconds, resident memory, open files, start time), ``python_*`` (GC,
    interpreter) and ``lumenserve_build_info`` (1, with the versions as labels) in ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    build = Gauge(
        "lumenserve_build_info",
        "Always 1: the versions of lumenserve and its runtimes as labels.",
        ["version", "python", "onnxruntime", "torch"],
        registry=registry,
    )
    build.labels(
        version=_installed_version("lumenserve"),
        python=platform.python_version(),
        onnxruntime=_installed_version("onnxruntime", "onnxruntime-gpu"),
        torch=_installed_version("torch"),
    ).set(1)
