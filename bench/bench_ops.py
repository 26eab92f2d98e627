"""Reference (pure torch) vs native (dyco_ops) time of every op at 50k and 1M points.

python bench/bench_ops.py [--device cpu|cuda] [--threads 1] [--sizes 50000 1000000]

Clouds are real scans from ../shared/data/scannet50k when present (the 1M cloud tiles 20
scans side by side, so the point density stays realistic), else uniform random rooms.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from dyco_training.datasets import SCANNET50K_DIR

from dyco_perception import ops as dyco_ops

SCANS = SCANNET50K_DIR
FEATURES = 32
MASKS = 100


def load_cloud(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(xyz float32 (n,3), semantic label (n,) int64, -1 = unlabelled)."""
    files = sorted(SCANS.glob("*.npz"))
    if not files:
        g = torch.Generator().manual_seed(seed)
        xyz = torch.rand((n, 3), generator=g) * torch.tensor([8.0, 8.0, 3.0])
        return xyz, torch.randint(-1, 20, (n,), generator=g)
    parts, labels, total, shift = [], [], 0, 0.0
    while total < n:
        scan = np.load(files[len(parts) % len(files)])
        xyz = torch.from_numpy(scan["xyz"]).clone()
        xyz[:, 0] += shift - xyz[:, 0].min()
        shift = float(xyz[:, 0].max()) + 1.0
        parts.append(xyz)
        labels.append(torch.from_numpy(scan["sem_nyu40"].astype(np.int64)) - 1)
        total += len(xyz)
    return torch.cat(parts)[:n], torch.cat(labels)[:n]


def best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocator, lazy init)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def cases(n: int, device: torch.device) -> dict[str, Callable[[str], object]]:
    xyz, labels = load_cloud(n)
    xyz, labels = xyz.to(device), labels.to(device)
    coords = torch.floor(xyz / 0.02).long()
    voxels, inverse = dyco_ops.voxelize(coords, backend="torch")
    features = torch.randn((n, FEATURES), device=device)
    g = torch.Generator().manual_seed(1)
    centres = torch.randint(0, n, (MASKS,), generator=g).to(device)
    dist = torch.cdist(xyz[centres], xyz)
    masks = dist < torch.rand((MASKS, 1), generator=g).to(device) * 1.5
    scores = torch.rand(MASKS, generator=g).to(device)
    return {
        "voxelize": lambda b: dyco_ops.voxelize(coords, backend=b),
        f"scatter_mean C={FEATURES}": lambda b: dyco_ops.scatter_mean(
            features, inverse, len(voxels), backend=b
        ),
        f"scatter_max C={FEATURES}": lambda b: dyco_ops.scatter_max(
            features, inverse, len(voxels), backend=b
        ),
        "connected_components r=3cm": lambda b: dyco_ops.connected_components(
            xyz, labels, 0.03, backend=b
        ),
        f"mask_iou K={MASKS}": lambda b: dyco_ops.mask_iou(masks, backend=b),
        f"mask_nms K={MASKS}": lambda b: dyco_ops.mask_nms(masks, scores, 0.3, backend=b),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    native_ok = dyco_ops.native_available(device)
    print(f"device={device} threads={args.threads} native={native_ok}")
    if not native_ok:
        print(f"  native unavailable: {dyco_ops.backend_info()[device.type]['reason']}")
    print(f"{'op':<30} {'N':>9} {'torch ms':>10} {'native ms':>10} {'speedup':>8}")
    for n in args.sizes:
        for name, run in cases(n, device).items():
            ref = best_time(lambda run=run: run("torch"), device, args.repeats)
            nat = None
            if native_ok:
                nat = best_time(lambda run=run: run("native"), device, args.repeats)
            nat_s = f"{nat * 1e3:10.1f}" if nat is not None else f"{'-':>10}"
            speed = f"{ref / nat:7.1f}x" if nat else f"{'-':>8}"
            print(f"{name:<30} {n:>9} {ref * 1e3:10.1f} {nat_s} {speed}", flush=True)


if __name__ == "__main__":
    main()
