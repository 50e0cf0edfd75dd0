"""One asyncio process serving gRPC and HTTP through one data plane.

Startup: bind both ports (live at once), load and warm the models (ready after), print the
ready line. SIGTERM/SIGINT: readiness turns NOT_SERVING first, both transports stop taking
new requests, every accepted request is answered, and the process exits within
``grace_period``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from lumenserve.bundle import BundleError
from serving import observe, tracing
from serving.dataplane import DataPlane
from serving.explain_service import ExplainEngine, ExplainService, LazyEngine
from serving.grpc.server import build_grpc_server
from serving.grpc.servicer import HealthTracker
from serving.http.app import build_app
from serving.metrics import ServingMetrics
from serving.repository import ModelRepository
from serving.settings import ServingSettings

log = logging.getLogger("lumenserve.serving")
HTTP_SETTLE_SECONDS = 0.5
"""After the last accepted request is answered: how long open HTTP keep-alive connections stay
open (answering with ``Connection: close``) before they are closed."""
TRACE_FLUSH_SECONDS = 5.0
"""At the end of a drain: how long buffered spans may take to reach the collector."""


def build_explain_service(
    settings: ServingSettings, metrics: ServingMetrics, engine: ExplainEngine | None = None
) -> ExplainService | None:
    """The explain service of a server: ``engine`` (default: the explain library's
    :class:`~serving.explain_backend.CaptumEngine`) behind explain's guarantees; None when
    ``settings.explain`` is off."""
    if not settings.explain:
        return None
    if engine is None:

        def captum_engine() -> ExplainEngine:
            from serving.explain_backend import CaptumEngine  # loads torch and Captum

            return CaptumEngine(metrics)

        engine = LazyEngine(captum_engine)
        if settings.explain_parameter_max:  # checked at startup: a bad maximum stops the server
            from serving.explain_backend import check_parameter_max

            check_parameter_max(settings.explain_parameter_max)
    return ExplainService(settings, metrics, engine)


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The ``event_loop`` setting as an ``asyncio.Runner`` loop factory (None: the standard loop)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RuntimeError("event_loop is uvloop but uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers (the server drains both transports itself)."""

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


class LumenServer:
    def __init__(self, settings: ServingSettings, explain: ExplainEngine | None = None) -> None:
        """Every part of the server, built here; ``explain``: the engine behind explain
        (default: the explain library; tests pass their own)."""
        self.settings = settings
        self.metrics = ServingMetrics()
        self.repository = ModelRepository(settings, self.metrics)
        self.explain = build_explain_service(settings, self.metrics, explain)
        self.dataplane = DataPlane(settings, self.repository, self.metrics, self.explain)
        observe.enable_access_log(settings.access_log)
        self.tracing = tracing.configure(service_version=self.dataplane.version)
        """True when the ``OTEL_*`` environment turned tracing on (serving/tracing.py)."""
        self.health = HealthTracker(self.dataplane)
        self.repository.listeners.append(self.health.schedule_refresh)
        self.grpc_port = 0
        self.http_port = 0
        self._grpc: Any = None
        self._http: _Uvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        """Bind both transports, then load and warm every model."""
        settings = self.settings
        if not settings.repository.is_dir():
            raise BundleError(f"model repository {settings.repository} does not exist")
        self._grpc, self.grpc_port = build_grpc_server(self.dataplane, self.health, settings)
        await self._grpc.start()
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the
        # listening socket says TCP; without it every response waits ~40 ms on delayed ACKs.
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.http_port))
        sock.listen(2048)
        sock.setblocking(False)
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self.dataplane),
            log_level="warning",
            log_config=None,  # uvicorn's lines go through the server's own handler (serving/logs.py)
            access_log=False,
            lifespan="off",
            http="auto",  # httptools when installed (uvicorn[standard]), else h11
            loop="none",
            timeout_keep_alive=30,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert and settings.tls_key else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_cert and settings.tls_key else None,
        )
        self._http = _Uvicorn(config)
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                await self._http_task
                raise RuntimeError("HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        await self.health.refresh()
        await self.repository.load_startup_models()
        if self.explain is not None and settings.explain_warm:  # the explain twins, in the background
            for versions in self.repository.models.values():
                for model in versions.values():
                    self.explain.warm(model)
        if any(m.runtime.device.startswith("cuda") for vs in self.repository.models.values() for m in vs.values()):
            self.metrics.enable_gpu_memory()
        await self.health.refresh()

    def ready_line(self) -> str:
        host = self.settings.host
        models = ", ".join(f"{n}:{','.join(self.repository.versions_of(n))}" for n in sorted(self.repository.models))
        scheme = "https" if self.settings.tls_cert and self.settings.tls_key else "http"
        return f"lumenserve ready: {scheme}://{host}:{self.http_port} grpc={host}:{self.grpc_port} models=[{models}]"

    def request_stop(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self.stop())

    async def stop(self) -> None:
        """Drain: NOT_SERVING first, answer accepted requests, stop within the grace period."""
        deadline = time.monotonic() + self.settings.grace_period
        self.dataplane.start_drain()
        await self.health.shutdown()
        log.info("draining: readiness NOT_SERVING, waiting for %d request(s)", self.dataplane.inflight)
        remaining = max(0.1, deadline - time.monotonic() - 0.5)
        http_closer = None
        if self._http is not None:
            for listener in getattr(self._http, "servers", []):
                listener.close()  # new connections are refused at once; open ones stay
            http_closer = asyncio.get_running_loop().create_task(self._end_http_when_idle(remaining))
        stops = [self._grpc.stop(remaining)] if self._grpc is not None else []
        if self._http_task is not None:
            stops.append(asyncio.wait_for(asyncio.shield(self._http_task), remaining))
        cutter = asyncio.get_running_loop().create_task(self._end_streams_when_idle(remaining))
        results = await asyncio.gather(*stops, return_exceptions=True)
        cutter.cancel()
        if http_closer is not None:
            http_closer.cancel()
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, TimeoutError):
                log.warning("transport stop: %r", result)
        if self._http is not None and self._http_task is not None and not self._http_task.done():
            self._http.should_exit = self._http.force_exit = True
            await asyncio.gather(self._http_task, return_exceptions=True)
        await self.dataplane.wait_idle(max(0.0, deadline - time.monotonic() - 0.2))
        left = self.dataplane.inflight + self.dataplane.cancelled_while_draining
        if left:
            log.warning("drained: %d accepted request(s) left unanswered at the end of the grace period", left)
        else:
            log.info("drained: 0 accepted requests left unanswered")
        await self.repository.close()
        if self.explain is not None:
            self.explain.close()
        if self.tracing:  # export the spans still buffered, for at most TRACE_FLUSH_SECONDS
            flush = asyncio.get_running_loop().run_in_executor(None, tracing.shutdown)
            await asyncio.wait([flush], timeout=TRACE_FLUSH_SECONDS)
        self.stopped.set()

    async def _end_http_when_idle(self, timeout: float) -> None:
        """Keep open keep-alive connections until every accepted request is answered (each
        answer says ``Connection: close``; a request arriving on one meanwhile is still answered,
        with the same header), then a short settle, then close them: closing an idle keep-alive
        connection at once races a request the client may be sending on it."""
        assert self._http is not None
        settle = min(HTTP_SETTLE_SECONDS, timeout / 4)
        await self.dataplane.wait_idle(max(0.0, timeout - settle - 0.2))
        await asyncio.sleep(settle)
        self._http.should_exit = True

    async def _end_streams_when_idle(self, timeout: float) -> None:
        """Once every accepted request is answered, end the long-lived gRPC streams (health
        ``Watch``, with status OK): grpc's graceful stop would otherwise wait for them the whole
        grace period. Only those end; calls still sending their answers finish normally."""
        if self._grpc is not None and await self.dataplane.wait_idle(timeout):
            self.health.servicer.end_watches()

    async def serve_forever(self, on_ready: Any = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        if on_ready is not None:
            on_ready(self)
        await self.stopped.wait()
