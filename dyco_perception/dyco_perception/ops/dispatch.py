"""Public ops: input validation, then the native kernel or the pure-PyTorch reference.

backend: "auto" = native if `dyco_ops` is installed and built for the tensor's device, else
reference; "native" = native or RuntimeError; "torch" = reference.
"""

from __future__ import annotations

import math
from types import ModuleType

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


def _check_index(index: torch.Tensor, rows: int, num_segments: int) -> torch.Tensor:
    _require_tensor("index", index)
    if index.dim() != 1 or index.shape[0] != rows:
        raise ValueError(f"index must have shape ({rows},), got {tuple(index.shape)}")
    if index.dtype.is_floating_point or index.dtype == torch.bool or index.is_complex():
        raise ValueError(f"index must be an integer tensor, got {index.dtype}")
    if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 0:
        raise ValueError(f"num_segments must be a non-negative int, got {num_segments!r}")
    index = index.to(torch.int64)
    if rows and (int(index.min()) < 0 or int(index.max()) >= num_segments):
        raise ValueError(
            f"index values must lie in [0, {num_segments}), got "
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
