"""Maps bigger than one room: tiled inference time, peak memory, and AP against untiled.

    python bench/bench_tiling.py --checkpoint checkpoints/dyco3d_scannet_m16.safetensors \
        [--threads 2] [--workers 1] [--sizes 1000000 5000000] [--untiled-sizes 1000000] \
        [--block-sizes 16 24] [--ap-block-size 4.0] [--no-ap]

--workers W > 1 runs W blocks of a tiled map side by side, one torch thread each (the node's
`threads` parameter does this for maps of several blocks); --threads is then the untiled rows'.

Speed rows: real scannet50k scans laid side by side (`bench_pipeline.tiled_cloud`), one process
per row so its peak RSS is its own; tiled rows use the default `TilingConfig`, untiled rows
run the whole map in one forward (the old path). AP rows: the 5 val scans (scene0009_0x,
scene0010_0x) untiled and tiled with blocks small enough to cut every room, scored with the
project's ScanNet evaluator (what `dyco-evaluate` runs).
Targets (2 threads): 1M points <= 5 s; 5M points <= 60 s at <= 4 GB peak RSS; tiled AP within
noise of untiled.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import SCANS, tiled_cloud
from dyco_perception.tiling import TilingConfig

STAGES = ("backbone", "grouping", "decoding", "postprocess", "tiling")


def run_child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from dyco_perception.segmenter import Segmenter

    tiling = TilingConfig(
        enabled=args.child_tiling == "on", workers=args.workers, block_size=args.child_block_size
    )
    seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu", backend="auto", tiling=tiling)
    xyz, rgb = tiled_cloud(args.child_size)
    seg.segment(xyz[:20000], rgb[:20000])  # warm-up (allocator, lazy imports)
    start = time.perf_counter()
    result = seg.segment(xyz, rgb)
    seconds = time.perf_counter() - start
    row = {
        "points": len(xyz),
        "seconds": seconds,
        "timings": result.timings,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "instances": len(result.instances),
        "blocks": len(result.block_points),
        "largest_block": max(result.block_points),
        "context_share": sum(result.block_points) / len(xyz),
        "voxel_size": result.voxel_size,
    }
    print(json.dumps(row))


def speed_rows(args: argparse.Namespace) -> None:
    header = ["points", "tiling", "block m", "blocks (largest)", "points run / map"]
    header += [*STAGES, "end to end s", "peak RSS GB", "instances", "voxel m"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    runs = [(n, "on", b) for n in args.sizes for b in args.block_sizes]
    runs += [(n, "off", args.block_sizes[0]) for n in args.untiled_sizes]
    for size, tiling, block_size in sorted(runs):
        command = [sys.executable, __file__, "--checkpoint", args.checkpoint]
        command += ["--threads", str(args.threads), "--workers", str(args.workers)]
        command += ["--child-size", str(size), "--child-block-size", str(block_size)]
        command += ["--child-tiling", tiling]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"| {size:,} | {tiling} | failed: {done.stderr.strip().splitlines()[-1]} |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        cells = [
            f"{row['points']:,}",
            tiling,
            f"{block_size:g}" if tiling == "on" else "-",
            f"{row['blocks']} ({row['largest_block']:,})",
            f"{row['context_share']:.2f}",
            *(f"{row['timings'].get(s, 0.0):.2f}" for s in STAGES),
            f"{row['seconds']:.2f}",
            f"{row['peak_rss_gb']:.2f}",
            str(row["instances"]),
            f"{row['voxel_size']:.3f}",
        ]
        print("| " + " | ".join(cells) + " |", flush=True)


def ap_rows(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from dyco_perception.evaluation import evaluate_predictions
    from dyco_perception.scenes import load_npz_scene
    from dyco_perception.segmenter import Segmenter

    scans = sorted(SCANS.glob("scene0009_*.npz")) + sorted(SCANS.glob("scene0010_*.npz"))
    settings = {
        "untiled": TilingConfig(enabled=False),
        f"tiled, {args.ap_block_size} m blocks, 1 m overlap": TilingConfig(
            block_size=args.ap_block_size, overlap=1.0
        ),
    }
    print(f"\nAP on the {len(scans)} val scans ({', '.join(p.stem for p in scans)}):\n")
    print("| inference | blocks per scan | AP | AP50 | AP25 | class-agnostic AP50 | s/scan |")
    print("|---|---|---|---|---|---|---|")
    for name, tiling in settings.items():
        seg = Segmenter.from_checkpoint(args.checkpoint, device="cpu", tiling=tiling)
        items, blocks, seconds = [], 0, 0.0
        for path in scans:
            scene = load_npz_scene(path)
            start = time.perf_counter()
            result = seg.segment(scene.xyz, scene.rgb)
            seconds += time.perf_counter() - start
            blocks += len(result.block_points)
            items.append((scene.semantic, scene.instance, result.instances))
        m = evaluate_predictions(items)
        print(
            f"| {name} | {blocks / len(scans):.1f} | {m['AP']:.3f} | {m['AP50']:.3f} | "
            f"{m['AP25']:.3f} | {m['class_agnostic']['AP50']:.3f} | {seconds / len(scans):.2f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/dyco3d_scannet_m16.safetensors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="tiled blocks side by side")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 5_000_000])
    parser.add_argument("--untiled-sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument(
        "--block-sizes",
        type=float,
        nargs="+",
        default=[TilingConfig.block_size],
        help="tiled rows per block core edge (m); the overlap around each block (its context) "
        "is run too, so bigger blocks run fewer points twice",
    )
    parser.add_argument("--ap-block-size", type=float, default=4.0)
    parser.add_argument("--no-ap", action="store_true", help="speed rows only")
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-block-size", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child-tiling", choices=("on", "off"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_size:
        run_child(args)
        return
    print(
        f"cores: {os.cpu_count()}, torch threads: {args.threads}, block workers: "
        f"{args.workers}, load average at start: "
        f"{os.getloadavg()[0]:.1f}, checkpoint: {args.checkpoint}\n"
    )
    speed_rows(args)
    if not args.no_ap:
        ap_rows(args)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f} (other processes share the cores)")


if __name__ == "__main__":
    main()
