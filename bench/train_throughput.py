"""Fine-tuning throughput: our Trainer vs the bare PyTorch loop (model, loss, optimizer step).

Both run on the same model and the same in-memory data in one process, interleaved round by
round (the order alternates so drift from other load on the machine hits both alike); the
median samples/s of each is compared. Goal: ratio >= 0.95.

    .venv/bin/python -m bench.train_throughput [--model mobilenet_v2 --image-size 64 --rounds 9]

``run(...)`` returns the same figures as a dict (``lumenserve bench`` calls it, under the
OpenMP policy it set for the whole run). Run on its own, ``main`` applies the training OpenMP
policy (:func:`lumenserve.env.apply_omp_policy`) first, so torch and training are imported
inside the functions, after it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import TYPE_CHECKING, Any

from lumenserve.env import apply_omp_policy

if TYPE_CHECKING:
    import torch
    from torch.utils.data import TensorDataset


def _bare_epoch(model: torch.nn.Module, data: TensorDataset, batch_size: int, lr: float, seed: int) -> float:
    """The seed's loop: forward, cross-entropy, zero_grad, backward, AdamW step. Returns samples/s."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    start = time.perf_counter()
    for x, y in loader:  # x: (batch, 3, H, W), y: (batch,)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return len(data) / (time.perf_counter() - start)


def _trainer_epoch(model: torch.nn.Module, data: TensorDataset, batch_size: int, lr: float, seed: int) -> float:
    """One epoch through our Trainer (clipping, warm-up + cosine, loss logging; no progress bar)."""
    from training.config import TrainConfig
    from training.trainer import Trainer

    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, seed=seed, warmup_fraction=0.0)
    trainer = Trainer(model, data, cfg, progress=False)
    return trainer.fit().samples_per_second


def run(
    model_name: str = "mobilenet_v2",
    image_size: int = 64,
    samples: int = 256,
    batch_size: int = 32,
    rounds: int = 9,
    num_classes: int = 10,
    threads: int | None = None,
) -> dict[str, Any]:
    """Interleaved rounds of one epoch each; returns medians, per-round figures and the ratio.

    ``threads``: torch CPU threads for the measurement (restored afterwards).
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _measure(model_name, image_size, samples, batch_size, rounds, num_classes)
    finally:
        torch.set_num_threads(previous)


def _measure(
    model_name: str, image_size: int, samples: int, batch_size: int, rounds: int, num_classes: int
) -> dict[str, Any]:
    import torch
    import torchvision
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    x = torch.randn(samples, 3, image_size, image_size)  # (N, 3, H, W)
    y = torch.randint(0, num_classes, (samples,))  # (N,)
    data = TensorDataset(x, y)
    model = torchvision.models.get_model(model_name, weights=None, num_classes=num_classes)
    lr = 1e-3
    _bare_epoch(model, TensorDataset(x[: 2 * batch_size], y[: 2 * batch_size]), batch_size, lr, 0)  # warm-up
    bare: list[float] = []
    ours: list[float] = []
    for r in range(rounds):
        order = [(_bare_epoch, bare), (_trainer_epoch, ours)]
        for fn, sink in order if r % 2 == 0 else order[::-1]:
            sink.append(fn(model, data, batch_size, lr, r))
    bare_median, ours_median = statistics.median(bare), statistics.median(ours)
    return {
        "model": model_name,
        "image_size": image_size,
        "samples_per_round": samples,
        "batch_size": batch_size,
        "rounds": rounds,
        "threads": torch.get_num_threads(),
        "bare_samples_per_s": bare_median,
        "trainer_samples_per_s": ours_median,
        "ratio": ours_median / bare_median,
        "bare_rounds": bare,
        "trainer_rounds": ours,
        "goal": 0.95,
    }


def main() -> None:
    apply_omp_policy("train")  # before torch loads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = parser.parse_args()
    result = run(args.model, args.image_size, args.samples, args.batch_size, args.rounds, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(
        f"{result['model']} @ {result['image_size']} px, batch {result['batch_size']}, {result['rounds']} rounds, "
        f"{result['threads']} threads\n"
        f"bare loop: {result['bare_samples_per_s']:.1f} samples/s  "
        f"trainer: {result['trainer_samples_per_s']:.1f} samples/s\n"
        f"ratio trainer/bare: {result['ratio']:.3f} (goal >= {result['goal']})"
    )


if __name__ == "__main__":
    main()
