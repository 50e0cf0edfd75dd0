"""``lumenserve demo``: set up, fine-tune the default recipes, export, serve, print the page URL.

Steps (each timed; progress bars from tqdm here and from training's own bars):

1. set-up checks: the offline assets (weights, data) are installed, the ports are free;
2. one bundle per default recipe in the repository: reused when present, else
   ``lumenserve train RECIPE --out runs/demo-NAME --export-to REPO`` (``--smoke`` with ``--quick``);
   a smoke bundle is not reused by a full demo;
3. the ImageNet MobileNetV2 as it ships (``lumenserve export --pretrained mobilenet_v2``);
4. sample images for the page (Fashion-MNIST test images and scikit-learn's photos);
5. ``lumenserve serve`` until every model is ready, then the page URL; Ctrl-C stops it.

Training and the server run as child processes, so a crash or Ctrl-C in one of them never
leaves a half-written bundle or a stray server behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click
import httpx
from tqdm import tqdm

import lumenserve.env  # noqa: F401  (scratch dirs, ORT_DISABLE_TELEMETRY)
from lumenserve.children import die_with_parent
from lumenserve.env import lumenserve_home

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RECIPES = (PROJECT_ROOT / "configs/fashion-mobilenetv2.yaml", PROJECT_ROOT / "configs/sentiment-minilm.yaml")
IMAGENET_NAME = "imagenet-mobilenetv2"
STATIC_DIR = PROJECT_ROOT / "serving" / "static"
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SAMPLE_FASHION_CLASSES = (9, 2, 1, 3, 8, 7)  # ankle boot, pullover, trouser, dress, bag, sneaker
SKLEARN_PHOTOS = {
    "china.jpg": ("Photo: a temple in China", "danielbuechele"),
    "flower.jpg": ("Photo: a flower", "vultilion"),
}
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0

Action = Literal["reuse", "train", "export"]


class DemoError(click.ClickException):
    """A step of the demo failed; the message says which and what to do."""


@dataclass(frozen=True)
class Step:
    """One model the demo needs: reuse its bundle, train it from a recipe, or export it."""

    name: str
    action: Action
    recipe: Path | None = None
    reason: str = ""


@dataclass
class Timings:
    """Seconds per step, printed at the end and quoted in docs/demo.md."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self, label: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] = time.perf_counter() - started

    def table(self) -> str:
        return "\n".join(f"  {label:<38} {secs:8.1f} s" for label, secs in self.seconds.items())


# ---------- planning ----------
def recipe_bundle_name(recipe: Path) -> str:
    """The bundle name a recipe exports to (its ``export.name``, else its ``name``)."""
    from training.config import load_recipe

    loaded = load_recipe(recipe)
    return loaded.export.name or loaded.name


def latest_manifest(repo: Path, name: str) -> dict | None:  # type: ignore[type-arg]
    """The newest bundle's manifest of ``name`` in ``repo`` as a dict, or None."""
    from lumenserve.bundle import BundleError, version_dir

    try:
        folder = version_dir(repo, name)
    except BundleError:
        return None
    try:
        return dict(json.loads((folder / "manifest.json").read_text()))
    except (OSError, ValueError):
        return None


def is_smoke(manifest: dict) -> bool:  # type: ignore[type-arg]
    training = manifest.get("training") or {}
    return bool(training.get("smoke"))


def plan(repo: Path, recipes: tuple[Path, ...], quick: bool) -> list[Step]:
    """What to do for each model: reuse a bundle already there, or build it."""
    steps = []
    for recipe in recipes:
        name = recipe_bundle_name(recipe)
        manifest = latest_manifest(repo, name)
        if manifest is None:
            steps.append(Step(name, "train", recipe, "no bundle yet"))
        elif is_smoke(manifest) and not quick:
            steps.append(Step(name, "train", recipe, "only a smoke bundle; the full demo trains for real"))
        else:
            steps.append(Step(name, "reuse", recipe, f"version {manifest.get('version')}"))
    if latest_manifest(repo, IMAGENET_NAME) is None:
        steps.append(Step(IMAGENET_NAME, "export", None, "ImageNet weights as they ship"))
    else:
        steps.append(Step(IMAGENET_NAME, "reuse", None, "already exported"))
    return steps


# ---------- set-up checks ----------
def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def setup_problems(steps: list[Step], host: str, ports: tuple[int, ...]) -> list[str]:
    """Everything missing for this plan, each with what to do about it."""
    from lumenserve import assets

    checks = {"torch hub (MobileNetV2)": assets.seed_torch_hub, "Fashion-MNIST": assets.fashion_mnist_dir}
    if any(s.action == "train" and "sentiment" in s.name for s in steps):
        checks |= {"MiniLM": assets.minilm_dir, "Rotten Tomatoes": assets.rotten_tomatoes_csv}
    problems = []
    for label, check in checks.items():
        try:
            check()
        except assets.AssetError as exc:
            problems.append(f"{label}: {exc}")
    for port in ports:
        if not port_free(host, port):
            problems.append(f"port {port} on {host} is in use: stop what holds it or pass --http-port/--grpc-port")
    return problems


# ---------- sample images for the page ----------
def write_samples(dest: Path) -> list[dict[str, str]]:
    """A few images for the page's sample strip, plus ``index.json`` listing them."""
    from PIL import Image

    from lumenserve import assets
    from training.data.idx import read_idx

    dest.mkdir(parents=True, exist_ok=True)
    index: list[dict[str, str]] = []
    with contextlib.suppress(assets.AssetError):
        fmnist = assets.fashion_mnist_dir()
        images = read_idx(fmnist / "t10k-images-idx3-ubyte.gz")  # (N, 28, 28) uint8
        labels = read_idx(fmnist / "t10k-labels-idx1-ubyte.gz")  # (N,) uint8
        for wanted in SAMPLE_FASHION_CLASSES:
            i = labels.tolist().index(wanted)  # first test image of the class
            file = f"fashion-{i}.png"
            Image.fromarray(images[i]).save(dest / file, optimize=True)
            caption = f"Fashion-MNIST: {FASHION_CLASSES[wanted]}"
            index.append({"file": file, "caption": caption, "source": "Fashion-MNIST test set (MIT)"})
    with contextlib.suppress(ImportError):
        import sklearn.datasets

        photos = Path(sklearn.datasets.__file__).parent / "images"
        for photo in SKLEARN_PHOTOS:
            if (photos / photo).exists():
                image = Image.open(photos / photo).convert("RGB")
                image.thumbnail((384, 384))
                image.save(dest / photo, quality=85, optimize=True)
                caption, author = SKLEARN_PHOTOS[photo]
                source = f"scikit-learn sample image, by {author} on Flickr, CC BY 2.0"
                index.append({"file": photo, "caption": caption, "source": source})
    (dest / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def ensure_samples() -> str:
    """Write the samples next to the page unless they are there (or the folder is read-only)."""
    dest = STATIC_DIR / "samples"
    if (dest / "index.json").exists():
        return "present"
    try:
        return f"{len(write_samples(dest))} written"
    except OSError as exc:
        return f"skipped ({exc.strerror})"


# ---------- child processes ----------
def lumenserve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lumenserve", *args]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop the demo through the same clean path (KeyboardInterrupt),
    even when the demo was started with SIGINT ignored (a background job of a script)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def run_child(cmd: list[str], what: str) -> None:
    """Run a child with our terminal (its progress bars show); Ctrl-C stops it first."""
    child = subprocess.Popen(cmd, cwd=PROJECT_ROOT)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        stop_child(child)
        raise
    if code != 0:
        raise DemoError(f"{what} failed (exit {code}): {' '.join(cmd)}")


def stop_child(child: subprocess.Popen) -> int:  # type: ignore[type-arg]
    """SIGTERM (graceful: the server drains), then SIGKILL after STOP_TIMEOUT_S."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return int(child.returncode)


def build(step: Step, repo: Path, runs: Path, quick: bool) -> None:
    if step.action == "train" and step.recipe is not None:
        args = ["train", str(step.recipe), "--out", str(runs / f"demo-{step.name}"), "--export-to", str(repo)]
        run_child(lumenserve_cmd(*args, *(["--smoke"] if quick else [])), f"training {step.name}")
    elif step.action == "export":
        args = ["export", "--pretrained", "mobilenet_v2", "--repository", str(repo), "--name", step.name]
        run_child(lumenserve_cmd(*args), f"exporting {step.name}")


def wait_ready(child: subprocess.Popen, base: str, models: list[str], log: Path) -> None:  # type: ignore[type-arg]
    """Poll each model's ready route with a progress bar until all are ready."""
    pending = list(models)
    deadline = time.monotonic() + READY_TIMEOUT_S
    with tqdm(total=len(models), desc="models ready", unit="model", leave=True) as bar, httpx.Client() as client:
        while pending:
            if child.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise DemoError(f"the server exited (code {child.returncode}); its log ({log}) ends:\n{tail}")
            if time.monotonic() > deadline:
                raise DemoError(f"models not ready after {READY_TIMEOUT_S:.0f} s: {pending}; see {log}")
            for name in list(pending):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{base}/v2/models/{name}/ready", timeout=2).status_code == 200:
                        pending.remove(name)
                        bar.update(1)
                        bar.set_postfix_str(name)
            time.sleep(0.2)


def page_url(base: str, models: list[str]) -> str:
    return f"{base}/?models={','.join(models)}"


# ---------- the command ----------
@click.command("demo")
@click.option("--quick", is_flag=True, help="Smoke-train (tiny subsets, a few steps): a taste in about a minute.")
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("model_repository"),
    show_default=True,
    help="Model repository to reuse bundles from and export into.",
)
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Folder for training runs (reports, checkpoints).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the server binds to.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="HTTP (page + REST).")
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8081, show_default=True, help="gRPC port.")
@click.option("--no-serve", is_flag=True, help="Build the bundles and stop (no server).")
def demo_command(
    quick: bool, repository: Path, runs: Path, host: str, http_port: int, grpc_port: int, no_serve: bool
) -> None:
    """Fine-tune and export the default models (or reuse their bundles), serve them, print the page URL."""
    stop_on_signals()
    timings = Timings()
    repo = repository.resolve()
    repo.mkdir(parents=True, exist_ok=True)
    try:
        with timings.measure("plan + set-up checks"):
            steps = plan(repo, DEFAULT_RECIPES, quick)
            problems = setup_problems(steps, host, () if no_serve else (http_port, grpc_port))
        if problems:
            raise DemoError("set-up is incomplete (`make setup` installs the assets):\n  " + "\n  ".join(problems))
        for step in steps:
            click.echo(f"  {step.name:<24} {step.action:<7} {step.reason}")
        todo = [s for s in steps if s.action != "reuse"]
        for i, step in enumerate(todo, 1):
            click.secho(f"[{i}/{len(todo)}] {step.action} {step.name}", bold=True)
            with timings.measure(
                f"{step.action} {step.name}" + (" (smoke)" if quick and step.action == "train" else "")
            ):
                build(step, repo, runs.resolve(), quick)
        with timings.measure("sample images"):
            click.echo(f"sample images: {ensure_samples()}")
        if not no_serve:
            serve(repo, [s.name for s in steps], host, http_port, grpc_port, timings)
    except KeyboardInterrupt:
        click.echo("\ninterrupted; stopped cleanly.")
        return
    finally:
        if timings.seconds:
            click.echo("timings:\n" + timings.table())


def serve(repo: Path, models: list[str], host: str, http_port: int, grpc_port: int, timings: Timings) -> None:
    log = lumenserve_home() / "demo-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = lumenserve_cmd(
        "serve", "--repository", str(repo), "--host", host, "--http-port", str(http_port), "--grpc-port", str(grpc_port)
    )
    base = f"http://{host}:{http_port}"
    with log.open("ab") as log_fh:
        child = subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            # the page explains at once: build the explain twins while the page loads (unless set)
            env={"LUMENSERVE_EXPLAIN_WARM": "true", **os.environ},
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the server gracefully
            preexec_fn=die_with_parent(),
        )
    try:
        with timings.measure("server start until every model is ready"):
            wait_ready(child, base, models, log)
        click.secho(f"\nlumenserve is serving {len(models)} models (gRPC on {host}:{grpc_port}).", fg="green")
        click.secho(f"Open {page_url(base, models)}", bold=True)
        click.echo(f"Server log: {log}. Press Ctrl-C to stop.")
        sys.stdout.flush()
        while child.poll() is None:
            time.sleep(0.5)
        raise DemoError(f"the server stopped by itself (exit {child.returncode}); see {log}")
    finally:
        code = stop_child(child)
        click.echo(f"server stopped (exit {code}).")
