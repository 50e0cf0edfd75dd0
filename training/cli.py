"""``lumenserve train`` and ``lumenserve export`` (thin click layers over the library)."""

from __future__ import annotations

from pathlib import Path

import click

from lumenserve.assets import AssetError
from lumenserve.bundle import BundleError
from lumenserve.env import apply_omp_policy

# the errors a user can fix: shown as one line, no traceback
_USER_ERRORS: tuple[type[Exception], ...] = (AssetError, BundleError)


def _user_errors() -> tuple[type[Exception], ...]:
    from training.config import ConfigError
    from training.data import DataError
    from training.export import ExportParityError
    from training.export_run import ExportError
    from training.models import ModelError
    from training.trainer import ResumeError, TrainSetupError

    return (
        *_USER_ERRORS, ConfigError, DataError, ModelError, ExportError, ExportParityError, ResumeError,
        TrainSetupError,
    )  # fmt: skip


def _describe(bundle: object) -> str:
    from lumenserve.bundle import Bundle

    assert isinstance(bundle, Bundle)
    parity = ", ".join(f"{p.runtime} {p.max_abs_diff:.1e}" for p in bundle.manifest.parity)
    return f"exported {bundle.root} (parity max abs diff: {parity})"


@click.command("train")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe value (dotted key).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--export-to", type=click.Path(file_okay=False, path_type=Path), help="Model repository to export into.")
@click.option("--smoke", is_flag=True, help="Tiny subset, a few steps, end to end through export.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_command(
    config: Path,
    overrides: tuple[str, ...],
    out: Path,
    export_to: Path | None,
    smoke: bool,
    resume: bool,
    no_progress: bool,
) -> None:
    """Fine-tune a pretrained model per the recipe CONFIG (YAML); run under torchrun for DDP."""
    apply_omp_policy("train")  # before torch loads (_user_errors imports it)
    errors = _user_errors()
    try:
        from training.config import load_recipe
        from training.pipeline import run_training

        recipe = load_recipe(config, overrides, smoke=smoke)
        result = run_training(recipe, out, smoke=smoke, resume=resume, progress=not no_progress)
        if not result.is_main:
            return
        test = result.summary["test"]
        click.echo(
            f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}, ECE {test['ece']:.4f} "
            f"({result.summary['train']['seconds']:.0f} s training); report: {out / 'report.html'}"
        )
        repository = export_to or (out / "model_repository" if smoke else None)
        if repository is not None:
            from training.export_run import export_run

            click.echo(_describe(export_run(out, repository)))
    except errors as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("export")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--repository", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Bundle name (default: the recipe's export name or name).")
@click.option("--pretrained", type=click.Choice(["mobilenet_v2"]), help="Export torchvision's ImageNet model instead.")
def export_command(run_dir: Path | None, repository: Path, name: str | None, pretrained: str | None) -> None:
    """Export RUN_DIR (a finished training run) as the next bundle version in REPOSITORY/NAME."""
    apply_omp_policy("train")  # before torch loads (_user_errors imports it)
    errors = _user_errors()
    try:
        from training.export_run import export_pretrained, export_run

        if pretrained:
            if run_dir is not None:
                raise click.UsageError("give either RUN_DIR or --pretrained, not both")
            bundle = export_pretrained(pretrained, repository, name or f"imagenet-{pretrained.replace('_', '')}")
        elif run_dir is None:
            raise click.UsageError("RUN_DIR is required (or --pretrained)")
        else:
            bundle = export_run(run_dir, repository, name)
        click.echo(_describe(bundle))
    except errors as exc:
        raise click.ClickException(str(exc)) from exc
