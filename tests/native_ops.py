"""What the op tests share: the devices to run on, the skip when native kernels are absent, and
the check that a kernel releases the GIL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

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


def assert_releases_gil(call: Callable[[], object], calls: int = 3) -> None:
    """`call` (a native kernel) lets Python run on other threads while it works, as blocks of a
    tiled map segmented on several threads need: the main thread keeps waking from short sleeps
    inside the calls, which it could not if the kernel held the GIL."""
    spans: list[tuple[float, float]] = []

    def work() -> None:
        for _ in range(calls):
            start = time.perf_counter()
            call()
            spans.append((start, time.perf_counter()))

    worker = threading.Thread(target=work)
    wakeups = []
    worker.start()
    while worker.is_alive():
        time.sleep(0.002)
        wakeups.append(time.perf_counter())  # taken holding the GIL
    worker.join()
    margin = 0.01  # the Python around the kernel holds the GIL
    inside = [t for t in wakeups if any(a + margin < t < b - margin for a, b in spans)]
    # One call long enough to tell is enough (a fast CPU may finish the others sooner).
    assert max(b - a for a, b in spans) > 4 * margin, "problem too small to tell"
    assert len(inside) >= calls, f"{len(inside)} wakeups during {spans}: the GIL was held"
