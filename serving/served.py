"""A served model version: one object that owns the whole road of a prediction.

``await served.infer(request, deadline)`` runs admit -> prepare -> batch -> postprocess:

1. **admit**: count the request against the batcher's queue before any decoding work
   (under overload a surplus request is refused in milliseconds);
2. **prepare**: raw images/texts are decoded in the preprocessing pool, tensors are checked
   inline on the event loop (no thread hop on the tensor path);
3. **batch**: the batcher queues the rows until the deadline and runs them in a compute thread;
4. **postprocess**: this caller's rows -> the response tensors it asked for.

It is built complete by :func:`load_served_model` (bundle verified, runtime loaded, warm-up
run, batcher started) and ended by :meth:`ServedModel.retire`.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import Any

from lumenserve.bundle import Bundle, load_bundle
from serving import tracing
from serving.batching import Batcher, BatchPolicy
from serving.metrics import ModelMetrics
from serving.model import ModelIO
from serving.model_config import ModelConfig
from serving.priority import thread_pool
from serving.runtimes import Runtime, load_runtime
from serving.settings import ServingSettings
from serving.statistics import InferenceStatistics, RequestTimes
from serving.triton_config import ConfigFacts, model_config
from serving.types import Feed, InferenceRequest, InferenceResponse


class ServedModel:
    def __init__(
        self,
        io: ModelIO,
        runtime: Runtime,
        settings: ServingSettings,
        metrics: ModelMetrics,
        decode_pool: Executor,
        load_seconds: float,
        config: ModelConfig | None = None,
    ) -> None:
        """Call on the event loop (the batcher's loop task starts here). ``settings``: the
        effective settings of this model (server defaults with its config.yaml applied)."""
        self.config = config or ModelConfig()
        """The model's ``config.yaml`` as read when this version loaded."""
        self.settings = settings
        self.timeout = settings.default_timeout
        """Seconds a request may wait for this model (config.yaml ``batching.timeout``)."""
        self.io = io
        self.bundle: Bundle = io.bundle
        self.name = io.name
        self.version = io.version
        self.runtime = runtime
        self.metrics = metrics
        self.load_seconds = load_seconds
        self._decode_pool = decode_pool
        self._executors = [
            thread_pool(1, f"compute-{self.name}-{self.version}-{slot}", settings.compute_nice)
            for slot in range(runtime.parallel)
        ]
        """The compute threads, one per batch that may run at once."""
        self.instances = runtime.parallel
        """Batches this version runs at once (Triton's instance count)."""
        self.max_batch_size = settings.max_batch_size if io.batching else 0
        """Most rows per model call; 0: no batching, each request runs alone with its full shape."""
        self.policy = BatchPolicy(
            max_batch_size=self.max_batch_size or 1,  # without batching each request counts as one row
            max_queue_delay=settings.max_queue_delay,
            max_queue_size=settings.max_queue_size,
            max_queue_wait=settings.max_queue_wait,
            inline_call_s=settings.inline_call_ms / 1000,
            pad_values=io.pad_values,
            dynamic_output_dims=io.dynamic_output_dims,
            pad=io.pads_rows,
        )
        """The batcher's effective policy (config.yaml over the server settings)."""
        self.statistics = InferenceStatistics()
        """Triton's statistics extension for this version (written on the event loop only)."""
        self._batcher = Batcher(self._predict, self.policy, metrics, self._executors, self.statistics)
        self._batcher.start()
        self.ready = True
        """False from :meth:`retire` on (the repository stops handing it out)."""

    async def infer(self, request: InferenceRequest, deadline: float) -> InferenceResponse:
        """admit -> prepare -> batch -> postprocess; raises :mod:`serving.errors` types."""
        self.metrics.inflight += 1
        start = time.perf_counter_ns()
        times = RequestTimes(total=0)
        try:
            admitted = self._batcher.admit()  # refuse overload before decoding anything
            try:
                with tracing.phase("preprocess"):  # a no-op unless tracing is on
                    if self.io.needs_decoding(request.inputs):
                        loop = asyncio.get_running_loop()
                        feed, rows = await loop.run_in_executor(self._decode_pool, self.io.prepare, request.inputs)
                    else:
                        feed, rows = self.io.prepare(request.inputs)
            finally:
                self._batcher.release()
            prepared = time.perf_counter_ns()
            outputs = await self._batcher.submit(feed, rows, deadline, admitted, times)
            answered = time.perf_counter_ns()
            tensors = self.io.postprocess(outputs, request.outputs)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self.statistics.request_failed(time.perf_counter_ns() - start)
            raise
        finally:
            self.metrics.inflight -= 1
        end = time.perf_counter_ns()
        times.total, times.compute_input, times.compute_output = end - start, prepared - start, end - answered
        self.statistics.request_succeeded(rows, times)
        return InferenceResponse(self.name, self.version, request.id, tensors)

    def _predict(self, feed: Feed) -> Feed:
        """One batch through the runtime, with the outputs derived once per batch (compute thread)."""
        return self.io.derive(self.runtime.predict(feed))

    def triton_config(self) -> dict[str, Any]:
        """Triton's ``ModelConfig`` (JSON form) for this version, from the manifest and the
        effective batching, instance, device and version settings (serving/triton_config.py)."""
        outputs = self.io.output_metadata()
        parameters: dict[str, str] = {"task": self.io.manifest.task}
        if self.io.raw_input:
            parameters["raw_input"] = self.io.raw_input  # the BYTES input taking encoded images or texts
        facts = ConfigFacts(
            name=self.name,
            runtime=self.runtime.kind,
            inputs=self.io.manifest.inputs,
            outputs=outputs,
            max_batch_size=self.max_batch_size,
            max_queue_delay_s=self.policy.max_queue_delay,
            max_queue_size=self.policy.max_queue_size,
            default_timeout_s=self.timeout,
            instances=self.instances,
            gpu=self.runtime.device.startswith("cuda"),
            version_policy=self.config.version_policy.triton(),
            parameters=parameters,
            label_output=self.io.scores if self.io.labels else None,
        )
        return model_config(facts)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.runtime.platform,
            "inputs": [t.model_dump() for t in self.io.manifest.inputs],
            "outputs": [t.model_dump() for t in self.io.output_metadata()],
            "parameters": {
                "task": self.io.task,
                "max_batch_size": self.max_batch_size,
                "instances": self.instances,
                "version_policy": self.config.version_policy.describe(),
            },
        }

    async def retire(self) -> None:
        """Refuse new work, answer what is queued, then free the threads and the session."""
        self.ready = False
        await self._batcher.stop()
        for executor in self._executors:
            executor.shutdown(wait=True)
        self.runtime.close()


def load_parts(bundle: Bundle, settings: ServingSettings, config: ModelConfig | None = None) -> tuple[ModelIO, Runtime]:
    """The bundle's I/O layer and runtime, warmed by running the whole path twice (blocking;
    once, unwarmed, with ``warmup: false``). Also the TorchServe handler's way to load a bundle."""
    config = config or ModelConfig()
    runtime = load_runtime(bundle, settings)
    io = ModelIO(bundle, settings, batching=config.batching.max_batch_size != 0)
    feed = io.warm_feed()
    for _ in range(2 if config.warmup else 1):  # one run even without warm-up: a model that cannot run fails here
        outputs = runtime.predict(feed)
    if config.warmup:
        runtime.warm_spare(feed)
    io.postprocess(outputs, None)
    return io, runtime


async def load_served_model(
    folder: Path,
    settings: ServingSettings,
    metrics: ModelMetrics,
    decode_pool: Executor,
    *,
    model_name: str | None = None,
    config: ModelConfig | None = None,
) -> ServedModel:
    """The one place a served model is built: parts loaded off the loop, batcher started on it.
    ``model_name``: the name the bundle must carry (default: its parent folder's name);
    ``config``: the model's config.yaml (its overrides applied to ``settings`` here)."""
    start = time.perf_counter()
    config = config or ModelConfig()
    loop = asyncio.get_running_loop()
    bundle = await loop.run_in_executor(None, partial(load_bundle, folder, model_name=model_name))  # checksums verified
    settings = config.effective_settings(bundle.name, settings)
    with thread_pool(1, f"load-{bundle.name}", settings.compute_nice) as loader:  # the runtime's threads inherit it
        io, runtime = await loop.run_in_executor(loader, load_parts, bundle, settings, config)
    return ServedModel(io, runtime, settings, metrics, decode_pool, time.perf_counter() - start, config)
