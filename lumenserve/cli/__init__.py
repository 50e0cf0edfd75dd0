"""The ``lumenserve`` command: one subcommand per job, imported lazily.

The top layer (the layers contract in pyproject.toml): it may import every package below,
and none of them imports it. Each subcommand lives next to the code it drives (training,
serving, explain, bench; the demo, which drives them all, in ``lumenserve/cli/demo.py``)
and is registered here by dotted path, so ``lumenserve --help`` stays fast and a command
loads only its own layer.
"""

from __future__ import annotations

import importlib

import click

import lumenserve.env  # noqa: F401  (process environment first)

# name -> "module:attribute" of a click.Command
SUBCOMMANDS: dict[str, str] = {
    "serve": "serving.cli:serve_command",
    "train": "training.cli:train_command",
    "export": "training.cli:export_command",
    "import": "training.importer.cli:import_command",
    "demo": "lumenserve.cli.demo:demo_command",
    "archive": "serving.torchserve.archive:archive_command",
    "explain": "explain.cli:explain_command",
    "bench": "bench.cli:bench_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lumenserve")
def main() -> None:
    """lumenserve: fine-tune, export, serve and explain PyTorch models."""


if __name__ == "__main__":
    main()
