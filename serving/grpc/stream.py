"""Triton's ``ModelStreamInfer``: one bidirectional stream, many requests, answered as they finish.

Each request read from the stream runs through the data plane exactly as a ``ModelInfer``
would (same lookup, batching, metrics and error table) and is answered on the stream with its
``id``. A request that fails is answered with ``error_message`` (and its id in
``infer_response``); the stream stays open. The stream's gRPC deadline bounds every request
on it. A cancelled stream cancels what it still has queued. When the server starts draining,
the stream reads no more requests, answers the ones it took, and ends with OK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from serving.dataplane import DataPlane
from serving.errors import classify, log_internal
from serving.grpc.convert import from_response, to_request
from serving.protogen import grpc_service_pb2 as pb


class InferStream:
    def __init__(self, dataplane: DataPlane, context: grpc.aio.ServicerContext) -> None:
        self.dataplane = dataplane
        self.context = context
        self._answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        self._pending: set[asyncio.Task[None]] = set()

    async def run(self, requests: AsyncIterator[pb.ModelInferRequest]) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Yield answers until the client closed its side (or a drain began) and all are sent."""
        reader = asyncio.ensure_future(self._read(requests))
        try:
            while (answer := await self._answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()
            for task in list(self._pending):
                task.cancel()
            await asyncio.gather(reader, *self._pending, return_exceptions=True)

    async def _read(self, requests: AsyncIterator[pb.ModelInferRequest]) -> None:
        iterator = aiter(requests)
        draining = asyncio.ensure_future(self.dataplane.drain_started.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(iterator))
                await asyncio.wait((following, draining), return_when=asyncio.FIRST_COMPLETED)
                if not following.done():  # draining: take no more requests from this stream
                    following.cancel()
                    await asyncio.gather(following, return_exceptions=True)
                    break
                try:
                    message = following.result()
                except StopAsyncIteration:
                    break
                task = asyncio.ensure_future(self._answer(message))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        finally:
            draining.cancel()
            self._answers.put_nowait(None)

    async def _answer(self, message: pb.ModelInferRequest) -> None:
        try:
            request = to_request(message, self.context.time_remaining())
            response = await self.dataplane.infer(request, "grpc")
            answer = pb.ModelStreamInferResponse(infer_response=from_response(response))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            classified = classify(exc)
            if classified.internal:
                log_internal(exc, "gRPC ModelStreamInfer")
            echo = pb.ModelInferResponse(
                id=message.id, model_name=message.model_name, model_version=message.model_version
            )
            answer = pb.ModelStreamInferResponse(error_message=classified.message, infer_response=echo)
        self._answers.put_nowait(answer)
