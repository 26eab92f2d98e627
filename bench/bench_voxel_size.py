"""Fewer voxels through the network: AP against time when a checkpoint runs at another voxel
size than it was trained at (the cheapest way to cut the backbone's work, no retraining).

    OMP_NUM_THREADS=1 python bench/bench_voxel_size.py [--checkpoint CKPT] [--split train]
        [--sizes 0.04 0.05 0.06] [--threads 1]

Settings are chosen on the training rooms (`--split train`, the default); `--split val` reports
the chosen one once. Each row: the scans of the split segmented at that voxel size (one warm-up
scan first), median seconds per scan end to end and of the backbone, AP50 and class-agnostic
AP50 with our ScanNet evaluator.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

SCANS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scannet50k"
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dyco3d_scannet_m16.safetensors"


def measure(segmenter, scenes: list, voxel_size: float) -> dict[str, float]:
    """Seconds (median per scan) and AP of `segmenter` on `scenes` at `voxel_size`."""
    from dyco_perception.evaluation import evaluate_predictions

    segmenter.cfg.voxel.voxel_size = voxel_size
    items, total, backbone, used = [], [], [], 0.0
    for scene in scenes:
        start = time.perf_counter()
        result = segmenter.segment(scene.xyz, scene.rgb)
        total.append(time.perf_counter() - start)
        backbone.append(result.timings.get("backbone", 0.0))
        used = max(used, result.voxel_size)
        items.append((scene.semantic, scene.instance, result.instances))
    metrics = evaluate_predictions(items)
    return {
        "seconds": statistics.median(total),
        "backbone": statistics.median(backbone),
        "AP50": metrics["AP50"],
        "agnostic_AP50": metrics["class_agnostic"]["AP50"],
        "voxel_size": used,  # what the pipeline ran at (a huge cloud may coarsen it)
    }


def main(argv: list[str] | None = None) -> list[tuple[float, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    parser.add_argument("--scans", type=Path, default=SCANS)
    parser.add_argument("--split", choices=("train", "val"), default="train")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.04, 0.05, 0.06])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="only the first N scans of the split")
    args = parser.parse_args(argv)
    if min(args.sizes) <= 0:
        parser.error("--sizes must be positive (metres)")

    import torch
    from dyco_perception.scenes import load_npz_scene
    from dyco_perception.segmenter import Segmenter
    from dyco_training.datasets import list_npz_scans

    torch.set_num_threads(args.threads)
    scenes = [load_npz_scene(p) for p in list_npz_scans(args.scans, args.split)[: args.limit]]
    if not scenes:
        raise SystemExit(f"no {args.split} scans in {args.scans}")
    segmenter = Segmenter.from_checkpoint(args.checkpoint, device="cpu")
    trained = segmenter.cfg.voxel.voxel_size
    segmenter.segment(scenes[0].xyz, scenes[0].rgb)  # warm-up
    print(f"{args.checkpoint.name}: trained at {trained} m; {len(scenes)} {args.split} scans")
    print("| voxel m | s / scan | backbone s | AP50 | class-agnostic AP50 |")
    print("|---|---|---|---|---|")
    rows = []
    for size in args.sizes:
        row = measure(segmenter, scenes, size)
        rows.append((size, row))
        mark = " (trained)" if size == trained else ""
        print(
            f"| {size:g}{mark} | {row['seconds']:.3f} | {row['backbone']:.3f} "
            f"| {row['AP50']:.3f} | {row['agnostic_AP50']:.3f} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
