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


class CandidateIndex:
    """Points sorted by (scene, class, x): a proposal's candidates with x inside its box form
    one contiguous run, found for all proposals with a single searchsorted (no O(N) scan per
    proposal)."""

    def __init__(self, xyz: torch.Tensor, batch: torch.Tensor, semantic: torch.Tensor | None):
        x = xyz[:, 0].double()
        self.x_min = float(x.min())
        self.span = float(x.max()) - self.x_min + 1.0
        cls = semantic if semantic is not None else torch.zeros_like(batch)
        self.num_classes = int(cls.max()) + 1
        group = (batch * self.num_classes + cls).double()
        key = group * self.span + (x - self.x_min)
        self.key, self.order = torch.sort(key, stable=True)
        self.category_aware = semantic is not None

    def ranges(
        self, proposals: Proposals, lo_x: torch.Tensor, hi_x: torch.Tensor
    ) -> tuple[list[int], list[int]]:
        cls = proposals.class_id if self.category_aware else torch.zeros_like(proposals.class_id)
        group = (proposals.batch * self.num_classes + cls).double() * self.span
        lo = (lo_x.double() - self.x_min).clamp(0, self.span - 0.5) + group
        hi = (hi_x.double() - self.x_min).clamp(0, self.span - 0.5) + group
        start = torch.searchsorted(self.key, lo)
        stop = torch.searchsorted(self.key, hi, right=True)
        return start.tolist(), stop.tolist()


def decode_masks(
    proposals: Proposals,
    params: torch.Tensor,
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    batch: torch.Tensor,
    semantic: torch.Tensor | None,
    margin: float,
    hidden: int,
    use_relative_position: bool,
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
    index = CandidateIndex(xyz, batch, semantic)
    starts, stops = index.ranges(proposals, box_min[:, 0], box_max[:, 0])
    logits, points, ids = [], [], []
    for k in range(proposals.num):
        rows = index.order[starts[k] : stops[k]]
        yz = xyz[rows, 1:]
        rows = rows[((yz >= box_min[k, 1:]) & (yz <= box_max[k, 1:])).all(1)]
        inputs = mask_features[rows]
        if use_relative_position:
            inputs = torch.cat([inputs, xyz[rows] - centre[k]], dim=1)
        logits.append(run_dynamic_head(inputs, w1[k], b1[k], w2[k], b2[k]))
        points.append(rows)
        ids.append(torch.full_like(rows, k))
    return DecodedMasks(torch.cat(logits), torch.cat(points), torch.cat(ids))


def _expand(index: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(1).expand(-1, 3)
