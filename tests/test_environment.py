"""No phone-home and tidy scratch files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_ORT_PROGRAM = """
import time, lumenserve  # sets ORT_DISABLE_TELEMETRY before onnxruntime loads
import numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto
node = helper.make_node("Relu", ["x"], ["y"])
graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
deadline = time.time() + {seconds}
while time.time() < deadline:
    sess.run(None, {{"x": np.ones(1, np.float32)}})
    time.sleep(0.5)
print("done")
"""


_SCRATCH = ("TMPDIR", "TEMP", "TMP", "ORT_DISABLE_TELEMETRY", "LUMENSERVE_HOME")


def _import_env(cwd: Path, **env: str) -> tuple[str, str]:
    """(ORT_DISABLE_TELEMETRY, TMPDIR) as ``import serving`` leaves them in a fresh process whose
    scratch variables are only those given (a user's own TMPDIR must not decide this test)."""
    clean = {k: v for k, v in os.environ.items() if k not in _SCRATCH}
    clean["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    program = "import serving, os; print(os.environ['ORT_DISABLE_TELEMETRY'], os.environ['TMPDIR'])"
    out = subprocess.run([sys.executable, "-c", program], env={**clean, **env}, capture_output=True, text=True,
                         check=True, cwd=cwd)  # fmt: skip
    flag, tmpdir = out.stdout.split()
    return flag, tmpdir


def test_package_import_sets_telemetry_off_and_scratch_under_lumenserve_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    flag, tmpdir = _import_env(tmp_path, LUMENSERVE_HOME=str(home))
    assert flag == "1"
    assert Path(tmpdir) == home.resolve() / "tmp" and Path(tmpdir).is_dir()
    # without LUMENSERVE_HOME: ./.lumenserve of the working directory
    assert Path(_import_env(tmp_path)[1]) == tmp_path.resolve() / ".lumenserve" / "tmp"


def test_a_users_tmpdir_and_telemetry_choice_are_kept(tmp_path: Path) -> None:
    mine = tmp_path / "my-tmp"
    mine.mkdir()
    flag, tmpdir = _import_env(tmp_path, TMPDIR=str(mine), ORT_DISABLE_TELEMETRY="0",
                               LUMENSERVE_HOME=str(tmp_path / "home"))  # fmt: skip
    assert (flag, tmpdir) == ("0", str(mine))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is installed by `make setup`")
def test_onnxruntime_process_connects_only_to_loopback(tmp_path: Path) -> None:
    """A process that imports onnxruntime and runs a session for 75 s makes no outside connect()."""
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["LUMENSERVE_HOME"] = str(tmp_path / "home")
    trace = tmp_path / "trace.txt"
    proc = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=connect",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            _ORT_PROGRAM.format(seconds=75),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done" in proc.stdout
    calls = [line for line in trace.read_text().splitlines() if "connect(" in line]
    outside = []
    for line in calls:
        if "AF_UNIX" in line or "AF_LOCAL" in line:
            continue
        addr = re.search(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"', line)
        host = next((g for g in addr.groups() if g), "") if addr else ""
        if host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1"):
            continue
        outside.append(line)
    assert not outside, "connections outside loopback:\n" + "\n".join(outside)
