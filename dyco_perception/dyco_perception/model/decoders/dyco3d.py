"""DyCo3D's instance branch (He et al., TPAMI; sections 3.3-3.5): clusters of same-class points
on shifted coordinates, a kernel generated per cluster, each cluster's mask decoded by its own
small network over the mask features (Eq. 2-4), trained with per-cluster BCE + dice (Eq. 5).
docs/decoders/dyco3d.md lists paper vs ours.

A generator turns each cluster into the flat parameter vector of its own instance decoder:
"grid" is the paper's (the cluster voxelized on a g^3 grid of mean backbone features, two
3x3x3 sparse convs, global pooling, an MLP), "pooled_mlp" pools the cluster's backbone features
straight into the MLP. The decoder is a stack of 1x1 convs (per-point linear layers) with ReLU
between them and no normalization (Eq. 3; `common.run_decoder`); its input per point is the mask
feature and the point's position relative to the cluster centre (Eq. 2). It runs over candidate
points: same scene, inside the cluster's box grown by a margin (`mask_head.decode_region: box`)
or the whole scene (`all`) and, category-aware (Eq. 4), predicted as the cluster's class; every
other point has mask 0. At inference on the CPU, dyco_ops' C++ `dynamic_mask_decode` decodes
all clusters in one call without the GIL (same result; the per-cluster Python loop stays the
reference and the training and CUDA path; DYCO_NATIVE_DECODE=0 forces it).
"""

from __future__ import annotations

import os
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
    CandidateIndex,
    DecodedMasks,
    DecoderWeights,
    cluster_grid,
    match_proposals,
    run_decoder,
    segment_sum,
    soft_score_target,
    split_decoder_params,
)
from dyco_perception.model.grouping import (
    Proposals,
    cluster_proposals,
    concat_proposals,
    gt_proposals,
    select_proposals,
)
from dyco_perception.model.unet import point_mlp
from dyco_perception.sparse import SparseConv, SparseVoxels

# --- kernel generation (3.3) and decoding (3.4, Eq. 2-4) -----------------------------------------


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
    category-aware, only points predicted as the proposal's class). The native CPU kernel
    decodes when it can (`native_decode_unavailable_reason`), else the Python loop does."""
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
    layers = split_decoder_params(params, layer_sizes)  # also checks the parameter count
    index = CandidateIndex(xyz, batch, semantic, num_classes)
    starts, stops = index.ranges(proposals, box_min[:, 0], box_max[:, 0])
    regions = CandidateRegions(index.order, starts, stops, box_min, box_max, centre)
    if native_decode_unavailable_reason(params, mask_features, xyz) is None:
        return _decode_native(
            regions, mask_features, xyz, params, layer_sizes, use_relative_position
        )
    return _decode_loop(regions, layers, mask_features, xyz, use_relative_position)


@dataclass
class CandidateRegions:
    """Proposal k decodes the rows order[starts[k]:stops[k]] whose y and z lie inside
    [box_min[k], box_max[k]]; its inputs are relative to centre[k]."""

    order: torch.Tensor
    starts: list[int]
    stops: list[int]
    box_min: torch.Tensor
    box_max: torch.Tensor
    centre: torch.Tensor


def _decode_loop(
    regions: CandidateRegions,
    layers: DecoderWeights,
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    use_relative_position: bool,
) -> DecodedMasks:
    """The reference, and the training and CUDA path: one proposal at a time in torch."""
    box_min, box_max, centre = regions.box_min, regions.box_max, regions.centre
    logits, points, ids = [], [], []
    for k in range(len(regions.starts)):
        rows = regions.order[regions.starts[k] : regions.stops[k]]
        yz = xyz[rows, 1:]
        rows = rows[((yz >= box_min[k, 1:]) & (yz <= box_max[k, 1:])).all(1)]
        inputs = mask_features[rows]
        if use_relative_position:
            inputs = torch.cat([inputs, xyz[rows] - centre[k]], dim=1)
        logits.append(run_decoder(inputs, [(weight[k], bias[k]) for weight, bias in layers]))
        points.append(rows)
        ids.append(torch.full_like(rows, k))
    return DecodedMasks(torch.cat(logits), torch.cat(points), torch.cat(ids))


def _decode_native(
    regions: CandidateRegions,
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    params: torch.Tensor,
    layer_sizes: list[tuple[int, int]],
    use_relative_position: bool,
) -> DecodedMasks:
    """`_decode_loop`'s result in one call of dyco_ops' `dynamic_mask_decode`: no per-proposal
    Python (which held the GIL against blocks segmented on other threads)."""
    starts = torch.tensor(regions.starts, dtype=torch.long)
    stops = torch.tensor(regions.stops, dtype=torch.long)
    logits, points, ids = ops.cpu_kernel("dynamic_mask_decode")(
        mask_features,
        xyz,
        regions.order,
        starts,
        stops,
        regions.box_min,
        regions.box_max,
        regions.centre,
        params,
        layer_sizes,
        use_relative_position,
    )
    return DecodedMasks(logits, points, ids)


def native_decode_unavailable_reason(
    params: torch.Tensor, mask_features: torch.Tensor, xyz: torch.Tensor
) -> str | None:
    """Why `decode_masks` runs the Python loop on these tensors; None when the native kernel
    decodes (inference: float32 CPU tensors, no autograd). DYCO_NATIVE_DECODE=0 forces the loop
    (A/B comparisons)."""
    if os.environ.get("DYCO_NATIVE_DECODE", "1") == "0":
        return "DYCO_NATIVE_DECODE=0"
    missing = ops.cpu_kernel_missing("dynamic_mask_decode")
    if missing is not None:
        return missing
    tensors = (params, mask_features, xyz)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return "autograd: training decodes in torch"
    if any(t.device.type != "cpu" for t in tensors):
        return "CPU tensors only"
    if any(t.dtype != torch.float32 for t in tensors):
        return "float32 tensors only"
    return None


def _expand(index: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(1).expand(-1, 3)


def kernel_generator(cfg: ModelConfig) -> nn.Module:
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


def training_proposals(cfg: ModelConfig, inp: DecoderInput, training: bool) -> Proposals:
    """Predicted clusters (and in training, per `grouping.train_proposals`, GT instances),
    capped at `grouping.max_train_proposals` in training."""
    g = cfg.grouping
    use_pred = not training or g.train_proposals in ("pred", "both")
    use_gt = training and g.train_proposals in ("gt", "both")
    proposals = Proposals.empty(inp.xyz.device)
    if use_pred:
        proposals = cluster_proposals(
            inp.xyz,
            inp.offsets,
            inp.grouping_labels(g.thing_probability),
            inp.batch,
            g.radius,
            g.min_points,
            g.by_class,
        )
    if use_gt:
        if inp.gt_instance is None or inp.gt_semantic is None:
            raise ValueError("training with GT proposals needs gt_semantic and gt_instance")
        gt = gt_proposals(inp.gt_instance, inp.gt_semantic, inp.batch)
        proposals = concat_proposals(proposals, gt)
    if training and proposals.num > g.max_train_proposals:
        keep = torch.randperm(proposals.num, device=inp.xyz.device)[: g.max_train_proposals]
        proposals = select_proposals(proposals, keep.sort().values)
    return proposals


@register_decoder
class DyCo3DDecoder(InstanceDecoder):
    """Settings: `grouping` (clusters) and `mask_head` (generator, decoder, category-aware)."""

    name = "dyco3d"

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        m = cfg.backbone.width
        self.mask_feature_head = point_mlp(m, m, cfg.mask_head.mask_channels)
        self.kernel_generator = kernel_generator(cfg)
        c = self.kernel_generator.out_channels
        self.score_head = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, 1))

    def forward(self, inp: DecoderInput) -> dict[str, Any]:
        cfg, mh = self.cfg, self.cfg.mask_head
        proposals = training_proposals(cfg, inp, self.training)
        inp.lap("grouping")
        mask_features = inp.per_point(self.mask_feature_head)
        params, pooled = self.kernel_generator(inp.point_features, inp.xyz, proposals)
        category_aware = mh.category_aware_train if self.training else mh.category_aware
        margin = mh.box_margin_train if self.training else mh.box_margin
        masks = decode_masks(
            proposals,
            params,
            mask_features,
            inp.xyz,
            inp.batch,
            inp.semantic_pred if category_aware else None,
            cfg.num_classes,
            margin if mh.decode_region == "box" else float("inf"),
            cfg.decoder_layer_sizes,
            mh.use_relative_position,
        )
        score_logits = self.score_head(pooled).squeeze(1)
        return {"proposals": proposals, "masks": masks, "score_logits": score_logits}

    def losses(
        self, outputs: dict[str, Any], targets: InstanceTargets, loss_cfg: Any
    ) -> dict[str, torch.Tensor]:
        terms = mask_losses(outputs, targets.gt_id, targets.num_gt, loss_cfg)
        weights = {
            "mask_bce": loss_cfg.mask_bce_weight,
            "mask_dice": loss_cfg.mask_dice_weight,
            "score": loss_cfg.score_weight,
        }
        return {name: weights[name] * value for name, value in terms.items()}


# --- losses (Eq. 5) and target matching ------------------------------------------------------


def mask_losses(
    outputs: dict, gt_id: torch.Tensor, num_gt: int, cfg: Any
) -> dict[str, torch.Tensor]:
    """Unweighted mask BCE, mask dice and score terms of matched proposals."""
    masks, proposals, score_logits = outputs["masks"], outputs["proposals"], outputs["score_logits"]
    zero = zero_like_graph(masks.logits) + zero_like_graph(score_logits)
    if proposals.num == 0 or masks.logits.numel() == 0:
        return {"mask_bce": zero, "mask_dice": zero, "score": zero}
    best, best_iou, gt_size = match_proposals(proposals, gt_id, num_gt, cfg.target_rule)
    matched = best >= 0
    if cfg.target_rule == "iou":
        matched &= best_iou >= cfg.min_match_iou
    target = (gt_id[masks.point_index] == best[masks.proposal_id]).float()
    target = target * matched[masks.proposal_id].float()
    train_pair = matched[masks.proposal_id]
    k = proposals.num
    probs = masks.logits.sigmoid()
    if train_pair.any():
        bce = _mask_bce(masks.logits, target, masks.proposal_id, matched, cfg.mask_bce_average)
        inter = segment_sum(probs * target, masks.proposal_id, k)
        denom = segment_sum(probs, masks.proposal_id, k) + segment_sum(target, masks.proposal_id, k)
        dice = (1 - (2 * inter + 1) / (denom + 1))[matched].mean()
    else:
        bce, dice = zero, zero
    score = _score_loss(
        score_logits, probs.detach(), target, masks.proposal_id, best, gt_size, matched, cfg
    )
    return {"mask_bce": bce, "mask_dice": dice, "score": score}


def _mask_bce(
    logits: torch.Tensor,
    target: torch.Tensor,
    proposal_id: torch.Tensor,
    matched: torch.Tensor,
    average: str,
) -> torch.Tensor:
    """BCE over the decoded pairs of matched proposals (Eq. 5: 1/Z sum_z 1/N_z sum_j)."""
    pair_loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    train_pair = matched[proposal_id]
    if average == "pair":
        return pair_loss[train_pair].mean()
    k = matched.shape[0]
    per_proposal = segment_sum(pair_loss, proposal_id, k)
    count = segment_sum(torch.ones_like(pair_loss), proposal_id, k)
    used = matched & (count > 0)
    return (per_proposal[used] / count[used]).mean()


def _score_loss(
    score_logits, probs, target, proposal_id, best, gt_size, matched, cfg
) -> torch.Tensor:
    """BCE of the score head against the (soft) IoU of the predicted mask with its GT."""
    k = score_logits.shape[0]
    pred = (probs > 0.5).float()
    inter = segment_sum(pred * target, proposal_id, k)
    pred_size = segment_sum(pred, proposal_id, k)
    # A crop without thing instances has no GT sizes to index: every proposal is unmatched.
    size_of_best = gt_size[best.clamp_min(0)] if gt_size.numel() else torch.zeros_like(best)
    gt = torch.where(matched, size_of_best.float(), torch.zeros_like(pred_size))
    iou = inter / (pred_size + gt - inter).clamp_min(1)
    soft = soft_score_target(iou, cfg.score_low, cfg.score_high)
    return F.binary_cross_entropy_with_logits(score_logits, soft * matched.float())
