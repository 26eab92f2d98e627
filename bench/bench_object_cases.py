"""Object identity over the cases a robot produces (the object map fed in one process).

python bench/bench_object_cases.py                    # 5 val scans, shipped checkpoint, 1 thread
python bench/bench_object_cases.py --scans ../shared/data/scannet50k/scene0009_00.npz --maps 6
python bench/bench_object_cases.py --cache runs/objects_bench/cache  # model results kept

Cases, per real scan (`dyco-make-bag --grow` maps: a robot entering at one end, 2 cm / 0.5 deg
pose noise per map); each map is a re-scan: a fresh random `--keep` share of the revealed points:
- growing: the growing maps, each segmented by the model;
- republished: the same, every map published twice unchanged (the same cloud, the same
  instances): no new evidence, so nothing may be confirmed or missed by it;
- loop closure: the growing maps, then `--closures` re-scans of the whole scan with one half
  (x above the median) moved rigidly by `--shift` m and turned `--yaw` degrees about its centre,
  as a loop closure corrects the map;
- region of interest: the whole scan, `--maps` + 2 maps, segmented only within `--radius` m
  (x-y) of a robot driving along the scan's long axis and back (`update(..., roi=)`).
Each case runs with the model's instances ("model") and, for the constructed cases, with the
ground-truth instances as detections ("gt": every instance, inside the region of interest
only, is detected), which isolates the object map from segmentation noise.

Reported over all scans, for the ground-truth objects (>= 100 points) detected at least once
(an object's points overlap it with IoU >= 0.5, identity_metric.identity_stability):
- kept one id: the share whose detections all carry one object id (target >= 95 %);
- id switches: detections whose id differs from that object's previous one (CLEAR-MOT IDSW);
- swaps: detections whose object id an earlier map gave to another ground-truth object;
- false confirmed: objects confirmed at the end that never overlapped any ground-truth object
  (IoU >= 0.25) in any map;
- ghosts: objects confirmed at the end that the final map no longer holds (under
  `objects.observed_fraction` of their published points have a map point within 0.15 m),
  e.g. left behind by a loop closure.
Targets in the constructed cases (republished, loop closure, region of interest): 0 swaps and 0
ghosts.
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from dyco_perception.identity_metric import detected_ids, identity_stability
from dyco_perception.objects import ObjectMap, ObjectMapConfig, Observation
from scipy.spatial import cKDTree

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scannet50k"
GHOST_M = 0.15  # an object's point is still in the map when a map point lies this near
VAL = ["scene0009_00", "scene0009_01", "scene0009_02", "scene0010_00", "scene0010_01"]
CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dyco3d_scannet_m16.safetensors"


@dataclass
class Frame:
    """One published map: points (and colours), ground truth per point, the region of interest."""

    xyz: np.ndarray
    rgb: np.ndarray
    instance: np.ndarray
    semantic: np.ndarray
    roi: object = None
    key: tuple = ()  # frames with one key are one cloud (republished): segmented once


@dataclass
class Tally:
    """One case's counts over its scans."""

    sequences: list = field(default_factory=list)  # per scan: (gt instance, object id) per map
    false_confirmed: int = 0
    ghosts: int = 0
    confirmed: int = 0
    swaps: int = 0

    def row(self, name: str) -> str:
        stats = identity_stability(self.sequences)
        share = stats["single_id_fraction"]
        kept = f"{stats['single_id']}/{stats['detected']} = " + (
            "n/a" if share is None else f"{100 * share:.1f} %"
        )
        return (
            f"| {name} | {stats['gt_objects']} | {kept} | {stats['id_switches']} | {self.swaps} "
            f"| {self.false_confirmed} / {self.confirmed} | {self.ghosts} |"
        )


def count_swaps(maps: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """Detections (IoU >= 0.5) whose object id an earlier map gave to another ground-truth
    object."""
    owner: dict[int, int] = {}
    swaps = 0
    for gt_instance, object_id in maps:
        for gt, obj in detected_ids(gt_instance, object_id).items():
            if not obj:
                continue
            swaps += owner.setdefault(obj, gt) != gt
    return swaps


def true_objects(gt_instance: np.ndarray, object_id: np.ndarray, min_iou: float = 0.25) -> set:
    """Object ids whose points overlap some ground-truth object with IoU >= min_iou."""
    both = (gt_instance > 0) & (object_id > 0)
    if not both.any():
        return set()
    pairs, inter = np.unique(
        np.stack([gt_instance[both], object_id[both]], 1), axis=0, return_counts=True
    )
    gt_size = np.bincount(gt_instance)
    obj_ids, obj_sizes = np.unique(object_id[object_id > 0], return_counts=True)
    obj_size = dict(zip(obj_ids.tolist(), obj_sizes.tolist(), strict=True))
    iou = inter / (gt_size[pairs[:, 0]] + np.array([obj_size[o] for o in pairs[:, 1]]) - inter)
    return set(pairs[iou >= min_iou, 1].tolist())


def run_sequence(
    frames: list[Frame], detect: Callable[[Frame], list[Observation]], tally: Tally
) -> None:
    """Feed the frames to a new object map; add the scan's identity counts to the tally."""
    object_map = ObjectMap(ObjectMapConfig())
    maps, matched = [], set()
    for k, frame in enumerate(frames):
        observations = detect(frame)
        update = object_map.update(observations, frame.xyz, (k + 1) * 10**9, "map", frame.roi)
        object_id = np.zeros(len(frame.xyz), np.int64)
        for obs, obj in zip(observations, update.object_ids, strict=True):
            object_id[obs.rows] = obj
        maps.append((frame.instance, object_id))
        matched |= true_objects(frame.instance, object_id)
    tally.sequences.append(maps)
    tally.swaps += count_swaps(maps)
    final = cKDTree(frames[-1].xyz)
    for obj in object_map.confirmed_objects():
        tally.confirmed += 1
        tally.false_confirmed += obj.id not in matched
        distance = final.query(obj.points, distance_upper_bound=GHOST_M)[0]
        tally.ghosts += np.isfinite(distance).mean() < object_map.config.observed_fraction


class Detector:
    """Observations of a frame (with `rows`: their points' indices), by the model or from the
    ground truth; the model's results are cached by frame key (a republished cloud)."""

    def __init__(self, checkpoint: Path | None) -> None:
        self.segmenter = None
        if checkpoint is not None:
            from dyco_perception.segmenter import Segmenter

            self.segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
        self.cache: dict[tuple, list[Observation]] = {}
        self.model_seconds = 0.0

    def model(self, frame: Frame) -> list[Observation]:
        if frame.key not in self.cache:
            start = time.perf_counter()
            result = self.segmenter.segment(frame.xyz, frame.rgb, roi=frame.roi)
            self.model_seconds += time.perf_counter() - start
            observations = []
            for instance in result.instances:
                obs = Observation.of_instance(instance, frame.xyz)
                obs.rows = np.asarray(instance.point_indices)
                observations.append(obs)
            self.cache[frame.key] = observations
        return self.cache[frame.key]

    @staticmethod
    def ground_truth(frame: Frame) -> list[Observation]:
        inside = (
            np.ones(len(frame.xyz), bool) if frame.roi is None else frame.roi.contains(frame.xyz)
        )
        observations = []
        for gt in np.unique(frame.instance[inside & (frame.instance > 0)]):
            rows = np.flatnonzero(inside & (frame.instance == gt))
            obs = Observation(
                int(frame.semantic[rows[0]]), 0.9, frame.xyz[rows], instance_id=int(gt)
            )
            obs.rows = rows
            observations.append(obs)
        return observations


def rescan(scene, rows: np.ndarray, rng: np.random.Generator, keep: float) -> np.ndarray:
    """A fresh random share of these rows: the same surfaces sampled anew."""
    return rows[rng.random(len(rows)) < keep]


def loop_closed(xyz: np.ndarray, shift: float, yaw_deg: float) -> np.ndarray:
    """The half above the median x moved rigidly: turned about its centre, shifted in x-y."""
    moved = np.array(xyz, np.float32)
    half = xyz[:, 0] > np.median(xyz[:, 0])
    yaw = np.deg2rad(yaw_deg)
    rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    centre = xyz[half, :2].mean(axis=0)
    offset = np.array([shift, shift]) / np.sqrt(2)
    moved[half, :2] = (xyz[half, :2] - centre) @ rotation.T + centre + offset
    return moved


def scan_frames(scene, args: argparse.Namespace, seed: int) -> Iterator[tuple[str, list[Frame]]]:
    """(case, frames) for one scan."""
    from dyco_perception.tiling import RegionOfInterest
    from dyco_perception.tools.make_bag import GrowthConfig, _pose_noise, reveal_order

    growth = GrowthConfig(updates=args.maps, seed=seed)
    rng = np.random.default_rng(seed)
    order = reveal_order(scene.xyz, args.maps)

    def frame(rows: np.ndarray, key: tuple, xyz: np.ndarray | None = None, roi=None) -> Frame:
        xyz = _pose_noise(scene.xyz[rows], growth, rng) if xyz is None else xyz
        return Frame(xyz, scene.rgb[rows], scene.instance[rows], scene.semantic[rows], roi, key)

    growing = [
        frame(rescan(scene, np.flatnonzero(order <= k), rng, args.keep), ("grow", k))
        for k in range(args.maps)
    ]
    yield "growing", growing
    yield "republished", [f for f in growing for _ in range(2)]
    closures = []
    for k in range(args.closures):
        rows = rescan(scene, np.arange(len(scene.xyz)), rng, args.keep)
        xyz = loop_closed(_pose_noise(scene.xyz[rows], growth, rng), args.shift, args.yaw)
        closures.append(frame(rows, ("closure", k), xyz))
    yield "loop closure", growing + closures
    # Region of interest: a robot driving along the long axis and back.
    xy = scene.xyz[:, :2].astype(np.float64)
    centre = xy.mean(axis=0)
    axis = np.linalg.svd(xy - centre, full_matrices=False)[2][0]
    along = (xy - centre) @ axis
    steps = args.maps // 2 + 1
    there = np.linspace(along.min() + 1.0, along.max() - 1.0, steps)
    path = np.concatenate([there, there[::-1][1:]])
    roi_frames = []
    for k, t in enumerate(path):
        rows = rescan(scene, np.arange(len(scene.xyz)), rng, args.keep)
        roi = RegionOfInterest.around(centre + t * axis, args.radius)
        roi_frames.append(frame(rows, ("roi", k), roi=roi))
    yield "region of interest", roi_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", nargs="+", default=[str(DATA / f"{s}.npz") for s in VAL])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--maps", type=int, default=10, help="growing maps per scan")
    parser.add_argument("--keep", type=float, default=0.85, help="share of points per re-scan")
    parser.add_argument("--closures", type=int, default=4, help="maps after the loop closure")
    parser.add_argument("--shift", type=float, default=0.7, help="loop closure shift (m)")
    parser.add_argument("--yaw", type=float, default=3.0, help="loop closure turn (degrees)")
    parser.add_argument("--radius", type=float, default=2.5, help="region of interest (m)")
    parser.add_argument("--no-model", action="store_true", help="ground-truth detections only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--cache",
        help="folder for the model's instances per scan and settings (reruns skip the model)",
    )
    args = parser.parse_args()
    import torch
    from dyco_perception.scenes import load_npz_scene

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    detector = Detector(None if args.no_model else Path(args.checkpoint))
    tallies: dict[str, Tally] = {}
    start = time.perf_counter()
    for seed, path in enumerate(args.scans):
        scene = load_npz_scene(path)
        detector.cache.clear()
        cached = None
        if args.cache and detector.segmenter is not None:
            settings = f"m{args.maps}-k{args.keep}-c{args.closures}-s{args.shift}-y{args.yaw}"
            cached = Path(args.cache) / (
                f"{Path(path).stem}-{Path(args.checkpoint).stem}-{settings}-r{args.radius}.pkl"
            )
            if cached.exists():
                detector.cache.update(pickle.loads(cached.read_bytes()))
        for case, frames in scan_frames(scene, args, seed):
            runs = [("gt", Detector.ground_truth)]
            if detector.segmenter is not None:
                runs.insert(0, ("model", detector.model))
            for source, detect in runs:
                run_sequence(frames, detect, tallies.setdefault(f"{case} ({source})", Tally()))
        if cached is not None and not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps(detector.cache))
        print(f"{Path(path).stem}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    print()
    print(
        "| case (detections) | GT objects | kept one id | id switches | swaps "
        "| false confirmed / confirmed | ghosts |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, tally in tallies.items():
        print(tally.row(name))
    seconds = time.perf_counter() - start
    print(f"\n{len(args.scans)} scans, model {detector.model_seconds:.0f} s, all {seconds:.0f} s")


if __name__ == "__main__":
    main()
