"""Decoded masks -> final instances: threshold, score, size filter, mask NMS, point assignment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
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
    threshold = outputs.get("mask_threshold")  # a decoder's own per-proposal thresholds
    inside = probs > (
        mask_cfg.mask_threshold if threshold is None else threshold[masks.proposal_id]
    )
    count = _segment_sum(inside.float(), masks.proposal_id, k).clamp_min(1)
    mask_score = _segment_sum(probs * inside, masks.proposal_id, k) / count
    class_prob = outputs["semantic_logits"].softmax(1)
    mean_prob = mean_class_probs(class_prob, masks.point_index, masks.proposal_id, inside, k)
    own_class_probs = outputs.get("proposal_class_probs")  # a decoder's classifier
    if cfg.class_source == "mask":  # else "decoder": its classifier, or the grouped class
        mask_class_prob, class_id = mean_prob.max(1)
    elif own_class_probs is not None:
        mask_class_prob, class_id = own_class_probs.max(1)
    else:
        class_id = proposals.class_id
        pair_prob = class_prob[masks.point_index, class_id[masks.proposal_id]]
        mask_class_prob = _segment_sum(pair_prob * inside, masks.proposal_id, k) / count
    if cfg.score_with_class_prob:
        mask_score = mask_score * mask_class_prob
    learned = outputs["score"] if "score" in outputs else outputs["score_logits"].sigmoid()
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
    """Final instances of a single-scene forward (model in eval mode).

    Everything works on the decoded (point, proposal) pairs: memory and time grow with the
    pairs, not with proposals x points as a dense (K, N) mask would.
    """
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
    is_candidate = (count >= cfg.min_instance_points) & (score >= cfg.score_threshold)
    if not bool(is_candidate.any()):
        return empty
    pairs = inside & is_candidate[masks.proposal_id]
    point, proposal = masks.point_index[pairs], masks.proposal_id[pairs]
    kept = sparse_mask_nms(point, proposal, score, cfg.nms_iou)[: cfg.max_instances]
    owner = assign_points(point, proposal, kept, num_points)
    sizes = torch.bincount(owner[owner >= 0], minlength=kept.numel())
    survivors = (sizes >= cfg.min_instance_points).nonzero().squeeze(1)
    new_id = torch.zeros(kept.numel() + 1, dtype=torch.int32, device=device)
    new_id[survivors] = torch.arange(1, survivors.numel() + 1, dtype=torch.int32, device=device)
    point_instance[:] = new_id[owner.clamp_min(0)] * (owner >= 0)
    chosen = kept[survivors]
    final_scores = torch.cat([score.new_zeros(1), score[chosen].float()])
    point_score[:] = final_scores[point_instance.long()]
    return InstanceMasks(
        class_id[chosen],
        score[chosen].float(),
        class_probs[chosen].float(),
        point_instance,
        point_score,
    )


def sparse_mask_nms(
    point_index: torch.Tensor, mask_id: torch.Tensor, scores: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy mask NMS over (point, mask) membership pairs; the same result as
    `ops.mask_nms` on the dense (K, N) masks of the masks that have pairs.

    Masks are visited by descending score (ties: lower id first); a mask whose IoU with a kept
    one exceeds `iou_threshold` is dropped. Returns the kept mask ids in that order. Only
    masks sharing a point get an IoU (a sparse K x K product), so the cost follows the pairs.
    """
    present = torch.unique(mask_id)
    if present.numel() == 0:
        return present
    order = present[torch.sort(scores[present], descending=True, stable=True).indices]
    rank = torch.full_like(scores, -1, dtype=torch.long)
    rank[order] = torch.arange(order.numel(), device=order.device)
    overlapping = _overlapping_pairs(
        point_index.cpu().numpy(), rank[mask_id].cpu().numpy(), order.numel(), iou_threshold
    )
    kept = _greedy_keep(overlapping, order.numel())
    return order[torch.from_numpy(kept).to(order.device)]


def _overlapping_pairs(
    point: np.ndarray, rank: np.ndarray, num_masks: int, iou_threshold: float
) -> sp.csr_matrix:
    """Upper-triangular (a < b) bool matrix of the mask pairs with IoU > threshold."""
    membership = sp.csr_matrix(
        (np.ones(point.size, np.int64), (rank, point)), shape=(num_masks, int(point.max()) + 1)
    )
    membership.data[:] = 1  # a repeated (point, mask) pair counts once
    area = np.asarray(membership.sum(1)).ravel()
    inter = sp.triu(membership @ membership.T, k=1).tocoo()
    union = area[inter.row] + area[inter.col] - inter.data
    # IoU rounded to float32 before the comparison, exactly as the dense kernels compare it.
    iou = torch.from_numpy(inter.data / union).float()
    over = (iou > iou_threshold).numpy()
    shape = (num_masks, num_masks)
    return sp.csr_matrix((over[over], (inter.row[over], inter.col[over])), shape=shape)


def _greedy_keep(overlapping: sp.csr_matrix, num_masks: int) -> np.ndarray:
    """Ranks kept by greedy suppression in rank order (rows list the higher ranks they drop)."""
    suppressed = np.zeros(num_masks, dtype=bool)
    kept = []
    indptr, indices = overlapping.indptr, overlapping.indices
    for r in range(num_masks):  # loops over masks, not points
        if suppressed[r]:
            continue
        kept.append(r)
        suppressed[indices[indptr[r] : indptr[r + 1]]] = True
    return np.asarray(kept, dtype=np.int64)


def assign_points(
    point_index: torch.Tensor, mask_id: torch.Tensor, kept: torch.Tensor, num_points: int
) -> torch.Tensor:
    """(num_points,) position in `kept` of the first kept mask covering each point, -1 if
    none: a point covered twice goes to the higher-scoring instance."""
    device = point_index.device
    lookup = torch.full((int(mask_id.max()) + 1,), -1, dtype=torch.long, device=device)
    lookup[kept] = torch.arange(kept.numel(), device=device)
    position = lookup[mask_id]
    covered = position >= 0
    owner = torch.full((num_points,), kept.numel(), dtype=torch.long, device=device)
    owner.scatter_reduce_(0, point_index[covered], position[covered], "amin")
    owner[owner == kept.numel()] = -1
    return owner
