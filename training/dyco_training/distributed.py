"""Multi-GPU / multi-node training through `torchrun` (DistributedDataParallel).

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in one process.
CUDA runs use NCCL, CPU runs use gloo (that is how the tests run 2 processes on a CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(num_items: int, epoch: int, seed: int, info: DistInfo) -> np.ndarray:
    """This rank's share of one epoch (DistributedSampler-like): a seeded permutation shared
    by all ranks, padded by wrap-around to a multiple of the world size, then strided."""
    if num_items < 1:
        raise ValueError("cannot shard an empty dataset")
    order = np.random.default_rng([seed, epoch]).permutation(num_items)
    per_rank = -(-num_items // info.world_size)
    padded = np.resize(order, per_rank * info.world_size)
    return padded[info.rank :: info.world_size]


def average_scalars(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Mean of each scalar over ranks (for logging)."""
    if not info.enabled or not values:
        return values
    names = sorted(values)
    t = torch.tensor([float(values[n]) for n in names], dtype=torch.float64)
    dist.all_reduce(t)
    return {n: float(v) / info.world_size for n, v in zip(names, t.tolist(), strict=True)}


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
