"""End-to-end latency of segment_node (publish -> labelled cloud received, over DDS) against the
Segmenter's own time on the same scans. Target: node overhead <= 10 % + 50 ms at 50k points.

The overhead of each cloud is its end-to-end latency minus the Segmenter's time on that same
cloud inside the node (InstanceArray.inference_time): conversion, queueing, publishing and DDS
transport both ways. The Segmenter timed alone in this process is printed beside it; on a
shared 2-core machine the two processes' timings drift by more than the budget, so subtracting
across processes would measure the machine, not the node.

    python bench/bench_node.py [--scans DIR] [--limit 3] [--checkpoint CKPT] [--device cpu]

Without --checkpoint it uses the shipped one, else a random-weight model of the default config
(timings of the pipeline stay meaningful; the instances do not).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from dyco_perception.ros.params import SHIPPED_CHECKPOINT
from dyco_perception.ros.resources import package_file
from dyco_perception.tools.client import SegmentationClient
from dyco_perception.tools.make_bag import scan_messages
from dyco_perception.tools.process import start_node, stop_node

from dyco_perception import pointcloud2 as pc2

INPUT_TOPIC = "/bench_node/cloud_in"
SCANS = Path(__file__).resolve().parents[2] / "shared" / "data" / "scannet50k"


def load_scenes(scans: Path, limit: int) -> list:
    if scans.is_dir():
        from dyco_perception.scenes import load_npz_scene

        return [load_npz_scene(p) for p in sorted(scans.glob("*.npz"))[:limit]]
    print(f"{scans} absent: using generated rooms")
    from dyco_perception.data.room_generator import generate_room

    return [generate_room(seed) for seed in range(limit)]


def checkpoint_path(requested: str | None, work: Path) -> Path:
    if requested:
        return Path(requested).resolve()
    shipped = package_file(SHIPPED_CHECKPOINT)
    if shipped.is_file():
        return shipped
    print(f"{shipped} missing: timing a random-weight model of the default config")
    from dyco_perception.checkpoint import write_random_checkpoint

    return write_random_checkpoint(work / "random.safetensors")


def segmenter_times(checkpoint: Path, device: str, scenes: list, repeats: int) -> list[float]:
    from dyco_perception.segmenter import Segmenter

    segmenter = Segmenter.from_checkpoint(checkpoint, device=device)
    segmenter.segment(scenes[0].xyz, scenes[0].rgb)  # warm-up
    times = []
    for scene in scenes:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            segmenter.segment(scene.xyz, scene.rgb)
            runs.append(time.perf_counter() - start)
        times.append(statistics.median(runs))
    return times


def node_times(
    checkpoint: Path,
    device: str,
    scenes: list,
    repeats: int,
    log: Path,
    threads: int,
    parameters: dict | None = None,
) -> list[tuple[float, float, float]]:
    """Per scene: medians of (end-to-end latency, node-reported Segmenter time, overhead);
    `parameters`: more node parameters."""
    overrides = {"checkpoint": str(checkpoint), "device": device, "score_threshold": 0.0}
    overrides |= parameters or {}
    process = start_node(overrides, {"cloud_in": INPUT_TOPIC}, log_path=log, threads=threads)
    client = SegmentationClient(INPUT_TOPIC, client_name="bench_node")
    stamp = [1_800_000_000 * 10**9]

    def once(scene) -> tuple[float, float, float]:
        stamp[0] += 10**9
        cloud, _, _ = scan_messages(scene, stamp[0], "map")
        key = client.publish(cloud)
        result = client.wait_for_result(key, ("cloud", "instances"), timeout=600)
        if result is None:
            raise TimeoutError(f"no result from the node (log: {log})")
        e2e, inference = result.latency("cloud"), result.messages["instances"].inference_time
        return e2e, inference, e2e - inference

    try:
        if not client.wait_for_node(timeout=120):
            raise TimeoutError(f"node did not start (log: {log})")
        once(scenes[0])  # warm-up
        rows = []
        for scene in scenes:
            runs = [once(scene) for _ in range(repeats)]
            rows.append(tuple(statistics.median(r[i] for r in runs) for i in range(3)))
        return rows
    finally:
        client.close()
        stop_node(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=Path, default=SCANS)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_node_"))
    scenes = load_scenes(args.scans, args.limit)
    checkpoint = checkpoint_path(args.checkpoint, work)
    direct = segmenter_times(checkpoint, args.device, scenes, args.repeats)
    through_node = node_times(
        checkpoint, args.device, scenes, args.repeats, work / "node.log", args.threads
    )
    conversion = []
    for scene in scenes:  # the node's own numpy conversion, for reference
        cloud, _, _ = scan_messages(scene, 0, "map")
        start = time.perf_counter()
        pc2.read_msg(cloud)
        conversion.append(time.perf_counter() - start)

    print(
        f"\ncheckpoint {checkpoint.name}, device {args.device}, {args.threads} thread(s), "
        f"median of {args.repeats} runs"
    )
    header = f"{'scan':<14}{'points':>8}{'alone':>9}{'in node':>9}{'node e2e':>10}"
    header += f"{'overhead':>10}{'budget':>9}{'read':>8}  ok"
    print(header)
    print("-" * len(header))
    for scene, alone, (e2e, inference, overhead), read in zip(
        scenes, direct, through_node, conversion, strict=True
    ):
        budget = 0.1 * inference + 0.05
        print(
            f"{scene.name:<14}{scene.num_points:>8}{alone * 1000:>7.0f}ms{inference * 1000:>7.0f}ms"
            f"{e2e * 1000:>8.0f}ms{overhead * 1000:>8.0f}ms{budget * 1000:>7.0f}ms"
            f"{read * 1000:>6.1f}ms  {'yes' if overhead <= budget else 'NO'}"
        )
    overheads = np.array([row[2] for row in through_node])
    print(
        f"mean overhead {overheads.mean() * 1000:.0f} ms "
        "(alone: the Segmenter in this process; in node: the same, inside the node)"
    )


if __name__ == "__main__":
    main()
