"""DKNet's instance branch (Wu et al., ECCV 2022, "3D Instances as 1D Kernels"; section 3.3-3.5
and supplement S3): a centroid heat map mined by LN-NMS into candidates, each described by the
mean reduced features of its foreground (same class within R) and background (other classes
within 2R) points; an MLP on |Fa_i - Fa_j| scores candidate pairs for merging, merged groups
become instance kernels (size-weighted mean features) that decode masks over the whole scene.
Inference: a per-instance Otsu threshold, the coverage score, score = mean mask x mean class
probability of the instance's points; no NMS. docs/decoders/dknet.md lists paper vs ours.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from dyco_perception import ops
from dyco_perception.classes import STUFF_CLASS_IDS
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
    run_decoder,
    segment_sum,
    split_decoder_params,
)
from dyco_perception.model.grouping import Proposals, stuff_mask
from dyco_perception.model.unet import point_mlp
from dyco_perception.validation import choice, ranged

# Hungarian cost of a prediction/GT pair of different scenes (never assigned).
_FORBIDDEN = 1e6


@dataclass
class DKNetOptions:
    """DKNet's own settings (paper values unless the doc says otherwise)."""

    feature_channels: int = ranged(16, 1, 256, "D': reduced (aggregation) and mask features")
    alpha: float = ranged(25.0, 0.01, 1000.0, "heat target exp(-alpha d^2 / r^2) (paper: 25)")
    nms_radius: float = ranged(0.3, 0.01, 10.0, "R of LN-NMS and candidate description (m)")
    nms_threshold: float = ranged(0.5, 0.0, 1.0, "T: local-normalised heat to accept")
    max_candidates: int = ranged(200, 1, 100_000, "N per scene (paper 200, released code 150)")
    max_neighbours: int = ranged(2000, 1, 1_000_000, "cap of fg/bg points per candidate (code)")
    merge_hidden: int = ranged(64, 1, 1024, "hidden width of the merge MLP (ours)")
    merge_threshold: float = ranged(0.5, 0.0, 1.0, "greedy merging while best score > this")
    controller_hidden: int = ranged(16, 1, 1024, "hidden width of the kernel MLP (code: 16)")
    decoder_hidden: int = ranged(16, 1, 256, "dynamic conv channels (paper: [16, 1])")
    decoder_layers: int = ranged(2, 1, 8, "dynamic 1x1 convs (paper: 2, 337 parameters)")
    decode_radius: float = ranged(0.0, 0.0, 100.0, "0: whole scene (paper); else a ball (m)")
    max_train_instances: int = ranged(80, 1, 100_000, "instances decoded in training (code: 80)")
    mask_iou_gate: float = ranged(0.25, 0.0, 1.0, "Eq. 6: mask loss only where IoU > this")
    # "iou" (paper Eq. 6) alone never opens from small initial kernels (masks ~0.5 everywhere,
    # IoU < 0.25: the overfit fit had no mask loss in 60 iterations); "iou_or_centre" also trains
    # a matched kernel whose centre candidate lies on its GT instance.
    mask_gate: str = choice("iou_or_centre", ("iou", "iou_or_centre"))
    otsu_bins: int = ranged(100, 2, 10_000, "Otsu levels K (supplement S1: 100)")
    heat_weight: float = ranged(1.0, 0.0, 100.0)
    merge_bce_weight: float = ranged(1.0, 0.0, 100.0)
    merge_dice_weight: float = ranged(0.0, 0.0, 100.0, "paper Eq. 2: BCE only; code adds dice")
    mask_bce_weight: float = ranged(1.0, 0.0, 100.0)
    mask_dice_weight: float = ranged(1.0, 0.0, 100.0)
    # Instance score: "sqrt", sqrt(mean mask x mean class probability) (released code; the
    # inference score_threshold applies to it); "product", the product itself (our earlier
    # rule: a 0.1 threshold on it is 0.01 on the released score, ten times stricter).
    score_formula: str = choice("sqrt", ("sqrt", "product"))
    # True (released code): instances below the score threshold or the minimum size drop out
    # before the per-point argmax, so their points go to the next surviving instance; False:
    # post-processing drops them afterwards and their points stay unlabelled.
    reassign_dropped: bool = True


@register_decoder
class DKNetDecoder(InstanceDecoder):
    name = "dknet"
    Options = DKNetOptions

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        o, m = self.options, cfg.backbone.width
        d = o.feature_channels
        self.heat_head = point_mlp(m + 3, m, 1)  # [F_p, O] -> heat (section 3.3)
        self.reduce_head = point_mlp(m, m, d)  # F_k of Algorithm 1
        self.mask_feature_head = point_mlp(m, m, d)  # F_m (section 3.5)
        self.merge_head = nn.Sequential(
            nn.Linear(2 * d + 3, o.merge_hidden),
            nn.ReLU(),
            nn.Linear(o.merge_hidden, o.merge_hidden),
            nn.ReLU(),
            nn.Linear(o.merge_hidden, 1),
        )
        # Start below the merge threshold (p = 0.12): an untrained head near 0.5 merged every
        # candidate of a scan into one instance in the smoke run; DKNet's "no merging" baseline
        # is the safe start until the pairs are learned.
        nn.init.constant_(self.merge_head[4].bias, -2.0)
        dims = [d + 3] + [o.decoder_hidden] * (o.decoder_layers - 1) + [1]
        self.layer_sizes = list(itertools.pairwise(dims))
        num_params = sum(c_in * c_out + c_out for c_in, c_out in self.layer_sizes)
        self.controller = nn.Sequential(
            nn.Linear(d, o.controller_hidden), nn.ReLU(), nn.Linear(o.controller_hidden, num_params)
        )
        # Small initial kernels: first masks near probability 0.5 rather than saturated.
        nn.init.normal_(self.controller[2].weight, std=0.01)
        nn.init.zeros_(self.controller[2].bias)

    def forward(self, inp: DecoderInput) -> dict[str, Any]:
        o = self.options
        heat = self._heat(inp).sigmoid()
        semantic = inp.semantic_pred
        thing = ~stuff_mask(semantic)
        # Heat of non-thing points is unsupervised (Eq. 1): zero it so it cannot normalise.
        candidates = ops.ln_nms(
            inp.xyz,
            inp.batch,
            (heat * thing).detach(),
            thing,
            o.nms_radius,
            o.nms_threshold,
            o.max_candidates,
        )
        inp.lap("grouping")
        reduced = inp.per_point(self.reduce_head)
        fn, fb, size = describe_candidates(
            inp.xyz, inp.batch, semantic, reduced, candidates, o.nms_radius, o.max_neighbours
        )
        shifted = (inp.xyz + inp.offsets).detach()[candidates]
        fa = torch.cat([fn, fb, shifted], 1)
        pair_i, pair_j = scene_pairs(inp.batch[candidates])
        merge_prob = self.merge_head((fa[pair_i] - fa[pair_j]).abs()).squeeze(1).sigmoid()
        score = pair_matrix(merge_prob.detach(), pair_i, pair_j, candidates.numel())
        centre = greedy_merge(score, heat[candidates].detach(), o.merge_threshold)
        group, kernel_feature = merge_features(centre, fn, size)
        centre_rows = candidates[torch.unique(centre)]
        if self.training and centre_rows.numel() > o.max_train_instances:
            keep = torch.randperm(centre_rows.numel(), device=centre.device)
            keep = keep[: o.max_train_instances].sort().values
            centre_rows, kernel_feature = centre_rows[keep], kernel_feature[keep]
            group = remap_groups(group, keep)
        params = self.controller(kernel_feature)
        mask_features = inp.per_point(self.mask_feature_head)
        masks = decode_instances(
            params,
            self.layer_sizes,
            mask_features,
            inp.xyz,
            inp.batch,
            thing,
            inp.xyz[centre_rows],
            inp.batch[centre_rows],
            o.decode_radius,
        )
        member = group >= 0
        proposals = Proposals(
            candidates[member],
            group[member],
            semantic[centre_rows],
            inp.batch[centre_rows],
            torch.zeros_like(centre_rows),
        )
        raw = {
            "heat": heat,
            "candidates": candidates,
            "pair_i": pair_i,
            "pair_j": pair_j,
            "merge_prob": merge_prob,
            "centre_rows": centre_rows,
            "centre_class": semantic[centre_rows],  # S_ins: its candidates' predicted class
            "masks": masks,
        }
        out: dict[str, Any] = {"proposals": proposals, "masks": masks, "dknet": raw}
        if self.training:
            out["score_logits"] = masks.logits.new_zeros(proposals.num)
            return out
        inference = self.cfg.inference
        survival = (
            (inference.score_threshold, inference.min_instance_points)
            if o.reassign_dropped
            else None
        )
        class_prob = inp.semantic_logits.softmax(1)
        out.update(
            instance_outputs(
                masks, proposals.num, class_prob, o.otsu_bins, o.score_formula, survival
            )
        )
        return out

    def _heat(self, inp: DecoderInput) -> torch.Tensor:
        """Heat logits per point from [F_p, O] per voxel (the offsets of a voxel's points are
        equal; detached so the heat loss does not bend the offsets)."""
        vox = inp.voxelized
        voxel_offsets = ops.scatter_mean(
            inp.offsets.detach(), vox.point_to_voxel, inp.voxel_features.shape[0]
        )
        logits = self.heat_head(torch.cat([inp.voxel_features, voxel_offsets], 1))
        return logits[vox.point_to_voxel].squeeze(1)

    def losses(
        self, outputs: dict[str, Any], targets: InstanceTargets, loss_cfg: Any
    ) -> dict[str, torch.Tensor]:
        o, raw = self.options, outputs["dknet"]
        heat = heat_loss(raw["heat"], targets.xyz, targets.gt_id, targets.num_gt, o.alpha)
        cand_gt = targets.gt_id[raw["candidates"]]
        merge_target = merge_targets(cand_gt, raw["pair_i"], raw["pair_j"])
        merge_bce, merge_dice = bce_dice(raw["merge_prob"], merge_target)
        mask_bce, mask_dice = mask_losses(raw, targets, o.mask_iou_gate, o.mask_gate)
        return {
            "heat": o.heat_weight * heat,
            "merge_bce": o.merge_bce_weight * merge_bce,
            "merge_dice": o.merge_dice_weight * merge_dice,
            "mask_bce": o.mask_bce_weight * mask_bce,
            "mask_dice": o.mask_dice_weight * mask_dice,
        }


# --- candidates: description, pairs, merging (section 3.4, supplement Algorithms 1-2) --------


def describe_candidates(
    xyz: torch.Tensor,
    batch: torch.Tensor,
    semantic: torch.Tensor,
    features: torch.Tensor,
    candidates: torch.Tensor,
    radius: float,
    cap: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1's description: mean features of same-class points within R (fg) and of
    other-class points within 2R (bg) of each candidate; also the fg count (its size).

    Both searches keep the first `cap` points (ascending row) of the ball; the bg search caps
    before dropping the same-class points (released code: 2000 each)."""
    d = features.shape[1]
    if candidates.numel() == 0:
        empty = features.new_zeros((0, d))
        return empty, empty, features.new_zeros(0)
    # Same class and scene = one "batch" key, so the ball only returns foreground points.
    key = batch * (int(semantic.max()) + 2) + semantic + 1
    q = xyz[candidates]
    fg, fg_count = ops.ball_query(q, key[candidates], xyz, key, radius, cap)
    near, _ = ops.ball_query(q, batch[candidates], xyz, batch, 2 * radius, cap)
    other = semantic[near.clamp_min(0)] != semantic[candidates][:, None]
    return (
        masked_mean(features, fg, fg >= 0),
        masked_mean(features, near, (near >= 0) & other),
        fg_count.to(features.dtype),
    )


def masked_mean(features: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(Q, k) neighbour rows -> (Q, D) mean features of the valid ones (0 where none)."""
    query, slot = valid.nonzero().unbind(1)
    total = features.new_zeros((rows.shape[0], features.shape[1]))
    total = total.index_add(0, query, features[rows[query, slot]])
    return total / valid.sum(1, keepdim=True).clamp_min(1).to(features.dtype)


def scene_pairs(scene: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All candidate pairs i < j of the same scene."""
    i, j = torch.triu_indices(scene.numel(), scene.numel(), 1, device=scene.device)
    same = scene[i] == scene[j]
    return i[same], j[same]


def pair_matrix(
    values: torch.Tensor, pair_i: torch.Tensor, pair_j: torch.Tensor, n: int
) -> torch.Tensor:
    """Symmetric (n, n) matrix of pair values, 0 on the diagonal and across scenes."""
    out = values.new_zeros((n, n))
    out[pair_i, pair_j] = values
    out[pair_j, pair_i] = values
    return out


def greedy_merge(score: torch.Tensor, heat: torch.Tensor, threshold: float) -> torch.Tensor:
    """Algorithm 2: merge the two groups of the best pair while its score > threshold; a group
    is labelled by its member of highest heat; scores inside a group are zeroed.
    Returns (n,) the label (centre candidate) of each candidate's group."""
    a = score.detach().cpu().clone()
    h = heat.detach().cpu()
    n = a.shape[0]
    label = torch.arange(n)
    while n > 1:
        best = int(torch.argmax(a))
        if float(a.view(-1)[best]) <= threshold:
            break
        i, j = divmod(best, n)
        group = (label == label[i]) | (label == label[j])
        members = group.nonzero().squeeze(1)
        label[group] = members[torch.argmax(h[members])]
        a[group[:, None] & group[None, :]] = 0
    return label.to(score.device)


def merge_features(
    centre: torch.Tensor, features: torch.Tensor, size: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(group id 0..I-1 of each candidate (in centre order), (I, D) size-weighted mean
    features of each group: the instance kernel's input F_ins)."""
    _, group = torch.unique(centre, return_inverse=True)
    num = int(group.max()) + 1 if group.numel() else 0
    weight = size.clamp_min(1e-6).unsqueeze(1)  # a candidate has >= 1 fg point: itself
    total = features.new_zeros((num, features.shape[1])).index_add(0, group, features * weight)
    mass = features.new_zeros((num, 1)).index_add(0, group, weight)
    return group, total / mass.clamp_min(1e-12)


def remap_groups(group: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Group ids after keeping the groups listed in `keep` (dropped ones -> -1)."""
    new_id = torch.full((int(group.max()) + 1,), -1, dtype=torch.long, device=group.device)
    new_id[keep] = torch.arange(keep.numel(), device=group.device)
    return new_id[group]


# --- masks (section 3.5) ---------------------------------------------------------------------


def decode_instances(
    params: torch.Tensor,
    layer_sizes: list[tuple[int, int]],
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    batch: torch.Tensor,
    decodable: torch.Tensor,
    centre: torch.Tensor,
    centre_batch: torch.Tensor,
    radius: float,
) -> DecodedMasks:
    """Each kernel's decoder over its scene's decodable points, input [F_m, C_ins - X] (Eq. 3);
    `radius` > 0 limits it to points within that distance of the centre."""
    empty = torch.zeros(0, dtype=torch.long, device=xyz.device)
    logits, points, ids = [xyz.new_zeros(0)], [empty], [empty]
    layers = split_decoder_params(params, layer_sizes)
    scene_rows = {
        int(s): (decodable & (batch == s)).nonzero().squeeze(1) for s in centre_batch.unique()
    }
    for k in range(centre.shape[0]):
        rows = scene_rows[int(centre_batch[k])]
        relative = centre[k] - xyz[rows]
        if radius > 0:
            inside = (relative * relative).sum(1) <= radius * radius
            rows, relative = rows[inside], relative[inside]
        inputs = torch.cat([mask_features[rows], relative.to(mask_features.dtype)], 1)
        logits.append(run_decoder(inputs, [(w[k], b[k]) for w, b in layers]))
        points.append(rows)
        ids.append(torch.full_like(rows, k))
    return DecodedMasks(torch.cat(logits), torch.cat(points), torch.cat(ids))


# --- inference post-processing (section 3.5, supplement S1) ----------------------------------


def per_point_owner(
    values: torch.Tensor, point: torch.Tensor, instance: torch.Tensor, eligible: torch.Tensor
) -> torch.Tensor:
    """Per decoded pair: is its instance the eligible one with the highest value at its point
    (ties: lowest instance id)."""
    num_points = int(point.max()) + 1 if point.numel() else 0
    v = torch.where(eligible, values, torch.full_like(values, -1.0))
    best = v.new_full((num_points,), -1.0).scatter_reduce(0, point, v, "amax")
    top = eligible & (v == best[point])
    big = int(instance.max()) + 1 if instance.numel() else 0
    first = torch.full((num_points,), big, dtype=torch.long, device=point.device)
    first = first.scatter_reduce(0, point[top], instance[top], "amin")
    return top & (instance == first[point])


def instance_outputs(
    masks: DecodedMasks,
    num: int,
    class_prob: torch.Tensor,
    bins: int,
    score_formula: str = "sqrt",
    survival: tuple[float, int] | None = None,
) -> dict[str, Any]:
    """Otsu threshold per instance, coverage re-weighting (Eq. 7) and the exclusive masks it
    gives, score from the mean mask and the mean class probability over the instance's intra
    points (`score_formula`), class by vote (mean probabilities of thing classes over the intra
    points). `survival` = (score threshold, minimum points): instances failing either leave
    the per-point argmax, so their points go to the next surviving instance."""
    probs = masks.logits.detach().sigmoid()
    pid, point = masks.proposal_id, masks.point_index
    threshold = ops.otsu_threshold(probs, pid, num, bins)
    intra = probs > threshold[pid]
    n_intra = torch.bincount(pid[intra], minlength=num).float()
    raw_owner = per_point_owner(probs, point, pid, intra)
    n_inter = torch.bincount(pid[raw_owner], minlength=num).float()
    coverage = n_inter / n_intra.clamp_min(1)
    rows = intra.nonzero().squeeze(1)
    votes = class_prob.new_zeros((num, class_prob.shape[1]))
    votes.index_add_(0, pid[rows], class_prob[point[rows]])
    votes[:, list(STUFF_CLASS_IDS)] = 0
    class_probs = votes / n_intra.clamp_min(1)[:, None]
    mean_mask = probs.new_zeros(num).index_add(0, pid[rows], probs[rows]) / n_intra.clamp_min(1)
    score = mean_mask * class_probs.max(1).values
    if score_formula == "sqrt":
        score = score.sqrt()
    keep = exclusive_masks(probs * coverage[pid], point, pid, intra, score, survival)
    final = DecodedMasks(masks.logits[keep], point[keep], pid[keep])
    return {
        "masks": final,
        "mask_threshold": threshold,
        "score": score,
        "score_logits": torch.logit(score, eps=1e-6),
        "proposal_class_probs": class_probs,
        "coverage": coverage,
    }


MAX_SURVIVAL_ROUNDS = 10


def exclusive_masks(
    values: torch.Tensor,
    point: torch.Tensor,
    pid: torch.Tensor,
    intra: torch.Tensor,
    score: torch.Tensor,
    survival: tuple[float, int] | None,
) -> torch.Tensor:
    """Each point to the intra instance of highest value. With `survival`, only instances
    scoring at least its threshold and keeping at least its point count compete: the argmax
    is repeated without the ones that fell under the count, until none does."""
    if survival is None:
        return per_point_owner(values, point, pid, intra)
    min_score, min_points = survival
    alive = score >= min_score
    for _ in range(MAX_SURVIVAL_ROUNDS):
        keep = per_point_owner(values, point, pid, intra & alive[pid])
        sizes = torch.bincount(pid[keep], minlength=score.numel())
        still = alive & (sizes >= min_points)
        if torch.equal(still, alive):
            break
        alive = still
    return keep


# --- losses (Eq. 1, 2, 5, 6) -----------------------------------------------------------------


def heat_targets(
    xyz: torch.Tensor, gt_id: torch.Tensor, num_gt: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of instance points, exp(-alpha d^2 / r^2) there): d the distance to the
    instance's centroid, r the longest side of its axis-aligned box."""
    rows = (gt_id >= 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return rows, xyz.new_zeros(0)
    points, g = xyz[rows].float(), gt_id[rows]
    centroid = ops.scatter_mean(points, g, num_gt)
    index = g.unsqueeze(1).expand(-1, 3)
    big = torch.full((num_gt, 3), float("inf"), device=xyz.device)
    side = (-big).scatter_reduce(0, index, points, "amax") - big.scatter_reduce(
        0, index, points, "amin"
    )
    r = side.amax(1).clamp_min(1e-6)
    d2 = ((points - centroid[g]) ** 2).sum(1)
    return rows, torch.exp(-alpha * d2 / r[g] ** 2)


def heat_loss(
    heat: torch.Tensor, xyz: torch.Tensor, gt_id: torch.Tensor, num_gt: int, alpha: float
) -> torch.Tensor:
    """Eq. 1: mean |H - H^| over the points of instances."""
    rows, target = heat_targets(xyz, gt_id, num_gt, alpha)
    if rows.numel() == 0:
        return zero_like_graph(heat)
    return (heat[rows] - target).abs().mean()


def merge_targets(
    cand_gt: torch.Tensor, pair_i: torch.Tensor, pair_j: torch.Tensor
) -> torch.Tensor:
    """A^_ij = 1 when both candidates lie on the same GT instance (off-instance: never)."""
    return ((cand_gt[pair_i] == cand_gt[pair_j]) & (cand_gt[pair_i] >= 0)).float()


def bce_dice(prob: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if prob.numel() == 0:
        return zero_like_graph(prob), zero_like_graph(prob)
    bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), target)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce, dice


def hungarian_match(
    centre: torch.Tensor,
    centre_class: torch.Tensor,
    centre_batch: torch.Tensor,
    gt_centre: torch.Tensor,
    gt_class: torch.Tensor,
    gt_batch: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5: cost = centroid distance + 1 where the classes differ (the paper's indicator,
    read as penalising a different label); pairs of different scenes are never matched.
    Returns (prediction rows, GT rows)."""
    empty = torch.zeros(0, dtype=torch.long, device=centre.device)
    if centre.shape[0] == 0 or gt_centre.shape[0] == 0:
        return empty, empty
    cost = torch.cdist(centre.double(), gt_centre.double())
    cost = cost + (centre_class[:, None] != gt_class[None, :]).double()
    cost = torch.where(centre_batch[:, None] == gt_batch[None, :], cost, _FORBIDDEN)
    pred, gt = linear_sum_assignment(cost.cpu().numpy())
    ok = cost.cpu().numpy()[pred, gt] < _FORBIDDEN
    to = torch.from_numpy
    return to(pred[ok].astype(np.int64)).to(centre.device), to(gt[ok].astype(np.int64)).to(
        centre.device
    )


def mask_losses(
    raw: dict[str, Any], targets: InstanceTargets, iou_gate: float, gate: str = "iou"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: BCE + dice of Hungarian-matched instances whose mask IoU with the GT > gate,
    averaged over those instances (the mask is 0 outside the decoded points)."""
    masks: DecodedMasks = raw["masks"]
    # With no kernels the logits have no graph: the heat keeps the zero connected.
    zero = zero_like_graph(masks.logits) + zero_like_graph(raw["heat"])
    rows = raw["centre_rows"]
    gt_rows = (targets.gt_id >= 0).nonzero().squeeze(1)
    if rows.numel() == 0 or gt_rows.numel() == 0 or masks.logits.numel() == 0:
        return zero, zero
    g = targets.gt_id[gt_rows]
    gt_centre = ops.scatter_mean(targets.xyz[gt_rows].float(), g, targets.num_gt)
    gt_batch = torch.zeros(targets.num_gt, dtype=torch.long, device=g.device)
    gt_batch[g] = targets.batch[gt_rows]
    pred, gt = hungarian_match(
        targets.xyz[rows].float(),
        raw["centre_class"],
        targets.batch[rows],
        gt_centre,
        targets.gt_class(),
        gt_batch,
    )
    k = rows.numel()
    matched_gt = torch.full((k,), -1, dtype=torch.long, device=rows.device)
    matched_gt[pred] = gt
    pid = masks.proposal_id
    target = (targets.gt_id[masks.point_index] == matched_gt[pid]) & (matched_gt[pid] >= 0)
    target = target.float()
    prob = masks.logits.sigmoid()
    gt_size = torch.bincount(g, minlength=targets.num_gt).float()
    inter = segment_sum((prob.detach() > 0.5).float() * target, pid, k)
    pred_size = segment_sum((prob.detach() > 0.5).float(), pid, k)
    size = torch.where(matched_gt >= 0, gt_size[matched_gt.clamp_min(0)], 0.0)
    iou = inter / (pred_size + size - inter).clamp_min(1)
    passed = iou > iou_gate
    if gate == "iou_or_centre":
        passed |= targets.gt_id[rows] == matched_gt
    used = (matched_gt >= 0) & passed
    if not bool(used.any()):
        return zero, zero
    pair_bce = F.binary_cross_entropy_with_logits(masks.logits, target, reduction="none")
    count = segment_sum(torch.ones_like(prob), pid, k).clamp_min(1)
    bce = (segment_sum(pair_bce, pid, k) / count)[used].mean()
    p_inter = segment_sum(prob * target, pid, k)
    denom = segment_sum(prob, pid, k) + segment_sum(target, pid, k)
    dice = (1 - 2 * p_inter / denom.clamp_min(1e-6))[used].mean()
    return bce, dice
