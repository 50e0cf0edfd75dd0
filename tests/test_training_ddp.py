"""Data-parallel training: 2 gloo processes under torchrun end with identical weights.

The file is also the worker torchrun starts: each rank builds the model from a different
seed (DDP must broadcast rank 0's weights), trains on its own shard through the same
Trainer a single process uses, and saves its final weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.ports import raise_if_port_clash, retry_on_port_clash

ROOT = Path(__file__).resolve().parents[1]


def _worker(out: Path) -> None:
    from safetensors.torch import save_model
    from torch.utils.data import TensorDataset

    from training.config import TrainConfig
    from training.trainer import Trainer

    rank = int(os.environ["RANK"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=g)  # (N, C, H, W), the same full set on every rank
    y = torch.randint(0, 3, (64,), generator=g)  # (N,)
    torch.manual_seed(100 + rank)  # different initial weights per rank
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
    )  # fmt: skip
    save_model(model, str(out / f"init{rank}.safetensors"))
    cfg = TrainConfig(epochs=2, batch_size=8, grad_accum_steps=2, lr=0.05)
    trainer = Trainer(model, TensorDataset(x, y), cfg, progress=False)
    assert trainer.info.world_size == 2 and trainer.sampler is not None
    result = trainer.fit()
    (out / f"steps{rank}.txt").write_text(str(result.state.step))
    save_model(model, str(out / f"rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(ports: list[int]) -> subprocess.CompletedProcess[str]:
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={ports[0]}", __file__, str(tmp_path),
        ]  # fmt: skip
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
        if proc.returncode != 0:
            raise_if_port_clash(proc.stderr)
        return proc

    proc = retry_on_port_clash(run, 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    init0, init1 = load_file(str(tmp_path / "init0.safetensors")), load_file(str(tmp_path / "init1.safetensors"))
    assert not torch.equal(init0["0.weight"], init1["0.weight"])  # the ranks started apart
    rank0, rank1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    assert not torch.equal(rank0["5.weight"], init0["5.weight"])  # and they trained
    # 64 samples / 2 ranks = 32 per rank = 4 batches of 8 = 2 optimizer steps per epoch (accumulation 2)
    assert (tmp_path / "steps0.txt").read_text() == (tmp_path / "steps1.txt").read_text() == "4"


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
