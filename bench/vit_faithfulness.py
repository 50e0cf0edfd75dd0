"""Faithfulness of the vision-transformer explanations of an image bundle on held-out images.

Explains the last ``--items`` Fashion-MNIST test images (t10k) with each method for the
predicted class, in-process with the explain library (the same code the server runs), and
prints the mean deletion and insertion AUC of each method next to a random attribution's
(uniform noise per pixel, scored by the same curve code). ``--png`` also writes one picture:
a few of the images with each method's overlay.

    .venv/bin/python -m bench.vit_faithfulness --bundle model_repository/fashion-vit/1 \\
        [--items 256] [--methods attention,gradient_rollout,grad_cam,integrated_gradients] [--png out.png]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from lumenserve.env import apply_omp_policy

STEPS = 10
METHODS = "attention,gradient_rollout,grad_cam,integrated_gradients"
METHOD_PARAMS: dict[str, dict[str, Any]] = {"integrated_gradients": {"n_steps": 32}}
CHUNK = 64  # the explain library's most items per call
CELL = 84  # px per picture in --png


def held_out(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The last ``count`` Fashion-MNIST test images (count, 28, 28) uint8 and their labels (count,)."""
    from lumenserve.assets import fashion_mnist_dir
    from training.data.idx import read_idx

    folder = fashion_mnist_dir()
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz")[-count:]
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")[-count:]
    return images, labels


def preprocess(images: np.ndarray, pre: Any) -> Any:
    """(n, H, W) uint8 -> (n, C, crop, crop) float32 through the training's test-time transforms."""
    import torch

    from training.data.datasets import image_transforms, load_image

    transform = image_transforms(pre, False)
    return torch.stack([transform(load_image(i, pre.channels)) for i in images])


def run(bundle_dir: str | Path, items: int = 256, methods: str = METHODS, seed: int = 0) -> dict[str, dict[str, float]]:
    """{method or "random": {deletion_auc, insertion_auc, seconds}} means over the held-out items."""
    import torch

    from explain import faithfulness
    from explain.engine import BundleExplainer
    from lumenserve.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    explainer = BundleExplainer(bundle)
    images, _ = held_out(items)
    x = preprocess(images, bundle.manifest.preprocessing)  # (items, C, H, W)
    params = {"deletion_steps": STEPS, "insertion_steps": STEPS, "infidelity": False, "render_png": False}
    out: dict[str, dict[str, float]] = {}
    targets: list[int] = []
    for method in methods.split(","):
        began = time.perf_counter()
        deletion: list[float] = []
        insertion: list[float] = []
        targets = []
        for start in range(0, items, CHUNK):
            part = {explainer.image_input: x[start : start + CHUNK]}
            result = explainer.explain(part, method=method, params=params | METHOD_PARAMS.get(method, {}))
            deletion += [i.scores["deletion_auc"] for i in result.items]
            insertion += [i.scores["insertion_auc"] for i in result.items]
            targets += [i.target for i in result.items]
        out[method] = {
            "deletion_auc": float(np.mean(deletion)),
            "insertion_auc": float(np.mean(insertion)),
            "seconds": time.perf_counter() - began,
        }
    noise = faithfulness.random_attributions(x, seed)  # (n, 1, H, W)
    model = explainer.model
    with torch.no_grad():
        deleted = faithfulness.deletion_curve_image(model, x, noise, targets, steps=STEPS).auc
        inserted = faithfulness.insertion_curve_image(model, x, noise, targets, steps=STEPS).auc
    out["random"] = {"deletion_auc": float(deleted.mean()), "insertion_auc": float(inserted.mean()), "seconds": 0.0}
    return out


def picture(bundle_dir: str | Path, path: Path, methods: str, count: int = 4) -> None:
    """One row per image: the image, then each method's overlay (predicted class); a palette PNG."""
    from PIL import Image, ImageDraw

    from explain.engine import BundleExplainer
    from explain.render import denormalize
    from lumenserve.bundle import ImagePreprocessing, load_bundle

    bundle = load_bundle(bundle_dir)
    explainer = BundleExplainer(bundle)
    pre = bundle.manifest.preprocessing
    assert isinstance(pre, ImagePreprocessing)
    images, _ = held_out(count)
    x = preprocess(images, pre)  # (count, C, H, W)
    nearest = Image.Resampling.NEAREST
    photos = [
        np.asarray(Image.fromarray(denormalize(i.numpy(), pre.mean, pre.std)).resize((CELL, CELL), nearest)) for i in x
    ]  # (CELL, CELL, 3) uint8 each
    names = methods.split(",")
    head = 16
    sheet = Image.new("RGB", ((len(names) + 1) * CELL, head + count * CELL), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), "image", fill="black")
    for col, method in enumerate(names, start=1):
        params = {"deletion_steps": 0, "infidelity": False} | METHOD_PARAMS.get(method, {})
        result = explainer.explain({explainer.image_input: x}, method=method, params=params, images=photos)
        draw.text((col * CELL + 4, 2), method.replace("integrated_gradients", "integr. grad."), fill="black")
        for row, item in enumerate(result.items):
            with Image.open(io.BytesIO(item.pngs["overlay_png"])) as overlay:
                sheet.paste(overlay.convert("RGB"), (col * CELL, head + row * CELL))
            if col == 1:
                sheet.paste(Image.fromarray(photos[row]), (0, head + row * CELL))
                draw.text((2, head + row * CELL + 2), bundle.manifest.labels[item.predicted], fill="yellow")
    sheet.quantize(colors=128).save(path, optimize=True)


def main() -> None:
    apply_omp_policy("train")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. model_repository/fashion-vit/1")
    parser.add_argument("--items", type=int, default=256, help="held-out test images (the last ones of t10k)")
    parser.add_argument("--methods", default=METHODS, help="comma-separated explain methods")
    parser.add_argument("--png", type=Path, help="also write a picture of 4 images with each method's overlay")
    args = parser.parse_args()
    figures = run(args.bundle, args.items, args.methods)
    print(f"{args.items} held-out Fashion-MNIST test images, predicted class, {STEPS} slices per curve")
    print("| attribution | deletion_auc ↓ | insertion_auc ↑ | seconds |")
    print("|---|---|---|---|")
    for name, row in figures.items():
        print(f"| {name} | {row['deletion_auc']:.3f} | {row['insertion_auc']:.3f} | {row['seconds']:.1f} |")
    if args.png:
        picture(args.bundle, args.png, args.methods)
        print(f"wrote {args.png} ({args.png.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
