"""PointGroup's instance branch (Jiang et al., CVPR 2020; sections 3.3-3.5).

Dual-set grouping: same-class connected components within radius r on the original coordinates
P and on the shifted coordinates Q = P + offset (Algorithm 1, stuff classes skipped, small
clusters dropped); the proposals are the union Cp u Cq. ScoreNet rates every cluster: its points'
backbone features are mean-pooled into a cluster grid, encoded by a small sparse U-Net (widths
m, 2m), max-pooled per cluster and mapped to one score logit (Eq. 4), trained with BCE against a
soft IoU target (Eq. 5-7). The clusters are the masks; NMS on the scores picks the instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dyco_perception import ops
from dyco_perception.config import ModelConfig
from dyco_perception.model.decoders import register_decoder
from dyco_perception.model.decoders.base import (
    DecoderInput,
    InstanceDecoder,
    InstanceTargets,
    zero_like_graph,
)
from dyco_perception.model.decoders.common import (
    DecodedMasks,
    cluster_grid,
    match_proposals,
    soft_score_target,
)
from dyco_perception.model.grouping import (
    Proposals,
    cluster_proposals,
    concat_proposals,
    gt_proposals,
    select_proposals,
)
from dyco_perception.model.unet import SparseUNet
from dyco_perception.sparse import SparseVoxels
from dyco_perception.validation import choice, ranged

# `cluster_set` values: which coordinate set found a proposal (GT instances in training: 2).
ORIGINAL, SHIFTED, GT = 0, 1, 2


@dataclass
class PointGroupOptions:
    # Paper: the union of both sets. One set alone is the paper's ablation (section 4.2.2).
    cluster_sets: str = choice("dual", ("dual", "shifted", "original"), "P u Q, Q or P")
    # ScoreNet's training clusters: the predicted ones (paper), optionally GT instances too.
    train_proposals: str = choice("pred", ("pred", "gt", "both"))
    max_train_proposals: int = ranged(128, 1, 10_000, "random subset above this (ours)")
    score_grid: int = ranged(14, 2, 64, "cells per side of a cluster's ScoreNet grid (code: 14)")
    # "voxel": clusters keep the backbone's voxel size unless longer than score_grid cells, then
    # they are scaled to fit (the paper voxelizes clusters like the scene, the code on a bounded
    # 14^3 grid). "fit": every cluster spans the grid (DyCo3D's cluster grid).
    score_cell: str = choice("voxel", ("voxel", "fit"))
    score_blocks: int = ranged(2, 1, 8, "residual blocks per ScoreNet U-Net level (code: 2)")
    score_weight: float = ranged(1.0, 0.0, 100.0, "weight of the score BCE (paper: 1)")
    # A cluster is its own mask: members get this logit (sigmoid ~1 for any mask threshold).
    member_logit: float = ranged(20.0, 1.0, 100.0)


def dual_set_proposals(
    xyz: torch.Tensor,
    offsets: torch.Tensor,
    semantic: torch.Tensor,
    batch: torch.Tensor,
    radius: float,
    min_points: int,
    sets: str = "dual",
    by_class: bool = True,
) -> tuple[Proposals, torch.Tensor]:
    """Clusters on P (original) and Q (shifted), each by Algorithm 1; (proposals, set per
    proposal). A same object found in both sets gives two proposals (NMS picks one)."""
    proposals = Proposals.empty(xyz.device)
    found = []
    if sets in ("dual", "original"):
        proposals = cluster_proposals(
            xyz, torch.zeros_like(offsets), semantic, batch, radius, min_points, by_class
        )
        found.append(torch.full((proposals.num,), ORIGINAL, device=xyz.device))
    if sets in ("dual", "shifted"):
        shifted = cluster_proposals(xyz, offsets, semantic, batch, radius, min_points, by_class)
        proposals = concat_proposals(proposals, shifted)
        found.append(torch.full((shifted.num,), SHIFTED, device=xyz.device))
    return proposals, torch.cat(found).long()


class ScoreNet(nn.Module):
    """Cluster grid of mean backbone features -> U-Net [m, 2m] -> max pool -> Linear (Eq. 4)."""

    def __init__(self, width: int, blocks: int, grid_size: int, min_cell: float):
        super().__init__()
        self.grid_size, self.min_cell = grid_size, min_cell
        self.unet = SparseUNet(width, width, 2, blocks)
        self.linear = nn.Linear(width, 1)

    def forward(
        self, point_features: torch.Tensor, xyz: torch.Tensor, proposals: Proposals
    ) -> torch.Tensor:
        """(K,) score logits."""
        k = proposals.num
        if k == 0:  # still a tensor of the graph (the loss sums it to a zero with grad)
            return self.linear(point_features.new_zeros(0, point_features.shape[1])).squeeze(1)
        grid = cluster_grid(xyz, proposals, self.grid_size, self.min_cell)
        values = point_features[proposals.point_index]
        cells = ops.scatter_mean(values, grid.cell_of_member, grid.coords.shape[0])
        x = SparseVoxels(cells, grid.coords, 1, (self.grid_size,) * 3, k)
        pooled = ops.scatter_max(self.unet(x).features, grid.coords[:, 0], k)
        return self.linear(pooled).squeeze(1)


@register_decoder
class PointGroupDecoder(InstanceDecoder):
    """Settings: `grouping.radius` / `grouping.min_points` (r, N_theta) and `decoder:` options."""

    name = "pointgroup"
    Options = PointGroupOptions

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        o = self.options
        min_cell = cfg.voxel.voxel_size if o.score_cell == "voxel" else 0.0
        self.score_net = ScoreNet(cfg.backbone.width, o.score_blocks, o.score_grid, min_cell)

    def forward(self, inp: DecoderInput) -> dict[str, Any]:
        proposals, cluster_set = self._proposals(inp)
        inp.lap("grouping")
        score_logits = self.score_net(inp.point_features, inp.xyz, proposals)
        logits = torch.full(
            proposals.point_index.shape, self.options.member_logit, device=inp.xyz.device
        )
        masks = DecodedMasks(logits, proposals.point_index, proposals.proposal_id)
        return {
            "proposals": proposals,
            "masks": masks,
            "score_logits": score_logits,
            "cluster_set": cluster_set,
        }

    def _proposals(self, inp: DecoderInput) -> tuple[Proposals, torch.Tensor]:
        o, g, device = self.options, self.cfg.grouping, inp.xyz.device
        use_gt = self.training and o.train_proposals in ("gt", "both")
        if self.training and o.train_proposals == "gt":
            proposals, cluster_set = Proposals.empty(device), torch.zeros(0, device=device).long()
        else:
            proposals, cluster_set = dual_set_proposals(
                inp.xyz, inp.offsets, inp.grouping_labels(g.thing_probability), inp.batch,
                g.radius, g.min_points, o.cluster_sets, g.by_class,
            )  # fmt: skip
        if use_gt:
            if inp.gt_instance is None or inp.gt_semantic is None:
                raise ValueError("training with GT proposals needs gt_semantic and gt_instance")
            gt = gt_proposals(inp.gt_instance, inp.gt_semantic, inp.batch)
            proposals = concat_proposals(proposals, gt)
            cluster_set = torch.cat([cluster_set, torch.full((gt.num,), GT, device=device)])
        if self.training and proposals.num > o.max_train_proposals:
            keep = torch.randperm(proposals.num, device=device)[: o.max_train_proposals]
            keep = keep.sort().values
            proposals, cluster_set = select_proposals(proposals, keep), cluster_set[keep]
        return proposals, cluster_set

    def losses(
        self, outputs: dict[str, Any], targets: InstanceTargets, loss_cfg: Any
    ) -> dict[str, torch.Tensor]:
        """Eq. 7 weighted; the soft target's thresholds are `loss.score_low/high` (0.25, 0.75)."""
        term = score_loss(
            outputs["score_logits"],
            outputs["proposals"],
            targets.gt_id,
            targets.num_gt,
            loss_cfg.score_low,
            loss_cfg.score_high,
        )
        return {"score": self.options.score_weight * term}


def score_targets(
    proposals: Proposals, gt_id: torch.Tensor, num_gt: int, low: float, high: float
) -> torch.Tensor:
    """Eq. 5-6: soft label of each cluster's largest IoU with a GT instance."""
    _, best_iou, _ = match_proposals(proposals, gt_id, num_gt)
    return soft_score_target(best_iou, low, high)


def score_loss(
    score_logits: torch.Tensor,
    proposals: Proposals,
    gt_id: torch.Tensor,
    num_gt: int,
    low: float,
    high: float,
) -> torch.Tensor:
    """Eq. 7: mean BCE over the M clusters (a zero of the graph without clusters)."""
    if proposals.num == 0:
        return zero_like_graph(score_logits)
    target = score_targets(proposals, gt_id, num_gt, low, high)
    return F.binary_cross_entropy_with_logits(score_logits.float(), target)
