"""User models as they arrive at ``lumenserve import``, built here from random weights
(no downloads): ONNX files, a TorchScript file, Hugging Face folders, torchvision weights."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torchvision
from onnx import TensorProto, helper

IMAGE_SIZE = 32
MEAN = (0.5, 0.4, 0.3)  # not ImageNet's
STD = (0.25, 0.2, 0.3)


class NHWCClassifier(torch.nn.Module):
    """(batch, H, W, 3) -> resnet18 logits (batch, classes): an NHWC model as exported from TF-style code."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = torchvision.models.get_model("resnet18", weights=None, num_classes=classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))  # (batch, 3, H, W) -> (batch, classes)


def onnx_nhwc_classifier(folder: Path, classes: int = 4) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = NHWCClassifier(classes).eval()
    path = folder / "nhwc_resnet18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(2, IMAGE_SIZE, IMAGE_SIZE, 3),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}},
        )
    return path, model


def two_in_two_out_graph(opset: int = 17, domain_op: str | None = None) -> onnx.ModelProto:
    """ids INT64 (N, 3), x FP16 (N, 3) -> total FP16 (N, 3) = x + ids * w, count INT64 (N,) = sum(ids)."""
    w = helper.make_tensor("w", TensorProto.FLOAT16, [3], np.array([0.5, -1.0, 2.0], np.float16).tobytes(), raw=True)
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids16"], to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["ids16", "w"], ["scaled"]),
        helper.make_node("Add", ["x", "scaled"], ["total"]),
        helper.make_node("ReduceSum", ["ids", "axes"], ["count"], keepdims=0),
    ]
    if domain_op:
        nodes.append(helper.make_node(domain_op, ["total"], ["extra"], domain="com.example"))
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        nodes,
        "two_in_two_out",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 3]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT16, ["N", 3]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["N"]),
        ],
        initializer=[w, axes],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.example", 1)] if domain_op else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def traced_tensor_model(folder: Path) -> tuple[Path, torch.nn.Module]:
    """(a (N, 4) FP32, b (N, 4) FP32) -> (a @ W + b.sum(), a.argmax(1))."""

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(4, 4))

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a @ self.w + b.sum(dim=1, keepdim=True), a.argmax(dim=1)  # (N, 4), (N,)

    torch.manual_seed(0)
    model = Two().eval()
    path = folder / "two.torchscript"
    torch.jit.save(torch.jit.trace(model, (torch.randn(2, 4), torch.randn(2, 4))), str(path))
    return path, model


def onnx_text_classifier(folder: Path, seq: int = 16) -> Path:
    """A DistilBERT classifier as ONNX with a fixed sequence axis: (batch, seq) ids and mask -> logits."""
    from transformers import AutoModelForSequenceClassification

    hf = hf_text_folder(folder / "hf", ["no", "yes"], with_tokenizer=False)
    model = AutoModelForSequenceClassification.from_pretrained(hf, attn_implementation="eager").eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (batch, 2)

    path = folder / "text.onnx"
    ids = torch.ones(2, seq, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits().eval(),
            (ids, torch.ones_like(ids)),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def hf_text_folder(folder: Path, labels: list[str], *, with_tokenizer: bool = True, head: str = "sequence") -> Path:
    """A tiny DistilBERT sequence classifier (all-MiniLM-L6-v2's tokenizer) in save_pretrained layout."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM, DistilBertForSequenceClassification

    from lumenserve.assets import minilm_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        dim=32,
        n_layers=2,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    model = DistilBertForSequenceClassification(config) if head == "sequence" else DistilBertForMaskedLM(config)
    model.save_pretrained(folder)
    if with_tokenizer:
        tokenizer.save_pretrained(folder)
    return folder


def vit_folder(folder: Path, labels: list[str]) -> Path:
    """A tiny ViT image classifier with its image processor (non-ImageNet mean/std)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    processor = ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=list(MEAN), image_std=list(STD)
    )
    processor.save_pretrained(folder)
    return folder


def torchvision_weights(path: Path, classes: int = 5) -> torch.nn.Module:
    """resnet18 with ``classes`` outputs; weights saved as safetensors, or a .pth state dict."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=classes).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, str(path))
    return model


def import_nhwc_classifier(source: Path, repo: Path, name: str) -> Any:
    """``lumenserve import`` of :func:`onnx_nhwc_classifier`'s file with its preprocessing flags
    and four labels (alpha..delta); the click result."""
    from click.testing import CliRunner

    from lumenserve.cli import main

    labels = source.parent / "labels.txt"
    labels.write_text("alpha\nbeta\ngamma\ndelta\n")
    args = ["import", str(source), "--repository", str(repo), "--name", name, "--task", "image-classification"]
    args += ["--image-size", str(IMAGE_SIZE), "--layout", "NHWC", "--channels", "BGR", "--labels", str(labels)]
    args += ["--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD))]
    return CliRunner().invoke(main, args)
