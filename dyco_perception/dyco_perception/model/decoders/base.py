"""What every instance decoder receives and returns: the contract between the shared network
(voxelizer, U-Net, semantic and offset heads) and a method's own instance branch.

A decoder turns `DecoderInput` into a dict that post-processing, the Segmenter, the evaluator and
training read without knowing the method:
- "proposals": `Proposals`, the K instance candidates (class_id per candidate, batch, members);
- "masks": `DecodedMasks`, (candidate, point, logit) triples; a point is in a mask when
  sigmoid(logit) > the mask threshold;
- "score_logits": (K,) logits of the learned instance score (`inference.score_mode: learned`).
Optional keys, each read by `postprocess.proposal_scores` when present:
- "mask_threshold": (K,) a threshold per candidate instead of `mask_head.mask_threshold`;
- "score": (K,) the method's own final score in [0, 1] (replaces sigmoid(score_logits));
- "proposal_class_probs": (K, C) the method's own class probabilities per candidate (replaces
  the proposal's grouped class when `inference.class_source: decoder`).
Anything else a decoder returns is for its own `losses`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from dyco_perception.classes import STUFF_CLASS_IDS
from dyco_perception.config import ModelConfig
from dyco_perception.model.voxelizer import Voxelized, devoxelize
from dyco_perception.validation import build_config


@dataclass
class DecoderInput:
    """The shared network's outputs for one batch of scenes (N points, V voxels, C classes)."""

    xyz: torch.Tensor  # (N, 3) float, original coordinates
    batch: torch.Tensor  # (N,) int64 scene index
    voxelized: Voxelized  # point <-> voxel maps (for `per_point`)
    voxel_features: torch.Tensor  # (V, m) U-Net output per voxel
    point_features: torch.Tensor  # (N, m) the same, per point
    semantic_logits: torch.Tensor  # (N, C)
    offsets: torch.Tensor  # (N, 3) predicted shift towards the instance centre
    gt_semantic: torch.Tensor | None = None  # (N,) training only
    gt_instance: torch.Tensor | None = None  # (N,) per-scene ids, training only
    # Ends a timing stage (e.g. "grouping"); the network ends "decoding" after the decoder.
    lap: Callable[[str], None] = field(default=lambda stage: None)

    @property
    def semantic_pred(self) -> torch.Tensor:
        return self.semantic_logits.argmax(1)

    def grouping_labels(self, thing_probability: float) -> torch.Tensor:
        """The class each point is grouped under: its most probable class; with
        `thing_probability` > 0, its most probable thing class wherever the thing classes
        together reach that probability (a door the head calls wall at 0.6 still joins)."""
        labels = self.semantic_pred
        if thing_probability <= 0:
            return labels
        things = self.semantic_logits.softmax(1)
        things[:, list(STUFF_CLASS_IDS)] = 0
        return torch.where(things.sum(1) >= thing_probability, things.argmax(1), labels)

    def per_point(self, head: nn.Module) -> torch.Tensor:
        """Run `head` per voxel (all points of a voxel share its features), then devoxelize."""
        return devoxelize(head(self.voxel_features), self.voxelized)


@dataclass
class InstanceTargets:
    """Training targets of the same N points, with batch-unique ids of thing instances."""

    xyz: torch.Tensor  # (N, 3)
    semantic: torch.Tensor  # (N,) int64, IGNORE_LABEL where unlabelled
    instance: torch.Tensor  # (N,) int64 per-scene ids, negative = none
    batch: torch.Tensor  # (N,) int64
    gt_id: torch.Tensor  # (N,) int64 in 0..num_gt-1 for thing-instance points, -1 elsewhere
    num_gt: int

    @classmethod
    def from_targets(cls, targets: dict[str, torch.Tensor]) -> InstanceTargets:
        semantic, instance = targets["semantic"].long(), targets["instance"].long()
        batch = targets["batch"].long()
        gt_id, num_gt = thing_instance_ids(instance, semantic, batch)
        return cls(targets["xyz"], semantic, instance, batch, gt_id, num_gt)

    def gt_class(self) -> torch.Tensor:
        """(num_gt,) semantic class of each GT instance."""
        rows = (self.gt_id >= 0).nonzero().squeeze(1)
        out = torch.zeros(self.num_gt, dtype=torch.long, device=self.gt_id.device)
        return out.scatter(0, self.gt_id[rows], self.semantic[rows])


def thing_instance_ids(
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


@dataclass
class NoOptions:
    """A decoder whose settings all live in the shared config sections."""


class InstanceDecoder(nn.Module):
    """Base of the registered decoders (`model/decoders/<name>.py`, `@register_decoder`).

    Subclasses set `name` (the `decoder.name` config value) and `Options` (a dataclass of the
    method's own settings, read from the `decoder:` config section with ranges checked like
    every other config value), build their modules in `__init__`, and implement `forward` and
    `losses`.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.options = cfg.decoder_options

    def forward(self, inp: DecoderInput) -> dict[str, Any]:
        raise NotImplementedError

    def losses(
        self, outputs: dict[str, Any], targets: InstanceTargets, loss_cfg: Any
    ) -> dict[str, torch.Tensor]:
        """The method's loss terms, already weighted (the trainer sums them with the shared
        semantic and offset terms; every value is a tensor connected to the graph)."""
        raise NotImplementedError


def options_from_dict(options_cls: type, data: dict[str, Any]) -> Any:
    """Validate a decoder's options (the `decoder:` section without `name`)."""
    if not dataclasses.is_dataclass(options_cls):
        raise TypeError(f"{options_cls} must be a dataclass")
    return build_config(options_cls, data, "decoder.")


def zero_like_graph(t: torch.Tensor) -> torch.Tensor:
    """A zero that stays connected to the graph (every loss term is a tensor with grad)."""
    return t.sum() * 0.0
