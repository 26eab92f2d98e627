"""The network: voxelizer, sparse U-Net (+ bottleneck transformer), semantic and offset heads
shared by every method, then the configured instance decoder (`model/decoders/`)."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from dyco_perception.config import ModelConfig
from dyco_perception.model.decoders import DecoderInput, decoder_class
from dyco_perception.model.transformer import BottleneckTransformer
from dyco_perception.model.unet import (
    FUSED_TRAIN_ERROR,
    BatchNorm1d,
    ResidualBlock,
    SparseUNet,
    point_mlp,
)
from dyco_perception.model.voxelizer import Voxelized, devoxelize, point_features, voxelize
from dyco_perception.sparse import SparseConv, check_backend
from dyco_perception.sparse.algorithms import PRECISIONS


class _Clock:
    """Wall-clock per stage into `timings` (synchronising CUDA so GPU time is attributed)."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device):
        self.timings, self.device = timings, device
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.last
        self.last = now


class SegmentationNetwork(nn.Module):
    """forward(xyz, rgb, batch, gt_semantic=None, gt_instance=None) -> dict; see
    docs/architecture.md "Model API". `decoder` is the method (`cfg.decoder_name`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        m = cfg.backbone.width
        t = cfg.transformer

        def bottleneck(channels: int) -> nn.Module:
            return BottleneckTransformer(
                channels,
                t.layers,
                t.heads,
                t.ffn_ratio,
                t.dropout,
                t.max_tokens,
                t.position,
                t.relative_clip,
                t.window,
            )

        self.backbone = SparseUNet(
            cfg.voxel.in_channels,
            m,
            cfg.backbone.levels,
            cfg.backbone.blocks_per_level,
            bottleneck if t.enabled else None,
        )
        self.semantic_head = point_mlp(m, m, cfg.num_classes)
        self.offset_head = point_mlp(m, m, 3)
        self.decoder = decoder_class(cfg.decoder_name)(cfg)
        self.fused = False
        self.precision = "float32"
        self.set_backend(cfg.backbone.backend)
        for module in self.modules():
            if isinstance(module, BatchNorm1d):
                module.input_statistics = cfg.inference.norm_statistics == "input"

    def set_backend(self, backend: str) -> str:
        """Switch every sparse conv to `backend` ("auto" | "torch" | "spconv" | "gemm");
        weights stay. "auto" picks per layer from measurements at inference, spconv (when
        importable, else torch) under autograd; see `sparse.SparseConv`."""
        check_backend(backend)  # validates (and that spconv imports when asked for)
        for module in self._sparse_convs():
            module.backend = backend
        self.backend = backend
        return backend

    def set_precision(self, precision: str) -> str:
        """Matmul precision of the sparse convs at inference: "float32" | "bfloat16"."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} unknown; choose one of {PRECISIONS}")
        for module in self._sparse_convs():
            module.precision = precision
        self.precision = precision
        return precision

    def fuse_for_inference(self) -> SegmentationNetwork:
        """Eval mode, with each residual block's second BN folded into its first conv (the
        state_dict is unchanged: folded weights are non-persistent). train() then raises.
        With `inference.norm_statistics: input` nothing folds: a BN's statistics come from
        its input."""
        self.eval()
        if self.cfg.inference.norm_statistics == "input":
            return self
        for module in self.modules():
            if isinstance(module, ResidualBlock) and not module.act2.folded:
                module.fold_batch_norm()
        self.fused = True
        return self

    def train(self, mode: bool = True) -> SegmentationNetwork:
        if mode and getattr(self, "fused", False):
            raise RuntimeError(FUSED_TRAIN_ERROR)
        return super().train(mode)

    def _sparse_convs(self) -> list[SparseConv]:
        return [m for m in self.modules() if isinstance(m, SparseConv)]

    def forward(
        self,
        xyz: torch.Tensor,
        rgb: torch.Tensor | None,
        batch: torch.Tensor,
        gt_semantic: torch.Tensor | None = None,
        gt_instance: torch.Tensor | None = None,
        voxel_size: float | None = None,
        timings: dict[str, float] | None = None,
        grid_origin: torch.Tensor | None = None,
    ) -> dict:
        cfg = self.cfg
        clock = _Clock(timings, xyz.device)
        voxel_size = voxel_size or cfg.voxel.voxel_size
        vox, voxel_out = self._encode(xyz, rgb, batch, voxel_size, grid_origin, clock)
        # Heads run per voxel (all points of a voxel share its features), then devoxelize.
        semantic_logits = devoxelize(self.semantic_head(voxel_out), vox)
        offsets = devoxelize(self.offset_head(voxel_out), vox)
        views = 1 if self.training else cfg.inference.test_time_views
        if views > 1:
            semantic_logits, offsets = self._average_views(
                xyz, rgb, batch, voxel_size, views, semantic_logits, offsets
            )
        inputs = DecoderInput(
            xyz=xyz,
            batch=batch,
            voxelized=vox,
            voxel_features=voxel_out,
            point_features=devoxelize(voxel_out, vox),
            semantic_logits=semantic_logits,
            offsets=offsets,
            gt_semantic=gt_semantic,
            gt_instance=gt_instance,
            lap=clock.lap,
        )
        clock.lap("heads")
        outputs = self.decoder(inputs)
        clock.lap("decoding")
        outputs.update(
            semantic_logits=inputs.semantic_logits,
            offsets=inputs.offsets,
            num_voxels=int(vox.voxels.coords.shape[0]),
            diagnostics={"transformer": self._transformer_mode()},
        )
        return outputs

    def _encode(
        self,
        xyz: torch.Tensor,
        rgb: torch.Tensor | None,
        batch: torch.Tensor,
        voxel_size: float,
        grid_origin: torch.Tensor | None,
        clock: _Clock | None = None,
    ) -> tuple[Voxelized, torch.Tensor]:
        """Voxelize and run the backbone: (Voxelized, per-voxel features)."""
        cfg = self.cfg
        features = point_features(xyz, rgb, batch, cfg.voxel.use_rgb, cfg.voxel.use_xyz)
        vox = voxelize(xyz, features, batch, voxel_size, cfg.backbone.levels, grid_origin)
        if clock:
            clock.lap("voxelize")
        voxel_out = self.backbone(vox.voxels).features
        if clock:
            clock.lap("backbone")
        return vox, voxel_out

    def _average_views(
        self,
        xyz: torch.Tensor,
        rgb: torch.Tensor | None,
        batch: torch.Tensor,
        voxel_size: float,
        views: int,
        semantic_logits: torch.Tensor,
        offsets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities and offsets averaged over `views` copies turned about z in equal
        steps (view 0 is the input's own pass); each copy's offsets are turned back first.
        The decoder keeps view 0's features. Returns (log mean probabilities, offsets)."""
        probabilities = semantic_logits.softmax(1)
        offsets = offsets.clone()
        for view in range(1, views):
            turn = rotation_about_z(2 * math.pi * view / views, xyz)
            # A turned copy anchors its own grid: a tiled map's grid_origin is for view 0.
            vox, voxel_out = self._encode(xyz @ turn.T, rgb, batch, voxel_size, None)
            probabilities += devoxelize(self.semantic_head(voxel_out), vox).softmax(1)
            offsets += devoxelize(self.offset_head(voxel_out), vox) @ turn
        # Clamped: a probability that underflows to 0 would give -inf logits.
        return (probabilities / views).clamp_min(1e-12).log(), offsets / views

    def _transformer_mode(self) -> str:
        """What the bottleneck attention did in the last forward: off, global or windowed."""
        for module in self.modules():
            if isinstance(module, BottleneckTransformer):
                return module.last_mode
        return "off"


def rotation_about_z(angle: float, like: torch.Tensor) -> torch.Tensor:
    """(3, 3) rotation by `angle` (radians, counter-clockwise seen from +z)."""
    c, s = math.cos(angle), math.sin(angle)
    return like.new_tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
