"""The peers section: per bundle, lumenserve, KServe and MLServer each hold the same ONNX
file and are driven by the same tritonclient gRPC asyncio load generator, JPEG (BYTES) and
preprocessed tensors (FP32), in interleaved rounds (the order rotates every point).

Each server is started fresh for this section and serves predictions only, so its RSS
(ready and after the load) compares like with like. Server CPU per request is the server
process tree's utime + stime over each measured point divided by the requests it answered.

Before any server starts, the bundle's in-process tensor ceiling is measured (the server's
own runtime class, nothing in front, batches of 1, 16 and 32, one caller and the server's
parallel callers): lumenserve's throughput is read against the best of it, its concurrency-1
p50 (gRPC, and HTTP measured at concurrency 1 alongside) against the batch-1 p50.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ceiling import ceiling_setups
from bench.clients import InputMode, LumenGrpc, LumenHttp
from bench.loadgen import LoadResult, closed_loop
from bench.peers.servers import PEERS, PeerProcess, start_peer
from bench.photos import Workload, image_workload
from bench.plan import BenchPlan
from bench.procstat import listen_addresses, tree_cpu_s, tree_rss_bytes
from bench.servers import LumenProcess, start_lumenserve
from lumenserve.bundle import Bundle

MODES: tuple[InputMode, ...] = ("bytes", "tensor")
CEILING_BATCHES = (1, 16, 32)
HTTP_C1 = "lumenserve_http_tensor"
"""lumenserve over HTTP, tensors, concurrency 1 only (the added latency of that transport)."""


class PeerGrpc(LumenGrpc):
    """tritonclient.grpc.aio against a peer: the same requests, all outputs asked for (the
    peers' models answer the top-5 themselves; they know no ``class_count`` parameter)."""

    def __init__(self, name: str, target: str, model: str, workload: Workload, mode: InputMode) -> None:
        super().__init__(name, target, model, workload, mode)
        self.outputs = None  # type: ignore[assignment]


def run_peers(
    bundle: Bundle, repository: Path, plan: BenchPlan, work_dir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Start lumenserve + the peers on ``bundle``, measure them, stop them; one result dict."""
    workload = image_workload(bundle)
    ceiling = _tensor_ceiling(bundle, workload, plan)
    log(f"[bench] peers {bundle.name}: in-process tensor ceiling {ceiling['images_per_s']:.0f} images/s "
        f"({ceiling['best']}), batch-1 p50 {ceiling['batch1_p50_ms']:.2f} ms")  # fmt: skip
    servers: dict[str, LumenProcess | PeerProcess] = {}
    try:
        servers["lumenserve"] = start_lumenserve(repository, bundle.name, work_dir, label=f"lumenserve-{bundle.name}")
        for name in PEERS:
            servers[name] = start_peer(name, bundle, work_dir, log=log)
        described: dict[str, dict[str, Any]] = {
            label: {"cold_start_s": s.cold_start_s, "rss_ready_bytes": tree_rss_bytes(s.proc.pid)}
            for label, s in servers.items()
        }
        throughput = asyncio.run(_measure(servers, bundle.name, workload, plan, log))
        for label, s in servers.items():
            described[label]["rss_after_load_bytes"] = tree_rss_bytes(s.proc.pid)
            described[label]["alive_after_load"] = s.alive()
            described[label]["listening"] = listen_addresses(s.proc.pid)
    finally:
        codes = {label: s.stop() for label, s in servers.items()}
    return {
        "model": bundle.name,
        "image_size": workload.tensors[0].shape[-1],
        "servers": described,
        "exit_codes": codes,
        "sample_answers": throughput.pop("sample_answers"),
        "throughput": throughput,
        "ceiling": ceiling,
    }


def _tensor_ceiling(bundle: Bundle, workload: Workload, plan: BenchPlan) -> dict[str, Any]:
    """Tensors in-process through the server's runtime class (ONNX Runtime's default threads
    for one caller; the server's callers and threads for ``parallel``), nothing in front."""
    setups = ceiling_setups(bundle, workload)
    points: dict[str, dict[str, Any]] = {}
    try:
        for setup, ceiling in setups.items():
            for batch in CEILING_BATCHES:
                points[f"{setup} x{batch}"] = ceiling.measure("tensor", batch, plan.point_s)
    finally:
        for ceiling in setups.values():
            ceiling.close()
    best = max(points, key=lambda key: points[key]["images_per_s"])
    return {
        "points": points,
        "best": best,
        "images_per_s": points[best]["images_per_s"],
        "batch1_p50_ms": min(p["p50_ms"] for p in points.values() if p["batch_size"] == 1),
    }


async def _measure(
    servers: dict[str, LumenProcess | PeerProcess],
    model: str,
    workload: Workload,
    plan: BenchPlan,
    log: Callable[[str], None],
) -> dict[str, Any]:
    from bench.runner import _points

    contenders: dict[str, tuple[LumenGrpc, int]] = {}
    for label, server in servers.items():
        kind = LumenGrpc if label == "lumenserve" else PeerGrpc
        for mode in MODES:
            name = f"{label}_grpc_{mode}"
            contenders[name] = (kind(name, server.grpc_target, model, workload, mode), server.proc.pid)
    raw: dict[str, dict[int, list[LoadResult]]] = {n: {c: [] for c in plan.concurrencies} for n in contenders}
    ours = servers["lumenserve"]
    http = LumenHttp(HTTP_C1, ours.http_url, model, workload, "tensor")
    http_c1: dict[int, list[LoadResult]] = {1: []}
    try:
        samples = {name: await client.check() for name, (client, _pid) in contenders.items()}
        samples[HTTP_C1] = await http.check()
        for r in range(plan.rounds):
            for ci, conc in enumerate(plan.concurrencies):
                names = list(contenders)
                shift = (r + ci) % len(names)
                for name in names[shift:] + names[:shift]:
                    client, pid = contenders[name]
                    raw[name][conc].append(
                        await closed_loop(
                            client.send, conc, plan.point_s, plan.warmup_s, functools.partial(tree_cpu_s, pid)
                        )
                    )
                log(f"[bench] peers {model} round {r + 1}/{plan.rounds} concurrency {conc}: " + ", ".join(
                    f"{n}={raw[n][conc][-1].requests_per_s:.0f}/s" for n in contenders))  # fmt: skip
            cpu = functools.partial(tree_cpu_s, ours.proc.pid)
            http_c1[1].append(await closed_loop(http.send, 1, plan.point_s, plan.warmup_s, cpu))
    finally:
        for client, _pid in contenders.values():
            await client.close()
        await http.close()
    points = {name: _points(per) for name, per in raw.items()} | {HTTP_C1: _points(http_c1)}
    return {"sample_answers": samples} | points
