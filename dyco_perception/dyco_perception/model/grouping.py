"""Proposals: clusters of same-class points on shifted coordinates (x + predicted offset)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dyco_perception import ops
from dyco_perception.classes import IGNORE_LABEL, STUFF_CLASS_IDS


@dataclass
class Proposals:
    """K proposals in CSR-like form: `point_index[j]` belongs to proposal `proposal_id[j]`.

    The instance candidates of every decoder, whatever made them: DyCo3D's and PointGroup's
    clusters (members = the clustered points, `class_id` = the class they were grouped under),
    DKNet's merged kernels and ISBNet's queries (members = the points of the candidate's
    thresholded mask, `class_id` = its own classifier's top class). `source` 1 marks GT
    instances used as training proposals."""

    point_index: torch.Tensor  # (P,) int64 point rows
    proposal_id: torch.Tensor  # (P,) int64 in 0..K-1
    class_id: torch.Tensor  # (K,) int64 semantic class
    batch: torch.Tensor  # (K,) int64 scene index
    source: torch.Tensor  # (K,) int64: 0 predicted cluster, 1 GT instance

    @property
    def num(self) -> int:
        return int(self.class_id.shape[0])

    @staticmethod
    def empty(device: torch.device) -> Proposals:
        e = torch.zeros(0, dtype=torch.long, device=device)
        return Proposals(e, e, e, e, e)


def stuff_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where a label is a stuff class (wall, floor): never an instance."""
    stuff = torch.zeros_like(labels, dtype=torch.bool)
    for class_id in STUFF_CLASS_IDS:
        stuff |= labels == class_id
    return stuff


def cluster_proposals(
    xyz: torch.Tensor,
    offsets: torch.Tensor,
    semantic: torch.Tensor,
    batch: torch.Tensor,
    radius: float,
    min_points: int,
    by_class: bool = True,
) -> Proposals:
    """Connected components of same-class (`by_class`; else of any thing class), same-scene
    points within `radius` after shifting; a component's class is its members' majority.

    Stuff classes (wall, floor) are skipped; components under `min_points` are dropped.
    """
    labels = semantic.clone()
    labels[stuff_mask(labels)] = -1
    if not by_class:
        labels = torch.where(labels >= 0, torch.zeros_like(labels), labels)
    num_classes = int(semantic.max()) + 1 if semantic.numel() else 1
    labels = torch.where(labels >= 0, labels + batch * num_classes, labels)  # scene-separate
    shifted = (xyz + offsets).detach().float()
    component = ops.connected_components(shifted, labels, float(radius))
    return _from_segments(component, semantic, batch, min_points, source=0)


def gt_proposals(
    gt_instance: torch.Tensor, gt_semantic: torch.Tensor, batch: torch.Tensor, min_points: int = 1
) -> Proposals:
    """One proposal per GT instance of a thing class (instance ids are per scene)."""
    valid = (gt_instance >= 0) & (gt_semantic >= 0) & ~stuff_mask(gt_semantic)
    segment = torch.full_like(gt_instance, -1)
    if valid.any():
        key = batch[valid] * (int(gt_instance.max()) + 1) + gt_instance[valid]
        _, segment[valid] = torch.unique(key, return_inverse=True)
    return _from_segments(segment, gt_semantic, batch, min_points, source=1)


def _from_segments(
    segment: torch.Tensor,
    semantic: torch.Tensor,
    batch: torch.Tensor,
    min_points: int,
    source: int,
) -> Proposals:
    rows = (segment >= 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return Proposals.empty(segment.device)
    seg = segment[rows]
    counts = torch.bincount(seg)
    keep_segment = counts >= min_points
    rows, seg = rows[keep_segment[seg]], seg[keep_segment[seg]]
    if rows.numel() == 0:
        return Proposals.empty(segment.device)
    _, proposal_id = torch.unique(seg, return_inverse=True)
    num = int(proposal_id.max()) + 1
    # Class = majority label of the members (all equal for clusters grouped by class).
    labels = semantic[rows].clamp_min(0)
    num_classes = int(labels.max()) + 1
    votes = torch.zeros(num * num_classes, dtype=torch.long, device=rows.device)
    votes.index_add_(0, proposal_id * num_classes + labels, torch.ones_like(labels))
    class_id = votes.view(num, num_classes).argmax(1)
    first = torch.full((num,), rows.numel(), dtype=torch.long, device=rows.device)
    first.scatter_reduce_(0, proposal_id, torch.arange(rows.numel(), device=rows.device), "amin")
    scene = batch[rows[first]]
    source_t = torch.full((num,), source, dtype=torch.long, device=rows.device)
    return Proposals(rows, proposal_id, class_id, scene, source_t)


def concat_proposals(a: Proposals, b: Proposals) -> Proposals:
    return Proposals(
        torch.cat([a.point_index, b.point_index]),
        torch.cat([a.proposal_id, b.proposal_id + a.num]),
        torch.cat([a.class_id, b.class_id]),
        torch.cat([a.batch, b.batch]),
        torch.cat([a.source, b.source]),
    )


def select_proposals(p: Proposals, keep: torch.Tensor) -> Proposals:
    """Keep the proposals whose ids are listed in `keep` (renumbered in that order)."""
    new_id = torch.full((p.num,), -1, dtype=torch.long, device=p.class_id.device)
    new_id[keep] = torch.arange(keep.numel(), device=keep.device)
    member = new_id[p.proposal_id] >= 0
    return Proposals(
        p.point_index[member],
        new_id[p.proposal_id[member]],
        p.class_id[keep],
        p.batch[keep],
        p.source[keep],
    )


__all__ = ["IGNORE_LABEL", "Proposals", "cluster_proposals", "gt_proposals"]
