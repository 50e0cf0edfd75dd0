"""Tiny real bundles for serving/explain tests, made with the real exporter (random weights).

- image: torchvision ``squeezenet1_1`` with 3 classes at 32 px (ImageNet mean/std); no
  batch norm, so random weights still give input-dependent outputs (a random MobileNetV3 at
  32 px answers the same logits for every input, which would let broken preprocessing pass).
  The classifier conv is scaled up so probabilities differ visibly between inputs.
- text: a 2-layer BERT (hidden 32) with all-MiniLM-L6-v2's tokenizer, 2 labels, eager
  attention; pooler and classifier re-scaled so probabilities (about 0.8) move with the input
  (by about 1e-3) without saturating.
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
    model = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=len(IMAGE_LABELS))
    with torch.no_grad():
        model.classifier[1].weight.mul_(4.0)  # (classes, 512, 1, 1)
    pre = ImagePreprocessing(resize_size=36, crop_size=32, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return export_image_model(
        model,
        arch_name="squeezenet1_1",
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
    torch.nn.init.normal_(model.classifier.weight, std=0.5)  # (labels, hidden)
    torch.nn.init.normal_(model.bert.pooler.dense.weight, std=0.2)  # (hidden, hidden)
    return export_text_model(
        model,
        tokenizer,
        labels=TEXT_LABELS,
        max_length=64,
        repo=repo,
        name=name,
        training={"note": "random weights, test fixture"},
    )
