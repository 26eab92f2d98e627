"""dyco_ops: hot non-convolution ops of the DyCo3D pipeline.

Each op runs a prebuilt native kernel (C++ on CPU, CUDA on GPU) when available, else the
pure-PyTorch reference in `dyco_ops.reference`. Build the kernels with `python -m dyco_ops.build`.
"""

from dyco_ops.ops import (
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
