"""The OpenMP policy has one source, entry points apply it, and reading code never sets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lumenserve.env import DEFAULT_GOMP_SPINCOUNT, apply_omp_policy
from serving.settings import ServingSettings

ROOT = Path(__file__).resolve().parents[1]
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


@pytest.fixture
def clean_omp(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in OMP_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_train_policy_sleeps(clean_omp: pytest.MonkeyPatch) -> None:
    apply_omp_policy("train")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "GOMP_SPINCOUNT" not in os.environ


def test_serve_policy_spins_briefly_by_default(clean_omp: pytest.MonkeyPatch) -> None:
    apply_omp_policy("serve")
    assert os.environ["GOMP_SPINCOUNT"] == str(DEFAULT_GOMP_SPINCOUNT)
    assert "OMP_WAIT_POLICY" not in os.environ
    assert ServingSettings.model_fields["gomp_spincount"].default == DEFAULT_GOMP_SPINCOUNT


def test_serve_policy_takes_the_setting(clean_omp: pytest.MonkeyPatch) -> None:
    apply_omp_policy("serve", wait_policy="ACTIVE", spincount=5)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "GOMP_SPINCOUNT" not in os.environ


@pytest.mark.parametrize("role", ["serve", "train"])
def test_policy_never_overrides_the_environment(clean_omp: pytest.MonkeyPatch, role: str) -> None:
    clean_omp.setenv("OMP_WAIT_POLICY", "ACTIVE")
    apply_omp_policy(role, wait_policy="PASSIVE")  # type: ignore[arg-type]
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "GOMP_SPINCOUNT" not in os.environ  # the user's policy stands alone


def _fresh_python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_reading_a_recipe_sets_no_policy_for_the_server_the_demo_starts() -> None:
    """The demo reads recipes (training code) and then starts `lumenserve serve`, which inherits
    its environment: a policy set by an import would replace the server's own."""
    out = _fresh_python(
        "import os\n"
        "from lumenserve.cli.demo import DEFAULT_RECIPES, recipe_bundle_name\n"
        "print(recipe_bundle_name(DEFAULT_RECIPES[0]))\n"
        "print([os.environ.get(v) for v in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')])\n"
    )
    name, policy = out.splitlines()[-2:]
    assert name == "fashion-mobilenetv2"
    assert policy == "[None, None]"


def test_python_dash_m_lumenserve_lists_the_commands() -> None:
    out = _fresh_python("import runpy, sys; sys.argv = ['lumenserve', '--help']; runpy.run_module('lumenserve')")
    for command in ("bench", "demo", "serve", "train"):
        assert command in out
