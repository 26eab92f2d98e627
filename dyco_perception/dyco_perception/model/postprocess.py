"""Decoded masks -> final instances: threshold, score, size filter, mask NMS, point assignment."""

from __future__ import annotations

from dataclasses import dataclass

import dyco_ops
import torch

from dyco_perception.classes import STUFF_CLASS_IDS
from dyco_perception.config import InferenceConfig, MaskHeadConfig


@dataclass
class InstanceMasks:
    """Final instances of one scene, sorted by descending score (instance id = index + 1)."""

    class_id: torch.Tensor  # (K,) int64
    score: torch.Tensor  # (K,) float32
    class_probs: torch.Tensor  # (K, C) mean class probabilities over the mask, stuff zeroed
    point_instance: torch.Tensor  # (N,) int32, 1..K or 0
    point_score: torch.Tensor  # (N,) float32, the owning instance's score or 0


def _segment_sum(values: torch.Tensor, index: torch.Tensor, num: int) -> torch.Tensor:
    return values.new_zeros(num).index_add(0, index, values)


def proposal_scores(
    outputs: dict, mask_cfg: MaskHeadConfig, cfg: InferenceConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(in-mask flag per decoded pair, score, class and (K, C) mean class probabilities per
    proposal)."""
    masks, proposals = outputs["masks"], outputs["proposals"]
    k = proposals.num
    probs = masks.logits.sigmoid()
    inside = probs > mask_cfg.mask_threshold
    count = _segment_sum(inside.float(), masks.proposal_id, k).clamp_min(1)
    mask_score = _segment_sum(probs * inside, masks.proposal_id, k) / count
    class_prob = outputs["semantic_logits"].softmax(1)
    mean_prob = mean_class_probs(class_prob, masks.point_index, masks.proposal_id, inside, k)
    if cfg.class_source == "mask":
        mask_class_prob, class_id = mean_prob.max(1)
    else:
        class_id = proposals.class_id
        pair_prob = class_prob[masks.point_index, class_id[masks.proposal_id]]
        mask_class_prob = _segment_sum(pair_prob * inside, masks.proposal_id, k) / count
    if cfg.score_with_class_prob:
        mask_score = mask_score * mask_class_prob
    learned = outputs["score_logits"].sigmoid()
    score = {"mask": mask_score, "learned": learned, "mask_x_learned": mask_score * learned}
    return inside, score[cfg.score_mode], class_id, mean_prob


def mean_class_probs(
    class_prob: torch.Tensor,
    point_index: torch.Tensor,
    proposal_id: torch.Tensor,
    inside: torch.Tensor,
    num: int,
) -> torch.Tensor:
    """(K, C) mean class probabilities over each mask's points, stuff classes zeroed (an
    instance is never a wall or a floor)."""
    rows = inside.nonzero().squeeze(1)
    sums = class_prob.new_zeros(num, class_prob.shape[1])
    sums.index_add_(0, proposal_id[rows], class_prob[point_index[rows]])
    sums[:, list(STUFF_CLASS_IDS)] = 0
    return sums / torch.bincount(proposal_id[rows], minlength=num).clamp_min(1)[:, None]


def select_instances(
    outputs: dict, num_points: int, mask_cfg: MaskHeadConfig, cfg: InferenceConfig
) -> InstanceMasks:
    """Final instances of a single-scene forward (model in eval mode)."""
    masks, proposals = outputs["masks"], outputs["proposals"]
    device = outputs["semantic_logits"].device
    point_instance = torch.zeros(num_points, dtype=torch.int32, device=device)
    point_score = torch.zeros(num_points, dtype=torch.float32, device=device)
    num_classes = outputs["semantic_logits"].shape[1]
    empty = InstanceMasks(
        torch.zeros(0, dtype=torch.long, device=device),
        torch.zeros(0, device=device),
        torch.zeros(0, num_classes, device=device),
        point_instance,
        point_score,
    )
    if proposals.num == 0:
        return empty
    inside, score, class_id, class_probs = proposal_scores(outputs, mask_cfg, cfg)
    count = torch.bincount(masks.proposal_id[inside], minlength=proposals.num)
    candidates = (count >= cfg.min_instance_points) & (score >= cfg.score_threshold)
    candidates = candidates.nonzero().squeeze(1)
    if candidates.numel() == 0:
        return empty
    dense, columns = _dense_masks(masks, inside, candidates)
    kept = dyco_ops.mask_nms(dense, score[candidates].float(), cfg.nms_iou)
    kept = kept[: cfg.max_instances]
    # Lowest score first, so a point covered twice ends with the higher-scoring instance.
    owner = torch.full((columns.numel(),), -1, dtype=torch.long, device=device)
    for rank in range(kept.numel() - 1, -1, -1):
        owner[dense[kept[rank]]] = rank
    sizes = torch.bincount(owner[owner >= 0], minlength=kept.numel())
    survivors = (sizes >= cfg.min_instance_points).nonzero().squeeze(1)
    new_id = torch.zeros(kept.numel() + 1, dtype=torch.int32, device=device)
    new_id[survivors] = torch.arange(1, survivors.numel() + 1, dtype=torch.int32, device=device)
    final = new_id[owner.clamp_min(0)] * (owner >= 0)
    chosen = candidates[kept[survivors]]
    point_instance[columns] = final.to(torch.int32)
    final_scores = torch.cat([score.new_zeros(1), score[chosen].float()])
    point_score[columns] = final_scores[final.long()]
    return InstanceMasks(
        class_id[chosen],
        score[chosen].float(),
        class_probs[chosen].float(),
        point_instance,
        point_score,
    )


def _dense_masks(
    masks, inside: torch.Tensor, candidates: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K', N') bool masks over only the points some candidate covers (bounded memory)."""
    row_of = torch.full(
        (int(masks.proposal_id.max()) + 1,), -1, dtype=torch.long, device=inside.device
    )
    row_of[candidates] = torch.arange(candidates.numel(), device=inside.device)
    use = inside & (row_of[masks.proposal_id] >= 0)
    columns, col = torch.unique(masks.point_index[use], return_inverse=True)
    dense = torch.zeros(candidates.numel(), columns.numel(), dtype=torch.bool, device=inside.device)
    dense[row_of[masks.proposal_id[use]], col] = True
    return dense, columns
