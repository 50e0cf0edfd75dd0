"""The fine-tuning loop: AdamW, warm-up + cosine, clipping, accumulation (or an effective batch
size), bf16 autocast (CUDA by default, CPU on request), a peak-memory figure,
early stopping on the validation metric, best checkpoint as safetensors, resume, seeds,
a live progress bar, TensorBoard scalars, and DDP under torchrun (same code for one process)."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from training.config import TrainConfig
from training.distributed import DistInfo, barrier, broadcast, setup_distributed, sync_buffers
from training.evaluate import classification_metrics, predict
from training.memory import PeakMemoryMeter
from training.models import forward_logits

BEST_WEIGHTS = "best.safetensors"
LAST_WEIGHTS = "last.safetensors"
TRAINER_STATE = "trainer_state.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_fraction: float, min_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine down to ``min_ratio`` at ``total_steps``."""
    warmup = max(0, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@dataclass
class TrainState:
    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    """Optimizer steps taken."""
    samples: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    evals_without_improvement: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    """One row per logged point: {step, epoch, train_loss?, lr?, val_loss?, val_<metric>?}."""


class ResumeError(ValueError):
    """The run folder holds no resumable state."""


class TrainSetupError(ValueError):
    """The training settings do not fit this run (e.g. the effective batch size); names the field."""


def accumulation_steps(cfg: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step: from ``effective_batch_size`` when set, else ``grad_accum_steps``."""
    if cfg.effective_batch_size is None:
        return cfg.grad_accum_steps
    per_step = cfg.batch_size * world_size
    if cfg.effective_batch_size % per_step:
        raise TrainSetupError(
            f"train.effective_batch_size: {cfg.effective_batch_size} is not a multiple of "
            f"batch_size {cfg.batch_size} x {world_size} process(es)"
        )
    return cfg.effective_batch_size // per_step


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when autocast applies (``precision``: bf16 anywhere, auto on CUDA per ``mixed_precision``), else None."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda" and cfg.mixed_precision):
        return torch.bfloat16
    return None


@dataclass
class TrainResult:
    state: TrainState
    seconds: float
    samples_per_second: float
    best_weights: Path | None
    peak_memory_mb: float = 0.0
    peak_memory_source: str = ""
    accumulation_steps: int = 1
    effective_batch_size: int = 0
    precision: str = "fp32"


def _param_groups(model: torch.nn.Module, cfg: TrainConfig, head_params: Sequence[str]) -> list[dict[str, Any]]:
    head = set(head_params)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name in head, p.ndim <= 1), []).append(p)
    return [
        {
            "params": params,
            "lr": (cfg.head_lr or cfg.lr) if is_head else cfg.lr,
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
        }
        for (is_head, no_decay), params in groups.items()
    ]


class Trainer:
    """Fine-tunes ``model`` on ``train_set``, evaluating on ``val_set`` (rank 0) per ``cfg``."""

    def __init__(
        self,
        model: torch.nn.Module,
        train_set: Dataset[Any],
        cfg: TrainConfig,
        *,
        val_set: Dataset[Any] | None = None,
        labels: Sequence[str] = (),
        collate_fn: Callable[[list[Any]], Any] | None = None,
        head_params: Sequence[str] = (),
        run_dir: Path | None = None,
        dist_info: DistInfo | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.info = dist_info or setup_distributed()
        self.device = self.info.device
        self.labels = list(labels)
        self.run_dir = run_dir
        self.progress = progress and self.info.is_main
        self.model = model.to(self.device)
        self.ddp: torch.nn.Module = (
            DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if self.info.enabled
            else self.model
        )
        # reseeded per epoch (seed + epoch) so a resumed run shuffles exactly like an uninterrupted one
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.sampler: DistributedSampler[Any] | None = (
            DistributedSampler(train_set, self.info.world_size, self.info.rank, shuffle=True, seed=cfg.seed)
            if self.info.enabled
            else None
        )
        pin = self.device.type == "cuda"
        self.train_loader: DataLoader[Any] = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            shuffle=self.sampler is None,
            sampler=self.sampler,
            generator=self.generator,
            collate_fn=collate_fn,
            num_workers=cfg.num_workers,
            pin_memory=pin,
            drop_last=False,
        )
        self.val_loader: DataLoader[Any] | None = (
            DataLoader(val_set, batch_size=cfg.eval_batch_size, collate_fn=collate_fn, num_workers=cfg.num_workers)
            if val_set is not None
            else None
        )
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, cfg, head_params))
        self.accum = accumulation_steps(cfg, self.info.world_size)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        steps_per_epoch = max(1, math.ceil(len(self.train_loader) / self.accum))
        self.total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.eval_every = max(1, math.ceil(steps_per_epoch / cfg.evals_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, cfg.warmup_fraction, cfg.min_lr_ratio)
        )
        self.state = TrainState()
        self.writer: Any = None

    # -- helpers -------------------------------------------------------------------------
    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is not None:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return nullcontext()

    def _scalar(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.state.step)

    def _save_weights(self, name: str) -> Path | None:
        if self.run_dir is None or not self.info.is_main:
            return None
        from safetensors.torch import save_model

        target = self.run_dir / name
        save_model(self.model, str(target))
        return target

    def _save_resume_state(self) -> None:
        if self.run_dir is None or not self.info.is_main:
            return
        self._save_weights(LAST_WEIGHTS)
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "state": asdict(self.state),
                "torch_rng": torch.get_rng_state(),
            },
            self.run_dir / TRAINER_STATE,
        )

    def resume(self, run_dir: Path) -> None:
        """Continue from the last completed epoch saved in ``run_dir``."""
        from safetensors.torch import load_model

        missing = [n for n in (LAST_WEIGHTS, TRAINER_STATE) if not (run_dir / n).exists()]
        if missing:
            raise ResumeError(f"cannot resume from {run_dir}: {', '.join(missing)} missing (no epoch completed there)")
        load_model(self.model, str(run_dir / LAST_WEIGHTS), device=str(self.device))
        saved = torch.load(run_dir / TRAINER_STATE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = TrainState(**saved["state"])
        torch.set_rng_state(saved["torch_rng"].cpu())

    # -- evaluation ----------------------------------------------------------------------
    def _evaluate(self, running_loss: float | None) -> bool:
        """Validate on rank 0, checkpoint on improvement; True when early stopping triggers."""
        row: dict[str, Any] = {"step": self.state.step, "epoch": self.state.epoch}
        stop = False
        if self.info.is_main and self.val_loader is not None:
            probs, targets, val_loss = predict(self.model, self.val_loader, self.device, self.autocast())
            metrics = classification_metrics(probs, targets, self.labels or [str(i) for i in range(probs.shape[1])])
            value = float(metrics[self.cfg.metric])
            row.update({"val_loss": val_loss, f"val_{self.cfg.metric}": value, "val_accuracy": metrics["accuracy"]})
            self._scalar("val/loss", val_loss)
            self._scalar(f"val/{self.cfg.metric}", value)
            if value > self.state.best_metric:
                self.state.best_metric, self.state.best_step = value, self.state.step
                self.state.evals_without_improvement = 0
                self._save_weights(BEST_WEIGHTS)
            else:
                self.state.evals_without_improvement += 1
            patience = self.cfg.early_stopping_patience
            stop = patience is not None and self.state.evals_without_improvement >= patience
            self.state.history.append(row)
        return bool(broadcast(stop, self.info))

    # -- the loop ------------------------------------------------------------------------
    def fit(self, stop_after_epochs: int | None = None) -> TrainResult:
        """Train to the end (or early stop); ``stop_after_epochs``: return after that many epochs of
        this call (the resume state is saved, a later ``resume`` + ``fit`` continues exactly)."""
        cfg = self.cfg
        first_epoch = self.state.epoch
        if self.run_dir is not None and self.info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.ddp.train()
        accum = self.accum
        meter = PeakMemoryMeter(self.device)
        meter.start()
        start, start_samples = time.perf_counter(), self.state.samples
        bar = tqdm(
            total=self.total_steps, initial=self.state.step, desc="train", unit="step",
            disable=not self.progress, file=sys.stderr, mininterval=0.5, dynamic_ncols=True,
        )  # fmt: skip
        done = self.state.step >= self.total_steps or self.state.stopped_early
        loss_sum, loss_count, shown_loss, shown_metric = 0.0, 0, 0.0, ""
        while not done:
            self.generator.manual_seed(cfg.seed + self.state.epoch)
            if self.sampler is not None:
                self.sampler.set_epoch(self.state.epoch)
            batches = len(self.train_loader)
            for i, batch in enumerate(self.train_loader):
                sync = (i + 1) % accum == 0 or i + 1 == batches
                no_sync = getattr(self.ddp, "no_sync", None)
                with no_sync() if (no_sync is not None and not sync) else nullcontext(), self.autocast():
                    logits, targets = forward_logits(self.ddp, batch, self.device)  # (batch, K), (batch,)
                    loss = torch.nn.functional.cross_entropy(
                        logits.float(), targets, label_smoothing=cfg.label_smoothing
                    )
                (loss / accum).backward()
                loss_sum += loss.detach().item()
                loss_count += 1
                self.state.samples += len(targets) * self.info.world_size
                if not sync:
                    continue
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.state.step += 1
                bar.update(1)
                at_eval = self.state.step % self.eval_every == 0 or self.state.step >= self.total_steps
                if self.state.step % 10 == 0 or at_eval:
                    train_loss = shown_loss = loss_sum / max(1, loss_count)
                    lr = float(self.scheduler.get_last_lr()[0])
                    self.state.history.append({"step": self.state.step, "train_loss": train_loss, "lr": lr})
                    self._scalar("train/loss", train_loss)
                    self._scalar("train/lr", lr)
                    bar.set_postfix_str(f"loss={train_loss:.4f}{shown_metric}", refresh=False)
                    loss_sum, loss_count = 0.0, 0
                if at_eval and self.val_loader is not None:
                    stop = self._evaluate(None)
                    if self.info.is_main:
                        shown_metric = f" val_{cfg.metric}={self.state.history[-1][f'val_{cfg.metric}']:.4f}"
                        bar.set_postfix_str(f"loss={shown_loss:.4f}{shown_metric}")
                    if stop:
                        self.state.stopped_early = True
                        done = True
                        break
                if self.state.step >= self.total_steps:
                    done = True
                    break
            self.state.epoch += 1
            self._save_resume_state()
            if stop_after_epochs is not None and self.state.epoch - first_epoch >= stop_after_epochs:
                break
        bar.close()
        seconds = time.perf_counter() - start
        peak = meter.read()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
        sync_buffers(self.model, self.info)
        barrier(self.info)
        best = self.run_dir / BEST_WEIGHTS if self.run_dir is not None else None
        if best is not None and self.val_loader is not None and best.exists():
            from safetensors.torch import load_model

            load_model(self.model, str(best), device=str(self.device))
        elif best is not None:
            self._save_weights(BEST_WEIGHTS)  # no validation: the final weights are the result
        barrier(self.info)
        rate = (self.state.samples - start_samples) / max(seconds, 1e-9)
        return TrainResult(
            self.state, seconds, rate, best, peak_memory_mb=peak.megabytes, peak_memory_source=peak.source,
            accumulation_steps=accum, effective_batch_size=cfg.batch_size * accum * self.info.world_size,
            precision="bf16" if self.amp_dtype is not None else "fp32",
        )  # fmt: skip
