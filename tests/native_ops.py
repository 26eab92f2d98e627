"""What the op tests share: the devices to run on and the skip when native kernels are absent."""

from __future__ import annotations

import pytest
import torch

from dyco_perception import ops

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def native_or_skip(device: str) -> None:
    if not ops.native_available(device):
        reason = ops.backend_info()[torch.device(device).type]["reason"]
        pytest.skip(f"native {device} kernels not loaded: {reason}")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
