"""DyCo3D network: voxelizer, sparse U-Net + bottleneck transformer, point heads, grouping,
dynamic mask head and post-processing."""

from dyco_perception.model.dyco3d import DyCo3D

__all__ = ["DyCo3D"]
