"""Tiny real bundles for serving/explain tests, made with the real exporter (random weights).

- image: torchvision ``mobilenet_v3_small`` with 3 classes at 32 px (ImageNet mean/std).
- text: a 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer, 2 labels, eager attention.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from lumenserve.assets import minilm_dir
from lumenserve.bundle import Bundle, ImagePreprocessing
from training.export import export_image_model, export_text_model

IMAGE_LABELS = ["cat", "dog", "bird"]
TEXT_LABELS = ["negative", "positive"]


def make_image_bundle(repo: Path, name: str = "tiny-image", seed: int = 0) -> Bundle:
    torch.manual_seed(seed)
    model = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=len(IMAGE_LABELS))
    pre = ImagePreprocessing(resize_size=36, crop_size=32, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return export_image_model(
        model,
        arch_name="mobilenet_v3_small",
        labels=IMAGE_LABELS,
        preprocessing=pre,
        repo=repo,
        name=name,
        gradcam_layer="features.12",
        training={"note": "random weights, test fixture"},
    )


def make_text_bundle(repo: Path, name: str = "tiny-text", seed: int = 0) -> Bundle:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=len(TEXT_LABELS),
        id2label=dict(enumerate(TEXT_LABELS)),
        label2id={n: i for i, n in enumerate(TEXT_LABELS)},
        attn_implementation="eager",
    )
    model = BertForSequenceClassification(config)
    return export_text_model(
        model,
        tokenizer,
        labels=TEXT_LABELS,
        max_length=64,
        repo=repo,
        name=name,
        training={"note": "random weights, test fixture"},
    )
