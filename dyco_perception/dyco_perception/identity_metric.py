"""Identity stability of an object map over growing maps: how well object ids follow the
ground-truth objects (evaluation only; `dyco-replay` and `bench/bench_object_cases.py` report it).

    stats = identity_stability([[(gt_instance, object_id) per map] per scan])
    stats["single_id_fraction"], stats["id_switches"], stats["fragmentations"]

numpy only; the object map itself is `dyco_perception.objects`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

__all__ = ["detected_ids", "identity_stability"]


def detected_ids(
    gt_instance: np.ndarray, object_id: np.ndarray, min_iou: float = 0.5, min_points: int = 100
) -> dict[int, int]:
    """One map: {ground-truth instance with >= min_points points: the object id whose points
    overlap it with IoU >= min_iou (at most one can), or 0 when none does}."""
    gt_instance = np.asarray(gt_instance, np.int64)
    object_id = np.asarray(object_id, np.int64)
    gt_ids, gt_sizes = np.unique(gt_instance[gt_instance > 0], return_counts=True)
    found = {int(g): 0 for g, size in zip(gt_ids, gt_sizes, strict=True) if size >= min_points}
    both = (gt_instance > 0) & (object_id > 0)
    if not found or not both.any():
        return found
    pairs, inter = np.unique(
        np.stack([gt_instance[both], object_id[both]], axis=1), axis=0, return_counts=True
    )
    obj_ids, obj_sizes = np.unique(object_id[object_id > 0], return_counts=True)
    gt_size = dict(zip(gt_ids.tolist(), gt_sizes.tolist(), strict=True))
    obj_size = dict(zip(obj_ids.tolist(), obj_sizes.tolist(), strict=True))
    for (g, o), count in zip(pairs.tolist(), inter.tolist(), strict=True):
        if g in found and count / (gt_size[g] + obj_size[o] - count) >= min_iou:
            found[g] = o
    return found


def identity_stability(
    scans: list[list[tuple[np.ndarray, np.ndarray]]], min_iou: float = 0.5, min_points: int = 100
) -> dict[str, Any]:
    """Over growing-map sequences (per scan, per map in order: ground-truth instance and object
    id per point), for the ground-truth objects detected at least once (IoU >= min_iou):
    - single_id_fraction: the share that kept one object id from first detection to the end;
    - id_switches: CLEAR-MOT IDSW, detections whose id differs from the object's previous one;
    - fragmentations: detections that resume a track after maps where the object was present
      but not detected."""
    gt_objects = detected = single = switches = fragments = 0
    for maps in scans:
        tracks: dict[int, list[int]] = {}
        for gt_instance, object_id in maps:
            for gt, obj in detected_ids(gt_instance, object_id, min_iou, min_points).items():
                tracks.setdefault(gt, []).append(obj)
        for track in tracks.values():
            gt_objects += 1
            hits = [obj for obj in track if obj]
            if not hits:
                continue
            detected += 1
            single += len(set(hits)) == 1
            switches += sum(a != b for a, b in itertools.pairwise(hits))
            resumes = sum(bool(b) and not a for a, b in itertools.pairwise(track))
            fragments += resumes - (track[0] == 0)  # the first detection resumes nothing
    return {
        "gt_objects": gt_objects,
        "detected": detected,
        "single_id": single,
        "single_id_fraction": single / detected if detected else None,
        "id_switches": switches,
        "id_switches_per_object": switches / detected if detected else None,
        "fragmentations": fragments,
    }
