"""DyCo3D training losses: semantic CE (+dice), offset L1 + direction, mask BCE + dice, score.

`compute_losses(outputs, targets, cfg)` takes the dict returned by `DyCo3D.forward` and the
targets of the same points; it returns every term and their weighted sum under "total".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from dyco_perception.classes import IGNORE_LABEL, STUFF_CLASS_IDS

from dyco_perception import ops
from dyco_perception.config import build_config, choice, ranged


@dataclass
class LossConfig:
    semantic_weight: float = ranged(1.0, 0.0, 100.0)
    semantic_dice_weight: float = ranged(0.0, 0.0, 100.0, "0 turns the semantic dice off")
    offset_l1_weight: float = ranged(1.0, 0.0, 100.0)
    offset_dir_weight: float = ranged(1.0, 0.0, 100.0)
    mask_bce_weight: float = ranged(1.0, 0.0, 100.0)
    mask_dice_weight: float = ranged(1.0, 0.0, 100.0)
    score_weight: float = ranged(0.5, 0.0, 100.0)
    # A proposal trains the mask head only if its best GT instance overlaps it this much.
    min_match_iou: float = ranged(0.25, 0.0, 1.0)
    # "cluster": mask BCE averaged over each cluster's decoded points, then over clusters
    # (DyCo3D Eq. 5); "pair": over all (cluster, point) pairs, so big clusters weigh more.
    mask_bce_average: str = choice("cluster", ("cluster", "pair"))
    # Score target: 0 below score_low IoU, 1 above score_high, linear between (PointGroup).
    score_low: float = ranged(0.25, 0.0, 1.0)
    score_high: float = ranged(0.75, 0.0, 1.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LossConfig:
        cfg = build_config(cls, data, "loss.")
        if cfg.score_low >= cfg.score_high:
            raise ValueError("loss.score_low must be < loss.score_high")
        return cfg


def compute_losses(
    outputs: dict, targets: dict[str, torch.Tensor], cfg: LossConfig | None = None
) -> dict[str, torch.Tensor]:
    """outputs: DyCo3D.forward's dict. targets: "xyz" (N,3), "semantic" (N,) int64 with
    IGNORE_LABEL, "instance" (N,) int64 per-scene ids (IGNORE_LABEL / negative = none),
    "batch" (N,) int64 scene index."""
    cfg = cfg or LossConfig()
    semantic, instance = targets["semantic"].long(), targets["instance"].long()
    gt_id, num_gt = _global_instance_ids(instance, semantic, targets["batch"].long())
    losses: dict[str, torch.Tensor] = {}
    losses.update(semantic_losses(outputs["semantic_logits"], semantic))
    losses.update(offset_losses(outputs["offsets"], targets["xyz"], gt_id, num_gt))
    losses.update(mask_losses(outputs, gt_id, num_gt, cfg))
    weights = {
        "semantic_ce": cfg.semantic_weight,
        "semantic_dice": cfg.semantic_dice_weight,
        "offset_l1": cfg.offset_l1_weight,
        "offset_dir": cfg.offset_dir_weight,
        "mask_bce": cfg.mask_bce_weight,
        "mask_dice": cfg.mask_dice_weight,
        "score": cfg.score_weight,
    }
    losses["total"] = sum(weights[name] * losses[name] for name in weights)
    return losses


def _global_instance_ids(
    instance: torch.Tensor, semantic: torch.Tensor, batch: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Batch-unique ids 0..G-1 for points of thing-class instances, -1 elsewhere."""
    valid = (instance >= 0) & (semantic >= 0)
    for stuff in STUFF_CLASS_IDS:
        valid &= semantic != stuff
    gt_id = torch.full_like(instance, -1)
    if not valid.any():
        return gt_id, 0
    key = batch[valid] * (int(instance.max()) + 1) + instance[valid]
    unique, gt_id[valid] = torch.unique(key, return_inverse=True)
    return gt_id, int(unique.numel())


def _zero(t: torch.Tensor) -> torch.Tensor:
    """A zero that stays connected to the graph (every term is a tensor with grad)."""
    return t.sum() * 0.0


def semantic_losses(logits: torch.Tensor, semantic: torch.Tensor) -> dict[str, torch.Tensor]:
    valid = semantic != IGNORE_LABEL
    if not valid.any():
        return {"semantic_ce": _zero(logits), "semantic_dice": _zero(logits)}
    ce = F.cross_entropy(logits, semantic, ignore_index=IGNORE_LABEL)
    probs = logits[valid].softmax(1)
    onehot = F.one_hot(semantic[valid], logits.shape[1]).to(probs.dtype)
    inter = (probs * onehot).sum(0)
    dice = 1.0 - ((2 * inter + 1) / (probs.sum(0) + onehot.sum(0) + 1)).mean()
    return {"semantic_ce": ce, "semantic_dice": dice}


def offset_losses(
    offsets: torch.Tensor, xyz: torch.Tensor, gt_id: torch.Tensor, num_gt: int
) -> dict[str, torch.Tensor]:
    rows = (gt_id >= 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return {"offset_l1": _zero(offsets), "offset_dir": _zero(offsets)}
    centroid = ops.scatter_mean(xyz[rows].float(), gt_id[rows], num_gt)
    target = centroid[gt_id[rows]] - xyz[rows]
    pred = offsets[rows]
    l1 = (pred - target).abs().sum(1).mean()
    cosine = F.cosine_similarity(pred, target, dim=1, eps=1e-8)
    return {"offset_l1": l1, "offset_dir": -cosine.mean()}


def match_proposals(
    proposals: Any, gt_id: torch.Tensor, num_gt: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best-IoU GT instance of each proposal: (gt index or -1, IoU, GT sizes)."""
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
    best_iou, best = iou.max(1)
    best = torch.where(best_iou > 0, best, torch.full_like(best, -1))
    return best, best_iou, gt_size


def mask_losses(
    outputs: dict, gt_id: torch.Tensor, num_gt: int, cfg: LossConfig
) -> dict[str, torch.Tensor]:
    masks, proposals, score_logits = outputs["masks"], outputs["proposals"], outputs["score_logits"]
    zero = _zero(masks.logits) + _zero(score_logits)
    if proposals.num == 0 or masks.logits.numel() == 0:
        return {"mask_bce": zero, "mask_dice": zero, "score": zero}
    best, best_iou, gt_size = match_proposals(proposals, gt_id, num_gt)
    matched = (best >= 0) & (best_iou >= cfg.min_match_iou)
    target = (gt_id[masks.point_index] == best[masks.proposal_id]).float()
    target = target * matched[masks.proposal_id].float()
    train_pair = matched[masks.proposal_id]
    k = proposals.num
    probs = masks.logits.sigmoid()
    if train_pair.any():
        bce = _mask_bce(masks.logits, target, masks.proposal_id, matched, cfg.mask_bce_average)
        inter = _segment_sum(probs * target, masks.proposal_id, k)
        denom = _segment_sum(probs, masks.proposal_id, k) + _segment_sum(
            target, masks.proposal_id, k
        )
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
    per_proposal = _segment_sum(pair_loss, proposal_id, k)
    count = _segment_sum(torch.ones_like(pair_loss), proposal_id, k)
    used = matched & (count > 0)
    return (per_proposal[used] / count[used]).mean()


def _score_loss(
    score_logits, probs, target, proposal_id, best, gt_size, matched, cfg
) -> torch.Tensor:
    """BCE of the score head against the (soft) IoU of the predicted mask with its GT."""
    k = score_logits.shape[0]
    pred = (probs > 0.5).float()
    inter = _segment_sum(pred * target, proposal_id, k)
    pred_size = _segment_sum(pred, proposal_id, k)
    # A crop without thing instances has no GT sizes to index: every proposal is unmatched.
    size_of_best = gt_size[best.clamp_min(0)] if gt_size.numel() else torch.zeros_like(best)
    gt = torch.where(matched, size_of_best.float(), torch.zeros_like(pred_size))
    iou = inter / (pred_size + gt - inter).clamp_min(1)
    soft = ((iou - cfg.score_low) / (cfg.score_high - cfg.score_low)).clamp(0, 1)
    return F.binary_cross_entropy_with_logits(score_logits, soft * matched.float())


def _segment_sum(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    return values.new_zeros(num).index_add(0, index, values)
