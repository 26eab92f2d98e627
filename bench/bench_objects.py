"""Object-map association time per map update (ObjectMap.update), by object count and map size.

python bench/bench_objects.py [--objects 25 50 100 200] [--points 50000 500000] [--updates 10]
python bench/bench_objects.py --scans ../shared/data/scannet50k/scene0010_0*.npz   # real maps

Each case builds a synthetic map: a floor plus N box-shaped objects (0.3-1.5 m, 300 points
each) on a grid, and feeds it `--updates` times, as a robot re-publishing its map would: every
update moves the whole map by a small pose error (2 cm, 0.5 degree), drops 10 % of the
detections, and splits one object in two. The time covers all of update(): voxelizing the map
and the instances, overlaps, the optimal assignment, fusion and bookkeeping; the first update
(every object new) is excluded from the statistics. With --scans, each scan's growing maps
(dyco-make-bag --grow) are fed with its ground-truth instances as the detections: real map and
object sizes, a few dozen objects. Wall time depends on what else runs on the
machine; CPU time (this process) less, and the minimum over the updates approaches the cost on a
quiet machine. Target: <= 10 ms per update at 100 objects.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from dyco_perception.objects import ObjectMap, Observation

POINTS_PER_OBJECT = 300


def synthetic_map(
    num_objects: int, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """(map xyz, per-object point arrays, per-object class ids)."""
    side = int(np.ceil(np.sqrt(num_objects)))
    objects, class_ids = [], []
    for k in range(num_objects):
        corner = np.array([k % side, k // side, 0.0]) * 2.0
        size = rng.uniform(0.3, 1.5, 3)
        objects.append(corner + rng.uniform(0, 1, (POINTS_PER_OBJECT, 3)) * size)
        class_ids.append(int(rng.integers(2, 20)))
    floor_points = max(num_points - num_objects * POINTS_PER_OBJECT, 1000)
    floor = rng.uniform([-1, -1, -0.05], [2 * side + 1, 2 * side + 1, 0], (floor_points, 3))
    return np.concatenate([floor, *objects]), objects, class_ids


def _noisy(xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small rigid motion about the map centre, as dyco-make-bag --grow applies."""
    yaw = np.deg2rad(rng.normal(0, 0.5))
    cos, sin = np.cos(yaw), np.sin(yaw)
    x, y = (xyz[:, 0] - xyz[:, 0].mean()), (xyz[:, 1] - xyz[:, 1].mean())
    moved = xyz.copy()  # no BLAS product: its idle threads would spin beside the timed update
    moved[:, 0] += cos * x - sin * y - x + rng.normal(0, 0.02)
    moved[:, 1] += sin * x + cos * y - y + rng.normal(0, 0.02)
    return moved.astype(np.float32)  # as the node reads clouds


def observations(
    objects: list[np.ndarray], class_ids: list[int], rng: np.random.Generator
) -> list[Observation]:
    seen = [
        Observation(class_id=c, score=float(rng.uniform(0.3, 0.9)), points=p)
        for p, c in zip(objects, class_ids, strict=True)
        if rng.random() > 0.1
    ]
    if seen:  # one object split in two
        first = seen.pop(0)
        half = len(first.points) // 2
        seen += [
            Observation(first.class_id, first.score, first.points[:half]),
            Observation(first.class_id, first.score, first.points[half:]),
        ]
    return seen


def time_updates(
    num_objects: int, num_points: int, updates: int, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each update but the first."""
    rng = np.random.default_rng(seed)
    xyz, objects, class_ids = synthetic_map(num_objects, num_points, rng)
    object_map = ObjectMap()
    wall, cpu = [], []
    for k in range(updates):
        # One rigid motion for the whole map, so objects stay inside it.
        moved = _noisy(np.concatenate([xyz, *objects]), rng)
        map_xyz, rest = moved[: len(xyz)], moved[len(xyz) :]
        moved_objects = np.split(rest, np.cumsum([len(p) for p in objects])[:-1])
        seen = observations(moved_objects, class_ids, rng)
        start = time.process_time()
        update = object_map.update(seen, map_xyz, (k + 1) * 10**9)
        cpu.append(time.process_time() - start)
        wall.append(update.seconds)
    return wall[1:], cpu[1:]


def time_scan(path: str, updates: int) -> tuple[list[float], int]:
    """Wall seconds per growing map of a real scan (ground-truth instances as detections), and
    the largest object count."""
    from dyco_perception.scenes import load_npz_scene
    from dyco_perception.tools.make_bag import GrowthConfig, growing_maps

    object_map = ObjectMap()
    seconds, most = [], 0
    for k, scan in enumerate(growing_maps(load_npz_scene(path), GrowthConfig(updates=updates))):
        xyz = scan.xyz.astype(np.float32)
        seen = [
            Observation(int(scan.semantic[scan.instance == g][0]), 0.8, xyz[scan.instance == g])
            for g in np.unique(scan.instance[scan.instance > 0])
        ]
        seconds.append(object_map.update(seen, xyz, (k + 1) * 10**9).seconds)
        most = max(most, len(object_map.objects))
    return seconds[1:], most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="+", default=[25, 50, 100, 200])
    parser.add_argument("--points", type=int, nargs="+", default=[50_000, 500_000])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--scans", nargs="+", help="real scans (npz) instead of synthetic maps")
    args = parser.parse_args()
    if args.scans:
        print("| scan | objects | wall ms / update: median | p95 | max |")
        print("|---|---|---|---|---|")
        for path in args.scans:
            wall, most = time_scan(path, args.updates)
            ms = 1000 * np.array(wall)
            print(
                f"| {Path(path).stem} | {most} | {np.median(ms):.1f} "
                f"| {np.percentile(ms, 95):.1f} | {ms.max():.1f} |"
            )
        return
    print(
        "| objects | map points | wall ms / update: median | p95 | min "
        "| CPU ms / update: median | p95 |"
    )
    print("|---|---|---|---|---|---|---|")
    for num_points in args.points:
        for num_objects in args.objects:
            wall, cpu = time_updates(num_objects, num_points, args.updates)
            wall, cpu = 1000 * np.array(wall), 1000 * np.array(cpu)
            print(
                f"| {num_objects} | {num_points:,} | {np.median(wall):.1f} "
                f"| {np.percentile(wall, 95):.1f} | {wall.min():.1f} "
                f"| {np.median(cpu):.1f} | {np.percentile(cpu, 95):.1f} |"
            )


if __name__ == "__main__":
    main()
