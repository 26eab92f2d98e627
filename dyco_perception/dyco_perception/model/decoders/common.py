"""Decoder machinery several methods share (issue 21: formerly `model/dynamic_head.py`).

- `DecodedMasks`: the flat (proposal, point, logit) triples every decoder returns as "masks";
- `split_decoder_params` / `run_decoder`: a generated per-instance decoder, 1x1 convs with ReLU
  between them and no normalization (DyCo3D Eq. 3; DKNet's and ISBNet's dynamic convolutions);
- `cluster_grid`: each cluster voxelized on a g^3 grid (DyCo3D's kernel generator, PointGroup's
  ScoreNet);
- `CandidateIndex`: a proposal's candidate points (same scene, same class, inside an x range) by
  one searchsorted;
- `match_proposals` / `soft_score_target` / `segment_sum`: target matching and the soft score
  target of the proposal-based methods (DyCo3D, PointGroup).
DyCo3D's own parts (the kernel generators, `decode_masks`) live in `dyco3d.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dyco_perception.model.grouping import Proposals


@dataclass
class DecodedMasks:
    """Flat (proposal, point, logit) triples of all proposals' candidate points."""

    logits: torch.Tensor  # (M,)
    point_index: torch.Tensor  # (M,)
    proposal_id: torch.Tensor  # (M,)


DecoderWeights = list[tuple[torch.Tensor, torch.Tensor]]


def split_decoder_params(
    params: torch.Tensor, layer_sizes: list[tuple[int, int]]
) -> DecoderWeights:
    """(K, P) flat parameters -> per layer (weight (K, in, out), bias (K, out)), in the order
    conv1 weights, conv1 bias, conv2 weights, ... (Eq. 3)."""
    expected = sum(c_in * c_out + c_out for c_in, c_out in layer_sizes)
    if params.shape[1] != expected:
        raise ValueError(f"decoder needs {expected} parameters per instance, got {params.shape[1]}")
    k = params.shape[0]
    sizes = [n for c_in, c_out in layer_sizes for n in (c_in * c_out, c_out)]
    chunks = torch.split(params, sizes, dim=1)
    return [
        (chunks[2 * i].reshape(k, c_in, c_out), chunks[2 * i + 1])
        for i, (c_in, c_out) in enumerate(layer_sizes)
    ]


def run_decoder(inputs: torch.Tensor, layers: DecoderWeights) -> torch.Tensor:
    """One instance's decoder on (n, in) inputs -> (n,) mask logits; ReLU between layers."""
    x = inputs
    for i, (weight, bias) in enumerate(layers):
        x = x @ weight + bias
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x.squeeze(1)


@dataclass
class ClusterGrid:
    """All clusters' occupied grid cells as one sparse tensor whose batch index is the cluster."""

    coords: torch.Tensor  # (V, 4) int64: cluster, x, y, z in 0..g-1
    cell_of_member: torch.Tensor  # (P,) cell row of each proposal member


def cluster_grid(
    xyz: torch.Tensor, proposals: Proposals, grid_size: int, min_cell: float = 0.0
) -> ClusterGrid:
    """Each cluster scaled isotropically into a grid_size^3 grid from its box corner: its
    longest side spans the grid, except that a cell is never smaller than `min_cell` (so small
    clusters keep e.g. the voxel size; 0 = every cluster spans the grid)."""
    members = xyz[proposals.point_index].float()
    pid = proposals.proposal_id
    index = pid.unsqueeze(1).expand(-1, 3)
    big = torch.full((proposals.num, 3), float("inf"), device=xyz.device)
    low = big.scatter_reduce(0, index, members, "amin")
    high = (-big).scatter_reduce(0, index, members, "amax")
    side = (high - low).amax(1).clamp_min(1e-6)
    if min_cell > 0:
        side = side.clamp_min(min_cell * grid_size)
    cell = ((members - low[pid]) / side[pid, None] * grid_size).long().clamp(0, grid_size - 1)
    key = ((pid * grid_size + cell[:, 0]) * grid_size + cell[:, 1]) * grid_size + cell[:, 2]
    unique, cell_of_member = torch.unique(key, return_inverse=True)
    g = grid_size
    coords = torch.stack([unique // g**3, unique // g**2 % g, unique // g % g, unique % g], 1)
    return ClusterGrid(coords, cell_of_member)


class CandidateIndex:
    """Points sorted by (scene, class, x): a proposal's candidates with x inside its box form
    one contiguous run, found for all proposals with a single searchsorted (no O(N) scan per
    proposal)."""

    def __init__(
        self,
        xyz: torch.Tensor,
        batch: torch.Tensor,
        semantic: torch.Tensor | None,
        num_classes: int,
    ):
        x = xyz[:, 0].double()
        self.x_min = float(x.min())
        self.span = float(x.max()) - self.x_min + 1.0
        cls = semantic if semantic is not None else torch.zeros_like(batch)
        # The model's class count, not the largest class present: a proposal of a class no
        # point is predicted as (a GT proposal in training) must not index the next scene.
        self.num_classes = num_classes
        group = (batch * self.num_classes + cls).double()
        key = group * self.span + (x - self.x_min)
        self.key, self.order = torch.sort(key, stable=True)
        self.category_aware = semantic is not None

    def ranges(
        self, proposals: Proposals, lo_x: torch.Tensor, hi_x: torch.Tensor
    ) -> tuple[list[int], list[int]]:
        cls = proposals.class_id if self.category_aware else torch.zeros_like(proposals.class_id)
        if cls.numel() and int(cls.max()) >= self.num_classes:
            raise ValueError(f"proposal class {int(cls.max())} >= num_classes {self.num_classes}")
        group = (proposals.batch * self.num_classes + cls).double() * self.span
        lo = (lo_x.double() - self.x_min).clamp(0, self.span - 0.5) + group
        hi = (hi_x.double() - self.x_min).clamp(0, self.span - 0.5) + group
        start = torch.searchsorted(self.key, lo)
        stop = torch.searchsorted(self.key, hi, right=True)
        return start.tolist(), stop.tolist()


def match_proposals(
    proposals: Proposals, gt_id: torch.Tensor, num_gt: int, rule: str = "iou"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each proposal's GT instance: (gt index or -1, IoU with it, GT sizes).

    rule "iou": the instance of highest IoU with the proposal. rule "portion" (DyCo3D 3.4): the
    instance that holds the largest portion of the proposal's points, however small the
    proposal is next to it, so a fragment is taught to grow into its whole object."""
    k = proposals.num
    gt_size = torch.bincount(gt_id[gt_id >= 0], minlength=num_gt)
    if k == 0 or num_gt == 0:
        none = torch.full((k,), -1, dtype=torch.long, device=gt_id.device)
        return none, torch.zeros(k, device=gt_id.device), gt_size
    member_gt = gt_id[proposals.point_index]
    proposal_size = torch.bincount(proposals.proposal_id, minlength=k)
    hit = member_gt >= 0
    pair = proposals.proposal_id[hit] * num_gt + member_gt[hit]
    inter = torch.bincount(pair, minlength=k * num_gt).view(k, num_gt).float()
    union = proposal_size[:, None] + gt_size[None, :] - inter
    iou = inter / union.clamp_min(1)
    ranking = inter if rule == "portion" else iou
    best = ranking.argmax(1)
    best_iou = iou.gather(1, best[:, None]).squeeze(1)
    best = torch.where(inter.gather(1, best[:, None]).squeeze(1) > 0, best, -1)
    return best, best_iou, gt_size


def soft_score_target(iou: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """PointGroup's score target: 0 below `low` IoU, 1 above `high`, linear between."""
    return ((iou - low) / (high - low)).clamp(0, 1)


def segment_sum(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    return values.new_zeros(num).index_add(0, index, values)
