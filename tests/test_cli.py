"""`lumenserve --help` and every subcommand's help work."""

from __future__ import annotations

from click.testing import CliRunner

from lumenserve.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in SUBCOMMANDS:
        assert name in result.output


def test_each_subcommand_has_help() -> None:
    for name in SUBCOMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, f"{name}: {result.output}"
        assert "--" in result.output  # options are described
