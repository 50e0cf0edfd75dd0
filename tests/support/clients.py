"""Client calls for the tests that talk to a real server: tritonclient (gRPC and HTTP) and raw gRPC.

They run in the test process (tritonclient's generated protobuf modules and ours are the same
files, so both load side by side), directly or on the ``worker`` thread pool when a test
needs calls running alongside each other.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

Inputs = dict[str, tuple[np.ndarray, str]]


def jpeg_bytes(seed: int, size: tuple[int, int] = (61, 47)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ---- client calls (tritonclient) ----------------


def _module(kind: str) -> Any:
    if kind == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def triton_infer(kind: str, url: str, model: str, inputs: Inputs, outputs: Sequence[tuple[str, int, bool]] = (),
                 binary: bool = True, **kwargs: Any) -> dict[str, np.ndarray]:  # fmt: skip
    """Infer with tritonclient; ``outputs`` are (name, class_count, binary). Returns every output."""
    module = _module(kind)
    client = module.InferenceServerClient(url)
    tensors = []
    for name, (array, datatype) in inputs.items():
        tensor = module.InferInput(name, list(array.shape), datatype)
        if kind == "http":
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    requested = None
    if outputs:
        requested = []
        for name, count, out_binary in outputs:
            if kind == "http":
                requested.append(module.InferRequestedOutput(name, binary_data=out_binary, class_count=count))
            else:
                requested.append(module.InferRequestedOutput(name, class_count=count))
    result = client.infer(model, tensors, outputs=requested, **kwargs)
    response = result.get_response()
    names = [o.name for o in response.outputs] if kind == "grpc" else [o["name"] for o in response["outputs"]]
    return {name: result.as_numpy(name) for name in names}


def triton_status(kind: str, url: str, model: str, inputs: Inputs, **kwargs: Any) -> tuple[str, str]:
    """(status, message) of an infer expected to fail: gRPC code name or HTTP status."""
    from tritonclient.utils import InferenceServerException

    try:
        triton_infer(kind, url, model, inputs, **kwargs)
    except InferenceServerException as exc:
        return str(exc.status()), str(exc.message())
    return "OK", ""


def grpc_health(url: str, model: str) -> dict[str, Any]:
    """Readiness, metadata, health and reflection answers over gRPC (runs in the worker)."""
    import grpc
    import tritonclient.grpc as grpcclient
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    client = grpcclient.InferenceServerClient(url)
    meta = client.get_model_metadata(model)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server_name": client.get_server_metadata().name,
        "inputs": [(t.name, t.datatype, list(t.shape)) for t in meta.inputs],
        "outputs": [t.name for t in meta.outputs],
        "platform": meta.platform,
    }
    with grpc.insecure_channel(url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        out["health"] = {
            s: health_pb2.HealthCheckResponse.ServingStatus.Name(
                health.Check(health_pb2.HealthCheckRequest(service=s)).status
            )
            for s in ("", model)
        }
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))))
        out["services"] = sorted(s.name for s in answer.list_services_response.service)
    return out


def grpc_repository(url: str, action: str, model: str, token: str | None) -> str:
    """Load/unload over gRPC; returns "OK" or the status code name."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    headers = {"authorization": f"Bearer {token}"} if token is not None else None
    try:
        (client.load_model if action == "load" else client.unload_model)(model, headers=headers)
    except InferenceServerException as exc:
        return str(exc.status()).replace("StatusCode.", "")
    return "OK"


def grpc_raw(url: str, method: str, payload: bytes, service: str = "inference.GRPCInferenceService",
             timeout: float = 10) -> tuple[str, str, bytes]:  # fmt: skip
    """Call a unary RPC with a serialized request (no stubs needed): (code, details, response bytes)."""
    import grpc

    with grpc.insecure_channel(
        url, options=[("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]
    ) as channel:
        call = channel.unary_unary(f"/{service}/{method}")
        try:
            return "OK", "", call(payload, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or "", b""


def concurrent_callers(kind: str, url: str, jobs: list[tuple[str, Inputs]], repeat: int) -> list[list[np.ndarray]]:
    """Each job (model, inputs) is one caller looping ``repeat`` times; returns logits per call."""

    def caller(job: tuple[str, Inputs]) -> list[np.ndarray]:
        model, inputs = job
        return [triton_infer(kind, url, model, inputs, outputs=[("logits", 0, True)])["logits"] for _ in range(repeat)]

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(caller, jobs))


def closed_loop(kind: str, url: str, model: str, inputs: Inputs, seconds: float) -> list[tuple[str, str, float]]:
    """Call in a loop for ``seconds``; each result is (status, message, finished at)."""
    results: list[tuple[str, str, float]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            status, message = triton_status(kind, url, model, inputs)
        except Exception as exc:  # connection refused and friends
            status, message = type(exc).__name__, str(exc)
        results.append((status, message, time.time()))
        if status not in ("OK",):
            time.sleep(0.01)
    return results


def concurrent_status(url: str, model: str, inputs: Inputs, callers: int) -> list[tuple[str, str]]:
    """``callers`` simultaneous gRPC infers; (status, message) each."""
    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(lambda _: triton_status("grpc", url, model, inputs), range(callers)))


def explain_request_bytes(model: str, image: np.ndarray, method: str) -> bytes:
    """A serialized ModelInferRequest (built with tritonclient's messages, same field numbers)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.parameters["method"].string_param = method
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(image.shape))
    del tensor
    request.raw_input_contents.append(np.ascontiguousarray(image, dtype=np.float32).tobytes())
    return bytes(request.SerializeToString())


def grpc_explain(url: str, model: str, image: np.ndarray, method: str) -> tuple[str, str]:
    """ModelExplain over gRPC with a raw FP32 input (runs in the worker): (code, details)."""
    code, details, _ = grpc_raw(url, "ModelExplain", explain_request_bytes(model, image, method),
                                "lumenserve.explain.ExplainService")  # fmt: skip
    return code, details
