"""Hot non-convolution ops: voxelize, scatter, grouping, mask NMS, and the decoders' ops
(furthest point sampling, ball query, 3D box IoU / GIoU, Otsu thresholds, LN-NMS).

Each op runs a prebuilt native kernel (package `dyco_ops`: C++ on CPU, CUDA on GPU) when that
package is installed and built, else the pure-PyTorch implementation in `ops.reference`; the
core needs nothing beyond torch. `backend_info()` says which is used and why.
"""

from dyco_perception.ops.dispatch import (
    backend_info,
    ball_query,
    box_iou_3d,
    connected_components,
    cpu_kernel,
    cpu_kernel_missing,
    furthest_point_sample,
    generalized_box_iou_3d,
    ln_nms,
    mask_iou,
    mask_nms,
    native_available,
    otsu_threshold,
    scatter_max,
    scatter_mean,
    voxelize,
)

__all__ = [
    "backend_info",
    "ball_query",
    "box_iou_3d",
    "connected_components",
    "cpu_kernel",
    "cpu_kernel_missing",
    "furthest_point_sample",
    "generalized_box_iou_3d",
    "ln_nms",
    "mask_iou",
    "mask_nms",
    "native_available",
    "otsu_threshold",
    "scatter_max",
    "scatter_mean",
    "voxelize",
]
