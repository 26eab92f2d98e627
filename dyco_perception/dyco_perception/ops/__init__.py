"""Hot non-convolution ops of the DyCo3D pipeline (voxelize, scatter, grouping, mask NMS).

Each op runs a prebuilt native kernel (package `dyco_ops`: C++ on CPU, CUDA on GPU) when that
package is installed and built, else the pure-PyTorch implementation in `ops.reference`; the
core needs nothing beyond torch. `backend_info()` says which is used and why.
"""

from dyco_perception.ops.dispatch import (
    backend_info,
    connected_components,
    mask_iou,
    mask_nms,
    native_available,
    scatter_max,
    scatter_mean,
    voxelize,
)

__all__ = [
    "backend_info",
    "connected_components",
    "mask_iou",
    "mask_nms",
    "native_available",
    "scatter_max",
    "scatter_mean",
    "voxelize",
]
