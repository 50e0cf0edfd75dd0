"""grpc.aio servicers: convert, call the data plane once, map errors with the one table."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from serving.dataplane import DataPlane
from serving.errors import ModelNotFound, ServingError, classify, log_internal
from serving.grpc.convert import from_response, repository_answer, repository_model_name, to_request
from serving.grpc.stream import InferStream
from serving.observe import REQUEST_ID, RequestScope
from serving.protogen import explain_pb2, explain_pb2_grpc, model_config_pb2
from serving.protogen import grpc_service_pb2 as pb
from serving.protogen import grpc_service_pb2_grpc as pb_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, where: str) -> None:
    """The gRPC adapter of the error table: abort with the table's code and message; an
    internal error's details go to the log here, once. Raises (``context.abort`` does)."""
    classified = classify(exc)
    if classified.internal:
        log_internal(exc, where)
    await context.abort(classified.grpc_code, classified.message)


def mapped_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn any exception into the gRPC status of the error table (generic INTERNAL for bugs)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc, f"gRPC {method.__name__}")
            raise  # unreachable: abort raises

    return wrapper


def observed(endpoint: str, rpc: str) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """``mapped_errors`` for the inference roads, inside the request's scope
    (serving/observe.py): its request id comes back as ``x-request-id`` trailing metadata on
    every answer, its access log line and trace span end with the status the caller got.
    ``rpc``: the full method name, ``package.Service/Method``."""
    service, _, rpc_method = rpc.rpartition("/")

    def decorate(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Resp:
            metadata = context.invocation_metadata() or ()

            def span_attributes() -> tuple[Mapping[str, str], dict[str, Any]]:
                carrier = {key: value for key, value in metadata if isinstance(value, str)}
                return carrier, {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc_method}

            given = next((value for key, value in metadata if key == REQUEST_ID and isinstance(value, str)), None)
            scope = RequestScope.open(
                "grpc", endpoint, given, request.model_name, request.model_version, rpc, span_attributes
            )
            status, message = "CANCELLED", ""
            try:
                response = await method(self, request, context)
                context.set_trailing_metadata(((REQUEST_ID, scope.request_id),))
                status = "OK"
                return response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                classified = classify(exc)
                status, message = classified.grpc_code.name, classified.message
                context.set_trailing_metadata(((REQUEST_ID, scope.request_id),))
                await abort_with(context, exc, f"gRPC {method.__name__}")
                raise  # unreachable: abort raises
            finally:
                scope.close(status, message=message)

        return wrapper

    return decorate


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _tensor_metadata(specs: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(name=s["name"], datatype=s["datatype"], shape=s["shape"]) for s in specs
    ]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @mapped_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @mapped_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @mapped_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            ready = self.dataplane.model_ready(request.name, request.version)
        except ModelNotFound:  # as Triton answers: an unknown or unloaded model is not ready
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @mapped_errors
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    @mapped_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        meta = self.dataplane.model_metadata(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=_tensor_metadata(meta["inputs"]),
            outputs=_tensor_metadata(meta["outputs"]),
        )

    @observed("infer", "inference.GRPCInferenceService/ModelInfer")
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        response = await self.dataplane.infer(to_request(request, context.time_remaining()), "grpc")
        return from_response(response)

    @mapped_errors
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = await self.dataplane.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))

    @mapped_errors
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        stats = self.dataplane.model_statistics(request.name, request.version)
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    @mapped_errors
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        rows = self.dataplane.index(_authorization(context), ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's bidirectional stream: each request is answered on the stream with its id, in
        the order answers are ready; a failing request is answered with ``error_message`` and
        the stream stays open. The stream's deadline bounds each request; a cancelled stream
        cancels what it still has queued; during a drain the stream ends once its answers left."""
        async for answer in InferStream(self.dataplane, context).run(requests):
            yield answer

    @mapped_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        name = repository_model_name(request)
        await self.dataplane.load(name, _authorization(context))
        return repository_answer(pb.RepositoryModelLoadResponse, name)

    @mapped_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        name = repository_model_name(request)
        await self.dataplane.unload(name, _authorization(context))
        return repository_answer(pb.RepositoryModelUnloadResponse, name)


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @observed("explain", "lumenserve.explain.ExplainService/ModelExplain")
    async def ModelExplain(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        response = await self.dataplane.explain(to_request(request, context.time_remaining()), "grpc")
        return from_response(response)

    @mapped_errors
    async def ModelExplainMethods(
        self, request: explain_pb2.ModelExplainMethodsRequest, context: Any
    ) -> explain_pb2.ModelExplainMethodsResponse:
        answer = await self.dataplane.explain_methods(request.name, request.version)
        return explain_pb2.ModelExplainMethodsResponse(methods_json=json.dumps(answer))


class EndableHealthServicer(HealthServicer):
    """grpc's asyncio health servicer whose ``Watch`` streams can be ended (status OK) at
    shutdown. They never end by themselves, so a graceful stop would wait its whole grace
    period for them, or cut every call still answering along with them."""

    def __init__(self) -> None:
        super().__init__()
        self._ending = asyncio.Event()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        watch = asyncio.ensure_future(super().Watch(request, context))
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            await asyncio.wait((watch, ending), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, ending):
                task.cancel()
            await asyncio.gather(watch, ending, return_exceptions=True)

    def end_watches(self) -> None:
        self._ending.set()


class HealthTracker:
    """grpc.health.v1 statuses: "" for the server, one per model name; NOT_SERVING until warm and while draining."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.servicer = EndableHealthServicer()
        self.servicer._server_status[""] = health_pb2.HealthCheckResponse.NOT_SERVING
        # Liveness (k8s livenessProbe): SERVING while the process answers, even with models unready.
        self.servicer._server_status["inference.GRPCInferenceService"] = health_pb2.HealthCheckResponse.SERVING

    async def refresh(self) -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        await self.servicer.set("", serving if self.dataplane.ready() else not_serving)
        names = set(self.dataplane.repository.models) | self.dataplane.repository.expected
        names |= {s.name for s in self.dataplane.repository.states.values()}
        for name in sorted(names):
            try:
                ready = self.dataplane.model_ready(name)
            except ServingError:  # not loaded (yet)
                ready = False
            await self.servicer.set(name, serving if ready else not_serving)

    def schedule_refresh(self, _name: str = "") -> None:
        asyncio.get_running_loop().create_task(self.refresh())

    async def shutdown(self) -> None:
        await self.refresh()
        await self.servicer.enter_graceful_shutdown()
