"""DyCo3D kernel generator and dynamic mask decoding.

Per proposal, pooled backbone features -> controller MLP -> the flat parameter vector of a
tiny per-instance head (C+3 -> H -> 1, ReLU between; 337 parameters for C = H = 16). The head
runs over candidate points: same scene, inside the proposal's box grown by a margin, and
(category-aware) predicted as the proposal's class. Input per point = mask features and, as in
DyCo3D, the point's position relative to the proposal centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import dyco_ops
import torch
from torch import nn

from dyco_perception.model.grouping import Proposals


@dataclass
class DecodedMasks:
    """Flat (proposal, point, logit) triples of all proposals' candidate points."""

    logits: torch.Tensor  # (M,)
    point_index: torch.Tensor  # (M,)
    proposal_id: torch.Tensor  # (M,)


def split_head_params(params: torch.Tensor, c_in: int, hidden: int) -> tuple[torch.Tensor, ...]:
    """(K, c_in*H + H + H + 1) -> w1 (K,c_in,H), b1 (K,H), w2 (K,H,1), b2 (K,1)."""
    k = params.shape[0]
    sizes = [c_in * hidden, hidden, hidden, 1]
    w1, b1, w2, b2 = torch.split(params, sizes, dim=1)
    return w1.view(k, c_in, hidden), b1, w2.view(k, hidden, 1), b2


def run_dynamic_head(
    inputs: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """One generated head on (n, c_in) inputs -> (n,) mask logits."""
    hidden = torch.relu(inputs @ w1 + b1)
    return (hidden @ w2 + b2).squeeze(1)


class KernelGenerator(nn.Module):
    def __init__(self, in_channels: int, hidden: int, num_params: int, pooling: str):
        super().__init__()
        self.pooling = pooling
        self.controller = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, num_params)
        )
        # Small initial kernels keep the first masks near probability 0.5 instead of saturated.
        nn.init.normal_(self.controller[2].weight, std=0.01)
        nn.init.zeros_(self.controller[2].bias)

    def pool(self, point_features: torch.Tensor, proposals: Proposals) -> torch.Tensor:
        values = point_features[proposals.point_index]
        reduce = dyco_ops.scatter_mean if self.pooling == "mean" else dyco_ops.scatter_max
        return reduce(values, proposals.proposal_id, proposals.num)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.controller(pooled)


def candidate_points(
    proposals: Proposals, k: int, xyz: torch.Tensor, batch_rows: torch.Tensor,
    box_min: torch.Tensor, box_max: torch.Tensor, semantic: torch.Tensor | None,
) -> torch.Tensor:
    """Rows (within the proposal's scene) a proposal's head decodes."""
    pts = xyz[batch_rows]
    inside = ((pts >= box_min[k]) & (pts <= box_max[k])).all(1)
    if semantic is not None:
        inside &= semantic[batch_rows] == proposals.class_id[k]
    return batch_rows[inside]


def decode_masks(
    proposals: Proposals, params: torch.Tensor, mask_features: torch.Tensor,
    xyz: torch.Tensor, batch: torch.Tensor, semantic: torch.Tensor | None,
    margin: float, hidden: int, use_relative_position: bool,
) -> DecodedMasks:
    """Run each proposal's generated head over its candidate points."""
    device = xyz.device
    if proposals.num == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return DecodedMasks(xyz.new_zeros(0), empty, empty)
    members = xyz[proposals.point_index]
    inf = torch.full((proposals.num, 3), float("inf"), device=device, dtype=xyz.dtype)
    box_min = inf.scatter_reduce(0, _expand(proposals.proposal_id), members, "amin") - margin
    box_max = (-inf).scatter_reduce(0, _expand(proposals.proposal_id), members, "amax") + margin
    centre = dyco_ops.scatter_mean(members, proposals.proposal_id, proposals.num)
    c_in = mask_features.shape[1] + 3 * int(use_relative_position)
    w1, b1, w2, b2 = split_head_params(params, c_in, hidden)
    scene_rows = _rows_per_scene(batch, int(proposals.batch.max()) + 1)
    logits, points, ids = [], [], []
    for k in range(proposals.num):
        rows = candidate_points(
            proposals, k, xyz, scene_rows[int(proposals.batch[k])], box_min, box_max, semantic
        )
        inputs = mask_features[rows]
        if use_relative_position:
            inputs = torch.cat([inputs, xyz[rows] - centre[k]], dim=1)
        logits.append(run_dynamic_head(inputs, w1[k], b1[k], w2[k], b2[k]))
        points.append(rows)
        ids.append(torch.full_like(rows, k))
    return DecodedMasks(torch.cat(logits), torch.cat(points), torch.cat(ids))


def _expand(index: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(1).expand(-1, 3)


def _rows_per_scene(batch: torch.Tensor, num_scenes: int) -> list[torch.Tensor]:
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch, minlength=num_scenes).tolist()
    return list(torch.split(order, counts))
