"""Training losses: the shared semantic CE (+dice) and offset L1 + direction terms, plus the
configured decoder's own terms (`InstanceDecoder.losses`, e.g. DyCo3D's mask BCE + dice + score).

`compute_losses(model, outputs, targets, cfg)` takes the network, the dict its forward returned
and the targets of the same points; it returns every term and their weighted sum under "total".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dyco_perception.classes import IGNORE_LABEL
from dyco_perception.model.decoders.base import InstanceTargets, zero_like_graph
from dyco_perception.model.decoders.common import match_proposals
from dyco_perception.model.decoders.dyco3d import mask_losses
from dyco_perception.scenes import Scene
from dyco_perception.validation import build_config, choice, ranged

from dyco_perception import ops

__all__ = [
    "LossConfig",
    "compute_losses",
    "mask_losses",
    "match_proposals",
    "offset_losses",
    "semantic_class_weights",
]


@dataclass
class LossConfig:
    semantic_weight: float = ranged(1.0, 0.0, 100.0)
    semantic_dice_weight: float = ranged(0.0, 0.0, 100.0, "0 turns the semantic dice off")
    # Focal semantic loss (Lin et al.): each point's CE times (1 - p_true)^gamma, so the many
    # easy wall and floor points stop drowning the rare thing classes; 0 = plain CE.
    semantic_focal_gamma: float = ranged(0.0, 0.0, 10.0)
    # Class-weighted semantic CE: "inverse_sqrt", each point's CE weighted by
    # 1/sqrt(its class's share of the training pool's labelled points), a weighted mean (as
    # torch's CE `weight`), so the rare furniture classes count against walls and floors;
    # "none" = every point alike.
    semantic_class_weighting: str = choice("none", ("none", "inverse_sqrt"))
    # Label smoothing (Szegedy et al.): each point's CE target keeps 1 - eps on its class and
    # spreads eps evenly over all classes, so the head stops driving its logits apart on the few
    # training rooms; 0 = hard targets.
    semantic_label_smoothing: float = ranged(0.0, 0.0, 0.5)
    offset_l1_weight: float = ranged(1.0, 0.0, 100.0)
    offset_dir_weight: float = ranged(1.0, 0.0, 100.0)
    # DyCo3D's decoder terms (other decoders keep their weights in their `decoder:` options).
    mask_bce_weight: float = ranged(1.0, 0.0, 100.0)
    mask_dice_weight: float = ranged(1.0, 0.0, 100.0)
    score_weight: float = ranged(0.5, 0.0, 100.0)
    # A cluster's mask target (DyCo3D): "iou", the GT instance of highest IoU, trained only when
    # that IoU reaches min_match_iou (ours, the earlier rule); "portion", the GT instance that
    # holds the largest portion of the cluster's points, with no IoU gate (the paper, 3.4).
    target_rule: str = choice("iou", ("iou", "portion"))
    min_match_iou: float = ranged(0.25, 0.0, 1.0, "target_rule iou: the gate")
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
    model: torch.nn.Module,
    outputs: dict,
    targets: dict[str, torch.Tensor],
    cfg: LossConfig | None = None,
    decoder_scale: float = 1.0,
    class_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """model: the SegmentationNetwork (or its DistributedDataParallel wrapper), whose decoder
    computes the method's terms; outputs: its forward dict.
    targets: "xyz" (N,3), "semantic" (N,) int64 with IGNORE_LABEL, "instance" (N,) int64
    per-scene ids (negative = none), "batch" (N,) int64 scene index. `decoder_scale` 0 turns the
    decoder's terms off (the staged start: offsets first, then the instance branch).
    `class_weights` (num_classes,): the semantic CE's weight of each class, from
    `semantic_class_weights`."""
    cfg = cfg or LossConfig()
    gt = InstanceTargets.from_targets(targets)
    weights = {
        "semantic_ce": cfg.semantic_weight,
        "semantic_dice": cfg.semantic_dice_weight,
        "offset_l1": cfg.offset_l1_weight,
        "offset_dir": cfg.offset_dir_weight,
    }
    losses: dict[str, torch.Tensor] = {}
    losses.update(
        semantic_losses(
            outputs["semantic_logits"],
            gt.semantic,
            cfg.semantic_focal_gamma,
            class_weights,
            cfg.semantic_label_smoothing,
        )
    )
    losses.update(offset_losses(outputs["offsets"], gt.xyz, gt.gt_id, gt.num_gt))
    total = sum(weights[name] * losses[name] for name in weights)
    decoder = getattr(model, "module", model).decoder  # DDP wraps the network in .module
    for name, value in decoder.losses(outputs, gt, cfg).items():
        losses[name] = value
        total = total + decoder_scale * value
    losses["total"] = total
    return losses


def semantic_class_weights(scenes: list[Scene], num_classes: int, rule: str) -> torch.Tensor | None:
    """Per-class CE weights from the labelled points of `scenes` (None for rule "none"), the
    most frequent class's 1. "inverse_sqrt": 1/sqrt(share); a class absent from the scenes
    (never a target) gets the rarest present class's weight."""
    if rule == "none":
        return None
    counts = np.zeros(num_classes, dtype=np.float64)
    for scene in scenes:
        labels = scene.semantic[(scene.semantic >= 0) & (scene.semantic < num_classes)]
        counts += np.bincount(labels, minlength=num_classes)
    if counts.sum() == 0:
        raise ValueError("loss.semantic_class_weighting: the training pool has no labelled point")
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = 1.0 / np.sqrt(counts[present] / counts.sum())
    weights[~present] = weights[present].max()
    return torch.as_tensor(weights / weights[present].min(), dtype=torch.float32)


def semantic_losses(
    logits: torch.Tensor,
    semantic: torch.Tensor,
    focal_gamma: float = 0.0,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Cross-entropy (focal when `focal_gamma` > 0, its target smoothed by `label_smoothing`),
    mean over labelled points (weighted by `class_weights` of each point's class when given),
    and the dice over classes."""
    valid = semantic != IGNORE_LABEL
    if not valid.any():
        return {"semantic_ce": zero_like_graph(logits), "semantic_dice": zero_like_graph(logits)}
    log_probs = logits[valid].log_softmax(1)
    log_p = log_probs.gather(1, semantic[valid, None]).squeeze(1)
    focal_weight = (1 - log_p.exp()) ** focal_gamma if focal_gamma > 0 else 1.0
    target_log_p = (1 - label_smoothing) * log_p + label_smoothing * log_probs.mean(1)
    point_loss = -(focal_weight * target_log_p)
    if class_weights is None:
        ce = point_loss.mean()
    else:
        weights = class_weights.to(log_p.device, log_p.dtype)[semantic[valid]]
        ce = (weights * point_loss).sum() / weights.sum()
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
        return {"offset_l1": zero_like_graph(offsets), "offset_dir": zero_like_graph(offsets)}
    centroid = ops.scatter_mean(xyz[rows].float(), gt_id[rows], num_gt)
    target = centroid[gt_id[rows]] - xyz[rows]
    pred = offsets[rows]
    l1 = (pred - target).abs().sum(1).mean()
    cosine = F.cosine_similarity(pred, target, dim=1, eps=1e-8)
    return {"offset_l1": l1, "offset_dir": -cosine.mean()}
