"""Segmenter speed and memory on real scans: median seconds per stage, end to end, peak RSS.

    python bench/bench_pipeline.py [--models CKPT_OR_YAML ...] [--sizes 50000 250000 1000000]
                                   [--backends torch spconv] [--repeats 3] [--threads N]
                                   [--inference test_time_views=4 ...] [--device cpu|cuda]

Clouds: real scannet50k scans (50k points each); larger sizes tile several scans side by side
(x/y offsets, so objects stay separate). Each (model, size, backend) runs in its own process so
peak RSS is that run's alone. A model is a checkpoint (.safetensors) or a model config (.yaml)
that gets random weights (default: config/model/dyco3d_m16.yaml): the backbone costs the same,
but random heads make different proposals than a trained model, so grouping/decoding times of a
random model only bound the trained one's. `--inference key=value` replaces the card's
inference settings in every run (e.g. `test_time_views=4`: 3 more backbone passes, timed
under "heads"). Without the scans (e.g. on a GPU machine) the clouds tile generated rooms.
On cuda the memory column is peak GPU memory, and stage times are host-side (kernels run
asynchronously; end to end waits for the results).
Targets (2-core CPU): 50k points <= 1.0 s end to end; 1M points <= 20 s and <= 4 GB RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCANS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scannet50k"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "model" / "dyco3d_m16.yaml"
STAGES = (
    "preprocess", "voxelize", "backbone", "heads", "grouping", "decoding", "postprocess",
    "class_geometry",
)  # fmt: skip


def tiled_cloud(num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """`num_points` points from real scans laid out on a grid (1 m gaps between rooms)."""
    files = sorted(SCANS.glob("scene*.npz"))
    xyz_parts, rgb_parts, total, i = [], [], 0, 0
    while total < num_points:
        scan = np.load(files[i % len(files)]) if files else _generated_room(i)
        xyz = scan["xyz"] - scan["xyz"].min(0)
        xyz = xyz + np.array([(i % 5) * 12.0, (i // 5) * 12.0, 0.0], dtype=np.float32)
        take = min(len(xyz), num_points - total)
        xyz_parts.append(xyz[:take])
        rgb_parts.append(scan["rgb"][:take])
        total += take
        i += 1
    return np.concatenate(xyz_parts), np.concatenate(rgb_parts)


def _generated_room(seed: int) -> dict[str, np.ndarray]:
    from dyco_perception.data.room_generator import generate_room

    room = generate_room(seed, num_points=50_000)
    return {"xyz": room.xyz, "rgb": room.rgb}


def run_child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from dyco_perception.checkpoint import write_random_checkpoint
    from dyco_perception.segmenter import Segmenter

    from dyco_perception.config import load_model_config

    checkpoint = args.child_model
    random_weights = checkpoint.endswith((".yaml", ".yml"))
    if random_weights:
        checkpoint = f"/tmp/bench_pipeline_random_{os.getpid()}.safetensors"
        write_random_checkpoint(checkpoint, load_model_config(args.child_model))
    from dyco_training.train_config import parse_assignments

    seg = Segmenter.from_checkpoint(
        checkpoint,
        device=args.device,
        backend=args.child_backend,
        inference=parse_assignments(args.inference),
    )
    xyz, rgb = tiled_cloud(args.child_size)
    seg.segment(xyz[:20000], rgb[:20000])  # warm-up (allocator, lazy imports)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = seg.segment(xyz, rgb)
        timings = dict(result.timings)
        timings["wall"] = time.perf_counter() - start
        runs.append(timings)
    median = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in runs[0]}
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = args.device == "cuda"
    print(
        json.dumps(
            {
                "median": median,
                "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else peak_kib / 2**20,
                "instances": len(result.instances),
                "voxel_size": result.voxel_size,
                "points": len(xyz),
            }
        )
    )
    if random_weights:
        os.remove(checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=[str(CONFIG)],
        help="checkpoints (.safetensors) and/or model configs (.yaml, random weights)",
    )
    parser.add_argument("--checkpoint", help="shorthand for --models CHECKPOINT")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 250_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["torch", "spconv"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--inference", nargs="+", default=[], help="card inference settings, key=value"
    )
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-backend", help=argparse.SUPPRESS)
    parser.add_argument("--child-model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.checkpoint:
        args.models = [args.checkpoint]
    if args.child_size:
        run_child(args)
        return
    load = os.getloadavg()[0]
    print(
        f"cores: {os.cpu_count()}, torch threads: {args.threads}, load average at start: "
        f"{load:.1f}; a .yaml model has random weights; inference settings: "
        f"{' '.join(args.inference) or 'the card'}; device: {args.device}; clouds: "
        f"{'real scans' if any(SCANS.glob('scene*.npz')) else 'generated rooms'}\n"
    )
    memory = "peak GPU GB" if args.device == "cuda" else "peak RSS GB"
    header = ["model", "points", "backend", *STAGES, "end to end", memory, "instances"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model, size, backend in (
        (m, s, b) for m in args.models for s in args.sizes for b in args.backends
    ):
        command = [
            sys.executable,
            __file__,
            "--child-size",
            str(size),
            "--child-backend",
            backend,
            "--repeats",
            str(args.repeats),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
            "--child-model",
            model,
            *(["--inference", *args.inference] if args.inference else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            reason = done.stderr.strip().splitlines()[-1]
            print(f"| {Path(model).name} | {size} | {backend} | failed: {reason} |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        m = row["median"]
        cells = [
            Path(model).name,
            f"{row['points']:,}",
            backend,
            *(f"{m.get(s, 0.0):.3f}" for s in STAGES),
            f"{m['wall']:.3f}",
            f"{row['peak_gb']:.2f}",
            str(row["instances"]),
        ]
        print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f} (other processes share the cores)")


if __name__ == "__main__":
    main()
