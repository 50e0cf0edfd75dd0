"""How much to measure: the full plan and the ``--quick`` one (under 3 minutes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BenchPlan:
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    point_s: float = 3.0
    """Measured seconds per (contender, concurrency) point and round."""
    warmup_s: float = 0.7
    rounds: int = 2
    """Interleaved rounds; each point's req/s is the median over rounds."""
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Ceiling batch sweep."""
    omp_concurrencies: tuple[int, ...] = (1, 8)
    """Concurrencies at which a second server with OMP_WAIT_POLICY=PASSIVE is also measured."""
    explain_reps: int = 5
    overload_s: float = 10.0
    cold_start_extra: int = 2
    """Extra lumenserve starts just for cold-start timing (beyond the servers under test)."""
    cold_start_defaults: int = 5
    """Starts of a server holding the default bundles (``--cold-start-models``), no other
    server running: the median is the cold-start figure."""
    torchserve_batch_size: int = 8
    torchserve_max_batch_delay_ms: int = 5
    training: dict[str, Any] = field(default_factory=lambda: {"rounds": 3})
    """Keyword arguments for ``bench.train_throughput.run``."""
    runtime_explain: dict[str, Any] = field(default_factory=lambda: {"image_size": 224, "rounds": 4})
    """Keyword arguments for ``bench.runtime_explain.run`` (the full run measures at 224 px)."""


FULL = BenchPlan()
QUICK = BenchPlan(
    concurrencies=(1, 4),
    point_s=1.0,
    warmup_s=0.3,
    rounds=1,
    batch_sizes=(1, 4),
    omp_concurrencies=(1,),
    explain_reps=1,
    overload_s=2.0,
    cold_start_extra=0,
    cold_start_defaults=1,
    training={"samples": 32, "image_size": 32, "batch_size": 16, "rounds": 1},
    runtime_explain={"image_size": 32, "rounds": 1},
)
