"""DyCo3D kernel generation (section 3.3) and instance decoding (section 3.4).

A generator turns each cluster into the flat parameter vector of its own instance decoder:
"grid" is the paper's (the cluster voxelized on a g^3 grid of mean backbone features, two
3x3x3 sparse convs, global pooling, an MLP), "pooled_mlp" pools the cluster's backbone features
straight into the MLP. The decoder is a stack of 1x1 convs (per-point linear layers) with ReLU
between them and no normalization (Eq. 3); its input per point is the mask feature and the
point's position relative to the cluster centre (Eq. 2). It runs over candidate points: same
scene, inside the cluster's box grown by a margin and, category-aware (Eq. 4), predicted as the
cluster's class; every other point has mask 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dyco_perception import ops
from dyco_perception.model.grouping import Proposals
from dyco_perception.sparse import SparseConv, SparseVoxels


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


def _mlp_controller(in_channels: int, hidden: int, num_params: int) -> nn.Sequential:
    controller = nn.Sequential(
        nn.Linear(in_channels, hidden), nn.ReLU(), nn.Linear(hidden, num_params)
    )
    # Small initial kernels keep the first masks near probability 0.5 instead of saturated.
    nn.init.normal_(controller[2].weight, std=0.01)
    nn.init.zeros_(controller[2].bias)
    return controller


def _pool(values: torch.Tensor, index: torch.Tensor, num: int, pooling: str) -> torch.Tensor:
    reduce = ops.scatter_mean if pooling == "mean" else ops.scatter_max
    return reduce(values, index, num)


class PooledKernelGenerator(nn.Module):
    """Cluster-pooled backbone features -> MLP -> decoder parameters."""

    def __init__(self, in_channels: int, hidden: int, num_params: int, pooling: str):
        super().__init__()
        self.pooling, self.out_channels = pooling, in_channels
        self.controller = _mlp_controller(in_channels, hidden, num_params)

    def forward(
        self, point_features: torch.Tensor, xyz: torch.Tensor, proposals: Proposals
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (params (K, P), pooled cluster descriptors (K, C))."""
        values = point_features[proposals.point_index]
        pooled = _pool(values, proposals.proposal_id, proposals.num, self.pooling)
        return self.controller(pooled), pooled


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


class GridKernelGenerator(nn.Module):
    """DyCo3D's weight generator G_w: grid of mean backbone features -> 2 sparse convs (k=3)
    -> global pooling -> MLP -> decoder parameters. All clusters of a batch run as one sparse
    tensor, so both sparse backends and CPU/GPU run it unchanged."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        hidden: int,
        num_params: int,
        grid_size: int,
        pooling: str,
    ):
        super().__init__()
        self.grid_size, self.pooling, self.out_channels = grid_size, pooling, channels
        # LayerNorm, not BatchNorm: a batch holds only a few clusters, whose cell statistics
        # differ between training and inference; BatchNorm's running statistics then decoded
        # empty masks at inference in the overfit test (no normalization learned 2x slower).
        self.conv1 = SparseConv(in_channels, channels, "subm")
        self.norm1 = nn.LayerNorm(channels)
        self.conv2 = SparseConv(channels, channels, "subm")
        self.norm2 = nn.LayerNorm(channels)
        self.controller = _mlp_controller(channels, hidden, num_params)

    def forward(
        self, point_features: torch.Tensor, xyz: torch.Tensor, proposals: Proposals
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (params (K, P), pooled cluster descriptors (K, C))."""
        k = proposals.num
        if k == 0:
            pooled = point_features.new_zeros((0, self.out_channels))
            return self.controller(pooled), pooled
        grid = cluster_grid(xyz, proposals, self.grid_size)
        values = point_features[proposals.point_index]
        cells = ops.scatter_mean(values, grid.cell_of_member, grid.coords.shape[0])
        shape = (self.grid_size,) * 3
        x = SparseVoxels(cells, grid.coords, 1, shape, k)
        x = self.conv1(x)
        x = self.conv2(x.with_features(torch.relu(self.norm1(x.features))))
        x = x.with_features(torch.relu(self.norm2(x.features)))
        pooled = _pool(x.features, grid.coords[:, 0], k, self.pooling)
        return self.controller(pooled), pooled


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


def decode_masks(
    proposals: Proposals,
    params: torch.Tensor,
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    batch: torch.Tensor,
    semantic: torch.Tensor | None,
    num_classes: int,
    margin: float,
    layer_sizes: list[tuple[int, int]],
    use_relative_position: bool,
) -> DecodedMasks:
    """Run each proposal's generated decoder over its candidate points (`semantic` given:
    category-aware, only points predicted as the proposal's class)."""
    device = xyz.device
    if proposals.num == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return DecodedMasks(xyz.new_zeros(0), empty, empty)
    members = xyz[proposals.point_index]
    inf = torch.full((proposals.num, 3), float("inf"), device=device, dtype=xyz.dtype)
    box_min = inf.scatter_reduce(0, _expand(proposals.proposal_id), members, "amin") - margin
    box_max = (-inf).scatter_reduce(0, _expand(proposals.proposal_id), members, "amax") + margin
    # Eq. 2: the cluster centre is the mean of its points' original (unshifted) coordinates.
    centre = ops.scatter_mean(members, proposals.proposal_id, proposals.num)
    layers = split_decoder_params(params, layer_sizes)
    index = CandidateIndex(xyz, batch, semantic, num_classes)
    starts, stops = index.ranges(proposals, box_min[:, 0], box_max[:, 0])
    logits, points, ids = [], [], []
    for k in range(proposals.num):
        rows = index.order[starts[k] : stops[k]]
        yz = xyz[rows, 1:]
        rows = rows[((yz >= box_min[k, 1:]) & (yz <= box_max[k, 1:])).all(1)]
        inputs = mask_features[rows]
        if use_relative_position:
            inputs = torch.cat([inputs, xyz[rows] - centre[k]], dim=1)
        logits.append(run_decoder(inputs, [(weight[k], bias[k]) for weight, bias in layers]))
        points.append(rows)
        ids.append(torch.full_like(rows, k))
    return DecodedMasks(torch.cat(logits), torch.cat(points), torch.cat(ids))


def _expand(index: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(1).expand(-1, 3)
