"""One benchmark run: start the servers, measure every section interleaved, stop them.

Order: servers start (cold start recorded) -> one explanation on each lumenserve server
(so torch's OpenMP threads exist, as in a server that explains) -> interleaved rounds of
the ceiling sweep and the load sweep over every contender -> explain -> overload ->
perf_analyzer when installed -> (servers stopped) peers -> explanations of an imported ONNX
model on the served runtime -> training throughput. A section that fails records its error
and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.ceiling import ceiling_setups
from bench.clients import LumenGrpc, LumenHttp, TorchServeHttp, is_rejection
from bench.explain_bench import LumenExplainClient, TorchServeExplainClient, run_compare, run_explain
from bench.loadgen import LoadResult, closed_loop, fixed_rate, percentiles_ms
from bench.machine import describe_machine
from bench.photos import Workload, image_workload
from bench.plan import BenchPlan
from bench.servers import LumenProcess, TorchServeSetup, prepare_torchserve, start_lumenserve
from lumenserve.bundle import Bundle, load_bundle


class BenchRun:
    def __init__(
        self,
        repository: Path,
        model: str,
        plan: BenchPlan,
        work_dir: Path,
        *,
        torchserve: bool = True,
        training: bool = True,
        serving: bool = True,
        runtime_explain: bool = True,
        torchserve_omp: str | None = None,
        peers: tuple[str, ...] = (),
        cold_start_models: tuple[str, ...] = (),
        log: Callable[[str], None] = print,
    ) -> None:
        self.repository = repository.resolve()
        self.model = model
        self.plan = plan
        self.work_dir = work_dir.resolve()
        self.with_torchserve = torchserve
        self.with_training = training
        self.with_serving = serving
        """False: no lumenserve or TorchServe servers (cold start, throughput, explain, overload skipped)."""
        self.with_runtime_explain = runtime_explain
        self.torchserve_omp = torchserve_omp
        """OMP_WAIT_POLICY for TorchServe (None: unset, its default), whatever this process uses."""
        self.cold_start_models = cold_start_models
        """Bundles one server loads together for the cold-start section (the default bundles); () skips it."""
        self.peer_models = peers
        """Bundles (names in the repository) on which KServe and MLServer are measured; () skips them."""
        self.log = log
        self.bundle: Bundle = load_bundle(self.repository / model / _latest_version(self.repository / model))
        self.workload: Workload = image_workload(self.bundle)
        self.result: dict[str, Any] = {"errors": {}, "notes": []}
        self.lumen: LumenProcess | None = None
        self.lumen_passive: LumenProcess | None = None
        self.ts_setup: TorchServeSetup | None = None
        self.ts_url: str | None = None
        self.ts_server: Any = None
        self._ts_scratches: list[Path] = []

    # ---- the whole run ------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        self.result["machine"] = describe_machine()
        self.result["config"] = {
            "repository": str(self.repository),
            "model": self.model,
            "bundle_version": self.bundle.version,
            "image_size": self.workload.tensors[0].shape[-1],
            "photos": self.workload.names,
            "plan": asdict(self.plan),
            "omp_wait_policy": {
                "in_process_and_lumenserve": os.environ.get("OMP_WAIT_POLICY", "unset"),
                "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset"),
                "torchserve": self.torchserve_omp or "unset (its default)",
            },
        }
        if self.with_serving:
            try:
                self._section("servers", self.start_servers)
                self._section("warm_explain", self.warm_explain)
                self._section("throughput", lambda: asyncio.run(self.throughput()))
                self._section("explain", self.explain)
                self._section("overload", lambda: asyncio.run(self.overload()))
                self._section("perf_analyzer", self.perf_analyzer)
            finally:
                self.stop_servers()
        if self.with_serving and self.cold_start_models:  # after the other servers stopped: nothing else runs
            self._section("cold_start_defaults", self.cold_start_defaults)
        for name in self.peer_models:  # after the other servers stopped: three fresh servers per bundle
            self._section(f"peers_{name}", functools.partial(self.peers, name))
        if self.with_runtime_explain:  # in this process, no server running
            self._section("runtime_explain", self.runtime_explain)
        if self.with_training:
            self._section("training", self.training)
        self.result["total_s"] = time.perf_counter() - start
        return self.result

    def _section(self, name: str, fn: Callable[[], Any]) -> None:
        self.log(f"[bench] {name} ...")
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:
            self.result["errors"][name] = f"{type(exc).__name__}: {exc}"[:1000]
            self.log(f"[bench] {name} FAILED: {str(exc)[:500]}\n{traceback.format_exc()[-2500:]}")
        self.log(f"[bench] {name} done in {time.perf_counter() - t:.1f} s")

    # ---- servers ------------------------------------------------------------------------
    def start_servers(self) -> None:
        logs = self.work_dir / "logs"
        default: dict[str, str] = {}  # the server's own default (apply_omp_policy("serve") in lumenserve/env.py)
        passive = {"OMP_WAIT_POLICY": "PASSIVE", "LUMENSERVE_OMP_WAIT_POLICY": "PASSIVE"}
        lumen_cold: list[float] = []
        for i in range(self.plan.cold_start_extra):
            extra = start_lumenserve(self.repository, self.model, logs, label=f"lumenserve-cold-{i}", env_extra=default)
            lumen_cold.append(extra.cold_start_s)
            extra.stop()
        self.lumen = start_lumenserve(self.repository, self.model, logs, label="lumenserve", env_extra=default)
        lumen_cold.append(self.lumen.cold_start_s)
        self.lumen_passive = start_lumenserve(
            self.repository, self.model, logs, label="lumenserve-omp-passive", env_extra=passive
        )
        lumen_cold.append(self.lumen_passive.cold_start_s)
        cold: dict[str, Any] = {"lumenserve_s": lumen_cold, "lumenserve_median_s": statistics.median(lumen_cold)}
        if self.with_torchserve:
            self.ts_setup = prepare_torchserve(
                self.bundle,
                self.work_dir / "torchserve_store",
                batch_size=self.plan.torchserve_batch_size,
                max_batch_delay_ms=self.plan.torchserve_max_batch_delay_ms,
            )
            ts_cold: list[float] = []
            with _environ("OMP_WAIT_POLICY", self.torchserve_omp):
                if self.plan.cold_start_extra:
                    extra_ts, seconds = self.ts_setup.start(self._ts_scratch(), [self.ts_setup.ours])
                    ts_cold.append(seconds)
                    extra_ts.stop()
                    self.ts_setup.servers.remove(extra_ts)
                self.ts_server, seconds = self.ts_setup.start(self._ts_scratch())
            self.ts_url = self.ts_server.inference_url
            cold["torchserve_both_models_s"] = seconds
            cold["torchserve_s"] = ts_cold
            cold["torchserve_median_s"] = statistics.median(ts_cold) if ts_cold else seconds
            cold["torchserve_note"] = (
                "single-model start timed separately" if ts_cold else "start of the store with both archives"
            )
        self.result["cold_start"] = cold

    def cold_start_defaults(self) -> None:
        """Spawn-to-ready of one server holding ``cold_start_models``, started alone each time,
        with its RSS when ready (predictions only: explain loads on first use)."""
        runs: list[float] = []
        rss: list[int] = []
        for i in range(self.plan.cold_start_defaults):
            server = start_lumenserve(self.repository, self.cold_start_models, self.work_dir / "logs",
                                      label=f"lumenserve-defaults-{i}")  # fmt: skip
            try:
                runs.append(server.cold_start_s)
                rss.append(server.rss_bytes())
            finally:
                server.stop()
        self.result["cold_start_defaults"] = {
            "models": list(self.cold_start_models),
            "runs_s": runs,
            "median_s": statistics.median(runs),
            "rss_ready_bytes": rss,
        }

    def _ts_scratch(self) -> Path:
        """A short scratch folder in $TMPDIR: TorchServe puts its workers' unix sockets there, and
        a socket path over 108 bytes (pytest's tmp_path under a deep $TMPDIR) kills every worker."""
        scratch = Path(tempfile.mkdtemp(prefix="lsb-ts-"))
        self._ts_scratches.append(scratch)
        return scratch

    def stop_servers(self) -> None:
        for server in (self.lumen, self.lumen_passive):
            if server is not None:
                code = server.stop()
                if code not in (0, None):
                    self.result["notes"].append(f"{server.label} exited with {code} (log {server.log_path})")
        self.lumen = self.lumen_passive = None
        if self.ts_setup is not None:
            self.result["notes"] += self.ts_setup.stop_all()
        for i, scratch in enumerate(self._ts_scratches):  # keep TorchServe's logs with the others
            if (scratch / "logs").is_dir():
                shutil.copytree(scratch / "logs", self.work_dir / "logs" / f"torchserve-{i}", dirs_exist_ok=True)
            shutil.rmtree(scratch, ignore_errors=True)
        self._ts_scratches.clear()

    def warm_explain(self) -> None:
        """One saliency explanation per lumenserve server, as a server that also explains."""
        from bench.explain_bench import CASES

        saliency = next(c for c in CASES if c.method == "saliency")
        for server in (self.lumen, self.lumen_passive):
            assert server is not None
            client = LumenExplainClient(server.grpc_target, self.model, self.workload)
            try:
                client.explain(saliency, len(self.workload) - 2, {"deletion_steps": 3})
            finally:
                client.close()

    # ---- throughput ---------------------------------------------------------------------
    def _contenders(self) -> dict[str, Any]:
        assert self.lumen is not None and self.lumen_passive is not None
        w, m = self.workload, self.model
        contenders: dict[str, Any] = {
            "lumenserve_grpc_bytes": LumenGrpc("lumenserve_grpc_bytes", self.lumen.grpc_target, m, w, "bytes"),
            "lumenserve_grpc_tensor": LumenGrpc("lumenserve_grpc_tensor", self.lumen.grpc_target, m, w, "tensor"),
            "lumenserve_http_bytes": LumenHttp("lumenserve_http_bytes", self.lumen.http_url, m, w, "bytes"),
            "lumenserve_http_tensor": LumenHttp("lumenserve_http_tensor", self.lumen.http_url, m, w, "tensor"),
        }
        if self.ts_setup is not None and self.ts_url is not None:
            contenders["torchserve_ours_http_bytes"] = TorchServeHttp("torchserve_ours", self.ts_url, m, w)
            if self.ts_setup.builtin:
                contenders["torchserve_builtin_http_bytes"] = TorchServeHttp(
                    "torchserve_builtin", self.ts_url, self.ts_setup.builtin, w
                )
        return contenders

    async def throughput(self) -> None:
        plan = self.plan
        assert self.lumen_passive is not None
        contenders = self._contenders()
        passive = LumenGrpc(
            "lumenserve_omp_passive", self.lumen_passive.grpc_target, self.model, self.workload, "bytes"
        )
        try:
            self.result["sample_answers"] = {
                name: await c.check() for name, c in [*contenders.items(), ("omp_passive", passive)]
            }
        except BaseException:
            for c in [*contenders.values(), passive]:
                await c.close()
            raise
        ceilings = ceiling_setups(self.bundle, self.workload)
        raw: dict[str, dict[int, list[LoadResult]]] = {name: {c: [] for c in plan.concurrencies} for name in contenders}
        omp: dict[str, dict[int, list[LoadResult]]] = {
            "default": {c: [] for c in plan.omp_concurrencies},
            "PASSIVE": {c: [] for c in plan.omp_concurrencies},
        }
        ceiling_runs: dict[str, dict[tuple[str, int], list[dict[str, Any]]]] = {
            mode: {(setup, b): [] for setup in ceilings for b in plan.batch_sizes} for mode in ("bytes", "tensor")
        }
        try:
            for r in range(plan.rounds):
                for mode in ("bytes", "tensor") if r % 2 == 0 else ("tensor", "bytes"):
                    for setup, ceiling in ceilings.items():
                        for b in plan.batch_sizes:
                            measured = ceiling.measure(mode, b, plan.point_s)  # type: ignore[arg-type]
                            ceiling_runs[mode][(setup, b)].append(measured)
                for ci, conc in enumerate(plan.concurrencies):
                    names = list(contenders)
                    shift = (r + ci) % len(names)
                    for name in names[shift:] + names[:shift]:
                        raw[name][conc].append(
                            await closed_loop(contenders[name].send, conc, plan.point_s, plan.warmup_s)
                        )
                    if conc in plan.omp_concurrencies:
                        pair = [("default", contenders["lumenserve_grpc_bytes"]), ("PASSIVE", passive)]
                        for policy, c in pair if r % 2 == 0 else pair[::-1]:
                            omp[policy][conc].append(await closed_loop(c.send, conc, plan.point_s, plan.warmup_s))
                    self.log(f"[bench] round {r + 1}/{plan.rounds} concurrency {conc}: " + ", ".join(
                        f"{n}={raw[n][conc][-1].requests_per_s:.0f}/s" for n in contenders))  # fmt: skip
        finally:
            for c in [*contenders.values(), passive]:
                await c.close()
            for ceiling in ceilings.values():
                ceiling.close()
        self.result["ceiling"] = _ceiling_summary(ceiling_runs)
        self.result["throughput"] = {name: _points(per) for name, per in raw.items()}
        self.result["omp_wait_policy"] = {policy: _points(per) for policy, per in omp.items()}

    # ---- explain ------------------------------------------------------------------------
    def explain(self) -> None:
        assert self.lumen is not None
        lumen = LumenExplainClient(self.lumen.grpc_target, self.model, self.workload)
        ts = TorchServeExplainClient(self.ts_url, self.workload) if self.ts_url else None
        try:
            self.result["explain"] = run_explain(
                self.bundle,
                self.workload,
                lumen,
                ts,
                self.ts_setup.ours if self.ts_setup else None,
                self.ts_setup.builtin if self.ts_setup else None,
                self.plan.explain_reps,
                self.log,
            )
            self.result["explain"]["compare"] = run_compare(lumen, len(self.workload), self.plan.explain_reps, self.log)
        finally:
            lumen.close()
            if ts is not None:
                ts.close()

    # ---- overload -----------------------------------------------------------------------
    async def overload(self) -> None:
        assert self.lumen is not None
        points = self.result.get("throughput", {}).get("lumenserve_grpc_bytes", {})
        peak = max((p["requests_per_s"] for p in points.values() if p["requests_per_s"]), default=0.0)
        if peak <= 0:
            raise RuntimeError("no saturation throughput measured for lumenserve_grpc_bytes")
        client = LumenGrpc("overload", self.lumen.grpc_target, self.model, self.workload, "bytes")
        server = self.lumen
        rss: list[int] = [server.rss_bytes()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                rss.append(server.rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = await fixed_rate(client.send, 2 * peak, self.plan.overload_s, is_rejection)
        finally:
            stop.set()
            sampler.join()
            await client.close()
        summary = result.summary()
        self.result["overload"] = summary | {
            "peak_requests_per_s": peak,
            "goodput_fraction_of_peak": result.goodput_per_s / peak,
            "steady_goodput_fraction_of_peak": result.steady_goodput_per_s / peak,
            "rss_before_bytes": rss[0],
            "rss_peak_bytes": max(rss),
            "server_alive_after": server.alive(),
        }

    # ---- peers --------------------------------------------------------------------------
    def peers(self, model: str) -> None:
        from bench.peers.compare import run_peers

        bundle = load_bundle(self.repository / model / _latest_version(self.repository / model))
        measured = run_peers(bundle, self.repository, self.plan, self.work_dir / "peers", self.log)
        self.result.setdefault("peers", {})[f"{measured['image_size']}px"] = measured

    # ---- explanations of an imported ONNX model (no eager weights) ------------------------
    def runtime_explain(self) -> None:
        from bench.runtime_explain import run as runtime_explain

        folder = self.work_dir / "runtime_explain"
        self.result["runtime_explain"] = runtime_explain(folder=folder, log=self.log, **self.plan.runtime_explain)

    # ---- training -----------------------------------------------------------------------
    def training(self) -> None:
        # Imported here, after the servers have stopped: importing training applies the training
        # OpenMP policy to os.environ, which servers started later would inherit.
        from bench.train_throughput import run as train_throughput

        self.result["training"] = train_throughput(**self.plan.training)

    # ---- perf_analyzer ------------------------------------------------------------------
    def perf_analyzer(self) -> None:
        """Optional: Triton's perf_analyzer against our gRPC endpoint, when it is on PATH."""
        assert self.lumen is not None
        self.result["perf_analyzer"] = run_perf_analyzer(self.lumen.grpc_target, self.model, self.plan.point_s)


@contextlib.contextmanager
def _environ(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name]`` set to ``value`` (None: removed) inside the block."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _latest_version(model_dir: Path) -> str:
    versions = sorted((p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=int)
    if not versions:
        raise FileNotFoundError(f"{model_dir}: no version folders")
    return versions[-1]


def _points(per_conc: dict[int, list[LoadResult]]) -> dict[str, dict[str, Any]]:
    """Per concurrency: median req/s over rounds, percentiles over every pooled latency."""
    out: dict[str, dict[str, Any]] = {}
    for conc, runs in per_conc.items():
        if not runs:
            continue
        pooled = [lat for r in runs for lat in r.latencies_s]
        out[str(conc)] = {
            "concurrency": conc,
            "requests_per_s": statistics.median(r.requests_per_s for r in runs),
            "rounds_requests_per_s": [r.requests_per_s for r in runs],
            "errors": sum(r.errors for r in runs),
            "first_error": next((r.first_error for r in runs if r.first_error), None),
            "client_cpu_fraction": float(np.mean([r.client_cpu_s / r.window_s for r in runs])),
            "server_cpu_ms_per_request": _server_cpu_ms(runs),
        } | percentiles_ms(pooled)
    return out


def _server_cpu_ms(runs: list[LoadResult]) -> float | None:
    """Median over rounds of the server's CPU time per answered request (None: not measured)."""
    per = [
        1000.0 * r.server_cpu_s / r.server_cpu_requests
        for r in runs
        if r.server_cpu_s is not None and r.server_cpu_requests
    ]
    return statistics.median(per) if per else None


def _ceiling_summary(runs: dict[str, dict[tuple[str, int], list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"sweep": {}, "best": {}, "best_single": {}}
    for mode, per_batch in runs.items():
        rows = []
        for (setup, b), measured in per_batch.items():
            if measured:
                rows.append({
                    "setup": setup,
                    "callers": measured[0]["callers"],
                    "batch_size": b,
                    "images_per_s": statistics.median(m["images_per_s"] for m in measured),
                    "p50_ms": statistics.median(m["p50_ms"] for m in measured if m["p50_ms"] is not None),
                    "p99_ms": max(m["p99_ms"] for m in measured if m["p99_ms"] is not None),
                })  # fmt: skip
        out["sweep"][mode] = rows
        if rows:
            out["best"][mode] = max(rows, key=lambda r: r["images_per_s"])
            single = [r for r in rows if r["setup"] == "single"]
            if single:
                out["best_single"][mode] = max(single, key=lambda r: r["images_per_s"])
            out["batch1_p50_ms"] = out.get("batch1_p50_ms", {}) | {
                mode: next((r["p50_ms"] for r in rows if r["batch_size"] == 1 and r["setup"] == "single"), None)
            }
    return out


def run_perf_analyzer(target: str, model: str, seconds: float) -> dict[str, Any]:
    exe = shutil.which("perf_analyzer")
    if exe is None:
        return {"installed": False}
    cmd = [exe, "-m", model, "-u", target, "-i", "grpc", "--concurrency-range", "4",
           "--measurement-interval", str(int(seconds * 1000))]  # fmt: skip
    try:  # pragma: no cover - perf_analyzer is not installed here
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"installed": True, "returncode": None, "output_tail": "timed out after 120 s"}
    return {"installed": True, "returncode": done.returncode, "output_tail": (done.stdout + done.stderr)[-2000:]}
