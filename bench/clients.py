"""One sender per contender: ``await contender.send(i)`` sends request ``i`` and checks it.

lumenserve is driven by tritonclient's asyncio clients (OIP v2 over gRPC and HTTP, binary
tensors on HTTP), the cheapest load generator measured on this machine; TorchServe by
aiohttp with the raw JPEG as the body, as its docs do. Every contender asks for the same
answer: the top-5 classes of one image.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np

from bench.photos import Workload

TOP_K = 5
InputMode = Literal["bytes", "tensor"]


class Contender(Protocol):
    name: str

    async def send(self, i: int) -> Any: ...

    async def close(self) -> None: ...


class LumenGrpc:
    """tritonclient.grpc.aio against ``lumenserve serve``."""

    def __init__(self, name: str, target: str, model: str, workload: Workload, mode: InputMode) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as grpc_aio

        self.name = name
        self.model = model
        self.client = grpc_aio.InferenceServerClient(target)
        self.inputs = [self._input(grpcclient, workload, mode, k) for k in range(len(workload))]
        self.outputs = [grpcclient.InferRequestedOutput("probabilities", class_count=TOP_K)]

    @staticmethod
    def _input(grpcclient: Any, workload: Workload, mode: InputMode, k: int) -> list[Any]:
        if mode == "bytes":
            tensor = grpcclient.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([workload.jpegs[k]], dtype=np.object_))
        else:
            data = workload.tensors[k]  # (1, C, H, W)
            tensor = grpcclient.InferInput("input", list(data.shape), "FP32")
            tensor.set_data_from_numpy(data)
        return [tensor]

    async def send(self, i: int) -> Any:
        return await self.client.infer(self.model, self.inputs[i % len(self.inputs)], outputs=self.outputs)

    async def check(self) -> list[str]:
        result = await self.send(0)
        return [x.decode() for x in result.as_numpy("probabilities").reshape(-1)]

    async def close(self) -> None:
        await self.client.close()


class LumenHttp:
    """tritonclient.http.aio (binary tensor extension) against ``lumenserve serve``."""

    def __init__(self, name: str, url: str, model: str, workload: Workload, mode: InputMode) -> None:
        import tritonclient.http as httpclient
        import tritonclient.http.aio as http_aio

        self.name = name
        self.model = model
        host = url.split("://", 1)[-1]  # tritonclient wants host:port without the scheme
        self.client = http_aio.InferenceServerClient(host, conn_limit=256)
        self.inputs = [self._input(httpclient, workload, mode, k) for k in range(len(workload))]
        self.outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=True, class_count=TOP_K)]

    @staticmethod
    def _input(httpclient: Any, workload: Workload, mode: InputMode, k: int) -> list[Any]:
        if mode == "bytes":
            tensor = httpclient.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([workload.jpegs[k]], dtype=np.object_), binary_data=True)
        else:
            data = workload.tensors[k]  # (1, C, H, W)
            tensor = httpclient.InferInput("input", list(data.shape), "FP32")
            tensor.set_data_from_numpy(data, binary_data=True)
        return [tensor]

    async def send(self, i: int) -> Any:
        return await self.client.infer(self.model, self.inputs[i % len(self.inputs)], outputs=self.outputs)

    async def check(self) -> list[str]:
        result = await self.send(0)
        return [x.decode() for x in result.as_numpy("probabilities").reshape(-1)]

    async def close(self) -> None:
        await self.client.close()


class TorchServeHttp:
    """aiohttp POST of the raw JPEG to TorchServe's ``/predictions/{model}``."""

    def __init__(self, name: str, url: str, model: str, workload: Workload) -> None:
        import aiohttp

        self.name = name
        self.url = f"{url}/predictions/{model}"
        self.jpegs = workload.jpegs
        self._aiohttp = aiohttp
        self.session: Any = None

    async def _session(self) -> Any:
        if self.session is None:
            aiohttp = self._aiohttp
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=300)
            )
        return self.session

    async def send(self, i: int) -> Any:
        session = await self._session()
        body = self.jpegs[i % len(self.jpegs)]
        async with session.post(self.url, data=body, headers={"Content-Type": "application/octet-stream"}) as r:
            payload = await r.read()
            if r.status != 200:
                raise RuntimeError(f"TorchServe answered {r.status}: {payload[:200]!r}")
            return payload

    async def check(self) -> str:
        return (await self.send(0)).decode()[:300]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def is_rejection(exc: BaseException) -> bool:
    """UNAVAILABLE (gRPC) or 503 (HTTP): the server refused the request at once."""
    status = getattr(exc, "status", None)
    code = status() if callable(status) else status
    text = f"{code} {exc}"
    return "UNAVAILABLE" in text or "503" in text
