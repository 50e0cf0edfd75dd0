"""A tiny, valid image bundle built with the bundle writer (no training), for reader tests."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from lumenserve.bundle import Bundle, finish_bundle, new_staging_dir


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 3, 2, 2) -> (batch, 2)
        return self.fc(x.flatten(1))


def make_toy_bundle(repo: Path, name: str = "toy") -> Bundle:
    staging = new_staging_dir(repo, name)
    model = Toy().eval()
    save_file(model.state_dict(), str(staging / "model.safetensors"))
    torch.jit.save(torch.jit.script(model), str(staging / "model.torchscript"))
    (staging / "model.onnx").write_bytes(b"not parsed by the reader")
    return finish_bundle(
        staging,
        [("model.onnx", "onnx"), ("model.torchscript", "torchscript"), ("model.safetensors", "safetensors")],
        name=name,
        task="image-classification",
        architecture={"family": "torchvision", "name": "toy", "num_classes": 2},
        labels=["a", "b"],
        inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, 3, 2, 2]}],
        outputs=[{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}],
        preprocessing={"kind": "image", "resize_size": 2, "crop_size": 2, "mean": [0, 0, 0], "std": [1, 1, 1]},
    )
