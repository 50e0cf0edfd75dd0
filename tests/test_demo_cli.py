"""`lumenserve demo`: planning, sample images, and a real rerun that reuses bundles and serves."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from lumenserve.cli.demo import DEFAULT_RECIPES, IMAGENET_NAME, plan, recipe_bundle_name, write_samples
from tests.support.demo import child_env, copy_bundle_as, stop
from tests.support.ports import raise_if_port_clash, retry_on_port_clash
from tests.support.server import ROOT
from tests.support.waiting import wait_until

RERUN_BUDGET_S = 60.0  # "a rerun with bundles present starts serving in seconds" (2 shared cores: generous)


def _demo_repo(model_repo: Path, dest: Path) -> list[str]:
    """A repository holding a (tiny) bundle under each name the demo expects."""
    image_name, text_name = (recipe_bundle_name(r) for r in DEFAULT_RECIPES)
    copy_bundle_as(dest, model_repo / "tiny-image" / "1", image_name)
    copy_bundle_as(dest, model_repo / "tiny-text" / "1", text_name)
    copy_bundle_as(dest, model_repo / "tiny-image" / "1", IMAGENET_NAME)
    return [image_name, text_name, IMAGENET_NAME]


@pytest.mark.slow  # seconds of real waiting: make test runs it, test-fast does not
def test_plan_trains_what_is_missing_and_reuses_the_rest(model_repo: Path, tmp_path: Path) -> None:
    empty = [(s.name, s.action) for s in plan(tmp_path / "none", DEFAULT_RECIPES, quick=False)]
    assert [a for _, a in empty] == ["train", "train", "export"]
    names = _demo_repo(model_repo, tmp_path / "repo")
    assert [(s.name, s.action) for s in plan(tmp_path / "repo", DEFAULT_RECIPES, quick=False)] == [
        (n, "reuse") for n in names
    ]


def test_a_smoke_bundle_is_reused_by_quick_but_not_by_the_full_demo(model_repo: Path, tmp_path: Path) -> None:
    names = _demo_repo(model_repo, tmp_path)
    manifest_path = tmp_path / names[0] / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["training"] = {**manifest["training"], "smoke": True}
    manifest_path.write_text(json.dumps(manifest))
    assert plan(tmp_path, DEFAULT_RECIPES, quick=True)[0].action == "reuse"
    assert plan(tmp_path, DEFAULT_RECIPES, quick=False)[0].action == "train"


def test_samples_are_real_images_with_true_captions(tmp_path: Path) -> None:
    index = write_samples(tmp_path)
    assert len(index) >= 8
    assert json.loads((tmp_path / "index.json").read_text()) == index
    for sample in index:
        with Image.open(tmp_path / sample["file"]) as image:
            image.load()
            assert min(image.size) >= 28
    fashion = [s for s in index if s["file"].startswith("fashion-")]
    assert {s["caption"].split(": ")[1] for s in fashion} >= {"Ankle boot", "Trouser", "Bag"}
    assert len({s["caption"] for s in fashion}) == len(fashion)  # distinct classes
    assert any("CC BY" in s["source"] for s in index)


@dataclass
class Demo:
    child: subprocess.Popen[bytes]
    lines: queue.Queue[str]
    output: list[str]
    url: str | None
    http_port: int


def _start_demo(repo: Path, runs: Path, ports: list[int]) -> Demo:
    """``lumenserve demo`` on the given ports, read until it prints the page URL (or gives up)."""
    http_port, grpc_port = ports
    cmd = [sys.executable, "-m", "lumenserve", "demo", "--repository", str(repo), "--runs", str(runs)]
    cmd += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    started = time.monotonic()
    child = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    demo = Demo(child, queue.Queue(), [], None, http_port)
    threading.Thread(target=_pump, args=(child, demo.lines), daemon=True).start()
    while demo.url is None and time.monotonic() - started < RERUN_BUDGET_S:
        try:
            line = demo.lines.get(timeout=1)
        except queue.Empty:
            line = None
        if line is None:
            if child.poll() is not None:  # it gave up: on a port taken since we picked it, try others
                demo.output += iter_queue(demo.lines)
                raise_if_port_clash("".join(demo.output))
                raise AssertionError("".join(demo.output))
            continue
        demo.output.append(line)
        if line.startswith("Open http"):
            demo.url = line.split()[1]
    return demo


@pytest.mark.slow
def test_rerun_with_bundles_serves_in_seconds_and_ctrl_c_stops_cleanly(model_repo: Path, tmp_path: Path) -> None:
    names = _demo_repo(model_repo, tmp_path / "repo")
    started = time.monotonic()
    demo = retry_on_port_clash(lambda ports: _start_demo(tmp_path / "repo", tmp_path / "runs", ports), 2)
    child, output, url = demo.child, demo.output, demo.url
    try:
        to_url = time.monotonic() - started
        assert url is not None, f"no URL within {RERUN_BUDGET_S} s:\n{''.join(output)}"
        text = "".join(output)
        for name in names:
            assert f"{name}" in text and "reuse" in text, text
        assert not [row for row in output if row.startswith("[")], f"a rerun must build nothing: {text}"
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "lumenserve" in page.text
        for name in names:
            ready = httpx.get(f"http://127.0.0.1:{demo.http_port}/v2/models/{name}/ready", timeout=10)
            assert ready.status_code == 200
        assert stop(child, signal.SIGINT, timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    def everything() -> str:  # the child has exited; its last lines reach the pump a moment later
        output.extend(iter_queue(demo.lines))
        return "".join(output)

    wait_until(lambda: "server stopped" in everything(), 10, "the demo's 'server stopped' line", details=everything)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{demo.http_port}/v2/health/live", timeout=2)
    print(f"demo rerun: URL after {to_url:.1f} s")


def _pump(child: subprocess.Popen[bytes], lines: queue.Queue[str]) -> None:
    assert child.stdout is not None
    for raw in child.stdout:
        lines.put(raw.decode(errors="replace"))


def iter_queue(q: queue.Queue[str]) -> list[str]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out
