"""The issue's targets, evaluated on one run's figures, and the markdown of docs/benchmarks.md.

The markdown is regenerated above the ``ANALYSIS_MARKER`` line; anything below it (the
hand-written analysis of the gaps) is kept from the existing file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ANALYSIS_MARKER = "<!-- analysis: everything below this line is kept when the harness rewrites the file -->"
TS_CONTENDERS = ("torchserve_ours_http_bytes", "torchserve_builtin_http_bytes")
MODES = ("tensor", "bytes")
PEERS = ("kserve", "mlserver")
MIB = 1024 * 1024
RUNTIME_EXPLAIN_GOAL = 1.2
"""Explaining an imported ONNX model: the library's seconds / the fastest bare Captum + ONNX Runtime."""


def _get(d: dict[str, Any] | None, *keys: Any) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _best(points: dict[str, Any] | None) -> float | None:
    values = [p["requests_per_s"] for p in (points or {}).values() if p.get("requests_per_s")]
    return max(values) if values else None


def _target(name: str, value: float | None, goal: float, *, at_most: bool = False, unit: str = "") -> dict[str, Any]:
    met = None if value is None else (value <= goal if at_most else value >= goal)
    return {"target": name, "value": value, "goal": f"{'<=' if at_most else '>='} {goal:g}{unit}", "met": met}


def best_torchserve(result: dict[str, Any], conc: str) -> tuple[str | None, dict[str, Any] | None]:
    """The faster of TorchServe's two handlers at one concurrency."""
    best: tuple[str | None, dict[str, Any] | None] = (None, None)
    for name in TS_CONTENDERS:
        point = _get(result, "throughput", name, conc)
        if (
            point
            and point.get("requests_per_s")
            and (best[1] is None or point["requests_per_s"] > best[1]["requests_per_s"])
        ):
            best = (name, point)
    return best


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    tp = result.get("throughput", {})
    ceiling_bytes = _get(result, "ceiling", "best", "bytes", "images_per_s")
    ceiling_tensor = _get(result, "ceiling", "best", "tensor", "images_per_s")
    targets = []
    for transport, goal in (("grpc", 0.90), ("http", 0.80)):
        for mode, ceiling in (("bytes", ceiling_bytes), ("tensor", ceiling_tensor)):
            served = _best(tp.get(f"lumenserve_{transport}_{mode}"))
            ratio = served / ceiling if served and ceiling else None
            targets.append(_target(f"{transport.upper()} ({mode}) peak / in-process ceiling", ratio, goal))
            single = _get(result, "ceiling", "best_single", mode, "images_per_s")
            if single and single != ceiling:  # the one-caller loop alone, for comparison with older runs
                ratio = served / single if served else None
                targets.append(_target(f"{transport.upper()} ({mode}) peak / one-caller ceiling", ratio, goal))
    for transport in ("http", "grpc"):
        ratios, p50s = [], []
        for conc, point in (tp.get(f"lumenserve_{transport}_bytes") or {}).items():
            _name, ts = best_torchserve(result, conc)
            if ts and point.get("requests_per_s") and ts.get("p50_ms") and point.get("p50_ms"):
                ratios.append(point["requests_per_s"] / ts["requests_per_s"])
                p50s.append(point["p50_ms"] / ts["p50_ms"])
        suffix = "same transport" if transport == "http" else "gRPC vs TorchServe HTTP"
        targets.append(_target(f"{transport.upper()} throughput / TorchServe's, worst concurrency ({suffix})",
                               min(ratios) if ratios else None, 2.2))  # fmt: skip
        targets.append(_target(f"{transport.upper()} p50 / TorchServe's p50, worst concurrency ({suffix})",
                               max(p50s) if p50s else None, 0.5, at_most=True))  # fmt: skip
    base = _get(result, "ceiling", "batch1_p50_ms", "bytes")
    for transport, goal in (("grpc", 1.0), ("http", 2.0)):
        p50 = _get(tp, f"lumenserve_{transport}_bytes", "1", "p50_ms")
        added = p50 - base if p50 is not None and base is not None else None
        targets.append(_target(f"added p50 at concurrency 1, {transport.upper()} (bytes)", added, goal,
                               at_most=True, unit=" ms"))  # fmt: skip
    for key, case in (_get(result, "explain", "cases") or {}).items():
        med = case["median_s"]
        lean, captum, ts = med.get("lumenserve_lean"), med.get("captum_in_process"), med.get("torchserve_ours")
        ratio = lean / captum if lean and captum else None
        targets.append(_target(f"explain {key}: lumenserve / in-process Captum", ratio, 1.15, at_most=True))
        ratio_ts = lean / ts if lean and ts else None
        targets.append(_target(f"explain {key}: lumenserve / TorchServe (our handler)", ratio_ts, 0.5, at_most=True))
        builtin = med.get("torchserve_builtin")
        if builtin:
            targets.append(_target(f"explain {key}: lumenserve / TorchServe built-in", lean / builtin if lean else None,
                                   0.5, at_most=True))  # fmt: skip
    compare = _get(result, "explain", "compare", "ratio")
    targets.append(_target("explain compare: one `methods` request / the same methods one by one", compare, 1.0,
                           at_most=True))  # fmt: skip
    cold = _get(result, "cold_start", "lumenserve_median_s")
    targets.append(_target("cold start to ready, lumenserve (median)", cold, 5.0, at_most=True, unit=" s"))
    defaults = result.get("cold_start_defaults") or {}
    targets.append(_target(f"cold start to ready with {' + '.join(defaults.get('models', ['the default bundles']))} "
                           f"(median of {len(defaults.get('runs_s', []))})", defaults.get("median_s"), 3.0,
                           at_most=True, unit=" s"))  # fmt: skip
    over = result.get("overload") or {}
    targets.append(_target("2x saturation: goodput / peak, whole window (incl. the queue filling)",
                           over.get("goodput_fraction_of_peak"), 0.95))  # fmt: skip
    targets.append(_target("2x saturation: steady goodput / peak (second half of the window)",
                           over.get("steady_goodput_fraction_of_peak"), 0.95))  # fmt: skip
    targets.append(_target("2x saturation: rejection p99", over.get("reject_p99_ms"), 5.0, at_most=True, unit=" ms"))
    alive = over.get("server_alive_after")
    targets.append({"target": "2x saturation: no OOM (server alive, RSS bounded)", "value": alive,
                    "goal": "alive", "met": alive})  # fmt: skip
    targets += _runtime_explain_targets(result)
    targets.append(_target("training: Trainer / bare loop samples/s", _get(result, "training", "ratio"), 0.95))
    return targets + _peer_targets(result)


def _runtime_explain_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    section = result.get("runtime_explain") or {}
    methods = section.get("methods") or {"perturbation methods": {}}
    size = f"{section['image_size']} px " if section else ""
    return [
        _target(
            f"explain {method} of an imported {size}ONNX model: lumenserve / fastest bare Captum + ORT",
            m.get("ratio"),
            RUNTIME_EXPLAIN_GOAL,
            at_most=True,
        )
        for method, m in methods.items()
    ]


def _peer_ratio(section: dict[str, Any], peer: str, mode: str, conc: str, key: str) -> float | None:
    ours = _get(section, "throughput", f"lumenserve_grpc_{mode}", conc, key)
    theirs = _get(section, "throughput", f"{peer}_grpc_{mode}", conc, key)
    return ours / theirs if ours and theirs else None


def _worst(values: list[float | None], *, highest: bool = False) -> float | None:
    """The least favourable ratio (None when any is missing): min for throughput, max for p50 and RSS."""
    if not values or any(v is None for v in values):
        return None
    return max(values) if highest else min(values)  # type: ignore[type-var]


def _peer_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The peers' goals: 224 px, gRPC, tensors and JPEG (the least favourable of the two)."""
    targets = []
    for size, section in (result.get("peers") or {}).items():
        concs = [c for c in (section.get("throughput") or {}).get("lumenserve_grpc_tensor", {})]
        above_one = [c for c in concs if int(c) > 1]
        high = [c for c in concs if int(c) >= 8] if size == "224px" else above_one
        rps = _worst([_peer_ratio(section, "kserve", m, c, "requests_per_s") for m in MODES for c in high])
        targets.append(_target(f"{size}: lumenserve / KServe req/s at concurrency {','.join(high)}", rps, 2.0))
        if size == "224px":
            p50 = _worst([_peer_ratio(section, "kserve", m, c, "p50_ms") for m in MODES for c in high], highest=True)
            targets.append(_target(f"{size}: lumenserve / KServe p50 at concurrency {','.join(high)}", p50, 0.6,
                                   at_most=True))  # fmt: skip
            if "1" in concs:
                one = _worst([_peer_ratio(section, "kserve", m, "1", "p50_ms") for m in MODES], highest=True)
                targets.append(_target(f"{size}: lumenserve / KServe p50 at concurrency 1", one, 1.0, at_most=True))
            ours = _get(section, "servers", "lumenserve", "rss_after_load_bytes")
            theirs = _get(section, "servers", "kserve", "rss_after_load_bytes")
            rss = ours / theirs if ours and theirs else None
            targets.append(_target(f"{size}: lumenserve / KServe RSS after load", rss, 2.0, at_most=True))
        else:
            targets += _small_model_targets(size, section)
    return targets


def _small_model_targets(size: str, section: dict[str, Any]) -> list[dict[str, Any]]:
    """A small model's per-request cost: gRPC tensors at concurrency 16 against the in-process
    batched ceiling, and the p50 at concurrency 1 over the in-process batch-1 p50."""
    ceiling = _get(section, "ceiling", "images_per_s")
    served = _get(section, "throughput", "lumenserve_grpc_tensor", "16", "requests_per_s")
    targets = [_target(f"{size}: gRPC tensors at concurrency 16 / in-process batched ceiling",
                       served / ceiling if served and ceiling else None, 0.5)]  # fmt: skip
    base = _get(section, "ceiling", "batch1_p50_ms")
    for transport, goal in (("grpc", 1.0), ("http", 1.5)):
        p50 = _get(section, "throughput", f"lumenserve_{transport}_tensor", "1", "p50_ms")
        added = p50 - base if p50 is not None and base is not None else None
        targets.append(_target(f"{size}: added p50 at concurrency 1, {transport.upper()} tensors", added, goal,
                               at_most=True, unit=" ms"))  # fmt: skip
    return targets


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _met(met: bool | None) -> str:
    return "not measured" if met is None else ("**met**" if met else "**missed**")


def render_markdown(result: dict[str, Any], command: str) -> str:
    m = result.get("machine", {})
    cfg = result.get("config", {})
    lines = [
        "# Benchmarks: lumenserve vs the in-process ceiling and TorchServe",
        "",
        f"Generated by `{command}` at {m.get('measured_at', '?')} (total {_f(result.get('total_s'), 0)} s).",
        f"Model: `{cfg.get('model')}` version {cfg.get('bundle_version')} at {cfg.get('image_size')} px; "
        f"photos: {', '.join(cfg.get('photos', []))}.",
        f"Machine: {m.get('cpu_model')}, {m.get('logical_cpus')} logical CPUs, {m.get('memory_gib')} GiB, "
        f"load average at start {m.get('load_average_at_start')}; packages {m.get('packages')}.",
        "",
        "**Noise:** this machine has 2 cores that may be shared with other jobs (see the "
        "load average above); every contender ran interleaved in the same rounds so drift hits all alike, "
        "but compare ratios within this run, not absolute figures across runs. Rerun on a quiet machine "
        "with `lumenserve bench --repository REPO --model NAME --markdown docs/benchmarks.md`.",
        "",
        "## Targets",
        "",
        "| target | value | goal | result |",
        "|---|---|---|---|",
    ]
    for t in result.get("targets", []):
        lines.append(f"| {t['target']} | {_f(t['value'], 3)} | {t['goal']} | {_met(t['met'])} |")
    lines += _throughput_tables(result)
    lines += _explain_table(result)
    lines += _runtime_explain_table(result)
    lines += _peer_tables(result)
    lines += _other_tables(result)
    if result.get("errors"):
        lines += ["", "## Sections that failed in this run", ""]
        lines += [f"- `{k}`: {v}" for k, v in result["errors"].items()]
    return "\n".join(lines) + "\n"


def _throughput_tables(result: dict[str, Any]) -> list[str]:
    ceiling = result.get("ceiling") or {}
    lines = ["", "## In-process ceiling (ONNX Runtime, the server's own codec and runtime classes)", "",
             "| input | set-up | callers | batch | images/s | p50 per batch (ms) | p99 (ms) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, rows in (ceiling.get("sweep") or {}).items():
        for r in rows:
            lines.append(f"| {mode} | {r.get('setup', 'single')} | {r.get('callers', 1)} | {r['batch_size']} | "
                         f"{_f(r['images_per_s'])} | {_f(r['p50_ms'], 2)} | {_f(r['p99_ms'], 2)} |")  # fmt: skip
    lines += ["", "`bytes`: JPEG decode + resize/crop/normalise + model + top-5; `tensor`: model + top-5 on "
              "a preprocessed FP32 tensor. `single`: one caller, ONNX Runtime's default threads; `parallel`: "
              "the server's set-up (`model_instances` callers on one session, `intra_op_threads` each). "
              "The best row of each input kind is its ceiling.", "",
              "## Served throughput and latency (closed-loop asyncio clients, top-5 answers)", "",
              "Ratios: against the best ceiling of the same input kind, and against the faster TorchServe "
              "handler at the same concurrency.", "",
              "| contender | concurrency | req/s | p50 ms | p90 ms | p99 ms | x ceiling | x TorchServe | "
              "p50 / TorchServe p50 | client CPU | errors |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    best = ceiling.get("best") or {}
    for name, points in (result.get("throughput") or {}).items():
        mode = "tensor" if name.endswith("tensor") else "bytes"
        ceil = _get(best, mode, "images_per_s")
        for conc, p in points.items():
            _ts_name, ts = best_torchserve(result, conc)
            rps = p.get("requests_per_s")
            x_ceil = rps / ceil if rps and ceil else None
            x_ts = rps / ts["requests_per_s"] if rps and ts and not name.startswith("torchserve") else None
            p50_ts = (
                p["p50_ms"] / ts["p50_ms"] if ts and p.get("p50_ms") and not name.startswith("torchserve") else None
            )
            lines.append(
                f"| {name} | {conc} | {_f(rps)} | {_f(p.get('p50_ms'), 2)} | {_f(p.get('p90_ms'), 2)} | "
                f"{_f(p.get('p99_ms'), 2)} | {_f(x_ceil, 2)} | {_f(x_ts, 2)} | {_f(p50_ts, 2)} | "
                f"{_f(100 * p['client_cpu_fraction'], 0)} % | {p.get('errors')} |"
            )
    omp = result.get("omp_wait_policy") or {}
    if omp:
        lines += ["", "### OMP_WAIT_POLICY (gRPC, JPEG; each server has run one explanation first)", "",
                  "| policy | concurrency | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]  # fmt: skip
        for policy, points in omp.items():
            for conc, p in points.items():
                lines.append(f"| {policy} | {conc} | {_f(p.get('requests_per_s'))} | {_f(p.get('p50_ms'), 2)} | "
                             f"{_f(p.get('p99_ms'), 2)} |")  # fmt: skip
    return lines


def _explain_table(result: dict[str, Any]) -> list[str]:
    ex = result.get("explain")
    if not ex:
        return []
    lines = ["", "## Explanations (median seconds, one JPEG in, predicted class)", "",
             f"`lumenserve lean` sends {ex.get('lean_params')} (no scores, no PNG: the "
             "attributions and the prediction, what bare Captum gives); `lumenserve default` computes "
             "deletion AUC and infidelity and renders the overlay. TorchServe's built-in handler runs IG "
             "with n_steps fixed at 15 and target 0.", "",
             "| method | params | Captum in-process | lumenserve lean | lumenserve default | TorchServe (our handler) "
             "| TorchServe built-in | lean / Captum | lean / TorchServe |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for case in ex.get("cases", {}).values():
        med = case["median_s"]
        lean, captum, ts = med.get("lumenserve_lean"), med.get("captum_in_process"), med.get("torchserve_ours")
        lines.append(
            f"| {case['method']} | {case['params']} | {_f(captum, 3)} | {_f(lean, 3)} | "
            f"{_f(med.get('lumenserve_default'), 3)} | {_f(ts, 3)} | {_f(med.get('torchserve_builtin'), 3)} | "
            f"{_f(lean / captum if lean and captum else None, 2)} | {_f(lean / ts if lean and ts else None, 2)} |"
        )
    compare = ex.get("compare")
    if compare:
        lines += ["", f"Compare: one request with `methods` = {','.join(compare['methods'])} "
                  f"({compare['params']}, default scores and overlays) took {_f(compare['methods_request_s'], 3)} s, "
                  f"the same methods one by one {_f(compare['one_by_one_s'], 3)} s: ratio {_f(compare['ratio'], 2)} "
                  "(the decode and the prediction pass are shared)."]  # fmt: skip
    if ex.get("errors"):
        lines += ["", "Explain errors: " + "; ".join(f"`{k}`: {v}" for k, v in ex["errors"].items())]
    return lines


def _runtime_explain_table(result: dict[str, Any]) -> list[str]:
    section = result.get("runtime_explain")
    if not section:
        return []
    methods: dict[str, Any] = section.get("methods") or {}
    first: dict[str, Any] = next(iter(methods.values()), {})
    per_evals = list(first.get("captum_ort_s", {}))
    lines = ["", f"## Explanations of an imported ONNX model on the served runtime ({section['image_size']} px, "
             "perturbation methods)", "",
             f"{section['model']}, exported to ONNX and imported with `lumenserve import` (no eager weights); CPU, "
             f"ONNX Runtime with the server's session settings, {section['instances']} instance(s). `lumenserve`: "
             "the explain library on the served runtime (what the server's explain thread runs) with default "
             f"parameters and `{json.dumps(section['lean_params'])}` (the attributions only); the reference is the "
             "fastest bare Captum with the same `OnnxRuntime.predict` as the forward, the same window/patches and "
             "samples, at each `perturbations_per_eval` (pe) below. "
             f"Median seconds over {section['rounds']} interleaved rounds.", "",
             "| method (library defaults) | forward rows | lumenserve | "
             + " | ".join(f"Captum + ORT, pe {pe}" for pe in per_evals) + " | lumenserve / fastest | goal | result |",
             "|---|---|---|" + "---|" * len(per_evals) + "---|---|---|"]  # fmt: skip
    for method, m in methods.items():
        params = ", ".join(f"{k} {v}" for k, v in m["params"].items())
        bare = " | ".join(_f(m["captum_ort_s"].get(pe), 3) for pe in per_evals)
        lines.append(
            f"| {method} ({params}, pe {m['perturbations_per_eval']}) | {m['forward_rows']} | "
            f"{_f(m['lumenserve_s'], 3)} | {bare} | {_f(m['ratio'], 2)}x | <= {RUNTIME_EXPLAIN_GOAL:g}x | "
            f"{_met(m['ratio'] <= RUNTIME_EXPLAIN_GOAL)} |"
        )
    return lines


def _other_tables(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cold = result.get("cold_start")
    if cold:
        lines += ["", "## Cold start (process spawn to ready)", "",
                  "| server | runs (s) | median (s) |", "|---|---|---|",
                  f"| lumenserve | {', '.join(_f(x, 2) for x in cold.get('lumenserve_s', []))} | "
                  f"{_f(cold['lumenserve_median_s'], 2)} |"]  # fmt: skip
        if "torchserve_median_s" in cold:
            runs = cold.get("torchserve_s") or [cold.get("torchserve_both_models_s")]
            lines.append(f"| TorchServe ({cold.get('torchserve_note')}) | {', '.join(_f(x, 2) for x in runs)} | "
                         f"{_f(cold['torchserve_median_s'], 2)} |")  # fmt: skip
    defaults = result.get("cold_start_defaults")
    if defaults:
        rss = ", ".join(_f(b / MIB, 0) for b in defaults["rss_ready_bytes"])
        runs = ", ".join(_f(x, 2) for x in defaults["runs_s"])
        lines += ["", f"Ready with the default bundles ({', '.join(defaults['models'])}), one server started "
                  f"alone each time: {runs} s, median **{_f(defaults['median_s'], 2)} s**; RSS when ready "
                  f"{rss} MiB (explain loads on first use)."]  # fmt: skip
    over = result.get("overload")
    if over and "offered_per_s" in over:
        lines += ["", "## Overload: fixed arrival rate at 2x the measured peak (gRPC, JPEG)", "",
                  "| offered req/s | peak req/s | goodput req/s | goodput / peak | steady goodput / peak | ok | "
                  "rejected | failed | unanswered | ok p50 / p99 ms | reject p50 / p99 ms | RSS before / peak MiB "
                  "| alive after |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
                  f"| {_f(over['offered_per_s'])} | {_f(over['peak_requests_per_s'])} | {_f(over['goodput_per_s'])} | "
                  f"{_f(over['goodput_fraction_of_peak'], 3)} | "
                  f"{_f(over.get('steady_goodput_fraction_of_peak'), 3)} | {over['ok']} | {over['rejected']} | "
                  f"{over['failed']} | "
                  f"{over.get('unfinished', '–')} | "
                  f"{_f(over['ok_p50_ms'])} / {_f(over['ok_p99_ms'])} | {_f(over['reject_p50_ms'], 2)} / "
                  f"{_f(over['reject_p99_ms'], 2)} | {over['rss_before_bytes'] / 2**20:.0f} / "
                  f"{over['rss_peak_bytes'] / 2**20:.0f} | {_f(over['server_alive_after'])} |"]  # fmt: skip
    tr = result.get("training")
    if tr and "bare_samples_per_s" in tr:
        lines += ["", "## Training throughput (bench/train_throughput.py, interleaved rounds)", "",
                  "| model | image px | batch | rounds | bare loop samples/s | Trainer samples/s | ratio |",
                  "|---|---|---|---|---|---|---|",
                  f"| {tr['model']} | {tr['image_size']} | {tr['batch_size']} | {tr['rounds']} | "
                  f"{_f(tr['bare_samples_per_s'])} | {_f(tr['trainer_samples_per_s'])} | "
                  f"{_f(tr['ratio'], 3)} |"]  # fmt: skip
    pa = result.get("perf_analyzer")
    if pa is not None:
        lines += ["", f"perf_analyzer: {'installed' if pa.get('installed') else 'not installed (optional)'}."]
    return lines


def _peer_tables(result: dict[str, Any]) -> list[str]:
    """Per bundle: the three servers' memory and start, then req/s, p50 and server CPU per request,
    with lumenserve's ratios to each peer (above 1 is better for req/s, below 1 for p50 and RSS)."""
    peers = result.get("peers") or {}
    if not peers:
        return []
    lines = ["", "## Peers: KServe 0.21 and MLServer 1.7.1 on the same ONNX file (gRPC, tritonclient asyncio)", "",
             "Each server started fresh for this section and served predictions only. RSS covers the server's "
             "process tree (MLServer's inference worker included). CPU per request: the server's utime + stime "
             "over each measured point divided by the requests it answered."]  # fmt: skip
    for size, section in peers.items():
        servers = section.get("servers") or {}
        ours = _get(servers, "lumenserve", "rss_after_load_bytes")
        lines += ["", f"### {size} (`{section.get('model')}`)", "",
                  "| server | ready (s) | RSS ready (MiB) | RSS after load (MiB) | lumenserve / this RSS |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for label, s in servers.items():
            after = s.get("rss_after_load_bytes")
            ratio = ours / after if ours and after and label != "lumenserve" else None
            lines.append(f"| {label} | {_f(s.get('cold_start_s'), 2)} | {_f((s.get('rss_ready_bytes') or 0) / MIB, 0)} "
                         f"| {_f(after / MIB if after else None, 0)} | {_f(ratio, 2)} |")  # fmt: skip
        tp = section.get("throughput") or {}
        ceiling = section.get("ceiling")
        if ceiling:
            http = _get(tp, "lumenserve_http_tensor", "1", "p50_ms")
            lines += ["", f"In-process tensor ceiling (the server's runtime class, nothing in front): "
                      f"{_f(ceiling.get('images_per_s'))} images/s at best ({ceiling.get('best')}), batch-1 p50 "
                      f"{_f(ceiling.get('batch1_p50_ms'), 2)} ms. lumenserve over HTTP, tensors, concurrency 1: "
                      f"p50 {_f(http, 2)} ms."]  # fmt: skip
        lines += ["", "| input | concurrency | req/s lumenserve / KServe / MLServer | x KServe | x MLServer | "
                  "p50 ms lumenserve / KServe / MLServer | p50 / KServe | p50 / MLServer | "
                  "server CPU ms per request lumenserve / KServe / MLServer | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for mode in MODES:
            for conc, p in (tp.get(f"lumenserve_grpc_{mode}") or {}).items():
                points = [p, *(_get(tp, f"{peer}_grpc_{mode}", conc) or {} for peer in PEERS)]
                rps = " / ".join(_f(q.get("requests_per_s")) for q in points)
                p50 = " / ".join(_f(q.get("p50_ms"), 2) for q in points)
                cpu = " / ".join(_f(q.get("server_cpu_ms_per_request"), 2) for q in points)
                x_rps = [_f(_peer_ratio(section, peer, mode, conc, "requests_per_s"), 2) for peer in PEERS]
                x_p50 = [_f(_peer_ratio(section, peer, mode, conc, "p50_ms"), 2) for peer in PEERS]
                errors = sum(q.get("errors") or 0 for q in points)
                label = "JPEG" if mode == "bytes" else "tensor"
                lines.append(f"| {label} | {conc} | {rps} | {x_rps[0]} | {x_rps[1]} | {p50} | {x_p50[0]} | {x_p50[1]} "
                             f"| {cpu} | {errors} |")  # fmt: skip
    return lines


def write_markdown(path: Path, text: str) -> None:
    """Write ``text`` and keep the hand-written analysis below the marker of an existing file."""
    kept = ""
    if path.is_file():
        old = path.read_text()
        if ANALYSIS_MARKER in old:
            kept = old.split(ANALYSIS_MARKER, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n" + ANALYSIS_MARKER + (kept or "\n"))
