"""The node's latency on a real scan when the CPU is shared: torch intra-op threads 1 and 2
(segment_node's `threads` parameter; inter-op 1 as in the node) against 0, 1 and 2 competing
busy processes (Python busy loops, standing in for a robot's other work).

    OMP_NUM_THREADS=1 python bench/bench_node_load.py [--scan scene0009_00] [--repeats 3]
        [--threads 1 2] [--loads 0 1 2] [--checkpoint CKPT] [--points N] [--node]

Each cell is the median of --repeats timed runs after one warm-up run, with the busy processes
already running: of `Segmenter.segment` in this process (what the node's worker thread runs per
cloud), or with --node of the whole node, end to end (a segment_node started per cell with that
`threads` value; publish -> labelled cloud received over DDS, bench/bench_node.py's client).
Run it on an otherwise idle machine: anything else running (load average printed)
counts as load too. Start it with OMP_NUM_THREADS=1 so that the OpenMP runtime's default
does not matter; the thread count of each cell is set with torch.set_num_threads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SCANS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scannet50k"
BUSY_LOOP = "while True:\n    pass\n"


def load_scan(scans: Path, name: str, points: int | None) -> tuple[np.ndarray, np.ndarray]:
    from dyco_perception.scenes import load_npz_scene

    path = scans / f"{name}.npz"
    if not path.is_file():
        sys.exit(f"{path} not found (the real scans live in ../shared/data/scannet50k)")
    scene = load_npz_scene(path)
    xyz, rgb = scene.xyz, scene.rgb
    if points and points < len(xyz):
        pick = np.random.default_rng(0).choice(len(xyz), points, replace=False)
        xyz, rgb = xyz[pick], rgb[pick]
    return xyz, rgb


def checkpoint_path(requested: str | None) -> Path:
    from dyco_perception.ros.params import SHIPPED_CHECKPOINT
    from dyco_perception.ros.resources import package_file

    path = Path(requested).resolve() if requested else package_file(SHIPPED_CHECKPOINT)
    if not path.is_file():
        sys.exit(f"checkpoint {path} not found")
    return path


def start_busy(count: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


def time_cell(segmenter, xyz, rgb, threads: int, load: int, repeats: int) -> float:
    import torch

    torch.set_num_threads(threads)
    busy = start_busy(load)
    try:
        time.sleep(0.5 if load else 0.0)  # let the busy loops get going
        segmenter.segment(xyz, rgb)  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            segmenter.segment(xyz, rgb)
            runs.append(time.perf_counter() - start)
    finally:
        stop_busy(busy)
    return statistics.median(runs)


def time_node_cell(checkpoint: Path, scene, threads: int, load: int, repeats: int) -> float:
    """The node's end-to-end latency (median of `repeats`) with `load` busy processes running."""
    import tempfile

    from bench_node import node_times

    log = Path(tempfile.mkdtemp(prefix="bench_node_load_")) / "node.log"
    busy = start_busy(load)
    try:
        time.sleep(0.5 if load else 0.0)
        [(e2e, _, _)] = node_times(checkpoint, "cpu", [scene], repeats, log, threads)
    finally:
        stop_busy(busy)
    return e2e


def table(results: dict[tuple[int, int], float], threads: list[int], loads: list[int]) -> str:
    header = ["threads"] + [f"{load} busy" for load in loads]
    rows = [[str(t)] + [f"{results[t, load]:.2f} s" for load in loads] for t in threads]
    if len(threads) > 1:
        base = threads[0]
        for t in threads[1:]:
            ratios = [results[t, load] / results[base, load] for load in loads]
            rows.append([f"{t} / {base}"] + [f"{r:.2f}x" for r in ratios])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def main(argv: list[str] | None = None) -> dict[tuple[int, int], float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=Path, default=SCANS)
    parser.add_argument("--scan", default="scene0009_00", help="a val scan by default")
    parser.add_argument("--points", type=int, default=None, help="subsample (default: all)")
    parser.add_argument("--checkpoint", help="default: the shipped DyCo3D checkpoint")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--node", action="store_true", help="time the node end to end")
    args = parser.parse_args(argv)
    if args.node and args.points:
        parser.error("--points subsamples for the Segmenter only; the node gets the whole scan")
    if min(args.threads) < 1 or min(args.loads) < 0 or args.repeats < 1:
        parser.error("--threads >= 1, --loads >= 0, --repeats >= 1")

    import torch
    from dyco_perception.scenes import load_npz_scene
    from dyco_perception.segmenter import Segmenter

    # As the node does; a process that already ran parallel work (main() called from a test)
    # cannot change it any more and keeps its own.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    xyz, rgb = load_scan(args.scans, args.scan, args.points)
    checkpoint = checkpoint_path(args.checkpoint)
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    print(
        f"{args.scan}: {len(xyz)} points, {checkpoint.name}, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.2f} before starting, median of {args.repeats}"
    )
    scene = load_npz_scene(args.scans / f"{args.scan}.npz") if args.node else None
    print("timing the node end to end" if args.node else "timing the Segmenter in this process")
    results = {}
    for load in args.loads:
        for threads in args.threads:
            if args.node:
                cell = time_node_cell(checkpoint, scene, threads, load, args.repeats)
            else:
                cell = time_cell(segmenter, xyz, rgb, threads, load, args.repeats)
            results[threads, load] = cell
            print(f"  threads {threads}, {load} busy: {results[threads, load]:.2f} s", flush=True)
    print(table(results, args.threads, args.loads))
    return results


if __name__ == "__main__":
    main()
