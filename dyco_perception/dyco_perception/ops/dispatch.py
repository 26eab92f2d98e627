"""Public ops: input validation, then the native kernel or the pure-PyTorch reference.

backend: "auto" = native if `dyco_ops` is installed and built for the tensor's device, else
reference; "native" = native or RuntimeError; "torch" = reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

from dyco_perception.ops import reference

try:  # the native kernels are an optional speed-up (package dyco_ops, cuda_ops/)
    from dyco_ops import native
except ImportError:
    native = None

NOT_INSTALLED = "dyco_ops not installed (pip install cuda_ops/, then python -m dyco_ops.build)"

BACKENDS = ("auto", "native", "torch")
NATIVE_FLOAT_DTYPES = (torch.float32, torch.float64)


def _select(device: torch.device, backend: str, supported: bool = True) -> ModuleType | None:
    """Native module to use, or None for the reference."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return None
    module = _native_module(device) if supported else None
    if module is None and backend == "native":
        why = _native_reason(device) if supported else "dtype not supported by native kernels"
        raise RuntimeError(f"dyco_ops native backend unavailable on {device.type}: {why}")
    return module


def _native_module(device: torch.device) -> ModuleType | None:
    return None if native is None else native.module_for(device)


def _native_reason(device: torch.device) -> str:
    return NOT_INSTALLED if native is None else native.reason_for(device)


def _require_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _require_same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors must be on one device, got {devices}")


def _check_index(
    index: torch.Tensor, rows: int, num_segments: int, name: str = "index"
) -> torch.Tensor:
    _require_tensor(name, index)
    if index.dim() != 1 or index.shape[0] != rows:
        raise ValueError(f"{name} must have shape ({rows},), got {tuple(index.shape)}")
    if index.dtype.is_floating_point or index.dtype == torch.bool or index.is_complex():
        raise ValueError(f"{name} must be an integer tensor, got {index.dtype}")
    if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 0:
        raise ValueError(f"num_segments must be a non-negative int, got {num_segments!r}")
    index = index.to(torch.int64)
    if rows and (int(index.min()) < 0 or int(index.max()) >= num_segments):
        raise ValueError(
            f"{name} values must lie in [0, {num_segments}), got "
            f"[{int(index.min())}, {int(index.max())}]"
        )
    return index


def _check_values(values: torch.Tensor) -> None:
    _require_tensor("values", values)
    if values.dim() != 2:
        raise ValueError(f"values must have shape (N, C), got {tuple(values.shape)}")
    if not values.dtype.is_floating_point:
        raise ValueError(f"values must be a floating-point tensor, got {values.dtype}")


def voxelize(coords: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Unique voxels of integer coordinates.

    coords: (N,3) integer voxel coordinates (may be negative). Returns (voxel_coords (V,3) int64,
    sorted lexicographically by (x, y, z); point_to_voxel (N,) int64 index into voxel_coords).
    """
    _require_tensor("coords", coords)
    if coords.dim() != 2 or coords.shape[1] != 3:
        raise ValueError(f"coords must have shape (N, 3), got {tuple(coords.shape)}")
    if coords.dtype.is_floating_point or coords.dtype == torch.bool or coords.is_complex():
        raise ValueError(f"coords must be an integer tensor, got {coords.dtype}")
    coords = coords.to(torch.int64).contiguous()
    module = _select(coords.device, backend)
    if module is None or coords.shape[0] == 0:
        return reference.voxelize(coords)
    voxels, inverse = module.voxelize(coords)
    return voxels, inverse


class _NativeScatterMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, index, num_segments, module):
        out, counts = module.scatter_mean(values, index, num_segments)
        ctx.save_for_backward(index, counts)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        index, counts = ctx.saved_tensors
        scale = counts.clamp_min(1).to(grad_out.dtype)[index, None]
        return grad_out[index] / scale, None, None, None


class _NativeScatterMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, index, num_segments, module):
        out = module.scatter_max(values, index, num_segments)
        ctx.save_for_backward(values, index, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # Same rule as torch.scatter_reduce("amax"): ties share the gradient evenly.
        values, index, out = ctx.saved_tensors
        is_max = (values == out[index]).to(grad_out.dtype)
        ties = torch.zeros_like(out).index_add_(0, index, is_max)
        return is_max * grad_out[index] / ties[index].clamp_min(1), None, None, None


def _scatter(values, index, num_segments, backend, native_fn, reference_fn):
    _check_values(values)
    index = _check_index(index, values.shape[0], num_segments)
    _require_same_device(values=values, index=index)
    module = _select(values.device, backend, values.dtype in NATIVE_FLOAT_DTYPES)
    if module is None or values.shape[0] == 0 or values.shape[1] == 0:
        return reference_fn(values, index, num_segments)
    return native_fn.apply(values.contiguous(), index.contiguous(), num_segments, module)


def scatter_mean(
    values: torch.Tensor, index: torch.Tensor, num_segments: int, backend: str = "auto"
) -> torch.Tensor:
    """(N,C) float, (N,) int64 -> (num_segments, C) mean per segment (0 for empty).

    Differentiable w.r.t. values.
    """
    native_fn, reference_fn = _NativeScatterMean, reference.scatter_mean
    return _scatter(values, index, num_segments, backend, native_fn, reference_fn)


def scatter_max(
    values: torch.Tensor, index: torch.Tensor, num_segments: int, backend: str = "auto"
) -> torch.Tensor:
    """(N,C) float, (N,) int64 -> (num_segments, C) column max per segment (0 for empty).

    Differentiable w.r.t. values (ties share the gradient, as in torch.scatter_reduce).
    """
    return _scatter(values, index, num_segments, backend, _NativeScatterMax, reference.scatter_max)


def connected_components(
    points: torch.Tensor, labels: torch.Tensor, radius: float, backend: str = "auto"
) -> torch.Tensor:
    """Components of the graph linking same-label points at distance <= radius.

    points (N,3) float, labels (N,) integer; points with label < 0 get -1. Returns (N,) int64
    ids 0..C-1 numbered in order of each component's smallest point index.
    """
    _require_tensor("points", points)
    _require_tensor("labels", labels)
    if points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {tuple(points.shape)}")
    if not points.dtype.is_floating_point:
        raise ValueError(f"points must be a floating-point tensor, got {points.dtype}")
    if labels.dim() != 1 or labels.shape[0] != points.shape[0]:
        raise ValueError(f"labels must have shape ({points.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if not isinstance(radius, (int, float)) or not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    _require_same_device(points=points, labels=labels)
    labels = labels.to(torch.int64)
    if not bool(torch.isfinite(points[labels >= 0]).all()):
        raise ValueError("points must be finite (found NaN or inf on a point with label >= 0)")
    module = _select(points.device, backend)
    if module is None:
        return reference.connected_components(points, labels, float(radius))
    pts = points.to(torch.float64).contiguous()
    return module.connected_components(pts, labels.contiguous(), float(radius))


def _check_masks(masks: torch.Tensor) -> None:
    _require_tensor("masks", masks)
    if masks.dim() != 2:
        raise ValueError(f"masks must have shape (K, N), got {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be a bool tensor, got {masks.dtype}")


def mask_iou(masks: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """masks (K,N) bool -> (K,K) float32 IoU (0 where both masks are empty)."""
    _check_masks(masks)
    module = _select(masks.device, backend)
    if module is None or masks.shape[0] == 0:
        return reference.mask_iou(masks)
    return module.mask_iou(masks.contiguous())


def mask_nms(
    masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float, backend: str = "auto"
) -> torch.Tensor:
    """Greedy NMS by score (descending, ties by lower index first).

    A mask is dropped when its IoU with an already kept mask is > iou_threshold. Returns the
    int64 indices of the kept masks in score order.
    """
    _check_masks(masks)
    _require_tensor("scores", scores)
    if scores.dim() != 1 or scores.shape[0] != masks.shape[0]:
        raise ValueError(f"scores must have shape ({masks.shape[0]},), got {tuple(scores.shape)}")
    if not scores.dtype.is_floating_point or not bool(torch.isfinite(scores).all()):
        raise ValueError("scores must be a finite floating-point tensor")
    if not isinstance(iou_threshold, (int, float)) or not math.isfinite(iou_threshold):
        raise ValueError(f"iou_threshold must be a finite number, got {iou_threshold!r}")
    _require_same_device(masks=masks, scores=scores)
    module = _select(masks.device, backend)
    if module is None or masks.shape[0] == 0:
        return reference.mask_nms(masks, scores, float(iou_threshold))
    if hasattr(module, "mask_nms"):
        return module.mask_nms(masks.contiguous(), scores.contiguous(), float(iou_threshold))
    # Devices without a fused kernel: native IoU, greedy pass on the host.
    order = reference.score_order(scores)
    iou = module.mask_iou(masks[order].contiguous())
    return reference.greedy_nms_from_iou(order, iou, float(iou_threshold))


# ----------------------------------------------------------------------------- decoder ops
# The native kernels of these ops see points grouped by scene: rows stably sorted by batch id
# (so within a scene, ascending position = ascending row and tie rules carry over), scene
# boundaries `starts` (S+1,), coordinates in float64. Results come back as positions in that
# order and are mapped to rows here.


def _select_op(device: torch.device, backend: str, op: str) -> ModuleType | None:
    """Like _select, and None (or, for "native", an error) when the build lacks `op`."""
    module = _select(device, backend)
    if module is not None and not hasattr(module, op):
        if backend == "native":
            raise RuntimeError(f"dyco_ops native build on {device.type} has no {op}; rebuild")
        return None
    return module


def _check_xyz(name: str, xyz: torch.Tensor) -> None:
    _require_tensor(name, xyz)
    if xyz.dim() != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {tuple(xyz.shape)}")
    if not xyz.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got {xyz.dtype}")
    if not bool(torch.isfinite(xyz).all()):
        raise ValueError(f"{name} must be finite (found NaN or inf)")


def _check_rows(name: str, value: torch.Tensor, rows: int, kind: str) -> None:
    """A (rows,) tensor of `kind`: "integer", "bool" or "float" (finite)."""
    _require_tensor(name, value)
    if value.dim() != 1 or value.shape[0] != rows:
        raise ValueError(f"{name} must have shape ({rows},), got {tuple(value.shape)}")
    is_int = not (value.dtype.is_floating_point or value.dtype == torch.bool or value.is_complex())
    ok = {"integer": is_int, "bool": value.dtype == torch.bool}.get(
        kind, value.dtype.is_floating_point
    )
    if not ok:
        article = {"integer": "an integer", "bool": "a bool"}.get(kind, "a floating-point")
        raise ValueError(f"{name} must be {article} tensor, got {value.dtype}")
    if kind == "float" and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite (found NaN or inf)")


def _check_count(name: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_radius(radius: object) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)):
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    if not math.isfinite(radius) or radius <= 0:
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    return float(radius)


def _group_by_scene(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order: rows stably sorted by batch, starts (S+1,), sorted scene ids (S,))."""
    order = torch.argsort(batch, stable=True)
    scene_ids, counts = torch.unique_consecutive(batch[order], return_counts=True)
    starts = torch.cat((counts.new_zeros(1), torch.cumsum(counts, 0)))
    return order, starts, scene_ids


def _float64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64).contiguous()


def furthest_point_sample(
    xyz: torch.Tensor,
    batch: torch.Tensor,
    num_samples: int,
    valid: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Furthest point sampling per scene -> (M,) int64 rows.

    Per scene (batch id; rows need not be sorted), among `valid` rows: start at the lowest
    row, then repeatedly take the row farthest (squared distance, float64) from those chosen,
    ties -> lowest row; min(num_samples, count) rows per scene. Chosen rows are never
    re-picked (duplicates of them still are). Ordered by scene id, then selection order.
    """
    _check_xyz("xyz", xyz)
    _check_rows("batch", batch, xyz.shape[0], "integer")
    _check_count("num_samples", num_samples)
    if valid is not None:
        _check_rows("valid", valid, xyz.shape[0], "bool")
        _require_same_device(xyz=xyz, batch=batch, valid=valid)
    _require_same_device(xyz=xyz, batch=batch)
    batch = batch.to(torch.int64)
    module = _select_op(xyz.device, backend, "furthest_point_sample")
    rows = torch.arange(xyz.shape[0], device=xyz.device)
    rows = rows if valid is None else rows[valid]
    if module is None or rows.numel() == 0 or num_samples == 0:
        return reference.furthest_point_sample(xyz, batch, num_samples, valid)
    order, starts, _ = _group_by_scene(batch[rows])
    take = (starts[1:] - starts[:-1]).clamp_max(num_samples)
    out_starts = torch.cat((take.new_zeros(1), torch.cumsum(take, 0)))
    total = int(out_starts[-1])
    points = _float64(xyz[rows][order])
    pos = module.furthest_point_sample(points, starts, out_starts, total)
    return rows[order[pos]]


def ball_query(
    query_xyz: torch.Tensor,
    query_batch: torch.Tensor,
    xyz: torch.Tensor,
    batch: torch.Tensor,
    radius: float,
    max_neighbours: int,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same-scene rows within `radius` of each query (d2 <= radius^2, float64).

    Returns (neighbours (Q,k) int64: the first k = max_neighbours such rows in ascending row
    order, padded with -1; count (Q,) int64: how many entries are valid, at most k).
    """
    _check_xyz("query_xyz", query_xyz)
    _check_rows("query_batch", query_batch, query_xyz.shape[0], "integer")
    _check_xyz("xyz", xyz)
    _check_rows("batch", batch, xyz.shape[0], "integer")
    radius = _check_radius(radius)
    k = _check_count("max_neighbours", max_neighbours)
    _require_same_device(query_xyz=query_xyz, query_batch=query_batch, xyz=xyz, batch=batch)
    query_batch, batch = query_batch.to(torch.int64), batch.to(torch.int64)
    module = _select_op(xyz.device, backend, "ball_query")
    if module is None or k == 0 or xyz.shape[0] == 0 or query_xyz.shape[0] == 0:
        return reference.ball_query(query_xyz, query_batch, xyz, batch, radius, k)
    order, starts, scene_ids = _group_by_scene(batch)
    slot = torch.searchsorted(scene_ids, query_batch).clamp_max(scene_ids.numel() - 1)
    found = scene_ids[slot] == query_batch
    lo = torch.where(found, starts[slot], 0).contiguous()
    hi = torch.where(found, starts[slot + 1], 0).contiguous()
    points = _float64(xyz[order])
    pos, count = module.ball_query(_float64(query_xyz), lo, hi, points, radius, k)
    return torch.where(pos >= 0, order[pos.clamp_min(0)], -1), count


def _check_boxes(name: str, boxes: torch.Tensor) -> None:
    _require_tensor(name, boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 6:
        raise ValueError(f"{name} must have shape (K, 6), got {tuple(boxes.shape)}")
    if not boxes.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got {boxes.dtype}")
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name} must be finite (found NaN or inf)")


def box_iou_3d(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Pairwise IoU of axis-aligned boxes (xmin, ymin, zmin, xmax, ymax, zmax).

    (A,6), (B,6) -> (A,B) in the promoted float dtype; 0 where the union volume is 0 (inverted
    extents count as empty). Computed in float64; not differentiable (inference / matching).
    """
    _check_boxes("a", a)
    _check_boxes("b", b)
    _require_same_device(a=a, b=b)
    module = _select_op(a.device, backend, "box_iou_3d")
    if module is None or a.shape[0] == 0 or b.shape[0] == 0:
        return reference.box_iou_3d(a, b)
    iou = module.box_iou_3d(_float64(a.detach()), _float64(b.detach()))
    return iou.to(torch.promote_types(a.dtype, b.dtype))


def generalized_box_iou_3d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Paired generalized IoU (A,6), (A,6) -> (A,), differentiable (pure torch: a loss)."""
    _check_boxes("a", a)
    _check_boxes("b", b)
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    _require_same_device(a=a, b=b)
    return reference.generalized_box_iou_3d(a, b)


def otsu_threshold(
    values: torch.Tensor,
    segment: torch.Tensor,
    num_segments: int,
    bins: int = 100,
    backend: str = "auto",
) -> torch.Tensor:
    """Per-segment Otsu threshold (DKNet supplement S1) -> (num_segments,) in values' dtype.

    values (M,) in [0,1] are quantised to q = min(floor(v * bins), bins - 1) (in float64);
    the split s in 1..bins-1 with the largest between-class variance w0*w1*(mu0-mu1)^2 (ties ->
    smallest s) gives s / bins. Empty or single-level segments get 0.5.
    """
    _require_tensor("values", values)
    _check_rows("values", values, values.shape[0] if values.dim() == 1 else -1, "float")
    segment = _check_index(segment, values.shape[0], num_segments, name="segment")
    bins = _check_count("bins", bins, minimum=2)
    if values.numel() and (float(values.min()) < 0 or float(values.max()) > 1):
        raise ValueError(
            f"values must lie in [0, 1], got [{float(values.min())}, {float(values.max())}]"
        )
    _require_same_device(values=values, segment=segment)
    module = _select_op(values.device, backend, "otsu_threshold")
    if module is None or values.shape[0] == 0 or num_segments == 0:
        return reference.otsu_threshold(values, segment, num_segments, bins)
    out = module.otsu_threshold(_float64(values), segment.contiguous(), num_segments, bins)
    return out.to(values.dtype)


def ln_nms(
    xyz: torch.Tensor,
    batch: torch.Tensor,
    heat: torch.Tensor,
    available: torch.Tensor,
    radius: float,
    threshold: float,
    max_candidates: int,
    backend: str = "auto",
) -> torch.Tensor:
    """DKNet local-normalised NMS (paper sec. 3.3, supplement Algorithm 1) -> (C,) int64 rows.

    Per scene, while fewer than max_candidates are accepted and a point is available: q = the
    available point of largest heat (ties -> lowest row); every point of the scene with
    d2 < radius^2 (available or not) becomes unavailable; q is accepted when
    heat[q] / max(heat over that neighbourhood) >= threshold (max > 0; float64). Ordered by
    scene id, then acceptance order.
    """
    _check_xyz("xyz", xyz)
    rows = xyz.shape[0]
    _check_rows("batch", batch, rows, "integer")
    _check_rows("heat", heat, rows, "float")
    _check_rows("available", available, rows, "bool")
    radius = _check_radius(radius)
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    max_candidates = _check_count("max_candidates", max_candidates)
    _require_same_device(xyz=xyz, batch=batch, heat=heat, available=available)
    batch = batch.to(torch.int64)
    module = _select_op(xyz.device, backend, "ln_nms")
    if module is None or rows == 0 or max_candidates == 0:
        return reference.ln_nms(
            xyz, batch, heat, available, radius, float(threshold), max_candidates
        )
    order, starts, _ = _group_by_scene(batch)
    slots = module.ln_nms(
        _float64(xyz[order]),
        _float64(heat[order]),
        available[order].to(torch.uint8).contiguous(),
        starts,
        radius,
        float(threshold),
        max_candidates,
        min(max_candidates, rows),
    )
    return order[slots[slots >= 0]]


def native_available(device: str | torch.device | None = None) -> bool:
    """True when native kernels are loaded for `device` (default: cuda if present, else cpu)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _native_module(torch.device(device)) is not None


def backend_info() -> dict:
    """Per device type: whether native kernels are loaded, why not, and from where."""
    if native is None:
        missing = {"native": False, "reason": NOT_INSTALLED, "library": None}
        return {"build_dir": None, "cpu": dict(missing), "cuda": dict(missing)}
    info: dict = {"build_dir": str(native.BUILD_DIR)}
    for device_type, name in native.DEVICE_EXTENSION.items():
        result = native.load(name)
        info[device_type] = {
            "native": result.module is not None,
            "reason": result.reason,
            "library": result.path,
        }
    return info


def cpu_kernel(name: str) -> Callable[..., Any] | None:
    """dyco_ops' CPU function `name` (the fused inference kernels: `subm_conv3d`,
    `subm_neighbour_table`, `dynamic_mask_decode`), or None when the CPU extension is absent,
    stale or older than the function."""
    module = None if native is None else native.load("dyco_ops_cpu").module
    return getattr(module, name, None)


def cpu_kernel_missing(name: str) -> str | None:
    """Why `cpu_kernel(name)` is None; None when it is loaded."""
    if cpu_kernel(name) is not None:
        return None
    if native is None:
        return NOT_INSTALLED
    why = native.load("dyco_ops_cpu").reason
    return f"the build has no {name} (rebuild)" if why == "loaded" else why
