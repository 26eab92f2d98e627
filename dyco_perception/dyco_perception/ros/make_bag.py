"""`dyco-make-bag`: scans (scannet50k npz) or generated rooms -> a rosbag2 of PointCloud2 clouds
plus their ground truth, one scan per `--period` seconds (see bags.py for the topics).

    dyco-make-bag --scans /path/to/scannet50k --out scans_bag [--limit 4]
    dyco-make-bag --rooms 2 --seed 7 --out demo/demo_rooms     # generated, redistributable
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from std_msgs.msg import Header, String

from dyco_perception import pointcloud2 as pc2
from dyco_perception.ros import bags
from dyco_perception.ros.outputs import to_cloud_msg

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
    from dyco_perception.room_generator import generate_room

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
    args = parser.parse_args(argv)
    scenes = (
        _room_scenes(args.rooms, args.seed, args.points)
        if args.rooms
        else _scan_scenes(args.scans, args.limit)
    )
    try:
        count = write_scan_bag(scenes, args.out, args.period, args.frame)
    except (ValueError, OSError) as exc:
        sys.exit(f"dyco-make-bag: error: {exc} (no bag written)")
    print(f"wrote {count} scans to {args.out}")


if __name__ == "__main__":
    main()
