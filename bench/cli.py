"""``lumenserve bench``: one interleaved run against the ceiling and TorchServe (docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from lumenserve.env import apply_omp_policy

DEFAULT_BUNDLES = ("fashion-mobilenetv2", "sentiment-minilm")
"""The bundles ``make demo`` builds from the default recipes (their ``name``)."""


@click.command("bench")
@click.option("--repository", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Model repository holding the bundle (REPO/NAME/VERSION).")  # fmt: skip
@click.option("--model", required=True, help="Model name in the repository (an image-classification bundle).")
@click.option("--quick", is_flag=True, help="Few seconds per point, fewer points (< 3 minutes): proves the harness.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench_results.json"),
              show_default=True, help="JSON file with the machine description and every figure.")  # fmt: skip
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the tables here (docs/benchmarks.md); the analysis below its marker is kept.")  # fmt: skip
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch folder for server logs and the TorchServe store (default: a temporary one).")  # fmt: skip
@click.option("--rounds", type=click.IntRange(1, 20), default=None, help="Interleaved rounds (overrides the plan).")
@click.option("--point-seconds", type=click.FloatRange(0.2, 120), default=None, help="Measured seconds per point.")
@click.option("--concurrencies", default=None, help="Comma-separated client concurrencies (e.g. 1,4,16).")
@click.option("--no-torchserve", is_flag=True, help="Skip the TorchServe contenders.")
@click.option(
    "--peers",
    is_flag=True,
    help="Also measure KServe 0.21 and MLServer 1.7.1 on the same ONNX file (each installed into its "
    "own venv under $LUMENSERVE_HOME/peers on first use; needs the package index once).",
)
@click.option(
    "--peers-model",
    "peers_models",
    multiple=True,
    help="Bundle for the peers section (repeatable; default: --model), e.g. a 224 px and a 64 px one.",
)
@click.option("--cold-start-models", default=",".join(DEFAULT_BUNDLES), show_default=True,
              help="Comma-separated bundles one server loads for the cold-start section (skipped when "
                   "the repository lacks one; empty: skip).")  # fmt: skip
@click.option("--no-training", is_flag=True, help="Skip the training-throughput section.")
@click.option(
    "--no-runtime-explain",
    is_flag=True,
    help="Skip the explanations of an imported ONNX model on the served runtime (perturbation methods).",
)
@click.option("--no-serving", is_flag=True,
              help="Start no server: skip cold start, throughput, explain, overload and TorchServe "
                   "(e.g. with --no-training to run only the runtime-explain section).")  # fmt: skip
@click.option("--torchserve-omp-wait-policy", "ts_omp", type=click.Choice(["PASSIVE", "ACTIVE", "inherit"]),
              default="PASSIVE", show_default=True,
              help="OMP_WAIT_POLICY for TorchServe's workers. On a busy shared machine torch's default "
                   "policy made its workers ~100x slower; 'inherit' passes the caller's environment.")  # fmt: skip
def bench_command(
    repository: Path,
    model: str,
    quick: bool,
    out: Path,
    markdown: Path | None,
    work_dir: Path | None,
    rounds: int | None,
    point_seconds: float | None,
    concurrencies: str | None,
    no_torchserve: bool,
    peers: bool,
    peers_models: tuple[str, ...],
    cold_start_models: str,
    no_training: bool,
    no_runtime_explain: bool,
    no_serving: bool,
    ts_omp: str,
) -> None:
    """Benchmark a bundle: in-process ceiling, lumenserve over gRPC/HTTP, TorchServe, explain,
    cold start, overload, explanations of an imported ONNX model and training throughput,
    interleaved in one run; with --peers also KServe and MLServer on the same ONNX file."""
    # The in-process contenders (Captum, training) run with the OpenMP policy the server uses by
    # default (lumenserve/env.py); TorchServe gets --torchserve-omp-wait-policy.
    caller_omp = os.environ.get("OMP_WAIT_POLICY")
    apply_omp_policy("serve")
    torchserve_omp = caller_omp if ts_omp == "inherit" else ts_omp
    missing = [m for m in ("tritonclient", "aiohttp") if importlib.util.find_spec(m) is None]
    if missing:  # aiohttp (the TorchServe client) comes with tritonclient[http]
        raise click.ClickException(f"lumenserve bench needs tritonclient[grpc,http] (the dev extra); missing {missing}")
    from bench.plan import FULL, QUICK
    from bench.report import evaluate_targets, render_markdown, write_markdown
    from bench.runner import BenchRun

    plan = QUICK if quick else FULL
    if rounds:
        plan = replace(plan, rounds=rounds)
    if point_seconds:
        plan = replace(plan, point_s=point_seconds)
    if concurrencies:
        try:
            plan = replace(plan, concurrencies=tuple(int(c) for c in concurrencies.split(",")))
        except ValueError:
            raise click.BadParameter("a comma-separated list of integers", param_hint="--concurrencies") from None
    if not (repository / model).is_dir():
        raise click.BadParameter(f"{repository / model} does not exist", param_hint="--model")
    peer_models = (peers_models or (model,)) if peers else ()
    for name in peer_models:
        if not (repository / name).is_dir():
            raise click.BadParameter(f"{repository / name} does not exist", param_hint="--peers-model")
    cold_models = tuple(name for name in cold_start_models.split(",") if name)
    if not all((repository / name).is_dir() for name in cold_models):
        click.echo(f"cold start with {', '.join(cold_models)}: not all in {repository}, section skipped", err=True)
        cold_models = ()
    command = "lumenserve " + shlex.join(["bench", *sys.argv[2:]]) if len(sys.argv) > 1 else "lumenserve bench"
    with tempfile.TemporaryDirectory(prefix="lumenserve-bench-") as tmp:
        run = BenchRun(repository, model, plan, work_dir or Path(tmp), torchserve=not no_torchserve,
                       training=not no_training, serving=not no_serving,
                       runtime_explain=not no_runtime_explain, torchserve_omp=torchserve_omp, peers=peer_models,
                       cold_start_models=cold_models,
                       log=lambda s: click.echo(s, err=True))  # fmt: skip
        result = run.run()
    result["command"] = command
    result["targets"] = evaluate_targets(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    click.echo(f"wrote {out}")
    if markdown is not None:
        write_markdown(markdown, render_markdown(result, command))
        click.echo(f"wrote {markdown}")
    for t in result["targets"]:
        status = "not measured" if t["met"] is None else ("met" if t["met"] else "MISSED")
        value = f"{t['value']:.3f}" if isinstance(t["value"], float) else t["value"]
        click.echo(f"  {status:>12}  {t['target']}: {value} (goal {t['goal']})")
