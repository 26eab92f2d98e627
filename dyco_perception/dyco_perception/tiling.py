"""Maps bigger than one room: overlapping blocks, instances merged across block borders, and
an optional region of interest (ROS-free; numpy + scipy).

A map is cut in x-y into a grid of block cores anchored at its min corner (like the voxel
grid), at most `block_size` metres a side and evenly sized, so no thin strip is left over. The
model sees each core with `overlap` metres of context on every side. A block whose context holds
more than `max_block_points` is split in four (down to `min_block_size`), so the work per
block, and with it memory, stays bounded whatever the map size.

Each point takes its labels from the one block whose core holds it; where that block labelled a
point with an object's class but dropped its piece of the object (size, score), the instance of
that class another block's context has there fills it. Two instances of different
blocks are the same object when, counted only over the points both blocks saw, they share more
than `merge_overlap` of the smaller one (not IoU: a block that sees only the edge of an object
often cuts it in pieces, and each piece must still join the other block's whole). Pairs join in
order of falling overlap, never putting two instances of one block in one group (a block that
separated two objects is not overruled by one that under-segments them). The joined
instance keeps the class and score of its largest part. So an object cut by a border comes out
as one instance, and the instance cap (`inference.max_instances`) applies per block: the map's
total grows with the map.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dyco_perception.columns import column_max, column_min
from dyco_perception.validation import build_config, ranged

log = logging.getLogger(__name__)

_SEEN_WHOLE = 0.9  # a block saw an instance whole when its context held this share of it


@dataclass
class TilingConfig:
    enabled: bool = True
    block_size: float = ranged(16.0, 0.5, 10_000.0, "largest block core edge in x-y (m)")
    overlap: float = ranged(1.0, 0.0, 100.0, "context (m) the model sees around each core")
    max_block_points: int = ranged(
        500_000, 1_000, 100_000_000, "a block whose context has more points is split in four"
    )
    min_block_size: float = ranged(1.0, 0.1, 10_000.0, "cores are not split below this (m)")
    merge_overlap: float = ranged(
        0.5, 0.0, 1.0, "share of the smaller of two parts both blocks saw above which they join"
    )
    workers: int = ranged(
        1, 1, 1024, "blocks run side by side on this many CPU threads, one torch thread each"
    )

    @classmethod
    def from_dict(cls, data: dict) -> TilingConfig:
        """Validated config (ValueError naming the key on unknown keys, types or ranges)."""
        return build_config(cls, data, "tiling.")._check_consistency()

    def validate(self) -> TilingConfig:
        return TilingConfig.from_dict(dataclasses.asdict(self))

    def _check_consistency(self) -> TilingConfig:
        if self.min_block_size > self.block_size:
            raise ValueError(
                f"tiling.min_block_size={self.min_block_size} exceeds "
                f"tiling.block_size={self.block_size}"
            )
        return self


@dataclass(frozen=True)
class RegionOfInterest:
    """The part of the map to segment, in the cloud's frame: an axis-aligned box
    (`RegionOfInterest.box`) or a radius around a point in x-y, any height
    (`RegionOfInterest.around`, e.g. the robot's position)."""

    box_min: tuple[float, float, float] | None = None
    box_max: tuple[float, float, float] | None = None
    center: tuple[float, float] | None = None
    radius: float | None = None

    @classmethod
    def box(cls, box_min: Sequence[float], box_max: Sequence[float]) -> RegionOfInterest:
        lo, hi = _finite_vector("box_min", box_min, 3), _finite_vector("box_max", box_max, 3)
        if any(a > b for a, b in zip(lo, hi, strict=True)):
            raise ValueError(f"ROI box_min {lo} must not exceed box_max {hi} on any axis")
        return cls(box_min=lo, box_max=hi)

    @classmethod
    def around(cls, center: Sequence[float], radius: float) -> RegionOfInterest:
        if not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"ROI radius must be a positive finite number, got {radius!r}")
        return cls(center=_finite_vector("center", center, 2), radius=float(radius))

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        """(N,) bool: rows of xyz (N,3) inside the region (borders included)."""
        if self.radius is not None:
            offset = xyz[:, :2].astype(np.float64) - np.asarray(self.center)
            return np.einsum("ij,ij->i", offset, offset) <= self.radius**2
        return np.all((xyz >= self.box_min) & (xyz <= self.box_max), axis=1)


def _finite_vector(name: str, values: Sequence[float], size: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != size or not all(math.isfinite(v) for v in values):
        raise ValueError(f"ROI {name} must be {size} finite numbers, got {list(values)}")
    return values


@dataclass
class Block:
    core: np.ndarray  # (n,) int64 sorted rows whose labels come from this block
    context: np.ndarray  # (m,) int64 sorted rows the model sees: the core and its surroundings


class _XIndex:
    """Rows sorted by x, so the rows inside an x-y box are one searchsorted and a filter over
    a contiguous slice."""

    def __init__(self, xy: np.ndarray):
        self.xy = xy
        self.order = np.argsort(xy[:, 0], kind="stable")
        # float64 copies: searchsorted with a float64 bound would convert a float32 array on
        # every call.
        self.x = xy[self.order, 0].astype(np.float64)
        self.y = xy[self.order, 1].astype(np.float64)

    def within(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        start = np.searchsorted(self.x, lo[0], side="left")
        stop = np.searchsorted(self.x, hi[0], side="right")
        y = self.y[start:stop]
        return np.sort(self.order[start:stop][(y >= lo[1]) & (y <= hi[1])])


def plan_blocks(xy: np.ndarray, cfg: TilingConfig) -> list[Block]:
    """Blocks whose cores hold every row of xy (N,2) exactly once. One block when tiling is
    off or the map fits."""
    everything = np.arange(xy.shape[0], dtype=np.int64)
    if not cfg.enabled or xy.shape[0] == 0:
        return [Block(everything, everything)]
    origin = column_min(xy).astype(np.float64)
    extent = column_max(xy) - origin
    if xy.shape[0] <= cfg.max_block_points and bool(np.all(extent <= cfg.block_size)):
        return [Block(everything, everything)]  # what the general path gives, without its sorts
    cells = np.maximum(np.ceil(extent / cfg.block_size), 1).astype(np.int64)
    size = np.maximum(extent / cells, 1e-9)
    grid = _Grid(origin, size, cells, cfg.overlap)
    cell = grid.cell_of(xy)
    cores = _rows_by_key(cell[:, 0] * cells[1] + cell[:, 1])
    contexts = dict(zip(*grid.contexts(xy, cell), strict=True))
    index = None  # built only when a block must be split
    blocks = []
    for k, core in zip(*cores, strict=True):
        if contexts[k].size <= cfg.max_block_points:
            blocks.append(Block(core, contexts[k]))
            continue
        index = index or _XIndex(xy)
        blocks += _split(core, grid.corner(k), size, index, cfg)
    return blocks


@dataclass
class _Grid:
    """The block cores' grid: cell (i, j) spans origin + (i, j) * size, `overlap` around it
    is its context."""

    origin: np.ndarray  # (2,) float64
    size: np.ndarray  # (2,) float64
    cells: np.ndarray  # (2,) int64
    overlap: float

    def cell_of(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) int64 cell of each row (the last cell holds the far border)."""
        return np.stack([self._cell_on(xy[:, a], a) for a in (0, 1)], axis=1)

    def _cell_on(self, x: np.ndarray, axis: int) -> np.ndarray:
        # One contiguous axis at a time: numpy is slow over a trailing dimension of 2.
        cell = np.floor((x.astype(np.float64) - self.origin[axis]) / self.size[axis])
        return np.minimum(cell.astype(np.int64), self.cells[axis] - 1)

    def corner(self, key: int) -> np.ndarray:
        return self.origin + np.array([key // self.cells[1], key % self.cells[1]]) * self.size

    def contexts(self, xy: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """(keys, sorted rows of each key's context): every row within `overlap` of the cell,
        borders included, and the cell's own rows. O(N): each row tests only the cells
        within reach of its own, never a sort over the map."""
        # A cell further than overlap / size away is out of reach; the + 1 covers rounding.
        reach = int(np.floor(self.overlap / self.size.min())) + 1
        steps = np.arange(-reach, reach + 1)
        near = [[self._inside(xy[:, a], cell[:, a], d, a) for d in steps] for a in (0, 1)]
        member = np.empty((xy.shape[0], steps.size**2), dtype=bool)
        for i, j in np.ndindex(steps.size, steps.size):
            np.logical_and(near[0][i], near[1][j], out=member[:, i * steps.size + j])
        rows, combo = np.nonzero(member)  # rows ascending
        cx = cell[:, 0][rows] + steps[combo // steps.size]
        key = cx * self.cells[1] + cell[:, 1][rows] + steps[combo % steps.size]
        keys, parts = _rows_by_key(key)
        return keys, [rows[part] for part in parts]

    def _inside(self, x: np.ndarray, cell: np.ndarray, step: int, axis: int) -> np.ndarray:
        """(N,) bool: x lies in the context of the cell `step` away on `axis`."""
        if step == 0:
            return np.ones(x.shape[0], dtype=bool)  # its own cell's, whatever rounding
        neighbour = cell + step
        lo = self.origin[axis] + neighbour * self.size[axis]
        x = x.astype(np.float64)
        inside = (x >= lo - self.overlap) & (x <= lo + self.size[axis] + self.overlap)
        return inside & (neighbour >= 0) & (neighbour < self.cells[axis])


def _rows_by_key(key: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(distinct keys, for each the positions holding it in ascending order): one stable sort,
    a radix sort when the keys fit 16 bits."""
    if key.size == 0:
        return key, []
    small = key.min() >= 0 and key.max() < 2**15
    order = np.argsort(key.astype(np.int16) if small else key, kind="stable")
    sorted_key = key[order]
    starts = np.concatenate([[0], np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1])
    return sorted_key[starts], np.split(order, starts[1:])


def _split(
    core: np.ndarray, lo: np.ndarray, size: np.ndarray, index: _XIndex, cfg: TilingConfig
) -> list[Block]:
    """The block of `core` (cell lo..lo+size), split in four while its context is too big."""
    context = index.within(lo - cfg.overlap, lo + size + cfg.overlap)
    context = np.union1d(context, core)  # rounding at a cell edge must not lose a core row
    if context.size <= cfg.max_block_points:
        return [Block(core, context)]
    if size.max() / 2 < cfg.min_block_size:
        log.warning(
            "a %.1f x %.1f m block still holds %d points (tiling.max_block_points=%d) at "
            "tiling.min_block_size=%.2f m",
            *size,
            context.size,
            cfg.max_block_points,
            cfg.min_block_size,
        )
        return [Block(core, context)]
    half = size / 2
    quadrant = (index.xy[core] - lo >= half).astype(np.int64) @ np.array([2, 1])
    blocks = []
    for q in range(4):
        part = core[quadrant == q]
        if part.size:
            blocks += _split(part, lo + np.array([q // 2, q % 2]) * half, half, index, cfg)
    return blocks


@dataclass
class MergedInstances:
    """Per point and per instance results of the whole map; instances by descending score."""

    semantic: np.ndarray  # (N,) int64
    instance: np.ndarray  # (N,) int32 1..K, 0 = none
    score: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (K,) int64
    instance_score: np.ndarray  # (K,) float32
    class_probs: np.ndarray  # (K, C) float32

    def rescored(self, factor: np.ndarray) -> MergedInstances:
        """The instances with their scores times `factor` (K,), ids 1..K again by descending
        score."""
        new_score = (self.instance_score * factor).astype(np.float32)
        order = np.argsort(-new_score, kind="stable")
        new_id = np.zeros(order.size + 1, dtype=np.int32)  # entry 0: no instance
        new_id[order + 1] = np.arange(1, order.size + 1, dtype=np.int32)
        instance = new_id[self.instance]
        instance_score = new_score[order]
        return MergedInstances(
            semantic=self.semantic,
            instance=instance,
            score=np.concatenate([[0.0], instance_score]).astype(np.float32)[instance],
            class_id=self.class_id[order],
            instance_score=instance_score,
            class_probs=self.class_probs[order],
        )


class BlockMerger:
    """Collects each block's labels (`add`), then joins instances across borders (`finish`).

    Keeps per block only the instance id of each context row: memory is O(map points)."""

    def __init__(self, num_points: int, num_classes: int):
        self.semantic = np.full(num_points, -1, dtype=np.int64)
        self.core_instance = np.full(num_points, -1, dtype=np.int64)  # global instance id
        self.contexts: list[np.ndarray] = []
        self.context_instances: list[np.ndarray] = []
        self.class_ids: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.class_probs: list[np.ndarray] = [np.zeros((0, num_classes), np.float32)]
        self.num_instances = 0

    def add(
        self,
        block: Block,
        semantic: np.ndarray,
        instance: np.ndarray,
        class_id: np.ndarray,
        score: np.ndarray,
        class_probs: np.ndarray,
    ) -> None:
        """One block's results over its context rows: semantic (m,), instance (m,) 1..k / 0,
        and per instance class_id (k,), score (k,), class_probs (k, C)."""
        global_id = np.where(instance > 0, instance.astype(np.int64) - 1 + self.num_instances, -1)
        in_core = np.searchsorted(block.context, block.core)
        self.semantic[block.core] = semantic[in_core]
        self.core_instance[block.core] = global_id[in_core]
        self.contexts.append(block.context)
        self.context_instances.append(global_id)
        self.class_ids.append(class_id)
        self.scores.append(score)
        self.class_probs.append(class_probs)
        self.num_instances += len(class_id)

    def finish(self, merge_overlap: float, min_points: int) -> MergedInstances:
        """The map's instances: joined groups with at least min_points core points, each
        described by its largest part, ids 1..K by descending score."""
        group = self._join_across_borders(merge_overlap)
        num_groups = int(group.max(initial=-1)) + 1
        scores = np.concatenate([np.zeros(0, np.float32), *self.scores])
        core_instance = self._filled_core_instances(scores)
        owned = core_instance >= 0
        point_group = np.full(core_instance.size, -1, dtype=np.int64)
        point_group[owned] = group[core_instance[owned]]
        points_of = np.bincount(core_instance[owned], minlength=self.num_instances)
        representative = _largest_member(group, points_of)
        group_size = np.bincount(point_group[owned], minlength=num_groups)
        groups = np.flatnonzero((representative >= 0) & (group_size >= min_points))
        groups = groups[np.argsort(-scores[representative[groups]], kind="stable")]
        chosen = representative[groups]
        new_id = np.zeros(num_groups + 1, dtype=np.int32)  # last entry: no group (-1)
        new_id[groups] = np.arange(1, groups.size + 1, dtype=np.int32)
        instance = new_id[point_group]
        instance_score = scores[chosen].astype(np.float32)
        return MergedInstances(
            semantic=self.semantic,
            instance=instance,
            score=np.concatenate([[0.0], instance_score]).astype(np.float32)[instance],
            class_id=np.concatenate([np.zeros(0, np.int64), *self.class_ids])[chosen],
            instance_score=instance_score,
            class_probs=np.concatenate(self.class_probs)[chosen].astype(np.float32),
        )

    def _filled_core_instances(self, scores: np.ndarray) -> np.ndarray:
        """Each point's instance from its own block; where that block gave it none although it
        labelled it with the class of an instance another block's context has there (the own
        block dropped its piece of the object: too small, too low a score), that instance
        (the highest-scoring one when several cover it)."""
        core_instance = self.core_instance.copy()
        if len(self.contexts) < 2 or self.num_instances == 0:
            return core_instance
        point = np.concatenate(self.contexts)
        instance = np.concatenate(self.context_instances)
        class_of = np.concatenate([np.zeros(0, np.int64), *self.class_ids])
        covers = instance >= 0
        point, instance = point[covers], instance[covers]
        fill = (core_instance[point] < 0) & (class_of[instance] == self.semantic[point])
        point, instance = point[fill], instance[fill]
        if not point.size:
            return core_instance
        order = np.lexsort((-scores[instance], point))  # per point, the best score first
        point, instance = point[order], instance[order]
        first = np.r_[True, point[1:] != point[:-1]]
        core_instance[point[first]] = instance[first]
        return core_instance

    def _join_across_borders(self, merge_overlap: float) -> np.ndarray:
        """(num_instances,) group label: instances of different blocks that share more than
        merge_overlap of the smaller one's points both blocks saw are in one group."""
        n = self.num_instances
        if len(self.contexts) < 2 or n == 0:
            return np.arange(n, dtype=np.int64)
        point = np.concatenate(self.contexts)
        instance = np.concatenate(self.context_instances)
        block = np.repeat(np.arange(len(self.contexts)), [c.size for c in self.contexts])
        order = np.argsort(point, kind="stable")
        point, instance, block = point[order], instance[order], block[order]
        num_blocks = len(self.contexts)
        shared, joint = [], []  # keys: instance x other block; instance pair
        for d in range(1, int(np.bincount(point).max())):
            i = np.flatnonzero(point[d:] == point[:-d])
            a, b = instance[i], instance[i + d]
            shared += [a[a >= 0] * num_blocks + block[i + d][a >= 0]]
            shared += [b[b >= 0] * num_blocks + block[i][b >= 0]]
            both = (a >= 0) & (b >= 0)
            joint += [np.minimum(a, b)[both] * n + np.maximum(a, b)[both]]
        pair, inter = np.unique(np.concatenate([np.zeros(0, np.int64), *joint]), return_counts=True)
        seen, seen_count = np.unique(
            np.concatenate([np.zeros(0, np.int64), *shared]), return_counts=True
        )
        a, b = pair // n, pair % n
        block_of = np.repeat(np.arange(num_blocks), [len(c) for c in self.class_ids])

        def seen_by(inst: np.ndarray, other_block: np.ndarray) -> np.ndarray:
            return seen_count[np.searchsorted(seen, inst * num_blocks + other_block)]

        smaller = np.minimum(seen_by(a, block_of[b]), seen_by(b, block_of[a]))
        share = inter / smaller
        join = np.flatnonzero(share > merge_overlap)
        join = join[np.argsort(-share[join], kind="stable")]  # strongest overlap first
        size = np.bincount(instance[instance >= 0], minlength=n)

        def seen_whole(inst: int, other_block: int) -> bool:
            """Whether that block's context held (nearly) all of the instance."""
            key = inst * num_blocks + other_block
            at = min(int(np.searchsorted(seen, key)), max(seen.size - 1, 0))
            count = int(seen_count[at]) if seen.size and seen[at] == key else 0
            return count >= _SEEN_WHOLE * size[inst]

        return _join_without_conflicts(a[join], b[join], block_of, seen_whole)


def _join_without_conflicts(
    a: np.ndarray, b: np.ndarray, block_of: np.ndarray, seen_whole
) -> np.ndarray:
    """Group labels 0..G-1 of the instances (block_of: each one's block) after joining the
    pairs (a[k], b[k]) in the order given, except a pair that would put two instances of one
    block in one group when that block saw the other side of the pair whole
    (`seen_whole(instance, block)`): a cannot-link constraint, the block separated them with
    the whole object in view. Not transitive closure: one block that under-segments two
    objects another block separated joins only the one it overlaps most. A block that saw
    only the edge of an object (its context cut it) may still have cut it in pieces, and each
    piece joins the other block's whole."""
    parent = np.arange(block_of.size)
    blocks = {int(i): {int(block_of[i])} for i in np.unique(np.concatenate([a, b]))}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        ri, rj = root(i), root(j)
        if ri == rj:
            continue
        shared = blocks[ri] & blocks[rj]
        if any(seen_whole(k, s) for s in shared for k in (i, j) if block_of[k] != s):
            continue
        if len(blocks[ri]) < len(blocks[rj]):
            ri, rj = rj, ri
        parent[rj] = ri
        blocks[ri] |= blocks.pop(rj)
    roots = np.array([root(i) for i in range(block_of.size)], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def _largest_member(group: np.ndarray, points_of: np.ndarray) -> np.ndarray:
    """Per group, its member instance with the most core points (ties: lower id); -1 for a
    group without core points."""
    num_groups = group.max(initial=-1) + 1
    first = np.full(num_groups, -1, dtype=np.int64)
    if group.size == 0:
        return first
    order = np.lexsort((np.arange(group.size), -points_of, group))
    starts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1]])
    winners = order[starts]
    first[group[winners]] = np.where(points_of[winners] > 0, winners, -1)
    return first
