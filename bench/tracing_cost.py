"""What the observability hooks cost one request, in-process: tracing off vs on.

Runs the hooks a prediction passes through, in the road's order (the transport edge's
request scope with its request id, the data plane's notes, ``preprocess``, ``queue``, the
batch span and its links, the scope's close), without the work between them, so the
figure is the hooks' own cost. "on" exports to an exporter that drops the spans (a batch
span processor, as the server runs). docs/serving.md reports the figures.

    python -m bench.tracing_cost [--requests 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from serving import tracing
from serving.observe import RequestScope, note_model, note_request
from serving.types import InferenceRequest


@dataclass(slots=True)
class _Item:
    trace: tracing.Queued | None
    rows: int = 1


class _DroppingExporter:
    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


def _carrier() -> tuple[dict[str, str], dict[str, Any]]:
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    return carrier, {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": "ModelInfer"}


def one_request(request: InferenceRequest) -> str:
    scope = RequestScope.open("grpc", "infer", None, "m", "", "inference.GRPCInferenceService/ModelInfer", _carrier)
    note_request(request)
    note_model("m", "1")
    with tracing.phase("preprocess"):
        pass
    item = _Item(tracing.queued(0))
    started = tracing.start_batch([item])
    tracing.end_batch(started)
    if item.trace is not None:
        item.trace.left_queue()
    request_id = scope.request_id  # the echo in the answer
    scope.close("OK")
    return request_id


def per_request_us(requests: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean CPU µs per request (CPU time, not wall time: on a
    shared machine the wall clock also counts the time other processes held the cores)."""
    request = InferenceRequest("m")
    samples = []
    for _ in range(rounds):
        start = time.process_time()  # CPU time of the process (the exporter's thread too)
        for _ in range(requests):
            one_request(request)
        samples.append((time.process_time() - start) / requests * 1e6)
    return statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args(argv)
    tracing.shutdown()
    per_request_us(1000, 1)  # warm
    off = per_request_us(args.requests)
    tracing.configure(exporter=_DroppingExporter())
    per_request_us(1000, 1)
    on = per_request_us(args.requests)
    tracing.shutdown()
    print(f"hooks per request: tracing off {off:.2f} µs, tracing on {on:.2f} µs")


if __name__ == "__main__":
    main()
