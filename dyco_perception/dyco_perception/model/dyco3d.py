"""The DyCo3D network: backbone, point heads, grouping, kernel generation, dynamic decoding."""

from __future__ import annotations

import time

import torch
from torch import nn

from dyco_perception.config import ModelConfig
from dyco_perception.model.dynamic_head import (
    DecodedMasks,
    GridKernelGenerator,
    PooledKernelGenerator,
    decode_masks,
)
from dyco_perception.model.grouping import (
    Proposals,
    cluster_proposals,
    concat_proposals,
    gt_proposals,
    select_proposals,
)
from dyco_perception.model.transformer import BottleneckTransformer
from dyco_perception.model.unet import BatchNorm1d, SparseUNet
from dyco_perception.model.voxelizer import devoxelize, point_features, voxelize
from dyco_perception.sparse import SparseConv, resolve_backend


def _mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(c_in, hidden),
        BatchNorm1d(hidden, eps=1e-4),
        nn.ReLU(),
        nn.Linear(hidden, c_out),
    )


def _kernel_generator(cfg: ModelConfig) -> nn.Module:
    mh, m = cfg.mask_head, cfg.backbone.width
    if mh.generator == "grid":
        return GridKernelGenerator(
            m,
            mh.generator_channels,
            mh.controller_hidden,
            cfg.dynamic_head_params,
            mh.grid_size,
            mh.pooling,
        )
    return PooledKernelGenerator(m, mh.controller_hidden, cfg.dynamic_head_params, mh.pooling)


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


class DyCo3D(nn.Module):
    """forward(xyz, rgb, batch, gt_semantic=None, gt_instance=None) -> dict; see
    docs/architecture.md "Model API"."""

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
        self.semantic_head = _mlp(m, m, cfg.num_classes)
        self.offset_head = _mlp(m, m, 3)
        self.mask_feature_head = _mlp(m, m, cfg.mask_head.mask_channels)
        self.kernel_generator = _kernel_generator(cfg)
        c = self.kernel_generator.out_channels
        self.score_head = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, 1))
        self.set_backend(cfg.backbone.backend)

    def set_backend(self, backend: str) -> str:
        """Switch every sparse conv to `backend` ("auto" | "torch" | "spconv"); weights stay."""
        resolved = resolve_backend(backend)
        for module in self.modules():
            if isinstance(module, SparseConv):
                module.backend = resolved
        self.backend = resolved
        return resolved

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
        features = point_features(xyz, rgb, batch, cfg.voxel.use_rgb, cfg.voxel.use_xyz)
        vox = voxelize(
            xyz,
            features,
            batch,
            voxel_size or cfg.voxel.voxel_size,
            cfg.backbone.levels,
            grid_origin,
        )
        clock.lap("voxelize")
        voxel_out = self.backbone(vox.voxels).features
        clock.lap("backbone")
        point_feat = devoxelize(voxel_out, vox)
        # Heads run per voxel (all points of a voxel share its features), then devoxelize.
        semantic_logits = devoxelize(self.semantic_head(voxel_out), vox)
        offsets = devoxelize(self.offset_head(voxel_out), vox)
        mask_features = devoxelize(self.mask_feature_head(voxel_out), vox)
        semantic_pred = semantic_logits.argmax(1)
        clock.lap("heads")
        proposals = self._proposals(xyz, offsets, semantic_pred, batch, gt_semantic, gt_instance)
        clock.lap("grouping")
        masks, score_logits = self._decode(
            proposals, point_feat, mask_features, xyz, batch, semantic_pred
        )
        clock.lap("decoding")
        return {
            "semantic_logits": semantic_logits,
            "offsets": offsets,
            "proposals": proposals,
            "masks": masks,
            "score_logits": score_logits,
            "num_voxels": int(vox.voxels.coords.shape[0]),
            "diagnostics": {"transformer": self._transformer_mode()},
        }

    def _transformer_mode(self) -> str:
        """What the bottleneck attention did in the last forward: off, global or windowed."""
        for module in self.modules():
            if isinstance(module, BottleneckTransformer):
                return module.last_mode
        return "off"

    def _proposals(self, xyz, offsets, semantic_pred, batch, gt_semantic, gt_instance) -> Proposals:
        g = self.cfg.grouping
        use_pred = not self.training or g.train_proposals in ("pred", "both")
        use_gt = self.training and g.train_proposals in ("gt", "both")
        proposals = Proposals.empty(xyz.device)
        if use_pred:
            proposals = cluster_proposals(
                xyz, offsets, semantic_pred, batch, g.radius, g.min_points
            )
        if use_gt:
            if gt_instance is None or gt_semantic is None:
                raise ValueError("training with GT proposals needs gt_semantic and gt_instance")
            proposals = concat_proposals(proposals, gt_proposals(gt_instance, gt_semantic, batch))
        if self.training and proposals.num > g.max_train_proposals:
            keep = torch.randperm(proposals.num, device=xyz.device)[: g.max_train_proposals]
            proposals = select_proposals(proposals, keep.sort().values)
        return proposals

    def _decode(
        self, proposals, point_feat, mask_features, xyz, batch, semantic_pred
    ) -> tuple[DecodedMasks, torch.Tensor]:
        mh = self.cfg.mask_head
        params, pooled = self.kernel_generator(point_feat, xyz, proposals)
        category_aware = mh.category_aware_train if self.training else mh.category_aware
        masks = decode_masks(
            proposals,
            params,
            mask_features,
            xyz,
            batch,
            semantic_pred if category_aware else None,
            self.cfg.num_classes,
            mh.box_margin,
            self.cfg.decoder_layer_sizes,
            mh.use_relative_position,
        )
        score_logits = self.score_head(pooled).squeeze(1)
        return masks, score_logits
