"""Pure-PyTorch implementations of every op: what runs without the native kernels.

These define the semantics the native kernels (package dyco_ops) must reproduce exactly (integer
outputs) or to 1e-5 (float outputs). They are vectorised (no Python loop over points) and run on
any device. Inputs are assumed validated by the public wrappers in `dyco_perception.ops`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

# Candidate point pairs evaluated at once in connected_components (bounds peak memory).
_PAIR_CHUNK = 1 << 22
# Cells are slightly smaller than radius/sqrt(3) so that any two points sharing a cell are
# certainly within `radius` (the margin absorbs floating-point rounding).
_CELL_SHRINK = 0.999
# Packed 64-bit keys must stay below this bound (room for neighbour-offset arithmetic).
_KEY_LIMIT = 1 << 62


def _spans(mins: list[int], maxs: list[int], pad: int) -> list[int]:
    return [hi - lo + 1 + 2 * pad for lo, hi in zip(mins, maxs, strict=True)]


def voxelize(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique integer voxels, sorted lexicographically, and each point's voxel index."""
    if coords.shape[0] == 0:
        return coords.new_zeros((0, 3)), coords.new_zeros((0,))
    mins = coords.min(dim=0).values.tolist()
    maxs = coords.max(dim=0).values.tolist()
    sx, sy, sz = _spans(mins, maxs, pad=0)
    if sx * sy * sz >= _KEY_LIMIT:
        # Extent too large to pack into one int64: the (slower) row-wise unique is still exact.
        return torch.unique(coords, dim=0, sorted=True, return_inverse=True)
    shifted = coords - coords.new_tensor(mins)
    keys = (shifted[:, 0] * sy + shifted[:, 1]) * sz + shifted[:, 2]
    unique_keys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    voxels = torch.stack(
        (unique_keys // (sy * sz), (unique_keys // sz) % sy, unique_keys % sz), dim=1
    )
    return voxels + coords.new_tensor(mins), inverse


def scatter_mean(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Mean of the rows of `values` per segment; empty segments are 0."""
    sums = values.new_zeros((num_segments, values.shape[1])).index_add(0, index, values)
    counts = torch.bincount(index, minlength=num_segments).clamp_min(1).to(values.dtype)
    return sums / counts[:, None]


def scatter_max(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Column-wise max of the rows of `values` per segment; empty segments are 0.

    Ties share the gradient evenly among the tied rows. The -inf start keeps torch's backward
    from counting the (excluded) initial value as one more tie when the max is exactly 0.
    """
    out = values.new_full((num_segments, values.shape[1]), -torch.inf)
    expanded = index[:, None].expand(-1, values.shape[1])
    out = out.scatter_reduce(0, expanded, values, reduce="amax", include_self=False)
    filled = torch.bincount(index, minlength=num_segments) > 0
    return torch.where(filled[:, None], out, torch.zeros_like(out))


def _neighbour_offsets() -> list[tuple[int, int, int]]:
    """Half of the 5x5x5 cell neighbourhood (each unordered cell pair is visited once)."""
    rng = range(-2, 3)
    return [off for off in itertools.product(rng, rng, rng) if off > (0, 0, 0)]


def _pack_cells(labels: torch.Tensor, cells: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Pack (label, cx, cy, cz) into int64 keys with 2 cells of padding per axis."""
    _, label_rank = torch.unique(labels, return_inverse=True)
    num_labels = int(label_rank.max()) + 1
    mins = cells.min(dim=0).values.tolist()
    maxs = cells.max(dim=0).values.tolist()
    spans = _spans(mins, maxs, pad=2)
    if num_labels * math.prod(spans) >= _KEY_LIMIT:
        raise ValueError(
            "connected_components: spatial extent / radius is too large for 64-bit cell keys; "
            "use a larger radius or split the cloud"
        )
    shifted = cells - cells.new_tensor(mins) + 2
    _, sy, sz = spans
    keys = ((label_rank * spans[0] + shifted[:, 0]) * sy + shifted[:, 1]) * sz + shifted[:, 2]
    return keys, spans


def _cell_pair_edges(
    sorted_points: torch.Tensor,
    starts: torch.Tensor,
    counts: torch.Tensor,
    cell_a: torch.Tensor,
    cell_b: torch.Tensor,
    radius_sq: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All point pairs (one from cell a, one from cell b) within the radius."""
    device = sorted_points.device
    sizes_b = counts[cell_b]
    pair_sizes = counts[cell_a] * sizes_b
    ends = torch.cumsum(pair_sizes, 0)
    edges_u, edges_v = [], []
    first = 0
    while first < cell_a.numel():
        # Take cell pairs until the chunk holds about _PAIR_CHUNK candidate point pairs.
        base = int(ends[first - 1]) if first > 0 else 0
        last = max(int(torch.searchsorted(ends, base + _PAIR_CHUNK, right=True)), first + 1)
        sel = slice(first, last)
        owner = torch.repeat_interleave(torch.arange(last - first, device=device), pair_sizes[sel])
        pair_start = (ends[sel] - pair_sizes[sel])[owner]
        local = torch.arange(owner.numel(), device=device) + base - pair_start
        width = sizes_b[sel][owner]
        u = starts[cell_a[sel]][owner] + local // width
        v = starts[cell_b[sel]][owner] + local % width
        diff = sorted_points[u] - sorted_points[v]
        dist_sq = diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2]
        close = dist_sq <= radius_sq
        edges_u.append(u[close])
        edges_v.append(v[close])
        first = last
    return torch.cat(edges_u), torch.cat(edges_v)


def _min_root_forest(num_nodes: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Root (smallest node) of each node's component: hooking + pointer jumping."""
    parent = torch.arange(num_nodes, device=u.device)
    while True:
        root_u, root_v = parent[u], parent[v]
        if torch.equal(root_u, root_v):
            return parent
        smaller = torch.minimum(root_u, root_v)
        parent.scatter_reduce_(0, root_u, smaller, reduce="amin")
        parent.scatter_reduce_(0, root_v, smaller, reduce="amin")
        while True:
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand


def connected_components(points: torch.Tensor, labels: torch.Tensor, radius: float) -> torch.Tensor:
    """Components of the graph linking same-label points at distance <= radius.

    Ids are 0..C-1 numbered by each component's smallest point index; label < 0 gives -1.
    """
    device = points.device
    result = torch.full((points.shape[0],), -1, dtype=torch.int64, device=device)
    valid = torch.nonzero(labels >= 0).squeeze(1)
    if valid.numel() == 0:
        return result
    pts = points[valid].to(torch.float64)
    cells = torch.floor(pts / (radius / math.sqrt(3.0) * _CELL_SHRINK)).to(torch.int64)
    keys, spans = _pack_cells(labels[valid], cells)
    order = torch.argsort(keys, stable=True)
    cell_keys, counts = torch.unique_consecutive(keys[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    cell_of = torch.repeat_interleave(torch.arange(cell_keys.numel(), device=device), counts)
    # Points sharing a cell are always linked: join each to its cell's first point.
    edges_u = [torch.arange(order.numel(), device=device)]
    edges_v = [starts[cell_of]]
    sorted_points = pts[order]
    for dx, dy, dz in _neighbour_offsets():
        target = cell_keys + (dx * spans[1] + dy) * spans[2] + dz
        pos = torch.searchsorted(cell_keys, target).clamp_max(cell_keys.numel() - 1)
        hit = torch.nonzero(cell_keys[pos] == target).squeeze(1)
        if hit.numel() == 0:
            continue
        u, v = _cell_pair_edges(sorted_points, starts, counts, hit, pos[hit], radius * radius)
        edges_u.append(u)
        edges_v.append(v)
    roots = _min_root_forest(order.numel(), torch.cat(edges_u), torch.cat(edges_v))
    original = valid[order]
    first_index = torch.full_like(roots, original.numel() + points.shape[0])
    first_index.scatter_reduce_(0, roots, original, reduce="amin")
    _, component = torch.unique(first_index[roots], sorted=True, return_inverse=True)
    result[original] = component
    return result


def mask_iou(masks: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of boolean masks (K,N) -> (K,K) float32; 0 where both masks are empty."""
    # float32 sums of 0/1 products are exact below 2**24; beyond that use float64.
    dtype = torch.float32 if masks.shape[1] < (1 << 24) else torch.float64
    dense = masks.to(dtype)
    inter = (dense @ dense.T).to(torch.float64)
    area = masks.sum(dim=1).to(torch.float64)
    union = area[:, None] + area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))
    return iou.to(torch.float32)


def greedy_nms_from_iou(
    order: torch.Tensor, iou: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy suppression over masks already in score order; iou is in that order too."""
    overlaps = (iou > iou_threshold).cpu().numpy()
    suppressed = np.zeros(order.numel(), dtype=bool)
    kept = []
    for i in range(order.numel()):  # loops over masks (tens to hundreds), not points
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(kept, dtype=torch.int64, device=order.device)]


def score_order(scores: torch.Tensor) -> torch.Tensor:
    """Indices by descending score, ties broken by lower index first."""
    return torch.sort(scores, descending=True, stable=True).indices


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy mask NMS: keep masks in score order, drop those with IoU > threshold to a kept one."""
    order = score_order(scores)
    return greedy_nms_from_iou(order, mask_iou(masks[order]), iou_threshold)


# ----------------------------------------------------------------------------- decoder ops
# Distances below are squared Euclidean in float64, summed x, y, z in that order: the native
# kernels repeat exactly these operations, so index outputs (ties included) agree bit for bit.

# Query x point distances evaluated at once in ball_query (bounds peak memory).
_QUERY_CHUNK = 1 << 21


def _sq_dist(points: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """Squared distance of each row of points (n,3) float64 to origin (3,) (or (m,1,3))."""
    diff = points - origin
    return diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]


def _fps_scene(points: torch.Tensor, take: int) -> torch.Tensor:
    """FPS positions within one scene: start at 0, then the farthest point (ties -> lowest)."""
    picks = [torch.zeros((), dtype=torch.int64, device=points.device)]
    if take == 0:
        return picks[0].new_zeros((0,))
    dist = torch.full((points.shape[0],), torch.inf, dtype=torch.float64, device=points.device)
    dist[0] = -1.0  # chosen points are excluded (-1); duplicates of them stay eligible at 0
    for _ in range(take - 1):
        d2 = _sq_dist(points, points[picks[-1]])
        dist = torch.where(dist >= 0, torch.minimum(dist, d2), dist)
        last = torch.argmax(dist)  # first maximal entry: ties go to the lowest row
        dist[last] = -1.0
        picks.append(last)
    return torch.stack(picks)


def furthest_point_sample(
    xyz: torch.Tensor, batch: torch.Tensor, num_samples: int, valid: torch.Tensor | None
) -> torch.Tensor:
    """Rows picked by furthest point sampling, per scene (ascending id), in selection order."""
    rows = torch.arange(xyz.shape[0], device=xyz.device)
    if valid is not None:
        rows = rows[valid]
    points, scenes = xyz[rows].to(torch.float64), batch[rows]
    out = [rows.new_zeros((0,))]
    for scene in torch.unique(scenes).tolist():
        members = torch.nonzero(scenes == scene).squeeze(1)
        take = min(num_samples, members.numel())
        out.append(rows[members[_fps_scene(points[members], take)]])
    return torch.cat(out)


def ball_query(
    query_xyz: torch.Tensor,
    query_batch: torch.Tensor,
    xyz: torch.Tensor,
    batch: torch.Tensor,
    radius: float,
    max_neighbours: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """First max_neighbours same-scene rows (ascending) with d2 <= radius^2 per query.

    Returns (neighbours (Q,k) int64 padded with -1, count (Q,) = number of valid entries).
    """
    num_q, k = query_xyz.shape[0], max_neighbours
    neighbours = torch.full((num_q, k), -1, dtype=torch.int64, device=xyz.device)
    count = torch.zeros((num_q,), dtype=torch.int64, device=xyz.device)
    points, queries = xyz.to(torch.float64), query_xyz.to(torch.float64)
    step = max(1, _QUERY_CHUNK // max(1, xyz.shape[0]))
    for first in range(0, num_q if k > 0 else 0, step):
        sel = slice(first, min(first + step, num_q))
        d2 = _sq_dist(queries[sel, None, :], points[None, :, :])
        hit = (d2 <= radius * radius) & (query_batch[sel, None] == batch[None, :])
        rank = torch.cumsum(hit, dim=1) - 1
        keep = hit & (rank < k)
        q, col = torch.nonzero(keep).unbind(1)
        neighbours[sel][q, rank[q, col]] = col
        count[sel] = keep.sum(dim=1)
    return neighbours, count


def _box_volume(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Volume of boxes given corners (..., 3); inverted extents count as 0."""
    ext = (hi - lo).clamp_min(0)
    return ext[..., 0] * ext[..., 1] * ext[..., 2]


def box_iou_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of axis-aligned boxes (A,6), (B,6) -> (A,B); 0 where the union is 0."""
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    lo = torch.maximum(a64[:, None, :3], b64[None, :, :3])
    hi = torch.minimum(a64[:, None, 3:], b64[None, :, 3:])
    inter = _box_volume(lo, hi)
    vol_a, vol_b = _box_volume(a64[:, :3], a64[:, 3:]), _box_volume(b64[:, :3], b64[:, 3:])
    union = vol_a[:, None] + vol_b[None, :] - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), 0.0)
    return iou.to(torch.promote_types(a.dtype, b.dtype))


def generalized_box_iou_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Paired generalized IoU (A,6), (A,6) -> (A,): IoU - (enclosing - union) / enclosing.

    Pure torch only, by design: it is a training loss, so it needs autograd (a native kernel
    would need a hand-written backward for no measurable gain at a few hundred boxes). Both
    quotients are 0 where their denominator is 0; the guarded denominators keep gradients finite.
    """
    inter = _box_volume(torch.maximum(a[:, :3], b[:, :3]), torch.minimum(a[:, 3:], b[:, 3:]))
    union = _box_volume(a[:, :3], a[:, 3:]) + _box_volume(b[:, :3], b[:, 3:]) - inter
    hull = _box_volume(torch.minimum(a[:, :3], b[:, :3]), torch.maximum(a[:, 3:], b[:, 3:]))
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), 0.0)
    gap = torch.where(hull > 0, (hull - union) / torch.where(hull > 0, hull, 1.0), 0.0)
    return iou - gap


def otsu_threshold(
    values: torch.Tensor, segment: torch.Tensor, num_segments: int, bins: int
) -> torch.Tensor:
    """Per-segment Otsu threshold of values in [0,1] quantised to `bins` levels.

    Split s (1..bins-1) puts levels < s in class 0; the largest between-class variance
    w0*w1*(mu0-mu1)^2 wins (ties -> smallest s) and gives s/bins. Segments that are empty or
    hold a single level get 0.5. Counts and level sums are integers, so every float below is
    computed from exact inputs in a fixed order (the native kernels repeat it).
    """
    level = torch.floor(values.to(torch.float64) * bins).to(torch.int64).clamp_max(bins - 1)
    hist = torch.bincount(segment * bins + level, minlength=num_segments * bins)
    hist = hist.view(num_segments, bins)
    levels = torch.arange(bins, device=values.device)
    n_below = torch.cumsum(hist, 1)[:, :-1]  # column s-1: count of levels < s
    sum_below = torch.cumsum(hist * levels, 1)[:, :-1]
    n, total = hist.sum(1, keepdim=True), (hist * levels).sum(1, keepdim=True)
    n_above, sum_above = n - n_below, total - sum_below
    split = (n_below > 0) & (n_above > 0)
    nf = n.to(torch.float64)
    w0, w1 = n_below.to(torch.float64) / nf, n_above.to(torch.float64) / nf
    mu0 = sum_below.to(torch.float64) / n_below.clamp_min(1).to(torch.float64)
    mu1 = sum_above.to(torch.float64) / n_above.clamp_min(1).to(torch.float64)
    diff = mu0 - mu1
    variance = torch.where(split, w0 * w1 * diff * diff, 0.0)
    best = torch.argmax(variance, dim=1)  # first maximal split: ties -> smallest s
    threshold = (best + 1).to(torch.float64) / bins
    threshold = torch.where(variance.amax(dim=1) > 0, threshold, 0.5)
    return threshold.to(values.dtype)


def _ln_nms_scene(
    points: torch.Tensor,
    heat: torch.Tensor,
    available: torch.Tensor,
    radius: float,
    threshold: float,
    max_candidates: int,
) -> list[int]:
    """Accepted positions within one scene, in acceptance order (DKNet supp. Algorithm 1)."""
    available = available.clone()
    accepted: list[int] = []
    while len(accepted) < max_candidates and bool(available.any()):
        q = int(torch.argmax(torch.where(available, heat, -torch.inf)))  # ties -> lowest row
        near = _sq_dist(points, points[q]) < radius * radius
        available &= ~near
        local_max = float(heat[near].max())  # q itself is in its neighbourhood
        if local_max > 0 and float(heat[q]) / local_max >= threshold:
            accepted.append(q)
    return accepted


def ln_nms(
    xyz: torch.Tensor,
    batch: torch.Tensor,
    heat: torch.Tensor,
    available: torch.Tensor,
    radius: float,
    threshold: float,
    max_candidates: int,
) -> torch.Tensor:
    """DKNet local-normalised NMS: accepted rows per scene (ascending id), in acceptance order."""
    points, heat64 = xyz.to(torch.float64), heat.to(torch.float64)
    out = [torch.zeros((0,), dtype=torch.int64, device=xyz.device)]
    for scene in torch.unique(batch).tolist():
        members = torch.nonzero(batch == scene).squeeze(1)
        picks = _ln_nms_scene(
            points[members], heat64[members], available[members], radius, threshold, max_candidates
        )
        out.append(members[torch.tensor(picks, dtype=torch.int64, device=xyz.device)])
    return torch.cat(out)
