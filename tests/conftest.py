"""Fixtures shared by all test suites."""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SCANNET50K_DIR = SHARED_DIR / "data" / "scannet50k"
EVAL_VECTORS_DIR = SHARED_DIR / "eval_vectors"


def _test_domain_id() -> str:
    """The DDS domain this process prefers. Parallel workers (pytest-xdist) inherit the
    controller's domain and each moves to its neighbour, so no two workers of one run share one."""
    base = int(os.environ.get("ROS_DOMAIN_ID") or random.Random(os.getpid()).randint(1, 100))
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ...; unset without xdist
    if worker is None:
        return str(base)
    return str(1 + (base - 1 + int(worker.removeprefix("gw"))) % 100)


LOCK_DIR = Path(tempfile.gettempdir())
_DOMAIN_LOCKS: list = []  # open lock files: a domain stays claimed while this process lives


def _claim_domain(preferred: str, lock_dir: Path = LOCK_DIR) -> str:
    """The first domain from `preferred` on (wrapping inside 1..100) that no other test process
    on this machine holds: two runs at once (two worktrees, a helper's run) would otherwise
    meet when their preferred domains collide, and answer each other's service calls."""
    start = int(preferred)
    for step in range(100):
        domain = 1 + (start - 1 + step) % 100
        lock = open(lock_dir / f"dyco_perception_test_domain_{domain}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _DOMAIN_LOCKS.append(lock)
        return str(domain)
    raise RuntimeError(f"every DDS domain 1..100 is held by a test process (locks in {lock_dir})")


# DDS traffic of the tests stays on this machine, on a domain no other run on it is using.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = _claim_domain(_test_domain_id())


@pytest.fixture(scope="session")
def scannet_dir() -> Path:
    """The real labelled scans; tests that need them skip with the reason when absent."""
    if not SCANNET50K_DIR.is_dir():
        pytest.skip(f"real scans not found at {SCANNET50K_DIR} (../shared beside the repo)")
    return SCANNET50K_DIR


@pytest.fixture(scope="session")
def scan_sample(scannet_dir):
    """`sample(name, count)`: `count` points (xyz, rgb) of a real scan, the same on every call."""
    import numpy as np

    def sample(name: str, count: int):
        with np.load(scannet_dir / f"{name}.npz") as data:
            pick = np.random.default_rng(0).choice(len(data["xyz"]), count, replace=False)
            return data["xyz"][pick], data["rgb"][pick]

    return sample


@pytest.fixture(scope="session")
def eval_vectors_dir() -> Path:
    if not EVAL_VECTORS_DIR.is_dir():
        pytest.skip(f"official evaluator vectors not found at {EVAL_VECTORS_DIR}")
    return EVAL_VECTORS_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """Learning tests run on one thread: the fits are small, and a second busy-waiting OpenMP
    thread on a shared 2-core machine made them ~5x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
