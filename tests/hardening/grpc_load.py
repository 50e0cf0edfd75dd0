"""gRPC load shapes: floods, cancellations, client deadlines, drain watch."""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.hardening.wire import Call, grpc_channel, grpc_message


def _stub(channel: Any, endpoint: str = "infer") -> Any:
    from serving.protogen import grpc_service_pb2 as pb

    path = (
        "/lumenserve.explain.ExplainService/ModelExplain"
        if endpoint == "explain"
        else "/inference.GRPCInferenceService/ModelInfer"
    )
    return channel.unary_unary(
        path,
        request_serializer=pb.ModelInferRequest.SerializeToString,
        response_deserializer=pb.ModelInferResponse.FromString,
    )


def flood(url: str, call: Call, count: int, timeout: float = 60) -> list[tuple[str, str, float]]:
    """``count`` concurrent calls; each result is (code name, details, seconds from send to answer)."""
    import grpc

    with grpc_channel(url) as channel:
        stub = _stub(channel, call.endpoint)
        message = grpc_message(call)
        started = []
        futures = []
        for _ in range(count):
            started.append(time.perf_counter())
            futures.append(stub.future(message, timeout=timeout))
        results: list[tuple[str, str, float]] = [("", "", 0.0)] * count
        done = threading.Event()
        remaining = [count]
        lock = threading.Lock()

        def finish(index: int, future: Any) -> None:
            elapsed = time.perf_counter() - started[index]
            try:
                future.result()
                results[index] = ("OK", "", elapsed)
            except grpc.RpcError as exc:
                results[index] = (exc.code().name, exc.details() or "", elapsed)
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        for index, future in enumerate(futures):
            future.add_done_callback(lambda f, i=index: finish(i, f))
        done.wait(timeout + 10)
        return results


def cancel_after(url: str, call: Call, seconds: float) -> str:
    """Start a call, cancel it after ``seconds``; returns the code the client saw."""
    import grpc

    with grpc_channel(url) as channel:
        future = _stub(channel).future(grpc_message(call), timeout=60)
        time.sleep(seconds)
        future.cancel()
        try:
            future.result()
        except grpc.FutureCancelledError:
            return "CANCELLED"
        except grpc.RpcError as exc:
            return exc.code().name
        return "OK"


def with_deadline(url: str, call: Call, seconds: float) -> tuple[str, float]:
    """One call with a client deadline; (code, seconds until the answer)."""
    import grpc

    with grpc_channel(url) as channel:
        start = time.perf_counter()
        try:
            _stub(channel)(grpc_message(call), timeout=seconds)
        except grpc.RpcError as exc:
            return exc.code().name, time.perf_counter() - start
        return "OK", time.perf_counter() - start


def health_watch(url: str, timeout: float = 120) -> list[str]:
    """Follow overall gRPC health (service "") until the stream ends; the statuses seen, in order."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    statuses: list[str] = []
    with grpc_channel(url) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        try:
            for reply in watch:
                statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        except grpc.RpcError as exc:
            statuses.append(f"stream ended: {exc.code().name}")
    return statuses


def repository_call(
    url: str, action: str, model: str, authorization: str | None, root_cert: bytes | None = None
) -> tuple[str, str]:
    """RepositoryModelLoad/Unload with an optional ``authorization`` metadata value: (code, details)."""
    import grpc

    from serving.protogen import grpc_service_pb2 as pb

    kind = "Load" if action == "load" else "Unload"
    request_type = pb.RepositoryModelLoadRequest if action == "load" else pb.RepositoryModelUnloadRequest
    response_type = pb.RepositoryModelLoadResponse if action == "load" else pb.RepositoryModelUnloadResponse
    with grpc_channel(url, root_cert) as channel:
        stub = channel.unary_unary(
            f"/inference.GRPCInferenceService/RepositoryModel{kind}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        metadata = (("authorization", authorization),) if authorization is not None else None
        try:
            stub(request_type(model_name=model), timeout=120, metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
    return "OK", ""


def insecure_probe(url: str) -> str:
    """A plaintext ServerLive against a TLS port: the code the client sees."""
    import grpc

    from serving.protogen import grpc_service_pb2 as pb

    with grpc.insecure_channel(url) as channel:
        stub = channel.unary_unary(
            "/inference.GRPCInferenceService/ServerLive",
            request_serializer=pb.ServerLiveRequest.SerializeToString,
            response_deserializer=pb.ServerLiveResponse.FromString,
        )
        try:
            stub(pb.ServerLiveRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"


def explain_variant(call: Call, n: int) -> Call:
    """An explain call with inputs of its own (so every explanation is computed, not cached)."""
    from tests.hardening.payloads import bytes_raw, good_image_tensor
    from tests.hardening.wire import In, tensor_input

    if call.endpoint != "explain":
        return call
    if call.model == "tiny-image":
        inputs = [tensor_input("input", good_image_tensor(10_000 + n), "FP32")]
    else:
        inputs = [In("text", "BYTES", [1], raw=bytes_raw([f"explain me number {n}".encode()]))]
    return Call(call.model, inputs, endpoint="explain", parameters=call.parameters)


def soak(url: str, calls: list[Call], seconds: float, threads: int) -> dict[str, Any]:
    """``threads`` callers cycling through ``calls`` for ``seconds``: counts and the first errors.

    Each answer's outputs are compared with the first answer to the same call (stable results).
    """
    import numpy as np

    from tests.hardening.wire import grpc_send

    counts: dict[str, int] = {}
    errors: list[str] = []
    first: dict[int, Any] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def caller(offset: int) -> None:
        with grpc_channel(url) as channel:
            index = offset
            while time.monotonic() < end:
                slot = index % len(calls)
                call = explain_variant(calls[slot], index)
                answer = grpc_send(channel, call)
                index += 1
                with lock:
                    key = f"{call.endpoint}:{answer.status}"
                    counts[key] = counts.get(key, 0) + 1
                    if answer.status != "OK":
                        errors.append(f"{call.model} {call.endpoint}: {answer.status} {answer.message[:200]}")
                        continue
                    logits = answer.outputs.get("logits")
                    if call.endpoint == "explain":
                        continue
                    if slot not in first:
                        first[slot] = logits
                    elif logits is not None and not np.allclose(logits, first[slot], rtol=1e-3, atol=1e-4):
                        errors.append(f"{call.model} {call.endpoint}: logits changed between calls")

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 120)
    return {"counts": counts, "errors": errors[:20], "error_count": len(errors)}
