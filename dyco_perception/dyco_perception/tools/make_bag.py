"""`dyco-make-bag`: scans (scannet50k npz) or generated rooms -> a rosbag2 of PointCloud2 clouds
plus their ground truth, one scan per `--period` seconds (see bags.py for the topics).

    dyco-make-bag --scans /path/to/scannet50k --out scans_bag [--limit 4]
    dyco-make-bag --rooms 2 --seed 7 --out demo/demo_rooms     # generated, redistributable
    dyco-make-bag --scans a.npz b.npz --grow 10 --out growing_bag  # each scan as a growing map

--grow K writes each scan as K maps of a robot exploring it (`growing_maps`), named
`<scan>/map_<k>` (bags.growing_name), for dyco-replay's identity-stability metric.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Header, String

from dyco_perception import pointcloud2 as pc2
from dyco_perception.ros.outputs import to_cloud_msg
from dyco_perception.tools import bags

START_SEC = 1_700_000_000  # bag time of the first scan


def scan_messages(scene: Any, stamp_ns: int, frame: str) -> tuple[Any, Any, Any]:
    """(cloud, ground truth, name) messages of one Scene, all with the same stamp."""
    header = Header(
        stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
        frame_id=frame,
    )
    xyz = np.asarray(scene.xyz, np.float32)
    layout, data = pc2.write_cloud(
        {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "rgb": pc2.pack_rgb(scene.rgb)}
    )
    cloud = to_cloud_msg(header, layout, data, bool(np.isfinite(xyz).all()))
    gt_layout, gt_data = pc2.write_cloud(
        {
            "semantic": np.asarray(scene.semantic, np.int32),
            "instance": np.asarray(scene.instance, np.int32),
        }
    )
    truth = to_cloud_msg(header, gt_layout, gt_data, True)
    return cloud, truth, String(data=scene.name)


def write_scan_bag(
    scenes: Iterable[Any], out: str | Path, period: float = 1.0, frame: str = "map"
) -> int:
    """Write the scenes; returns how many were written. On any error the partial bag is
    removed (a bag directory that exists is taken for a finished one by the replay tools)."""
    count = 0
    writer = bags.BagWriter(out)  # refuses an existing directory, so `out` is ours from here
    try:
        with writer:
            for index, scene in enumerate(scenes):
                stamp = START_SEC * 1_000_000_000 + round(index * period * 1e9)
                cloud, truth, name = scan_messages(scene, stamp, frame)
                writer.write(bags.CLOUD_TOPIC, cloud, stamp)
                writer.write(bags.GT_TOPIC, truth, stamp)
                writer.write(bags.NAME_TOPIC, name, stamp)
                count += 1
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return count


@dataclass(frozen=True)
class GrowthConfig:
    """How a scan is revealed: K maps, each a larger region, with small pose noise."""

    updates: int = 10
    translation_noise: float = 0.02  # m, standard deviation per axis (x, y) and map
    yaw_noise: float = 0.5  # degrees, standard deviation per map
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.updates <= 1000:
            raise ValueError(f"--grow must lie in 2..1000 maps, got {self.updates}")
        if not (0 <= self.translation_noise <= 1 and 0 <= self.yaw_noise <= 45):
            raise ValueError(
                "pose noise must lie in 0..1 m and 0..45 degrees, got "
                f"{self.translation_noise} m, {self.yaw_noise} degrees"
            )


def reveal_order(xyz: np.ndarray, updates: int) -> np.ndarray:
    """(N,) index 0..K-1 of the first map that holds each point. A robot enters at one end of
    the scan's longest horizontal axis and sees ever farther: map k holds the points within
    D * sqrt((k + 1) / K) of that entry (D: the farthest point), so each map adds about as many
    points as the one before (area grows with the square of the reach) and the last is whole."""
    xy = np.asarray(xyz, np.float64)[:, :2]
    centre = xy.mean(axis=0)
    _, _, axes = np.linalg.svd(xy - centre, full_matrices=False)
    along = (xy - centre) @ axes[0]
    entry = centre + along.min() * axes[0]
    distance = np.linalg.norm(xy - entry, axis=1)
    reach = distance.max() * np.sqrt(np.arange(1, updates + 1) / updates)
    return np.minimum(np.searchsorted(reach, distance - 1e-9), updates - 1)


def _pose_noise(xyz: np.ndarray, growth: GrowthConfig, rng: np.random.Generator) -> np.ndarray:
    """A small random rigid motion (yaw about the scan centre + xy shift): the corrections a
    SLAM system makes to the whole map between two publications."""
    yaw = np.deg2rad(rng.normal(0.0, growth.yaw_noise))
    rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    shift = rng.normal(0.0, growth.translation_noise, 2)
    centre = xyz[:, :2].mean(axis=0)
    moved = np.array(xyz, np.float32)
    moved[:, :2] = (xyz[:, :2] - centre) @ rotation.T + centre + shift
    return moved


def growing_maps(scene: Any, growth: GrowthConfig) -> Iterator[Any]:
    """The scan as K accumulated maps (growing_name(scan, k)), ground truth ids unchanged, so
    one ground-truth object has one id in every map of its scan."""
    order = reveal_order(scene.xyz, growth.updates)
    rng = np.random.default_rng(growth.seed)
    for k in range(growth.updates):
        rows = np.flatnonzero(order <= k)
        yield dataclasses.replace(
            scene,
            xyz=_pose_noise(scene.xyz[rows], growth, rng),
            rgb=scene.rgb[rows],
            semantic=scene.semantic[rows],
            instance=scene.instance[rows],
            name=bags.growing_name(scene.name, k),
        )


def _scan_scenes(sources: list[str], limit: int | None) -> Iterator[Any]:
    from dyco_perception.scenes import load_npz_scene

    paths: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            paths += sorted(source.glob("*.npz"))
        elif source.suffix == ".npz" and source.is_file():
            paths.append(source)
        else:
            raise ValueError(f"{source}: neither a folder of .npz scans nor an .npz file")
    if not paths:
        raise ValueError(f"no .npz scans in {sources}")
    for path in paths[:limit]:
        yield load_npz_scene(path)


def _room_scenes(count: int, seed: int, points: int) -> Iterator[Any]:
    from dyco_perception.data.room_generator import generate_room

    for k in range(count):
        yield generate_room(seed + k, num_points=points)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--scans", nargs="+", help="folder(s) of scannet50k .npz scans, or files")
    source.add_argument("--rooms", type=int, help="generate this many rooms instead")
    parser.add_argument("--out", required=True, help="bag directory to create")
    parser.add_argument("--limit", type=int, help="at most this many scans")
    parser.add_argument("--seed", type=int, default=0, help="first room seed (--rooms)")
    parser.add_argument("--points", type=int, default=50_000, help="points per room (--rooms)")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between scans")
    parser.add_argument("--frame", default="map", help="header frame_id")
    parser.add_argument("--grow", type=int, help="write each scan as this many growing maps")
    parser.add_argument(
        "--pose-noise",
        type=float,
        nargs=2,
        default=(GrowthConfig.translation_noise, GrowthConfig.yaw_noise),
        metavar=("METRES", "DEGREES"),
        help="--grow: standard deviation of each map's xy shift and yaw",
    )
    args = parser.parse_args(argv)
    if args.rooms is not None and args.rooms < 1:  # 0 read as "no --rooms" and crashed
        parser.error(f"--rooms must be >= 1, got {args.rooms}")
    scenes = (
        _room_scenes(args.rooms, args.seed, args.points)
        if args.rooms
        else _scan_scenes(args.scans, args.limit)
    )
    try:
        if args.grow is not None:
            growth = GrowthConfig(args.grow, *args.pose_noise, seed=args.seed)
            scenes = (m for scene in scenes for m in growing_maps(scene, growth))
        count = write_scan_bag(scenes, args.out, args.period, args.frame)
    except (ValueError, OSError) as exc:
        sys.exit(f"dyco-make-bag: error: {exc} (no bag written)")
    print(f"wrote {count} {'maps' if args.grow else 'scans'} to {args.out}")


if __name__ == "__main__":
    main()
