"""The node's latency on a real scan when the CPU is shared: torch intra-op threads 1 and 2
(segment_node's `threads` parameter; inter-op 1 as in the node) against 0, 1 and 2 competing
busy processes (Python busy loops, standing in for a robot's other work), and with --nice the
inference thread's niceness (segment_node's `worker_nice`).

    OMP_NUM_THREADS=1 python bench/bench_node_load.py [--scan scene0009_00] [--repeats 3]
        [--threads 1 2] [--loads 0 1 2] [--nice 0 -5] [--checkpoint CKPT] [--points N] [--node]

Each cell is the median of --repeats timed runs after one warm-up run, with the busy processes
already running: of `Segmenter.segment` in this process (what the node's worker thread runs per
cloud), or with --node of the whole node, end to end (a segment_node started per cell with that
`threads` value; publish -> labelled cloud received over DDS, bench/bench_node.py's client).
The table has a row per (threads, nice) and each load's latency relative to that row's 0-busy
cell. Negative --nice needs the rights the node needs for it (CAP_SYS_NICE, e.g. root).
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


def time_cell(segmenter, xyz, rgb, threads: int, nice: int, load: int, repeats: int) -> float:
    import torch
    from dyco_perception.ros.segment_node import use_worker_nice

    torch.set_num_threads(threads)
    _, refused = use_worker_nice(nice)  # this thread runs the Segmenter, as the worker
    if refused:
        raise PermissionError(refused)
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


def time_node_cell(
    checkpoint: Path, scene, threads: int, nice: int, load: int, repeats: int
) -> float:
    """The node's end-to-end latency (median of `repeats`) with `load` busy processes running."""
    import tempfile

    from bench_node import node_times

    log = Path(tempfile.mkdtemp(prefix="bench_node_load_")) / "node.log"
    busy = start_busy(load)
    try:
        time.sleep(0.5 if load else 0.0)
        parameters = {"worker_nice": nice}
        [(e2e, _, _)] = node_times(checkpoint, "cpu", [scene], repeats, log, threads, parameters)
    finally:
        stop_busy(busy)
    return e2e


Setting = tuple[int, int]  # (threads, nice)


def table(
    results: dict[tuple[int, int, int], float], settings: list[Setting], loads: list[int]
) -> str:
    """A row per (threads, nice): latency per load, then each load's latency over the quiet one
    (when load 0 was measured)."""
    relative = [load for load in loads if load] if 0 in loads else []
    header = ["threads", "nice"] + [f"{load} busy" for load in loads]
    header += [f"{load} busy / quiet" for load in relative]
    rows = []
    for threads, nice in settings:
        row = [str(threads), str(nice)]
        row += [f"{results[threads, nice, load]:.2f} s" for load in loads]
        quiet = results.get((threads, nice, 0))
        row += [f"{results[threads, nice, load] / quiet:.2f}x" for load in relative]
        rows.append(row)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


def main(argv: list[str] | None = None) -> dict[tuple[int, int, int], float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=Path, default=SCANS)
    parser.add_argument("--scan", default="scene0009_00", help="a val scan by default")
    parser.add_argument("--points", type=int, default=None, help="subsample (default: all)")
    parser.add_argument("--checkpoint", help="default: the shipped DyCo3D checkpoint")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--nice", type=int, nargs="+", default=[0], help="worker niceness")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--node", action="store_true", help="time the node end to end")
    args = parser.parse_args(argv)
    if args.node and args.points:
        parser.error("--points subsamples for the Segmenter only; the node gets the whole scan")
    if min(args.threads) < 1 or min(args.loads) < 0 or args.repeats < 1:
        parser.error("--threads >= 1, --loads >= 0, --repeats >= 1")
    if not all(-20 <= n <= 19 for n in args.nice):
        parser.error("--nice within -20..19")

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
    settings = [(threads, nice) for threads in args.threads for nice in args.nice]
    results = {}
    for load in args.loads:
        for threads, nice in settings:
            if args.node:
                cell = time_node_cell(checkpoint, scene, threads, nice, load, args.repeats)
            else:
                cell = time_cell(segmenter, xyz, rgb, threads, nice, load, args.repeats)
            results[threads, nice, load] = cell
            print(f"  threads {threads}, nice {nice}, {load} busy: {cell:.2f} s", flush=True)
    print(table(results, settings, args.loads))
    return results


if __name__ == "__main__":
    main()
