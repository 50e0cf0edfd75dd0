"""One training run, end to end: data -> model -> fine-tune -> test evaluation -> report.

The run folder ends up with ``config.yaml`` (resolved recipe), ``best.safetensors``,
``summary.json``, the PNG plots, ``report.html``, ``tensorboard/`` and what export needs to
rebuild the model without the original checkpoint (``hf_config/``, ``tokenizer/``,
held-out parity inputs). With LoRA the adapters are merged into ``best.safetensors`` after
training (the merge is checked against the adapter model) and kept in ``adapter/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from training.config import Recipe, dump_recipe, save_recipe
from training.data import PreparedData, prepare_data
from training.data.datasets import ImageDataset, TextDataset, image_transforms, text_collator
from training.distributed import setup_distributed, teardown
from training.evaluate import classification_metrics, predict
from training.models import (
    BuiltModel,
    apply_freezing,
    apply_lora,
    build_model,
    check_model_source,
    enable_gradient_checkpointing,
    forward_logits,
    merge_lora,
)
from training.report import write_plots, write_report_html
from training.trainer import Trainer, TrainResult, seed_everything

SUMMARY = "summary.json"
PARITY_IMAGES = "parity_inputs.safetensors"
PARITY_TEXTS = "parity_texts.json"
ADAPTER_DIR = "adapter"
SAMPLE_COUNT = 16


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    is_main: bool


def _datasets(recipe: Recipe, data: PreparedData, built: BuiltModel) -> tuple[Any, Any, Any, Any]:
    if recipe.task == "image-classification":
        assert built.preprocessing is not None
        pre = built.preprocessing
        c = pre.channels
        train = ImageDataset(data.train, data.labels, image_transforms(pre, True, recipe.model.augment), c)
        evaluation = image_transforms(pre, False)
        return (
            train,
            ImageDataset(data.validation, data.labels, evaluation, c),
            ImageDataset(data.test, data.labels, evaluation, c),
            None,
        )
    tok, n = built.tokenizer, recipe.model.max_length
    train_t = TextDataset(data.train, data.labels, tok, n)
    return (
        train_t,
        TextDataset(data.validation, data.labels, tok, n),
        TextDataset(data.test, data.labels, tok, n),
        text_collator(tok),
    )


def _samples(recipe: Recipe, test_set: Any, labels: list[str], probs: Any, targets: Any) -> dict[str, Any]:
    n = min(SAMPLE_COUNT, len(targets))
    true = [labels[int(t)] for t in targets[:n]]
    pred = [labels[int(p)] for p in probs[:n].argmax(axis=1)]
    conf = [float(c) for c in probs[:n].max(axis=1)]
    if recipe.task == "image-classification":
        return {
            "kind": "image",
            "items": [test_set.raw_image(i) for i in range(n)],
            "true": true,
            "pred": pred,
            "conf": conf,
        }
    return {"kind": "text", "items": test_set.texts[:n], "true": true, "pred": pred, "conf": conf}


def _save_export_inputs(run_dir: Path, recipe: Recipe, built: BuiltModel, test_set: Any) -> None:
    """What export needs besides the weights: parity inputs (held-out test items), HF config + tokenizer."""
    if recipe.task == "image-classification":
        from safetensors.torch import save_file

        batch = torch.stack([test_set[i][0] for i in range(min(4, len(test_set)))])  # (4, C, H, W)
        save_file({"input": batch.contiguous()}, str(run_dir / PARITY_IMAGES))
    else:
        (run_dir / PARITY_TEXTS).write_text(json.dumps(test_set.texts[:4]))
        built.tokenizer.save_pretrained(run_dir / "tokenizer")
    if built.hf_config is not None:
        built.hf_config.save_pretrained(run_dir / "hf_config")


def _merge_adapters(run_dir: Path, built: BuiltModel, probe: Any, keep: bool) -> float:
    """Keep the adapters (+ trained head) in ``adapter/``, merge them into ``best.safetensors``;
    returns max |merged logits - adapter logits| on ``probe`` (a test batch)."""
    from safetensors.torch import save_file, save_model

    model: Any = built.model.eval()
    cpu = torch.device("cpu")
    with torch.no_grad():
        before, _ = forward_logits(model, probe, cpu)  # (batch, K)
    if keep:
        model.save_pretrained(run_dir / ADAPTER_DIR)
        (run_dir / ADAPTER_DIR / "README.md").unlink(missing_ok=True)
        trained_base = {
            n.removeprefix("base_model.model."): p.detach().contiguous()
            for n, p in model.named_parameters()
            if p.requires_grad and "lora_" not in n
        }
        save_file(trained_base, str(run_dir / ADAPTER_DIR / "head.safetensors"))
    merged = merge_lora(model)
    with torch.no_grad():
        after, _ = forward_logits(merged, probe, cpu)  # (batch, K)
    built.model = merged
    save_model(merged, str(run_dir / "best.safetensors"))
    return float((after - before).abs().max())


def _summary(
    recipe: Recipe, smoke: bool, data: PreparedData, built: BuiltModel, freezing: dict[str, int],
    result: TrainResult, test: dict[str, Any], device: str, world: int, wall: float, merge_diff: float | None,
) -> dict[str, Any]:  # fmt: skip
    lora = recipe.model.lora
    return {
        "recipe": recipe.model_dump(mode="json"),
        "smoke": smoke,
        "labels": data.labels,
        "data": data.report.to_dict(),
        "model": {
            "parameters": freezing,
            "lora": None if lora is None else {**lora.model_dump(), "merge_max_abs_diff": merge_diff},
            "preprocessing": built.preprocessing.model_dump() if built.preprocessing else None,
            "max_length": recipe.model.max_length if recipe.task == "text-classification" else None,
        },
        "train": {
            "seconds": result.seconds,
            "wall_seconds": wall,
            "samples_per_second": result.samples_per_second,
            "steps": result.state.step,
            "epochs": result.state.epoch,
            "stopped_early": result.state.stopped_early,
            "best_validation": result.state.best_metric if result.state.best_step >= 0 else None,
            "best_step": result.state.best_step,
            "device": device,
            "world_size": world,
            "peak_memory_mb": result.peak_memory_mb,
            "peak_memory_source": result.peak_memory_source,
            "precision": result.precision,
            "gradient_checkpointing": recipe.train.gradient_checkpointing,
            "accumulation_steps": result.accumulation_steps,
            "effective_batch_size": result.effective_batch_size,
        },
        "history": result.state.history,
        "test": test,
    }


def run_training(
    recipe: Recipe, out: str | Path, *, smoke: bool = False, resume: bool = False, progress: bool = True
) -> RunResult:
    """Train per ``recipe`` into ``out`` (under torchrun: every rank calls this; rank 0 writes)."""
    began = time.perf_counter()
    run_dir = Path(out)
    info = setup_distributed()
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.train.seed)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, run_dir)
    try:
        check_model_source(recipe.model)
        data = prepare_data(recipe.data, recipe.task)
        built = build_model(recipe.task, recipe.model, data.labels)
        lora = recipe.model.lora
        # LoRA: adapters + head (+ pooler) train, whatever ``freeze`` says
        freezing = apply_freezing(built, "head" if lora else recipe.model.freeze, recipe.model.unfrozen_blocks)
        if lora is not None:
            freezing = apply_lora(built, lora)
        if recipe.train.gradient_checkpointing:
            enable_gradient_checkpointing(built.model)
        train_set, val_set, test_set, collate = _datasets(recipe, data, built)
        trainer = Trainer(
            built.model, train_set, recipe.train, val_set=val_set, labels=data.labels, collate_fn=collate,
            head_params=built.head_params, run_dir=run_dir, dist_info=info, progress=progress,
        )  # fmt: skip
        if resume:
            trainer.resume(run_dir)
        result = trainer.fit()
        summary: dict[str, Any] = {}
        if info.is_main:
            loader = DataLoader(test_set, batch_size=recipe.train.eval_batch_size, collate_fn=collate)
            probs, targets, test_loss = predict(trainer.model, loader, info.device, trainer.autocast())
            test = {"loss": test_loss, **classification_metrics(probs, targets, data.labels)}
            trainer.model.cpu()
            merge_diff = None
            if lora is not None:
                probe = next(iter(DataLoader(test_set, batch_size=4, collate_fn=collate)))
                merge_diff = _merge_adapters(run_dir, built, probe, lora.keep_adapter)
            _save_export_inputs(run_dir, recipe, built, test_set)
            summary = _summary(
                recipe, smoke, data, built, freezing, result, test, str(info.device), info.world_size,
                time.perf_counter() - began, merge_diff,
            )  # fmt: skip
            (run_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
            write_plots(run_dir, summary, _samples(recipe, test_set, data.labels, probs, targets))
            write_report_html(run_dir, summary, dump_recipe(recipe))
        return RunResult(run_dir, summary, info.is_main)
    finally:
        teardown(info)
