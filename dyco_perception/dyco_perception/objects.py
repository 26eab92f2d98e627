"""Persistent object map: the instances of successive (growing) maps -> objects with stable ids.

    object_map = ObjectMap(ObjectMapConfig(confirm_after=2))
    update = object_map.update([Observation.of_instance(i, xyz) for i in instances], xyz, stamp)
    update.object_ids  # one per observation, stable across maps

ROS-free (numpy + scipy). Each update associates the new map's instances with the known objects:
- similarity = max(voxel IoU, axis-aligned box IoU). The voxel IoU only counts the instance's
  voxels inside the previous map: a growing map reveals more of an object, and the part that is
  new cannot disagree with what was seen before.
- class-aware: the Bhattacharyya coefficient of the two class distributions must pass a gate, and
  it weighs the cost (1 - similarity * class similarity);
- an optimal one-to-one assignment (scipy's linear_sum_assignment) of the most total
  similarity, gated by `min_overlap` (a gated pair is worth nothing, so a better match is never
  traded for more matches).
Splits and merges (see README "Objects that keep their identity"):
- split: an object none of whose parts passed the gate takes its largest part when that part lies
  mostly (`part_containment`) inside it; the other parts become new tentative objects, recorded
  as split from it, confirmed only if the split persists;
- merge: an object found mostly inside an instance matched to another object is "merged into"
  it; it counts a miss, so a persistent merge retires it while a one-map merge gives it back its
  id when the parts reappear.
Misses: an unmatched object whose voxels the new map covers (`observed_fraction`) counts a miss
and retires after `retire_after` in a row; one outside the new map (cropped, windowed) or
outside the region of interest (`update(..., roi=)`: only the segmented part of the map counts
as covering) is kept. Ghosts (a ghost would never be observed again, so never missed):
- moved away: when the map's points leave an object's voxels (they held points in the previous
  map; now neither they nor their neighbours hold any) and at least as many voxels new to the
  map appear within 1 m of them (the points moved, not removed: a loop closure corrected the
  map), those voxels' evidence is forgotten; an unmatched object most of whose published
  voxels moved away is retired at once, in or outside the region of interest (the whole map
  tells). A crop or a map window removes points without adding any next to them: it retires
  nothing. An object the map moved away from in an update is not given another instance's
  part (split recovery) and matches only a box of like extent (`_SHAPE_RATIO` per axis): what
  stands in its old place now may be another object (an id swap);
- surrounded: an unmatched object inside the region of interest whose region the map no
  longer covers although it holds points within 0.5 m on all four x-y sides is retired too.
Evidence: a sighting (fused, counted towards confirmation) or a miss counts only when the map's
content in the object's voxels (point count and a checksum per voxel) changed since the
object's last counted sighting or miss: a map republished unchanged is no new evidence.
Geometry: hits and looks per voxel (see `_add_evidence`); the voxels seen in at least
`voxel_support` of the views that could show them are published, with their newest points.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from dyco_perception.validation import build_config, ranged

_KEY_BITS = 21  # voxel coordinates within +-2^20 voxels (+-100 km at 0.1 m)
_CODE_LIMIT = 2.0**62  # (object, voxel) codes of one evidence batch stay below this
_SURROUND_M = 0.5  # an emptied region is inside the map when the map holds points this near it
_SHAPE_RATIO = 0.5  # an object the map moved matches boxes this alike (least extent ratio)
_MOVED_M = 1.0  # an emptied region's points moved (not removed) when they reappear this near


@dataclass
class ObjectMapConfig:
    voxel_size: float = ranged(0.1, 0.01, 1.0, "edge (m) of the voxels overlap is measured on")
    min_overlap: float = ranged(
        0.2, 0.01, 1.0, "gate: least similarity (max of voxel and box IoU) of a match"
    )
    min_class_similarity: float = ranged(
        0.2, 0.0, 1.0, "gate: least Bhattacharyya coefficient of the class distributions"
    )
    confirm_after: int = ranged(2, 1, 100, "observations that confirm a new object")
    retire_after: int = ranged(
        3, 1, 1000, "misses in a row (its region re-observed, it not found) that retire an object"
    )
    observed_fraction: float = ranged(
        0.5, 0.0, 1.0, "share of an object's voxels a map must contain to re-observe its region"
    )
    part_containment: float = ranged(
        0.6, 0.0, 1.0, "split/merge: share of the smaller side's voxels inside the larger"
    )
    voxel_support: float = ranged(
        0.6,
        0.0,
        1.0,
        "an object's voxel is published when seen in at least this share of the object's views "
        "that could show it",
    )
    coverage_points: int = ranged(
        100_000,
        1_000,
        100_000_000,
        "most map points (an even sample) that tell which voxels it covers",
    )

    @classmethod
    def from_dict(cls, data: dict[str, Any], prefix: str = "objects.") -> ObjectMapConfig:
        """Validated config; ValueError names the key (unknown, wrong type, out of range)."""
        return build_config(cls, data, prefix)


def _finite_rows(xyz: np.ndarray) -> np.ndarray:
    """(N,) bool; NaN/inf propagate through the sum (faster than isfinite(...).all(axis=1))."""
    return np.isfinite(xyz[:, 0] + xyz[:, 1] + xyz[:, 2])


def _as_points(xyz: np.ndarray) -> np.ndarray:
    """(N, 3) float32 or float64 as given (maps arrive as float32: no copy to float64)."""
    xyz = np.asarray(xyz).reshape(-1, 3)
    return xyz if xyz.dtype in (np.float32, np.float64) else xyz.astype(np.float64)


def _raw_keys(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N,) int64 voxel key per point (rows must be finite)."""
    cells = np.floor(xyz * (1.0 / voxel_size)).astype(np.int64) + (1 << (_KEY_BITS - 1))
    return (cells[:, 0] << (2 * _KEY_BITS)) | (cells[:, 1] << _KEY_BITS) | cells[:, 2]


def voxel_keys(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """Sorted unique int64 keys of the voxels the points fall in (non-finite rows ignored)."""
    xyz = _as_points(xyz)
    finite = _finite_rows(xyz)
    return np.unique(_raw_keys(xyz if finite.all() else xyz[finite], voxel_size))


_NEIGHBOURS = [
    (dx << (2 * _KEY_BITS)) + (dy << _KEY_BITS) + dz
    for dx in (-1, 0, 1)
    for dy in (-1, 0, 1)
    for dz in (-1, 0, 1)
    if dx or dy or dz
]  # key offsets of a voxel's 26 neighbours


def _cells(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The x and y voxel coordinates (offset, as stored) of voxel keys."""
    mask = (1 << _KEY_BITS) - 1
    return keys >> (2 * _KEY_BITS), (keys >> _KEY_BITS) & mask


def _finite_groups(clouds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All clouds' finite points as one float32 array, grouped in order, and each cloud's
    count of them."""
    if not clouds:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    xyz = np.concatenate([_as_points(c) for c in clouds]).astype(np.float32, copy=False)
    owner = np.repeat(np.arange(len(clouds)), [len(c) for c in clouds])
    finite = _finite_rows(xyz)
    if not finite.all():
        xyz, owner = xyz[finite], owner[finite]
    return xyz, np.bincount(owner, minlength=len(clouds))


def _group_voxels(
    xyz: np.ndarray, counts: np.ndarray, voxel_size: float
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[np.ndarray]]:
    """For consecutive groups of points (all counts > 0): each group's sorted unique voxel
    keys, its box (min, max corners) and each point's voxel (an index into the group's keys)."""
    if not len(counts):
        return [], np.zeros((0, 3)), np.zeros((0, 3)), []
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    box_min = np.minimum.reduceat(xyz, starts).astype(np.float64)
    box_max = np.maximum.reduceat(xyz, starts).astype(np.float64)
    groups = [  # small sorts beat a lexsort
        np.unique(k, return_inverse=True) for k in np.split(_raw_keys(xyz, voxel_size), starts[1:])
    ]
    return [g[0] for g in groups], box_min, box_max, [g[1] for g in groups]


def _split_like(values: np.ndarray, parts: list[np.ndarray]) -> list[np.ndarray]:
    return np.split(values, np.cumsum([len(p) for p in parts])[:-1])


def _split_counts(values: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Consecutive pieces of these lengths (views; slicing beats np.split's per-piece cost)."""
    ends = np.cumsum(counts).tolist()
    return [values[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _member(keys: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """(len(keys),) bool: which keys are in the sorted unique array."""
    if not len(sorted_set):
        return np.zeros(len(keys), bool)
    index = np.minimum(np.searchsorted(sorted_set, keys), len(sorted_set) - 1)
    return sorted_set[index] == keys


def _distribution(probs: np.ndarray | None, class_id: int, num_classes: int) -> np.ndarray:
    """A probability vector: the given probabilities normalized, else one-hot on class_id."""
    out = np.zeros(num_classes, np.float64)
    if probs is not None and len(probs) == num_classes and float(np.sum(probs)) > 0:
        out[:] = np.clip(probs, 0.0, None)
        return out / out.sum()
    out[class_id] = 1.0
    return out


@dataclass
class Observation:
    """One instance of one map, in the map frame."""

    class_id: int
    score: float
    points: np.ndarray  # (P, 3) float
    class_probs: np.ndarray | None = None  # (C,) mean class probabilities; None: one-hot
    instance_id: int = 0  # its id in that map (kept for evaluation and the messages)

    @classmethod
    def of_instance(cls, instance: Any, xyz: np.ndarray) -> Observation:
        """From a segmenter.Instance (or anything with its fields) and the map's points."""
        probs = getattr(instance, "class_probs", None)
        return cls(
            class_id=int(instance.class_id),
            score=float(instance.score),
            points=np.asarray(xyz)[np.asarray(instance.point_indices)],
            class_probs=None if probs is None or len(probs) == 0 else np.asarray(probs),
            instance_id=int(instance.id),
        )


@dataclass
class MapObject:
    """An object of the map with its fused evidence."""

    id: int
    class_evidence: np.ndarray  # (C,) score-weighted sum of the observations' distributions
    score_sum: float
    num_observations: int
    first_seen: int  # stamp (ns) of the first map it was seen in
    last_seen: int
    # Published geometry: the voxels with enough evidence (`voxel_support`), the newest points
    # seen in them, their box.
    points: np.ndarray
    voxels: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray
    confirmed: bool = False
    num_misses: int = 0  # in a row
    total_misses: int = 0
    instance_id: int = 0  # id in the newest map, 0 when not seen in it
    merged_into: int = 0  # the object whose instance covered it in the newest map
    split_from: int = 0  # the object it was a part of when it was created
    evidence_update: int = 0  # the update that last counted a sighting or a miss of it
    # Evidence per voxel (sorted keys of every voxel a view of it held): views that held the
    # voxel (hits) and views that could have shown it (looks); the newest points seen in each.
    evidence_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    looks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    evidence_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    evidence_point_voxel: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def evidence_point_keys(self) -> np.ndarray:
        """Each evidence point's voxel key."""
        return self.evidence_keys[self.evidence_point_voxel]

    @property
    def class_probs(self) -> np.ndarray:
        return self.class_evidence / max(float(self.class_evidence.sum()), 1e-12)

    @property
    def class_id(self) -> int:
        return int(np.argmax(self.class_evidence))

    @property
    def score(self) -> float:
        return self.score_sum / self.num_observations

    @property
    def confidence(self) -> float:
        """Mean score times the share of re-observations that found it."""
        return self.score * self.num_observations / (self.num_observations + self.total_misses)

    @property
    def num_points(self) -> int:
        return len(self.points)

    @property
    def box_center(self) -> np.ndarray:
        return (self.box_min + self.box_max) / 2

    @property
    def box_size(self) -> np.ndarray:
        return self.box_max - self.box_min

    @property
    def centroid(self) -> np.ndarray:
        return self.points.mean(axis=0)


@dataclass
class ObjectUpdate:
    """What one map update did."""

    object_ids: list[int]  # per observation, in the order given
    created: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)  # newly confirmed
    retired: list[int] = field(default_factory=list)
    merged: dict[int, int] = field(default_factory=dict)  # absorbed object -> absorbing object
    split: dict[int, int] = field(default_factory=dict)  # new object -> object it came from
    # (old, new) when `config.voxel_size` changed since the previous update: the objects'
    # voxels were re-keyed onto the new grid (and this map's content counts as new evidence).
    voxel_size_changed: tuple[float, float] | None = None
    seconds: float = 0.0


class ObjectMapError(ValueError):
    """An update the map cannot take (another frame, an older stamp)."""


@dataclass
class _Candidates:
    """The new map's instances prepared for association."""

    observations: list[Observation]
    points: list[np.ndarray]  # each observation's finite points, float32
    voxels: list[np.ndarray]
    # The part inside the previous map (all its points, segmented or not: a part outside the
    # previous region of interest was still there, so it is no newly revealed part).
    known_voxels: list[np.ndarray]
    known_mask: list[np.ndarray]  # per voxel: inside the previous map's segmented part
    point_voxel: list[np.ndarray]  # each point's voxel: an index into its voxels
    box_min: np.ndarray  # (K, 3)
    box_max: np.ndarray
    probs: np.ndarray  # (K, C)


def _pair_intersections(
    left: list[np.ndarray],
    right: list[np.ndarray],
    shape: tuple[int, int],
    weights: list[np.ndarray] | None = None,
) -> np.ndarray:
    """(len(left), len(right)) counts of shared keys; each array holds unique keys. With
    `weights` (one per left key): the sums of the shared left keys' weights instead."""
    counts = np.zeros(shape, np.int64 if weights is None else np.float64)
    if not left or not right or not shape[0] or not shape[1]:
        return counts
    keys = np.concatenate(left)
    owner = np.repeat(np.arange(len(left)), [len(k) for k in left])
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    weight = None if weights is None else np.concatenate(weights)[order]
    probe = np.concatenate(right)
    probe_owner = np.repeat(np.arange(len(right)), [len(k) for k in right])
    lo = np.searchsorted(keys, probe, "left")
    hits = np.searchsorted(keys, probe, "right") - lo
    total = int(hits.sum())
    if total == 0:
        return counts
    # Every (probe, matching key) pair: a key may belong to several objects (touching objects).
    at = np.repeat(lo - (np.cumsum(hits) - hits), hits) + np.arange(total)
    cols = np.repeat(probe_owner, hits)
    return np.bincount(
        owner[at] * shape[1] + cols,
        None if weight is None else weight[at],
        minlength=shape[0] * shape[1],
    ).reshape(shape)


def _box_iou(
    a_min: np.ndarray, a_max: np.ndarray, b_min: np.ndarray, b_max: np.ndarray
) -> np.ndarray:
    """(A, B) IoU of axis-aligned boxes."""
    lo = np.maximum(a_min[:, None], b_min[None])
    hi = np.minimum(a_max[:, None], b_max[None])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=-1)
    vol_a = np.prod(a_max - a_min, axis=-1)[:, None]
    vol_b = np.prod(b_max - b_min, axis=-1)[None]
    union = vol_a + vol_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class ObjectMap:
    """Objects with ids that persist across the updates of one map frame."""

    def __init__(self, config: ObjectMapConfig | None = None, num_classes: int = 20) -> None:
        self.config = config or ObjectMapConfig()
        self.num_classes = num_classes
        self.objects: dict[int, MapObject] = {}
        self.frame: str | None = None
        self.last_stamp: int | None = None
        self._next_id = 1
        self._observed = np.zeros(0, np.int64)  # voxels of the previous map's segmented part
        self._mapped = np.zeros(0, np.int64)  # voxels of all the previous map (roi or not)
        # Per voxel of the previous map (aligned with _observed): its point count, a checksum
        # of its points and the update in which its content last changed.
        self._counts = np.zeros(0, np.int64)
        self._checksums = np.zeros(0, np.float64)
        self._changed_at = np.zeros(0, np.int64)
        self._updates = 0
        self._roi: Any = None
        self._voxel_size = self.config.voxel_size  # the grid the stored keys are on

    # ---- public API -----------------------------------------------------------------------
    def reset(self) -> int:
        """Forget every object (ids restart at 1); returns how many there were."""
        removed = len(self.objects)
        self.objects.clear()
        self.frame, self.last_stamp, self._next_id = None, None, 1
        self._voxel_size = self.config.voxel_size
        self._observed = np.zeros(0, np.int64)
        self._mapped = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)
        self._checksums = np.zeros(0, np.float64)
        self._changed_at = np.zeros(0, np.int64)
        return removed

    def confirmed_objects(self) -> list[MapObject]:
        return [obj for obj in self.objects.values() if obj.confirmed]

    def update(
        self,
        observations: list[Observation],
        map_xyz: np.ndarray,
        stamp: int,
        frame: str = "",
        roi: Any = None,
    ) -> ObjectUpdate:
        """Associate the instances of a new map (all its points: `map_xyz`) with the objects.
        Instances without a finite point get object id 0. `roi` (anything with
        `contains(xyz) -> bool mask`, e.g. tiling.RegionOfInterest): the part of the map that
        was segmented; only it re-observes objects, so an object outside it is not missed."""
        start = time.perf_counter()
        self._check_sequence(stamp, frame)
        regridded = self._regrid()
        given = len(observations)
        self._updates += 1
        self._roi = roi
        mapped, observed, counts, checksums = self._coverage(map_xyz, roi)
        update = ObjectUpdate(object_ids=[0] * len(observations), voxel_size_changed=regridded)
        moved = self._moved_away(mapped)
        self._drop_moved_away(moved, update)
        self._changed_at = self._changes(observed, counts, checksums)
        usable, candidates = self._prepare(observations)
        observations = candidates.observations
        objects = list(self.objects.values())
        intersections = _pair_intersections(
            [o.voxels for o in objects],
            candidates.known_voxels,
            (len(objects), len(observations)),
        )
        classes = self._class_similarity(objects, candidates)
        similarity = self._similarity(objects, candidates, intersections, classes)
        self._gate_moved_shapes(similarity, objects, candidates, moved)
        pairs = self._keep_cores(self._assign(similarity), similarity, objects, candidates)
        update.object_ids = [0] * len(observations)
        matched_objects = self._recover_split_objects(
            candidates, intersections, classes, pairs, [o.id in moved for o in objects]
        )
        sightings = []
        latest = self._latest_changes(candidates.voxels, observed)
        for row, col in pairs:
            if self._fuse(objects[row], candidates, col, stamp, update, latest[col]):
                sightings.append((objects[row], col))
        self._add_evidence(sightings, candidates, observed)
        self._handle_unmatched(
            objects, matched_objects, candidates, intersections, observed, update
        )
        self._create(candidates, objects, intersections, stamp, update)
        self._observed, self._counts, self._checksums = observed, counts, checksums
        self._mapped = mapped
        self.last_stamp, self.frame = stamp, frame
        object_ids = [0] * given
        for index, object_id in zip(usable, update.object_ids, strict=True):
            object_ids[index] = object_id
        update.object_ids = object_ids
        update.seconds = time.perf_counter() - start
        return update

    def query(
        self,
        class_ids: Collection[int] | None = None,
        region: tuple[np.ndarray, np.ndarray] | None = None,
        min_confidence: float = 0.0,
        object_id: int = 0,
    ) -> list[MapObject]:
        """Confirmed objects of these classes (None: any) whose centroid lies in the region
        (min corner, max corner) and whose confidence is >= min_confidence; object_id > 0 picks
        one (ValueError when no confirmed object has it)."""
        found = self.confirmed_objects()
        if object_id:
            found = [o for o in found if o.id == object_id]
            if not found:
                raise ValueError(f"no confirmed object with id {object_id}")
        if class_ids is not None:
            found = [o for o in found if o.class_id in set(class_ids)]
        if region is not None:
            lo, hi = (np.asarray(corner, np.float64) for corner in region)
            found = [o for o in found if np.all(o.centroid >= lo) and np.all(o.centroid <= hi)]
        return [o for o in found if o.confidence >= min_confidence]

    # ---- association ----------------------------------------------------------------------
    def _check_sequence(self, stamp: int, frame: str) -> None:
        if self.objects and self.frame is not None and frame != self.frame:
            raise ObjectMapError(f"map frame '{frame}' is not the object map's '{self.frame}'")
        if self.last_stamp is not None and stamp < self.last_stamp:
            raise ObjectMapError(
                f"stamp {stamp} is older than the previous map's {self.last_stamp}"
            )

    def _regrid(self) -> tuple[float, float] | None:
        """After a change of `config.voxel_size`: every object's evidence re-keyed onto the new
        grid from its stored points (a new voxel takes the most hits and looks of the old ones
        its points came from), and the previous map forgotten (its voxels were on the old
        grid). Returns (old, new) sizes, or None when the size is unchanged."""
        old_size, new_size = self._voxel_size, self.config.voxel_size
        if new_size == old_size:
            return None
        self._voxel_size = new_size
        if not self.objects and self.last_stamp is None:
            return None  # nothing stored yet
        for obj in self.objects.values():
            source = obj.evidence_point_voxel
            keys, inverse = np.unique(_raw_keys(obj.evidence_points, new_size), return_inverse=True)
            hits = np.zeros(len(keys), np.int64)
            looks = np.zeros(len(keys), np.int64)
            np.maximum.at(hits, inverse, obj.hits[source])
            np.maximum.at(looks, inverse, obj.looks[source])
            obj.evidence_keys, obj.hits, obj.looks = keys, hits, np.maximum(looks, hits)
            obj.evidence_point_voxel = inverse
            self._publish_geometry(obj)
        self._observed = np.zeros(0, np.int64)
        self._mapped = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)
        self._checksums = np.zeros(0, np.float64)
        self._changed_at = np.zeros(0, np.int64)
        return old_size, new_size

    def _coverage(
        self, map_xyz: np.ndarray, roi: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The voxels the whole map covers; those inside the region of interest (when given:
        what was segmented), with each one's point count and a checksum of its points. From an
        even sample of at most `coverage_points` points: a covered voxel holds several points,
        so a sample still finds it, and a large map costs no more than a room."""
        stride = max(1, -(-len(map_xyz) // self.config.coverage_points))
        sample = _as_points(map_xyz)[::stride]
        sample = sample[_finite_rows(sample)]
        all_keys = _raw_keys(sample, self.config.voxel_size)
        if roi is not None and len(sample):
            inside = np.asarray(roi.contains(sample), bool)
            sample, point_keys, mapped = sample[inside], all_keys[inside], np.unique(all_keys)
        else:
            point_keys, mapped = all_keys, None
        keys, inverse, counts = np.unique(point_keys, return_inverse=True, return_counts=True)
        sample = sample.astype(np.float64)  # no BLAS product (its threads spin, see above)
        mix = sample[:, 0] + 1.618034 * sample[:, 1] + 2.718282 * sample[:, 2]
        checksums = np.bincount(inverse, weights=mix, minlength=len(keys))
        return keys if mapped is None else mapped, keys, counts, checksums

    def _changes(self, keys: np.ndarray, counts: np.ndarray, checksums: np.ndarray) -> np.ndarray:
        """Per voxel of the new map: the update in which its content last changed (this one
        when it is new, or its point count or checksum differs from the previous map's)."""
        if not len(self._observed) or not len(keys):
            return np.full(len(keys), self._updates, np.int64)
        index = np.minimum(np.searchsorted(self._observed, keys), len(self._observed) - 1)
        same = (
            (self._observed[index] == keys)
            & (self._counts[index] == counts)
            & np.isclose(self._checksums[index], checksums, rtol=1e-9, atol=1e-6)
        )
        return np.where(same, self._changed_at[index], self._updates)

    def _new_evidence(self, voxels: np.ndarray, observed: np.ndarray, since: int) -> bool:
        """Whether the map's content in these voxels changed after update `since` (voxels the
        coverage sample did not hold: assumed changed)."""
        if not len(voxels) or not len(observed):
            return True
        index = np.minimum(np.searchsorted(observed, voxels), len(observed) - 1)
        present = observed[index] == voxels
        if not present.any():
            return True
        return bool(self._changed_at[index[present]].max() > since)

    def _latest_changes(self, groups: list[np.ndarray], observed: np.ndarray) -> np.ndarray:
        """Per (non-empty) group of voxels, in one pass: the latest update in which the map's
        content changed in them; this update when the coverage sample held none of them (as
        _new_evidence: then assumed changed)."""
        latest = np.full(len(groups), self._updates, np.int64)
        if not groups or not len(observed):
            return latest
        keys = np.concatenate(groups)
        index = np.minimum(np.searchsorted(observed, keys), len(observed) - 1)
        changed = np.where(observed[index] == keys, self._changed_at[index], -1)
        starts = np.cumsum([0, *(len(g) for g in groups[:-1])])
        found = np.maximum.reduceat(changed, starts)
        return np.where(found >= 0, found, latest)

    def _prepare(self, observations: list[Observation]) -> tuple[list[int], _Candidates]:
        """The observations with finite points (their indices, and them prepared: points,
        voxels, the voxels inside the previous map, boxes, class distributions), in one pass
        over all their points."""
        xyz, counts = _finite_groups([o.points for o in observations])
        usable = np.flatnonzero(counts).tolist()
        voxels, box_min, box_max, point_voxel = _group_voxels(
            xyz, counts[usable], self.config.voxel_size
        )
        if self.last_stamp is None or not voxels or not len(self._mapped):
            known, masks = voxels, [np.zeros(len(v), bool) for v in voxels]
        else:  # one search for all instances (two after a map with a region of interest)
            everything = np.concatenate(voxels)
            in_map = _split_like(_member(everything, self._mapped), voxels)
            known = [v[m] for v, m in zip(voxels, in_map, strict=True)]
            masks = (
                in_map
                if self._mapped is self._observed
                else _split_like(_member(everything, self._observed), voxels)
            )
        kept = [observations[k] for k in usable]
        probs = [_distribution(o.class_probs, o.class_id, self.num_classes) for o in kept]
        return usable, _Candidates(
            observations=kept,
            points=np.split(xyz, np.cumsum(counts[usable])[:-1]) if usable else [],
            voxels=voxels,
            known_voxels=known,
            known_mask=masks,
            point_voxel=point_voxel,
            box_min=box_min,
            box_max=box_max,
            probs=np.array(probs).reshape(-1, self.num_classes),
        )

    def _class_similarity(self, objects: list[MapObject], candidates: _Candidates) -> np.ndarray:
        """(O, K) Bhattacharyya coefficients of the class distributions, in [0, 1]."""
        if not objects:
            return np.zeros((0, len(candidates.observations)))
        evidence = np.array([o.class_evidence for o in objects])
        known = np.sqrt(evidence / evidence.sum(axis=1, keepdims=True))
        # einsum, not a BLAS product: multithreaded BLAS wakes threads that spin on the cores
        # the node needs (it made the whole update 2-4x slower on a busy 2-core machine).
        return np.einsum("oc,kc->ok", known, np.sqrt(candidates.probs))

    def _similarity(
        self,
        objects: list[MapObject],
        candidates: _Candidates,
        intersections: np.ndarray,
        classes: np.ndarray,
    ) -> np.ndarray:
        """(O, K) similarity (max of voxel and box IoU) times class similarity; 0 when gated.
        The voxel IoU is weighted: each voxel of an object's evidence counts at its support
        (hits / looks: the share of the views that could show it that held it), published or
        not, each voxel of the instance's known part at 1 (a weighted Jaccard index)."""
        if not objects or not candidates.observations:
            return np.zeros((len(objects), len(candidates.observations)))
        support = [o.hits / np.maximum(o.looks, 1) for o in objects]
        shared = _pair_intersections(
            [o.evidence_keys for o in objects],
            candidates.known_voxels,
            (len(objects), len(candidates.observations)),
            support,
        )
        sizes_o = np.array([float(w.sum()) for w in support])[:, None]
        sizes_k = np.array([len(v) for v in candidates.known_voxels])[None]
        union = sizes_o + sizes_k - shared
        voxel_iou = np.where(union > 0, shared / np.maximum(union, 1e-12), 0.0)
        box_iou = _box_iou(
            np.array([o.box_min for o in objects]),
            np.array([o.box_max for o in objects]),
            candidates.box_min,
            candidates.box_max,
        )
        overlap = np.maximum(voxel_iou, box_iou)
        passes = (overlap >= self.config.min_overlap) & (
            classes >= self.config.min_class_similarity
        )
        return np.where(passes, overlap * classes, 0.0)

    @staticmethod
    def _gate_moved_shapes(
        similarity: np.ndarray,
        objects: list[MapObject],
        candidates: _Candidates,
        moved: dict[int, np.ndarray],
    ) -> None:
        """An object the map moved away from in this update (a loop closure) sits where
        other objects may now stand: it matches only an instance of a like shape (box extent
        within _SHAPE_RATIO of its own on every axis), not a part of another object."""
        for row, obj in enumerate(objects):
            if obj.id not in moved or not similarity[row].any():
                continue
            own = np.maximum(obj.box_size, 1e-3)
            other = np.maximum(candidates.box_max - candidates.box_min, 1e-3)
            ratio = np.minimum(own, other) / np.maximum(own, other)
            similarity[row, ratio.min(axis=1) < _SHAPE_RATIO] = 0.0

    @staticmethod
    def _assign(similarity: np.ndarray) -> list[tuple[int, int]]:
        """Optimal one-to-one pairs (object row, observation column) among the gated ones:
        the most total similarity (max-weight matching), a gated pair worth nothing. Not the
        most pairs first: that would give a well-matched object a poor partner so that a
        second object gets its instance (an id swap)."""
        if not similarity.size:
            return []
        rows, cols = linear_sum_assignment(similarity, maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if similarity[r, c] > 0]

    def _keep_cores(
        self,
        pairs: list[tuple[int, int]],
        similarity: np.ndarray,
        objects: list[MapObject],
        candidates: _Candidates,
    ) -> list[tuple[int, int]]:
        """An object seen split into parts keeps its id on the part holding its core: among
        its matched instance and the unmatched ones it passes the gate with, each lying mostly
        (`part_containment`) inside its evidence voxels and holding at least `min_overlap` of
        its hits, the one whose voxels its views held most often (the most hits per voxel).
        The matched one on a tie. The part best by IoU may be mostly a region seen once (an
        under-segmented view whose newly revealed part was published at once)."""
        taken = {col for _, col in pairs}
        kept = []
        for row, col in pairs:
            obj = objects[row]
            others = [c for c in np.flatnonzero(similarity[row] > 0).tolist() if c not in taken]
            if others and len(obj.evidence_keys):
                best, best_core = col, self._core(obj, candidates.known_voxels[col])
                if best_core is not None:
                    for other in others:
                        core = self._core(obj, candidates.known_voxels[other])
                        if core is not None and core > best_core:
                            best, best_core = other, core
                if best != col:
                    taken.discard(col)
                    taken.add(best)
                    col = best
            kept.append((row, col))
        return kept

    def _core(self, obj: MapObject, known: np.ndarray) -> float | None:
        """The mean hits of an instance's known voxels when it is a part of the object (see
        _keep_cores), else None."""
        inside = _member(known, obj.evidence_keys)
        if not len(known) or inside.mean() < self.config.part_containment:
            return None
        hits = obj.hits[np.searchsorted(obj.evidence_keys, known[inside])]
        if hits.sum() < self.config.min_overlap * obj.hits.sum():
            return None
        return float(hits.mean())

    def _containment(self, intersections: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        return intersections / np.maximum(sizes, 1)

    def _recover_split_objects(
        self,
        candidates: _Candidates,
        intersections: np.ndarray,
        classes: np.ndarray,
        pairs: list[tuple[int, int]],
        moved: list[bool],
    ) -> set[int]:
        """An object that fell apart into parts none of which passed the gate keeps its id on
        its largest class-compatible part lying mostly inside it: the whole part, not only its
        voxels inside the previous map (an instance mostly where the map held nothing before
        is no part of an object it touches, e.g. one a loop closure moved into the object's
        old place). Adds to `pairs`; returns the rows now matched."""
        matched_rows = {r for r, _ in pairs}
        free = np.ones(len(candidates.observations), bool)
        free[[c for _, c in pairs]] = False
        part_sizes = np.array([len(v) for v in candidates.known_voxels])
        parts_of = (
            (self._containment(intersections, part_sizes[None]) >= self.config.part_containment)
            & (classes >= self.config.min_class_similarity)
            & (intersections > 0)
        )
        for row in np.flatnonzero(parts_of.any(axis=1)):
            if row in matched_rows or moved[row] or not (parts_of[row] & free).any():
                continue
            best = int(np.argmax(np.where(parts_of[row] & free, intersections[row], -1)))
            pairs.append((int(row), best))
            matched_rows.add(int(row))
            free[best] = False
        return matched_rows

    def _fuse(
        self,
        obj: MapObject,
        candidates: _Candidates,
        col: int,
        stamp: int,
        update: ObjectUpdate,
        latest_change: int,
    ) -> bool:
        """The object keeps its id on this observation; a sighting (evidence fused, counted
        towards confirmation) only when the map changed in the instance's voxels since the
        object's last counted sighting or miss: a map republished unchanged, segmented again,
        is no new evidence. Returns whether it was a sighting."""
        observation = candidates.observations[col]
        update.object_ids[col] = obj.id
        obj.instance_id, obj.merged_into, obj.last_seen = observation.instance_id, 0, stamp
        if latest_change <= obj.evidence_update:
            return False
        obj.evidence_update = self._updates
        obj.class_evidence += observation.score * candidates.probs[col] + 1e-9
        obj.score_sum += observation.score
        obj.num_observations += 1
        obj.num_misses = 0
        if not obj.confirmed and obj.num_observations >= self.config.confirm_after:
            obj.confirmed = True
            update.confirmed.append(obj.id)
        return True

    def _add_evidence(
        self,
        fused: list[tuple[MapObject, int]],
        candidates: _Candidates,
        observed: np.ndarray,
    ) -> None:
        """Each matched object's view (an observation column) into its per-voxel evidence,
        then its published geometry. A voxel the object held before gets a look when the new
        map could show it (the map covers its x-y column: a cropped or windowed-out part, or
        one outside the region of interest, is not held against it) and a hit when the view
        holds it. A voxel new to the object starts with one hit and one look, plus a look when
        the previous map already covered it (it was there to see and was not part of the
        object: an under-segmented view); a part a growing map reveals starts at full
        support."""
        if not fused:
            return
        # Batches of objects whose (object, voxel) codes fit in int64 (one batch on any real
        # map: an object's codes span its x extent in voxels times 2^42).
        ends = [(o.evidence_keys, candidates.voxels[c]) for o, c in fused]  # sorted keys
        first = np.array([min(k[0], v[0]) if len(k) else v[0] for k, v in ends], np.int64)
        last = np.array([max(k[-1], v[-1]) if len(k) else v[-1] for k, v in ends], np.int64)
        batches: list[list[int]] = [[]]
        total = 0
        for k, span in enumerate((int(b) - int(a) + 1 for a, b in zip(first, last, strict=True))):
            if batches[-1] and total + span > _CODE_LIMIT:
                batches.append([])
                total = 0
            batches[-1].append(k)
            total += span
        for members in batches:
            offsets = np.concatenate([[0], np.cumsum(last[members] - first[members] + 1)[:-1]])
            self._merge_evidence(
                [fused[m] for m in members], candidates, observed, first[members], offsets
            )

    def _merge_evidence(
        self,
        fused: list[tuple[MapObject, int]],
        candidates: _Candidates,
        observed: np.ndarray,
        lows: np.ndarray,
        offsets: np.ndarray,
    ) -> None:
        """_add_evidence for a batch of objects in one pass: each (object, voxel) pair is one
        int64 code (the key minus the object's lowest key, plus the object's offset), sorted by
        object, then key, so that every search runs on sorted queries."""
        objs = [obj for obj, _ in fused]
        cols = [col for _, col in fused]
        num = len(objs)
        ids = np.arange(num)
        old_count = np.array([len(o.evidence_keys) for o in objs])
        new_count = np.array([len(candidates.voxels[c]) for c in cols])
        old_owner, new_owner = np.repeat(ids, old_count), np.repeat(ids, new_count)
        old_keys = np.concatenate([o.evidence_keys for o in objs])
        new_keys = np.concatenate([candidates.voxels[c] for c in cols])
        old_code = (old_keys - lows[old_owner]) + offsets[old_owner]
        new_code = (new_keys - lows[new_owner]) + offsets[new_owner]
        column_seen = _member(old_keys >> _KEY_BITS, observed >> _KEY_BITS)
        position = np.searchsorted(old_code, new_code)
        index = np.minimum(position, max(len(old_code) - 1, 0))
        if len(old_code):
            was_held = old_code[index] == new_code
        else:
            was_held, column_seen = np.zeros(len(new_code), bool), np.zeros(1, bool)
        added = ~was_held
        inserted_at = position[added]  # non-decreasing: the new codes are sorted
        keys = np.insert(old_keys, inserted_at, new_keys[added])
        voxel_owner = np.insert(old_owner, inserted_at, new_owner[added])
        # Where the old and the new voxels land in the merged arrays.
        at_old = (
            np.arange(len(old_code))
            + np.cumsum(np.bincount(inserted_at, minlength=len(old_code) + 1))[: len(old_code)]
        )
        at_new = np.empty(len(new_code), np.int64)
        at_new[added] = inserted_at + np.arange(len(inserted_at))
        at_new[was_held] = at_old[index[was_held]]
        hits = np.zeros(len(keys), np.int64)
        looks = np.zeros(len(keys), np.int64)
        hits[at_old] = np.concatenate([o.hits for o in objs])
        looks[at_old] = np.concatenate([o.looks for o in objs]) + column_seen[: len(old_code)]
        known = np.concatenate([candidates.known_mask[c] for c in cols])
        looks[at_new] = np.where(was_held, looks[at_new] + ~column_seen[index], 1 + known)
        hits[at_new] += 1
        voxel_count = np.bincount(voxel_owner, minlength=num)
        voxel_start = np.cumsum(voxel_count) - voxel_count
        # Points: an object's older points in the voxels this view holds give way to the view's.
        in_view = np.zeros(len(keys), bool)
        in_view[at_new] = True
        old_point_owner = np.repeat(ids, [len(o.evidence_points) for o in objs])
        old_point_at = at_old[
            (np.cumsum(old_count) - old_count)[old_point_owner]
            + np.concatenate([o.evidence_point_voxel for o in objs])
        ]
        kept = ~in_view[old_point_at]
        new_points = [candidates.points[c] for c in cols]
        new_point_owner = np.repeat(ids, [len(p) for p in new_points])
        new_point_at = at_new[
            (np.cumsum(new_count) - new_count)[new_point_owner]
            + np.concatenate([candidates.point_voxel[c] for c in cols])
        ]
        kept_at = np.flatnonzero(kept)
        owners = np.concatenate([old_point_owner[kept_at], new_point_owner])
        order = np.argsort(owners, kind="stable")  # per object: its kept points, then the new
        owners = owners[order]
        source = np.concatenate([kept_at, len(kept) + np.arange(len(new_point_owner))])[order]
        all_points = np.concatenate([*(o.evidence_points for o in objs), *new_points])
        point_at = np.concatenate([old_point_at, new_point_at])[source]
        is_new = source >= len(kept)
        point_count = np.bincount(owners, minlength=num)
        # Publication: the voxels with enough support and their points; an object none of
        # whose voxels has support publishes the newest view (its points all just came in).
        supported = hits >= self.config.voxel_support * looks - 1e-9
        supported_count = np.bincount(voxel_owner[supported], minlength=num)
        any_supported = supported_count > 0
        shown = np.where(any_supported[owners], supported[point_at], is_new)
        points = np.take(all_points, source, axis=0)
        if shown.all():
            shown_count, shown_points = point_count, points
        else:
            shown_count = np.bincount(owners[shown], minlength=num)
            shown_points = np.take(points, np.flatnonzero(shown), axis=0)
        starts = np.cumsum(shown_count) - shown_count
        box_min = np.minimum.reduceat(shown_points, starts).astype(np.float64)
        box_max = np.maximum.reduceat(shown_points, starts).astype(np.float64)
        published = _split_counts(keys[supported], supported_count)
        parts = zip(
            objs,
            cols,
            _split_counts(keys, voxel_count),
            _split_counts(hits, voxel_count),
            _split_counts(looks, voxel_count),
            _split_counts(points, point_count),
            _split_counts(point_at - voxel_start[owners], point_count),
            _split_counts(shown_points, shown_count),
            published,
            strict=True,
        )
        for k, (
            obj,
            col,
            obj_keys,
            obj_hits,
            obj_looks,
            pts,
            voxel_of,
            shown_pts,
            pub,
        ) in enumerate(parts):
            # Copies: a view would keep this update's arrays alive as long as any object.
            obj.evidence_keys, obj.hits, obj.looks = (
                obj_keys.copy(),
                obj_hits.copy(),
                obj_looks.copy(),
            )
            obj.evidence_points, obj.evidence_point_voxel = pts.copy(), voxel_of.copy()
            if not any_supported[k]:
                obj.voxels = candidates.voxels[col]
            else:
                obj.voxels = obj.evidence_keys if len(pub) == len(obj_keys) else pub.copy()
            obj.points = obj.evidence_points if len(shown_pts) == len(pts) else shown_pts.copy()
            obj.box_min, obj.box_max = box_min[k], box_max[k]

    def _publish_geometry(self, obj: MapObject) -> None:
        """(After a re-grid or a move.) The voxels with enough support, their points, their
        box; every voxel when none has."""
        supported = obj.hits >= self.config.voxel_support * obj.looks - 1e-9
        if not supported.any():
            supported[:] = True
        obj.voxels = obj.evidence_keys[supported]
        obj.points = obj.evidence_points[supported[obj.evidence_point_voxel]]
        obj.box_min = obj.points.min(axis=0).astype(np.float64)
        obj.box_max = obj.points.max(axis=0).astype(np.float64)

    def _handle_unmatched(
        self,
        objects: list[MapObject],
        matched_rows: set[int],
        candidates: _Candidates,
        intersections: np.ndarray,
        observed: np.ndarray,
        update: ObjectUpdate,
    ) -> None:
        """Merged-away objects and objects whose region was re-observed count a miss; objects
        outside the new map are kept as they are; ghosts (the map's points moved away from
        them) are retired."""
        sizes = np.array([len(o.voxels) for o in objects])
        covered = self._containment(intersections, sizes[:, None])
        for row, obj in enumerate(objects):
            if row in matched_rows or obj.id not in self.objects:  # matched, or a ghost
                continue
            obj.instance_id = 0
            if not self._inside_roi(obj):
                continue  # not segmented this time: no evidence either way
            absorber = self._absorbing_object(row, covered, update)
            if absorber:
                obj.merged_into = absorber
                update.merged[obj.id] = absorber
            elif not self._region_observed(obj, observed):
                if self._vacated(obj, observed):  # the map no longer holds it (a ghost)
                    del self.objects[obj.id]
                    update.retired.append(obj.id)
                continue
            if not self._new_evidence(obj.voxels, observed, obj.evidence_update):
                continue  # its region unchanged: the same map again is no new evidence
            obj.evidence_update = self._updates
            obj.num_misses += 1
            obj.total_misses += 1
            if obj.num_misses >= self.config.retire_after:
                del self.objects[obj.id]
                update.retired.append(obj.id)

    def _absorbing_object(self, row: int, covered: np.ndarray, update: ObjectUpdate) -> int:
        """The id of the matched object whose instance holds most of this object, or 0."""
        if not covered.shape[1]:
            return 0
        col = int(np.argmax(covered[row]))
        if covered[row, col] < self.config.part_containment:
            return 0
        return update.object_ids[col]

    def _inside_roi(self, obj: MapObject) -> bool:
        """Whether the region of interest (when one was given) holds most of the object."""
        if self._roi is None or not len(obj.points):
            return True
        inside = np.asarray(self._roi.contains(obj.points), bool).mean()
        return bool(inside >= self.config.observed_fraction)

    def _moved_away(self, mapped: np.ndarray) -> dict[int, np.ndarray]:
        """Per object with such voxels: which of its evidence voxels the map's points moved
        away from in this update (a loop closure corrected the map). Such a voxel held points
        in the previous map and now neither it nor its 26 neighbours hold any (pose noise moves
        a thin object's points into the next voxel, not further), and at least as many voxels
        new to the map appeared within _MOVED_M (x-y) of the object's emptied voxels: the
        points moved, not removed. The whole map counts, segmented or not. A crop or a map
        window removes points without adding any next to them: nothing is moved away there."""
        objects = [o for o in self.objects.values() if len(o.evidence_keys)]
        if not objects or not len(self._mapped) or not len(mapped):
            return {}
        keys = np.concatenate([o.evidence_keys for o in objects])
        emptied = _member(keys, self._mapped)
        emptied[emptied] = ~_member(keys[emptied], mapped)
        for step in _NEIGHBOURS:
            if not emptied.any():
                return {}
            emptied[emptied] = ~_member(keys[emptied] + step, mapped)
        appeared = _cells(mapped[~_member(mapped, self._mapped)])
        reach = max(1, int(np.ceil(_MOVED_M / self.config.voxel_size - 1e-9)))
        moved = {}
        parts = _split_like(emptied, [o.evidence_keys for o in objects])
        for obj, gone in zip(objects, parts, strict=True):
            count = int(gone.sum())
            if not count:
                continue
            x, y = _cells(obj.evidence_keys[gone])
            near = (
                (appeared[0] >= x.min() - reach)
                & (appeared[0] <= x.max() + reach)
                & (appeared[1] >= y.min() - reach)
                & (appeared[1] <= y.max() + reach)
            )
            if int(near.sum()) >= count:
                moved[obj.id] = gone
        return moved

    def _drop_moved_away(self, moved: dict[int, np.ndarray], update: ObjectUpdate) -> None:
        """Before association: an object most of whose published voxels (`observed_fraction`)
        the map moved away from is a ghost: retired, wherever the region of interest is (else
        another object that now stands in its old place would take its id). Any other object
        forgets its moved-away voxels' evidence."""
        for object_id, gone in moved.items():
            obj = self.objects[object_id]
            shown = _member(obj.voxels, obj.evidence_keys[gone])
            keep = ~gone
            point_kept = keep[obj.evidence_point_voxel]
            if shown.mean() >= self.config.observed_fraction or not point_kept.any():
                del self.objects[object_id]
                update.retired.append(object_id)
                continue
            obj.evidence_keys, obj.hits, obj.looks = (
                obj.evidence_keys[keep],
                obj.hits[keep],
                obj.looks[keep],
            )
            obj.evidence_points = obj.evidence_points[point_kept]
            obj.evidence_point_voxel = (np.cumsum(keep) - 1)[obj.evidence_point_voxel[point_kept]]
            self._publish_geometry(obj)

    def _vacated(self, obj: MapObject, observed: np.ndarray) -> bool:
        """An object whose region the map does not cover although the map surrounds it: on
        each of the four x-y sides, within _SURROUND_M, some column of the map holds points.
        The map moved away from it (a loop closure) or lost it: the map no longer holds the
        object. A crop, a window or a region of interest leaves at least one side empty (the
        side facing away from the map), so an object outside is kept."""
        if not len(obj.voxels) or not len(observed):
            return False
        offset = 1 << (_KEY_BITS - 1)
        cx = (obj.voxels >> (2 * _KEY_BITS)) - offset
        cy = ((obj.voxels >> _KEY_BITS) & ((1 << _KEY_BITS) - 1)) - offset
        x0, x1, y0, y1 = int(cx.min()), int(cx.max()), int(cy.min()), int(cy.max())
        reach = max(1, int(np.ceil(_SURROUND_M / self.config.voxel_size - 1e-9)))
        columns = observed >> _KEY_BITS  # sorted: keys are x-major, then y, then z

        def held(xs: range, y_lo: int, y_hi: int) -> bool:
            """Whether the map holds a column with x in xs and y in y_lo..y_hi."""
            x = np.arange(xs.start, xs.stop, dtype=np.int64) + offset
            lo = (x << _KEY_BITS) | (y_lo + offset)
            hi = (x << _KEY_BITS) | (y_hi + offset)
            return bool(
                (np.searchsorted(columns, hi, "right") > np.searchsorted(columns, lo)).any()
            )

        return (
            held(range(x0 - reach, x0), y0, y1)
            and held(range(x1 + 1, x1 + reach + 1), y0, y1)
            and held(range(x0, x1 + 1), y0 - reach, y0 - 1)
            and held(range(x0, x1 + 1), y1 + 1, y1 + reach)
        )

    def _region_observed(self, obj: MapObject, observed: np.ndarray) -> bool:
        if not len(obj.voxels):
            return True
        seen = _member(obj.voxels, observed).mean()
        return bool(seen >= self.config.observed_fraction)

    def _create(
        self,
        candidates: _Candidates,
        objects: list[MapObject],
        intersections: np.ndarray,
        stamp: int,
        update: ObjectUpdate,
    ) -> None:
        """Unmatched instances become new (tentative) objects; a part of a known object is
        recorded as split from it."""
        part_sizes = np.array([len(v) for v in candidates.known_voxels])
        inside = self._containment(intersections, part_sizes[None])
        for col, observation in enumerate(candidates.observations):
            if update.object_ids[col]:
                continue
            obj = MapObject(
                id=self._next_id,
                class_evidence=observation.score * candidates.probs[col] + 1e-9,
                score_sum=observation.score,
                num_observations=1,
                first_seen=stamp,
                last_seen=stamp,
                points=candidates.points[col],
                voxels=candidates.voxels[col],
                box_min=candidates.box_min[col],
                box_max=candidates.box_max[col],
                confirmed=self.config.confirm_after <= 1,
                instance_id=observation.instance_id,
                evidence_update=self._updates,
            )
            obj.evidence_keys = candidates.voxels[col]
            obj.hits = obj.looks = np.ones(len(obj.evidence_keys), np.int64)
            obj.evidence_points = candidates.points[col]
            obj.evidence_point_voxel = candidates.point_voxel[col]
            if objects and part_sizes[col] and inside[:, col].max() >= self.config.part_containment:
                obj.split_from = objects[int(np.argmax(inside[:, col]))].id
                update.split[obj.id] = obj.split_from
            self._next_id += 1
            self.objects[obj.id] = obj
            update.object_ids[col] = obj.id
            update.created.append(obj.id)
            if obj.confirmed:
                update.confirmed.append(obj.id)
