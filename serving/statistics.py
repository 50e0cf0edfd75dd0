"""Triton's statistics extension: per model version, what ran and how long each stage took.

One :class:`InferenceStatistics` per served model version, written only from the event
loop (no locks): the served model reports each finished request and each model execution.
:meth:`InferenceStatistics.as_dict` gives the JSON form of Triton's ``ModelStatistics``
message, which the HTTP route returns as is and the gRPC servicer parses into the message.

Triton's meaning of each field, kept here:
- ``inference_count``: rows inferred (a request of 4 rows counts 4); ``execution_count``:
  model executions (batches).
- ``inference_stats.success`` / ``fail``: requests and their whole time in the server;
  ``queue``: time from arrival until the model took it; ``compute_input``: preparing the
  request (decoding, validation); ``compute_infer``: the model run of the batch the request
  rode in; ``compute_output``: building the answer. Counts of the stage stats are the
  successful requests.
- ``batch_stats``: per executed batch size, the executions and their stage times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Duration:
    """Triton's ``StatisticDuration``: how many, and their total nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, ns)

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStatistics:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class RequestTimes:
    """The stage times of one finished request, in nanoseconds."""

    total: int
    queue: int = 0
    compute_input: int = 0
    compute_infer: int = 0
    compute_output: int = 0


class InferenceStatistics:
    def __init__(self) -> None:
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches: dict[int, BatchStatistics] = {}

    def request_succeeded(self, rows: int, times: RequestTimes) -> None:
        self.inference_count += rows
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.success.add(times.total)
        self.queue.add(times.queue)
        self.compute_input.add(times.compute_input)
        self.compute_infer.add(times.compute_infer)
        self.compute_output.add(times.compute_output)

    def request_failed(self, total_ns: int) -> None:
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.fail.add(total_ns)

    def batch_executed(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.execution_count += 1
        stats = self.batches.get(batch_size)
        if stats is None:
            stats = self.batches[batch_size] = BatchStatistics()
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        """The JSON form of ``inference.ModelStatistics``."""
        empty = Duration().as_dict()
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": empty,
                "cache_miss": empty,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stats.compute_input.as_dict(),
                    "compute_infer": stats.compute_infer.as_dict(),
                    "compute_output": stats.compute_output.as_dict(),
                }
                for size, stats in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
