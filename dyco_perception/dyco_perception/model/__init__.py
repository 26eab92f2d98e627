"""The network: voxelizer, sparse U-Net + bottleneck transformer, semantic and offset heads, and
one instance decoder per method (`model/decoders/`), then post-processing."""

from dyco_perception.model.network import SegmentationNetwork

__all__ = ["SegmentationNetwork"]
