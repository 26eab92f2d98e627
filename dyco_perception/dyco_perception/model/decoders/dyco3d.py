"""DyCo3D's instance branch (He et al., TPAMI; sections 3.3-3.5): clusters of same-class points
on shifted coordinates, a kernel generated per cluster, each cluster's mask decoded by its own
small network over the mask features (Eq. 2-4), trained with per-cluster BCE + dice (Eq. 5).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dyco_perception.config import ModelConfig
from dyco_perception.model.decoders import register_decoder
from dyco_perception.model.decoders.base import (
    DecoderInput,
    InstanceDecoder,
    InstanceTargets,
    zero_like_graph,
)
from dyco_perception.model.decoders.common import (
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
from dyco_perception.model.unet import point_mlp


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
            inp.xyz, inp.offsets, inp.semantic_pred, inp.batch, g.radius, g.min_points
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
        masks = decode_masks(
            proposals,
            params,
            mask_features,
            inp.xyz,
            inp.batch,
            inp.semantic_pred if category_aware else None,
            cfg.num_classes,
            mh.box_margin if mh.decode_region == "box" else float("inf"),
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


def soft_score_target(iou: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """PointGroup's score target: 0 below `low` IoU, 1 above `high`, linear between."""
    return ((iou - low) / (high - low)).clamp(0, 1)


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


def segment_sum(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    return values.new_zeros(num).index_add(0, index, values)
