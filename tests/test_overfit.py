"""The learning path end to end: a tiny DyCo3D fits a scene of touching identical objects.

Four chair-class boxes stand face to face, all one colour, so only geometry separates them.
The inference ball (3 cm) is small against the offsets' error, so clusters are fragments of
objects: each fragment's generated decoder must grow it into its whole object and stop at the
neighbour's face, and NMS keeps one mask per object (DyCo3D's premise, section 4.4.4). With a
working mask branch all four are found (AP50 1.0 when written). If the masks do not learn, a
fragment is not an object and a mask spanning neighbours is at best half an object (IoU <= 0.5),
so AP50 stays at 0 (measured with the mask losses off: 0.0). The threshold 0.75 demands at
least three of the four objects: a margin under the working value, far above a broken one.
"""

from __future__ import annotations

import pytest
import torch
from dyco_perception.model import SegmentationNetwork
from dyco_training.losses import LossConfig
from synthetic_scenes import fit_to_scene, segment_ap50, touching_boxes

from dyco_perception.config import ModelConfig

TINY_PAPER = {
    "voxel": {"voxel_size": 0.04, "use_xyz": True},
    "backbone": {"width": 8, "levels": 4, "backend": "torch"},
    "transformer": {"heads": 2, "layers": 2, "position": "relative"},
    "grouping": {"radius": 0.03, "min_points": 20, "train_proposals": "both"},
    "mask_head": {
        "mask_channels": 8,
        "hidden": 8,
        "layers": 3,
        "generator": "grid",
        "category_aware": True,
        "category_aware_train": True,
    },
    "inference": {"min_instance_points": 20},
}
AP50_FLOOR = 0.75


def fit(loss_cfg: LossConfig, iterations: int = 110) -> float:
    """Train on the scene (no augmentation), then segment it like a user would: AP50."""
    torch.manual_seed(0)
    scene = touching_boxes()
    model = SegmentationNetwork(ModelConfig.from_dict(TINY_PAPER))
    return segment_ap50(fit_to_scene(model, scene, loss_cfg, iterations), scene)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_dyco3d_separates_touching_objects_of_one_class() -> None:
    assert fit(LossConfig()) >= AP50_FLOOR


def test_without_mask_losses_the_same_run_fails() -> None:
    """Documents the threshold: the same run with the mask branch untrained stays far below."""
    off = LossConfig(mask_bce_weight=0.0, mask_dice_weight=0.0, score_weight=0.0)
    assert fit(off) < AP50_FLOOR
