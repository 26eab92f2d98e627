"""Test-time views (`inference.test_time_views`): the semantic and offset heads averaged over
copies of the input turned about z in equal steps."""

import math

import pytest
import torch
from dyco_perception.model import SegmentationNetwork
from dyco_perception.model.network import rotation_about_z

from dyco_perception.config import ModelConfig

TINY = {
    "backbone": {"width": 4, "levels": 3, "backend": "torch"},
    "transformer": {"heads": 2},
    "grouping": {"min_points": 5},
}
VOXEL = 0.02
# A quarter turn about z, exactly: (x, y, z) -> (-y, x, z).
QUARTER = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def lattice_scene(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points at voxel centres of a lopsided layout, so a quarter turn of the cloud voxelizes
    into exactly the turned voxels, wherever the grid is anchored."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.unique(torch.randint(0, 40, (900, 3), generator=gen), dim=0)
    cells = cells[(cells[:, 0] < 10) | (cells[:, 1] < 6)]  # an L: no symmetry to hide behind
    xyz = (cells.float() + 0.5) * VOXEL
    rgb = torch.rand(len(xyz), 3, generator=gen) * 2 - 1
    return xyz, rgb, torch.zeros(len(xyz), dtype=torch.long)


def model_with_views(views: int) -> SegmentationNetwork:
    torch.manual_seed(0)
    settings = {**TINY, "voxel": {"voxel_size": VOXEL}, "inference": {"test_time_views": views}}
    return SegmentationNetwork(ModelConfig.from_dict(settings)).eval()


def heads(model: SegmentationNetwork, xyz, rgb, batch) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(xyz, rgb, batch)
    return out["semantic_logits"].softmax(1), out["offsets"]


def test_rotation_about_z_turns_counter_clockwise() -> None:
    turn = rotation_about_z(math.pi / 2, torch.zeros(1))
    torch.testing.assert_close(turn, QUARTER, atol=1e-7, rtol=0)


def test_two_views_average_the_input_and_its_half_turn() -> None:
    xyz, rgb, batch = lattice_scene(1)
    single = model_with_views(1)
    probabilities, offsets = heads(single, xyz, rgb, batch)
    half_turn = QUARTER @ QUARTER
    turned_probabilities, turned_offsets = heads(single, xyz @ half_turn.T, rgb, batch)
    averaged_probabilities, averaged_offsets = heads(model_with_views(2), xyz, rgb, batch)
    torch.testing.assert_close(averaged_probabilities, (probabilities + turned_probabilities) / 2)
    # The turned copy's offsets point in its own frame: turned back before averaging.
    torch.testing.assert_close(averaged_offsets, (offsets + turned_offsets @ half_turn) / 2)
    assert not torch.allclose(probabilities, turned_probabilities, atol=1e-3)


def test_four_views_make_the_heads_follow_a_quarter_turn_of_the_input() -> None:
    # The 4 views of the turned cloud are the 4 views of the cloud itself, one step on: the
    # averaged class probabilities are the same, and the averaged offsets turn with the cloud.
    xyz, rgb, batch = lattice_scene(2)
    model = model_with_views(4)
    probabilities, offsets = heads(model, xyz, rgb, batch)
    turned_probabilities, turned_offsets = heads(model, xyz @ QUARTER.T, rgb, batch)
    torch.testing.assert_close(turned_probabilities, probabilities, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(turned_offsets, offsets @ QUARTER.T, atol=1e-5, rtol=1e-4)
    # Without the views the network is not equivariant: the check above could fail.
    single = model_with_views(1)
    alone, _ = heads(single, xyz, rgb, batch)
    turned_alone, _ = heads(single, xyz @ QUARTER.T, rgb, batch)
    assert not torch.allclose(alone, turned_alone, atol=1e-3)


def test_training_ignores_the_views() -> None:
    xyz, rgb, batch = lattice_scene(3)
    gt_semantic = (xyz[:, 0] > 0.1).long() + 2
    gt_instance = (xyz[:, 0] > 0.1).long()
    outputs = []
    for views in (1, 4):
        model = model_with_views(views).train()
        torch.manual_seed(1)  # the same dropout draws
        out = model(xyz, rgb, batch, gt_semantic, gt_instance)
        outputs.append((out["semantic_logits"], out["offsets"]))
    torch.testing.assert_close(outputs[1], outputs[0])


@pytest.mark.parametrize("views", [0, 17])
def test_views_out_of_range_are_refused(views: int) -> None:
    with pytest.raises(ValueError, match="test_time_views"):
        ModelConfig.from_dict({"inference": {"test_time_views": views}})
