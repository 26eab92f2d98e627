"""Fewer voxels through the network: AP against time when a checkpoint runs at another voxel
size than it was trained at (the cheapest way to cut the backbone's work, no retraining).

    OMP_NUM_THREADS=1 python bench/bench_voxel_size.py [--checkpoint CKPT] [--split train]
        [--sizes 0.04 0.05 0.06] [--phases 3] [--threads 1]

Settings are chosen on the training rooms (`--split train`, the default); `--split val` reports
the chosen one once. Each row: the scans of the split segmented at that voxel size (one warm-up
scan first), median seconds per scan end to end and of the backbone, AP50 and class-agnostic
AP50 with our ScanNet evaluator, averaged over --phases grid phases: the voxel grid starts at
the cloud's minimum corner, so each phase adds one anchor point (scored as unlabelled) a random
fraction of a voxel below the scan, which moves every voxel border (one phase moves AP50 on
these scans by several points).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

SCANS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scannet50k"
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dyco3d_scannet_m16.safetensors"


def with_anchor(scene: tuple, shift: np.ndarray) -> tuple[np.ndarray, ...]:
    """(xyz, rgb, semantic, instance) plus one unlabelled point `shift` below the scan's corner."""
    xyz, rgb, semantic, instance = scene
    anchor = xyz.min(0, keepdims=True) - shift
    return (
        np.concatenate([xyz, anchor]).astype(np.float32),
        np.concatenate([rgb, rgb[:1]]),
        np.append(semantic, -100),  # ignored by the evaluator
        np.append(instance, 0),
    )


def measure(segmenter, scenes: list, voxel_size: float, phases: int) -> dict[str, float]:
    """Seconds (median per scan) and AP (mean over grid phases) at `voxel_size`."""
    from dyco_perception.evaluation import evaluate_predictions

    segmenter.cfg.voxel.voxel_size = voxel_size
    rng = np.random.default_rng(0)  # the same phases for every voxel size
    total, backbone, ap50, agnostic, used = [], [], [], [], 0.0
    for phase in range(phases):
        shift = rng.uniform(0.0, voxel_size, 3) if phase else np.zeros(3)
        items = []
        for scene in scenes:
            xyz, rgb, semantic, instance = with_anchor(scene, shift) if phase else scene
            start = time.perf_counter()
            result = segmenter.segment(xyz, rgb)
            total.append(time.perf_counter() - start)
            backbone.append(result.timings.get("backbone", 0.0))
            used = max(used, result.voxel_size)
            items.append((semantic, instance, result.instances))
        metrics = evaluate_predictions(items)
        ap50.append(metrics["AP50"])
        agnostic.append(metrics["class_agnostic"]["AP50"])
    return {
        "seconds": statistics.median(total),
        "backbone": statistics.median(backbone),
        "AP50": float(np.mean(ap50)),
        "agnostic_AP50": float(np.mean(agnostic)),
        "AP50_range": (min(ap50), max(ap50)),
        "voxel_size": used,  # what the pipeline ran at (a huge cloud may coarsen it)
    }


def main(argv: list[str] | None = None) -> list[tuple[float, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--scans", type=Path, default=SCANS)
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.04, 0.05, 0.06])
    parser.add_argument("--phases", type=int, default=3, help="grid phases averaged")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only the first N scans of the split")
    args = parser.parse_args(argv)
    if min(args.sizes) <= 0 or args.phases < 1:
        parser.error("--sizes must be positive (metres), --phases >= 1")

    import torch
    from dyco_perception.scenes import load_npz_scene
    from dyco_perception.segmenter import Segmenter
    from dyco_training.datasets import list_npz_scans

    torch.set_num_threads(args.threads)
    scenes = [
        (s.xyz, s.rgb, s.semantic, s.instance)
        for s in map(load_npz_scene, list_npz_scans(args.scans, args.split)[: args.limit])
    ]
    if not scenes:
        raise SystemExit(f"no {args.split} scans in {args.scans}")
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    trained = segmenter.cfg.voxel.voxel_size
    segmenter.segment(*scenes[0][:2])  # warm-up
    print(f"{args.checkpoint.name}: trained at {trained} m; {len(scenes)} {args.split} scans")
    print(f"mean over {args.phases} grid phases")
    print("| voxel m | s / scan | backbone s | AP50 (range over phases) | class-agnostic AP50 |")
    print("|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        row = measure(segmenter, scenes, size, args.phases)
        rows.append((size, row))
        mark = " (trained)" if size == trained else ""
        print(
            f"| {size:g}{mark} | {row['seconds']:.3f} | {row['backbone']:.3f} "
            f"| {row['AP50']:.3f} ({row['AP50_range'][0]:.3f}-{row['AP50_range'][1]:.3f}) "
            f"| {row['agnostic_AP50']:.3f} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
