"""Model stages with known answers: voxelizer, grouping, dynamic head, NMS, gradients."""

from __future__ import annotations

import pytest
import torch
from dyco_perception.classes import IGNORE_LABEL
from dyco_perception.model import SegmentationNetwork
from dyco_perception.model.decoders.base import InstanceTargets
from dyco_perception.model.decoders.common import (
    CandidateIndex,
    DecodedMasks,
    run_decoder,
    split_decoder_params,
)
from dyco_perception.model.decoders.dyco3d import decode_masks
from dyco_perception.model.grouping import (
    Proposals,
    cluster_proposals,
    concat_proposals,
    gt_proposals,
    select_proposals,
)
from dyco_perception.model.postprocess import proposal_scores, select_instances
from dyco_perception.model.voxelizer import devoxelize, point_features, voxelize
from dyco_perception.sparse.tensor import MAX_AXIS, MAX_BATCH
from dyco_training.losses import LossConfig, compute_losses

from dyco_perception.config import InferenceConfig, MaskHeadConfig, ModelConfig

TINY = {
    "backbone": {"width": 4, "levels": 3, "backend": "torch"},
    "transformer": {"heads": 2},
    "grouping": {"min_points": 5},
}


def box_points(centre: tuple[float, float, float], n: int, half: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor(centre) + (torch.rand(n, 3, generator=gen) * 2 - 1) * half


def test_voxelize_devoxelize_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    xyz = torch.rand(500, 3, generator=gen) * 0.3 - 0.1  # includes negative coordinates
    batch = torch.randint(0, 2, (500,), generator=gen)
    features = torch.randn(500, 2, generator=gen)
    vox = voxelize(xyz, features, batch, 0.05, levels=3)
    scene_min = torch.stack([xyz[batch == b].min(0).values for b in range(2)])
    cells = torch.floor((xyz - scene_min[batch]) / 0.05).long()
    # Points share a voxel exactly when they share scene and cell (grid at the scene's corner).
    key = batch * 10**6 + (cells[:, 0] + 50) * 10**4 + (cells[:, 1] + 50) * 100 + cells[:, 2] + 50
    assert len(torch.unique(key)) == vox.voxels.coords.shape[0]
    same_voxel = vox.point_to_voxel[:, None] == vox.point_to_voxel[None, :]
    assert torch.equal(same_voxel, key[:, None] == key[None, :])
    # Voxel feature = mean of its points; devoxelize hands it back to every point.
    back = devoxelize(vox.voxels.features, vox)
    for v in range(0, vox.voxels.coords.shape[0], 7):
        rows = vox.point_to_voxel == v
        torch.testing.assert_close(back[rows][0], features[rows].mean(0))
    assert torch.equal(vox.voxels.coords[vox.point_to_voxel, 0], batch)
    assert all(s % 4 == 0 for s in vox.voxels.spatial_shape)  # divisible for 3 levels


def test_voxelization_ignores_where_the_cloud_sits() -> None:
    # Training crops start at the origin; a robot's map can sit anywhere. Both must voxelize
    # alike, or a model fitted to one grid phase sees another at inference.
    gen = torch.Generator().manual_seed(2)
    xyz = torch.rand(400, 3, generator=gen) * 0.5
    batch = torch.zeros(400, dtype=torch.long)
    features = torch.randn(400, 2, generator=gen)
    here = voxelize(xyz, features, batch, 0.04, levels=3)
    there = voxelize(xyz + torch.tensor([3.013, -7.021, 0.517]), features, batch, 0.04, levels=3)
    assert torch.equal(here.point_to_voxel, there.point_to_voxel)
    assert torch.equal(here.voxels.coords, there.voxels.coords)


def test_blocks_with_a_shared_grid_origin_cut_their_points_into_the_same_voxels() -> None:
    gen = torch.Generator().manual_seed(4)
    xyz = torch.rand(4000, 3, generator=gen) * torch.tensor([6.0, 3.0, 2.0])
    origin = xyz.min(0).values
    left, right = (xyz[:, 0] < 3.5).nonzero()[:, 0], (xyz[:, 0] > 2.5).nonzero()[:, 0]
    both = (xyz[:, 0] > 2.5) & (xyz[:, 0] < 3.5)

    def same_voxel_pairs(rows: torch.Tensor, grid_origin) -> torch.Tensor:
        ones = torch.ones(len(rows), 1)
        zero = torch.zeros(len(rows), dtype=torch.long)
        vox = voxelize(xyz[rows], ones, zero, 0.3, 3, grid_origin)
        voxel_of = torch.full((len(xyz),), -1)
        voxel_of[rows] = vox.point_to_voxel
        shared = voxel_of[both]
        return shared[:, None] == shared[None, :]

    assert torch.equal(same_voxel_pairs(left, origin), same_voxel_pairs(right, origin))
    # each block's own corner puts the overlap on two different grids
    assert not torch.equal(same_voxel_pairs(left, None), same_voxel_pairs(right, None))


def test_two_separated_boxes_give_two_groups_and_stuff_is_skipped() -> None:
    a = box_points((0, 0, 0.5), 200, 0.2, 0)
    b = box_points((3, 0, 0.5), 150, 0.2, 1)
    wall = box_points((1.5, 2, 1), 300, 0.5, 2)
    xyz = torch.cat([a, b, wall])
    centre = torch.cat(
        [torch.tensor([0, 0, 0.5]).expand(200, 3), torch.tensor([3, 0, 0.5]).expand(150, 3), wall]
    )
    offsets = centre - xyz  # perfect offsets collapse each box onto its centre
    semantic = torch.cat([torch.full((350,), 4), torch.zeros(300, dtype=torch.long)])
    batch = torch.zeros(len(xyz), dtype=torch.long)
    p = cluster_proposals(xyz, offsets, semantic, batch, radius=0.03, min_points=50)
    assert p.num == 2
    groups = {tuple(sorted(p.point_index[p.proposal_id == k].tolist())) for k in range(2)}
    assert groups == {tuple(range(200)), tuple(range(200, 350))}
    assert p.class_id.tolist() == [4, 4]
    assert cluster_proposals(xyz, offsets, semantic, batch, 0.03, min_points=160).num == 1


def test_same_place_in_two_scenes_is_two_groups() -> None:
    xyz = torch.cat([box_points((0, 0, 0), 60, 0.1, 0)] * 2)
    batch = torch.cat([torch.zeros(60), torch.ones(60)]).long()
    semantic = torch.full((120,), 5)
    p = cluster_proposals(xyz, torch.zeros_like(xyz), semantic, batch, 0.5, 10)
    assert p.num == 2 and sorted(p.batch.tolist()) == [0, 1]


def test_same_place_in_two_scenes_under_different_classes_is_two_groups() -> None:
    """Scene 0's class-6 box and scene 1's class-5 box at the same place: a scene-separate key
    of class + scene that aliased (scene 1, class 5) onto (scene 0, class 6) would join them."""
    xyz = torch.cat([box_points((0, 0, 0), 60, 0.1, 0)] * 2)
    batch = torch.cat([torch.zeros(60), torch.ones(60)]).long()
    semantic = torch.cat([torch.full((60,), 6), torch.full((60,), 5)])
    p = cluster_proposals(xyz, torch.zeros_like(xyz), semantic, batch, 0.5, 10)
    assert p.num == 2
    assert sorted(zip(p.batch.tolist(), p.class_id.tolist(), strict=True)) == [(0, 6), (1, 5)]


def test_instance_ids_of_two_scenes_never_alias() -> None:
    """Instances 0 and 1 in each of two scenes are four GT instances, both as training
    proposals and as the loss targets' batch-unique ids (scene 0's instance 1 is not scene 1's
    instance 0)."""
    instance = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1])
    semantic = torch.full((8,), 5)
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    p = gt_proposals(instance, semantic, batch)
    members = sorted(
        (int(p.batch[k]), tuple(p.point_index[p.proposal_id == k].tolist())) for k in range(p.num)
    )
    assert members == [(0, (0, 1)), (0, (2, 3)), (1, (4, 5, 6)), (1, (7,))]
    targets = InstanceTargets.from_targets(
        {"xyz": torch.zeros(8, 3), "semantic": semantic, "instance": instance, "batch": batch}
    )
    assert targets.num_gt == 4
    groups = [set(targets.gt_id[r].tolist()) for r in ([0, 1], [2, 3], [4, 5, 6], [7])]
    assert all(len(g) == 1 for g in groups) and set.union(*groups) == {0, 1, 2, 3}


def test_gt_proposals_one_per_thing_instance() -> None:
    instance = torch.tensor([0, 0, 1, 1, 1, 2, IGNORE_LABEL, 0])
    semantic = torch.tensor([5, 5, 6, 6, 6, 0, 5, 5])  # instance 2 is a wall
    batch = torch.tensor([0, 0, 0, 0, 0, 0, 0, 1])  # the last point: instance 0 of scene 1
    p = gt_proposals(instance, semantic, batch)
    assert p.num == 3
    members = sorted(tuple(p.point_index[p.proposal_id == k].tolist()) for k in range(3))
    assert members == [(0, 1), (2, 3, 4), (7,)]


def test_concatenated_and_selected_proposals_keep_their_members_class_scene_and_source() -> None:
    """concat_proposals appends b after a (ids shifted by a.num); select_proposals keeps the
    listed ids, renumbered in the order listed, each with its own class, scene and source."""
    a = Proposals(
        point_index=torch.tensor([0, 1, 2]),
        proposal_id=torch.tensor([0, 0, 1]),
        class_id=torch.tensor([4, 5]),
        batch=torch.tensor([0, 0]),
        source=torch.tensor([0, 0]),
    )
    b = Proposals(
        point_index=torch.tensor([7, 8]),
        proposal_id=torch.tensor([0, 0]),
        class_id=torch.tensor([6]),
        batch=torch.tensor([1]),
        source=torch.tensor([1]),
    )
    both = concat_proposals(a, b)
    assert both.point_index.tolist() == [0, 1, 2, 7, 8]
    assert both.proposal_id.tolist() == [0, 0, 1, 2, 2]
    assert both.class_id.tolist() == [4, 5, 6]
    assert both.batch.tolist() == [0, 0, 1] and both.source.tolist() == [0, 0, 1]
    kept = select_proposals(both, torch.tensor([2, 0]))
    members = {int(k): kept.point_index[kept.proposal_id == k].tolist() for k in range(kept.num)}
    assert members == {0: [7, 8], 1: [0, 1]}
    assert kept.class_id.tolist() == [6, 4]
    assert kept.batch.tolist() == [1, 0] and kept.source.tolist() == [1, 0]


def test_loss_targets_count_thing_instances_only() -> None:
    """The batch-unique GT ids the losses match against cover thing instances only: a wall
    instance, a floor instance and unlabelled points get -1 and are not counted."""
    instance = torch.tensor([0, 0, 1, 1, 2, 3, 3, -1])
    semantic = torch.tensor([5, 5, 0, 0, 1, 6, 6, IGNORE_LABEL])
    targets = InstanceTargets.from_targets(
        {
            "xyz": torch.zeros(8, 3),
            "semantic": semantic,
            "instance": instance,
            "batch": torch.zeros(8, dtype=torch.long),
        }
    )
    assert targets.num_gt == 2
    assert targets.gt_id.tolist() == [0, 0, -1, -1, -1, 1, 1, -1]
    assert targets.gt_class().tolist() == [5, 6]


def test_an_instance_on_unlabelled_points_is_no_gt_instance() -> None:
    """Points carrying an instance id but no semantic label (IGNORE_LABEL) are not a GT
    instance: nothing to match proposals against and no offset target."""
    targets = InstanceTargets.from_targets(
        {
            "xyz": torch.zeros(5, 3),
            "semantic": torch.tensor([5, 5, IGNORE_LABEL, IGNORE_LABEL, 6]),
            "instance": torch.tensor([0, 0, 1, 1, 2]),
            "batch": torch.zeros(5, dtype=torch.long),
        }
    )
    assert targets.num_gt == 2
    assert targets.gt_id.tolist() == [0, 0, -1, -1, 1]


def test_hand_built_dynamic_head_reproduces_a_known_mask() -> None:
    """A head that fires on points with x > centre_x: mask = right half of the object."""
    hidden, mask_channels = 2, 1
    c_in = mask_channels + 3
    w1 = torch.zeros(c_in, hidden)
    w1[1, 0] = 10.0  # relative x
    b1 = torch.zeros(hidden)
    w2 = torch.tensor([[1.0], [0.0]])
    b2 = torch.tensor([-0.5])
    params = torch.cat([w1.flatten(), b1, w2.flatten(), b2])[None]
    assert params.shape[1] == c_in * hidden + hidden + hidden + 1
    xyz = torch.tensor([[-1.0, 0, 0], [-0.3, 0, 0], [0.3, 0, 0], [1.0, 0, 0], [9.0, 0, 0]])
    proposals = Proposals(
        torch.arange(4),
        torch.zeros(4, dtype=torch.long),
        torch.tensor([3]),
        torch.tensor([0]),
        torch.tensor([0]),
    )
    sizes = [(c_in, hidden), (hidden, 1)]
    decoded = decode_masks(
        proposals,
        params,
        torch.zeros(5, 1),
        xyz,
        torch.zeros(5, dtype=torch.long),
        None,
        num_classes=20,
        margin=0.5,
        layer_sizes=sizes,
        use_relative_position=True,
    )
    assert decoded.point_index.tolist() == [0, 1, 2, 3]  # the far point is outside the box
    assert (decoded.logits.sigmoid() > 0.5).tolist() == [False, False, True, True]
    layers = split_decoder_params(params, sizes)
    direct = run_decoder(torch.tensor([[0.0, 1.0, 0, 0]]), [(w[0], b[0]) for w, b in layers])
    assert direct.item() == pytest.approx(9.5)


def test_category_aware_decoding_skips_other_classes() -> None:
    xyz = torch.zeros(4, 3)
    proposals = Proposals(
        torch.arange(2),
        torch.zeros(2, dtype=torch.long),
        torch.tensor([7]),
        torch.tensor([0]),
        torch.tensor([0]),
    )
    params = torch.zeros(1, ModelConfig().dynamic_head_params)
    semantic = torch.tensor([7, 7, 2, 7])
    decoded = decode_masks(
        proposals,
        params,
        torch.zeros(4, 16),
        xyz,
        torch.zeros(4, dtype=torch.long),
        semantic,
        20,
        0.1,
        ModelConfig().decoder_layer_sizes,
        True,
    )
    assert decoded.point_index.tolist() == [0, 1, 3]


def _outputs_with_masks(mask_rows: list[list[int]], num_points: int, classes: list[int]) -> dict:
    logits, points, ids = [], [], []
    for k, rows in enumerate(mask_rows):
        points.append(torch.arange(num_points))
        inside = torch.zeros(num_points)
        inside[rows] = 1
        logits.append(inside * 8 - 4)  # prob 0.98 inside, 0.018 outside
        ids.append(torch.full((num_points,), k))
    k = len(mask_rows)
    semantic_logits = torch.zeros(num_points, 20)
    proposals = Proposals(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.tensor(classes),
        torch.zeros(k, dtype=torch.long),
        torch.zeros(k, dtype=torch.long),
    )
    return {
        "masks": DecodedMasks(torch.cat(logits), torch.cat(points), torch.cat(ids)),
        "proposals": proposals,
        "semantic_logits": semantic_logits,
        "score_logits": torch.tensor([2.0, 1.0, 0.0][:k]),
    }


def _learned_scores(**overrides) -> InferenceConfig:
    """Selection by the learned score alone (no class factor), keeping masks of >= 10 points."""
    settings = {
        "min_instance_points": 10,
        "score_threshold": 0.0,
        "score_mode": "learned",
        "score_with_class_prob": False,
    }
    return InferenceConfig(**{**settings, **overrides})


def test_nms_removes_a_duplicate_and_keeps_a_distinct_instance() -> None:
    outputs = _outputs_with_masks(
        [list(range(0, 60)), list(range(2, 60)), list(range(70, 130))], 150, [4, 4, 5]
    )
    infer = _learned_scores()
    final = select_instances(outputs, 150, MaskHeadConfig(), infer)
    assert final.class_id.tolist() == [4, 5]  # proposal 1 (IoU 0.97 with 0) is suppressed
    assert torch.equal(final.point_instance[:60], torch.ones(60, dtype=torch.int32))
    assert torch.equal(final.point_instance[70:130], torch.full((60,), 2, dtype=torch.int32))
    assert (final.point_instance[130:] == 0).all() and (final.point_instance[60:70] == 0).all()
    assert final.point_score[0] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    loose = _learned_scores(nms_iou=0.99)
    assert select_instances(outputs, 150, MaskHeadConfig(), loose).class_id.numel() == 2
    # The duplicate survives NMS at 0.99 but owns only 0 points after overlap resolution.


def test_a_point_at_exactly_the_mask_threshold_is_outside_the_mask() -> None:
    """A point is in a mask when sigmoid(logit) > mask_threshold: the 10 points decoded at
    logit 0 (p = 0.5, the default threshold) stay unassigned."""
    outputs = _outputs_with_masks([list(range(0, 60))], 100, [4])
    outputs["masks"].logits[60:70] = 0.0
    infer = _learned_scores()
    final = select_instances(outputs, 100, MaskHeadConfig(mask_threshold=0.5), infer)
    assert final.class_id.tolist() == [4]
    assert (final.point_instance[:60] == 1).all() and (final.point_instance[60:] == 0).all()


def test_an_instance_of_exactly_the_minimum_size_is_kept() -> None:
    """min_instance_points is the smallest instance kept: a 10-point mask survives a minimum of
    10, a 9-point one does not."""
    infer = _learned_scores()
    outputs = _outputs_with_masks([list(range(0, 10)), list(range(20, 29))], 40, [4, 5])
    final = select_instances(outputs, 40, MaskHeadConfig(), infer)
    assert final.class_id.tolist() == [4]
    assert (final.point_instance[:10] == 1).all() and (final.point_instance[10:] == 0).all()


def test_an_instance_scoring_exactly_the_score_threshold_is_kept() -> None:
    """score_threshold is the lowest score kept: a score equal to it survives, one just
    under it does not."""
    outputs = _outputs_with_masks([list(range(0, 20)), list(range(30, 50))], 60, [4, 5])
    outputs["score"] = torch.tensor([0.5, 0.4999])
    infer = _learned_scores(score_threshold=0.5)
    final = select_instances(outputs, 60, MaskHeadConfig(), infer)
    assert final.class_id.tolist() == [4]
    assert final.score.tolist() == [0.5]


def test_at_most_max_instances_are_kept_the_highest_scoring_first() -> None:
    outputs = _outputs_with_masks(
        [list(range(0, 20)), list(range(30, 50)), list(range(60, 80))], 90, [4, 5, 6]
    )
    infer = _learned_scores(max_instances=2)
    final = select_instances(outputs, 90, MaskHeadConfig(), infer)
    assert final.class_id.tolist() == [4, 5]  # score logits 2, 1 (the third's is 0)
    assert (final.point_instance[60:] == 0).all()


def test_mask_x_learned_scores_are_the_product_of_the_mask_and_learned_scores() -> None:
    outputs = _outputs_with_masks([list(range(0, 20)), list(range(30, 50))], 60, [4, 5])
    mask_cfg = MaskHeadConfig()

    def scores(mode: str) -> torch.Tensor:
        cfg = InferenceConfig(score_mode=mode, score_with_class_prob=False)
        return proposal_scores(outputs, mask_cfg, cfg)[1]

    learned = torch.tensor([2.0, 1.0]).sigmoid()
    torch.testing.assert_close(scores("learned"), learned)
    torch.testing.assert_close(scores("mask_x_learned"), scores("mask") * learned)
    assert (scores("mask") < 0.99).all()  # the product differs from the learned score alone


def test_class_from_mask_takes_the_mean_thing_class_of_the_mask_points() -> None:
    # Two masks grouped as class 4 (chair). Mask 0's points are mostly table (6) with a wall
    # (1) majority that must be ignored; mask 1's are chair. "cluster" keeps 4 for both.
    outputs = _outputs_with_masks([list(range(0, 40)), list(range(50, 90))], 100, [4, 4])
    logits = outputs["semantic_logits"]
    logits[0:25, 1] = 9.0  # wall: a stuff class, never an instance's class
    logits[25:40, 6] = 9.0
    logits[0:25, 6] = 4.0  # table is the best thing class on the wall points too
    logits[50:90, 4] = 9.0
    infer = InferenceConfig(min_instance_points=10, score_threshold=0.0, class_source="mask")
    by_mask = select_instances(outputs, 100, MaskHeadConfig(), infer)
    assert sorted(by_mask.class_id.tolist()) == [4, 6]
    # The score carries the chosen class's mean probability: the chair mask ranks first.
    assert by_mask.class_id[0] == 4 and by_mask.score[0] > by_mask.score[1]
    infer.class_source = "cluster"
    assert select_instances(outputs, 100, MaskHeadConfig(), infer).class_id.tolist() == [4, 4]


def _four_point_mask() -> dict:
    """One mask (grouped as class 4) decoding 4 points, 2 inside (p = 0.88, 0.73) and 2 outside:
    class 4 has probability 0.8 and 0.6 on the inside points, 0.5 (class 7 the rest) outside."""
    probs = torch.full((4, 20), 1e-12)
    probs[0, 4], probs[0, 5] = 0.8, 0.2
    probs[1, 4], probs[1, 5] = 0.6, 0.4
    probs[2:, 4], probs[2:, 7] = 0.5, 0.5
    return {
        "masks": DecodedMasks(
            torch.tensor([2.0, 1.0, -1.0, -3.0]), torch.arange(4), torch.zeros(4, dtype=torch.long)
        ),
        "proposals": Proposals(
            *[torch.tensor([4] if k == 2 else [0] * k, dtype=torch.long) for k in (0, 0, 2, 1, 1)]
        ),
        "semantic_logits": probs.log(),
        "score_logits": torch.zeros(1),
    }


def test_mask_score_and_class_probabilities_average_only_the_points_inside_the_mask() -> None:
    """The mask score is the mean probability of the two inside points, and the class
    probabilities the mean over them (the two outside points, half class 7, count for
    neither)."""
    infer = InferenceConfig(score_mode="mask", score_with_class_prob=False, class_source="mask")
    inside, score, class_id, class_probs = proposal_scores(
        _four_point_mask(), MaskHeadConfig(), infer
    )
    assert inside.tolist() == [True, True, False, False]
    want = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(1.0))).item() / 2
    assert score.tolist() == pytest.approx([want])
    assert class_id.tolist() == [4]
    assert class_probs[0, [4, 5, 7]].tolist() == pytest.approx([0.7, 0.3, 0.0], abs=1e-6)


def test_the_cluster_class_probability_is_its_mean_over_the_points_inside_the_mask() -> None:
    """class_source cluster with score_with_class_prob: the score is the mask score times the
    grouped class's mean probability over the inside points, (0.8 + 0.6) / 2."""
    infer = InferenceConfig(score_mode="mask", score_with_class_prob=True, class_source="cluster")
    _, score, class_id, _ = proposal_scores(_four_point_mask(), MaskHeadConfig(), infer)
    mask_score = (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(1.0))).item() / 2
    assert class_id.tolist() == [4]
    assert score.tolist() == pytest.approx([mask_score * 0.7], rel=1e-5)


def test_each_points_score_is_its_surviving_instances_score() -> None:
    """At NMS 0.99 the duplicate mask 1 is kept but owns no point, so it drops out: the points
    of mask 2 (now instance 2) carry mask 2's score sigmoid(0), not the dropped one's."""
    outputs = _outputs_with_masks(
        [list(range(0, 60)), list(range(2, 60)), list(range(70, 130))], 150, [4, 4, 5]
    )
    infer = _learned_scores(nms_iou=0.99)
    final = select_instances(outputs, 150, MaskHeadConfig(), infer)
    assert final.score.tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item(), 0.5])
    assert (final.point_instance[70:130] == 2).all()
    assert final.point_score[70:130].tolist() == pytest.approx([0.5] * 60)
    assert (final.point_score[130:] == 0).all()


def _scene_batch(n: int = 1500) -> tuple[torch.Tensor, ...]:
    chair = box_points((0, 0, 0.4), n // 3, 0.25, 0)
    table = box_points((2, 0, 0.4), n // 3, 0.4, 1)
    floor = torch.rand(n - 2 * (n // 3), 3, generator=torch.Generator().manual_seed(2)) * 3
    floor[:, 2] = 0
    xyz = torch.cat([chair, table, floor])
    semantic = torch.cat(
        [
            torch.full((n // 3,), 4),
            torch.full((n // 3,), 6),
            torch.ones(len(floor), dtype=torch.long),
        ]
    )
    instance = torch.cat(
        [torch.zeros(n // 3), torch.ones(n // 3), torch.full((len(floor),), IGNORE_LABEL)]
    ).long()
    rgb = torch.rand(len(xyz), 3, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return xyz, rgb, semantic, instance


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = SegmentationNetwork(ModelConfig.from_dict(TINY)).train()
    xyz, rgb, semantic, instance = _scene_batch()
    xyz = torch.cat([xyz, xyz + 10])
    rgb, semantic, instance = (torch.cat([t, t]) for t in (rgb, semantic, instance))
    batch = torch.repeat_interleave(torch.tensor([0, 1]), len(xyz) // 2)
    out = model(xyz, rgb, batch, semantic, instance)
    losses = compute_losses(
        model, out, {"xyz": xyz, "semantic": semantic, "instance": instance, "batch": batch}
    )
    assert set(losses) >= {
        "semantic_ce",
        "offset_l1",
        "offset_dir",
        "mask_bce",
        "mask_dice",
        "score",
        "total",
    }
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    dead = [
        n
        for n, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert dead == []


def test_total_loss_weighs_each_term_by_its_own_weight() -> None:
    """total = sum of each shared term times its own `loss.*_weight` + decoder_scale times the
    decoder's (already weighted) terms; distinct weights tell a swapped weight apart."""
    torch.manual_seed(0)
    model = SegmentationNetwork(ModelConfig.from_dict(TINY)).train()
    xyz, rgb, semantic, instance = _scene_batch()
    batch = torch.zeros(len(xyz), dtype=torch.long)
    out = model(xyz, rgb, batch, semantic, instance)
    targets = {"xyz": xyz, "semantic": semantic, "instance": instance, "batch": batch}
    cfg = LossConfig(
        semantic_weight=2.0, semantic_dice_weight=3.0, offset_l1_weight=5.0, offset_dir_weight=7.0
    )
    losses = compute_losses(model, out, targets, cfg, decoder_scale=0.5)
    shared = (
        2.0 * losses["semantic_ce"]
        + 3.0 * losses["semantic_dice"]
        + 5.0 * losses["offset_l1"]
        + 7.0 * losses["offset_dir"]
    )
    decoder_terms = losses["mask_bce"] + losses["mask_dice"] + losses["score"]
    assert losses["semantic_dice"].item() > 0 and losses["offset_dir"].item() != 0
    assert losses["total"].item() == pytest.approx((shared + 0.5 * decoder_terms).item(), rel=1e-5)


def test_offset_loss_is_zero_for_perfect_offsets() -> None:
    from dyco_training.losses import offset_losses

    xyz, _, _, instance = _scene_batch(300)
    gt_id = torch.where(instance >= 0, instance, torch.full_like(instance, -1))
    centroid = torch.stack([xyz[gt_id == g].mean(0) for g in range(2)])
    offsets = torch.zeros_like(xyz)
    offsets[gt_id >= 0] = centroid[gt_id[gt_id >= 0]] - xyz[gt_id >= 0]
    losses = offset_losses(offsets, xyz, gt_id, 2)
    assert losses["offset_l1"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["offset_dir"].item() == pytest.approx(-1.0, abs=1e-4)


def test_mask_losses_of_a_crop_without_thing_instances_are_finite_zeros() -> None:
    # A training crop can hold proposals but no thing GT (only walls and floor): every
    # proposal is unmatched, so mask terms vanish and the score target is 0 (no index error).
    from dyco_training.losses import LossConfig, mask_losses

    outputs = _outputs_with_masks([[0, 1, 2], [3, 4]], 10, [4, 6])
    outputs["masks"].logits.requires_grad_(True)
    outputs["score_logits"].requires_grad_(True)
    no_things = torch.full((10,), -1, dtype=torch.long)
    losses = mask_losses(outputs, no_things, 0, LossConfig())
    assert losses["mask_bce"].item() == 0.0 and losses["mask_dice"].item() == 0.0
    assert torch.isfinite(losses["score"]) and losses["score"].item() > 0  # pushes scores to 0
    losses["score"].backward()
    assert outputs["score_logits"].grad is not None


def test_eval_forward_is_deterministic() -> None:
    torch.manual_seed(0)
    model = SegmentationNetwork(ModelConfig.from_dict(TINY)).eval()
    xyz, rgb, _, _ = _scene_batch()
    batch = torch.zeros(len(xyz), dtype=torch.long)
    with torch.no_grad():
        a, b = model(xyz, rgb, batch), model(xyz, rgb, batch)
    assert torch.equal(a["semantic_logits"], b["semantic_logits"])
    assert torch.equal(a["masks"].logits, b["masks"].logits)


def test_candidate_index_equals_brute_force_box_and_class_filter() -> None:
    gen = torch.Generator().manual_seed(5)
    xyz = torch.rand(3000, 3, generator=gen) * 4 - 2
    batch = torch.randint(0, 2, (3000,), generator=gen)
    semantic = torch.randint(0, 4, (3000,), generator=gen)
    members = torch.randperm(3000, generator=gen)[:400]
    proposal_id = torch.randint(0, 12, (400,), generator=gen)
    proposal_id[:12] = torch.arange(12)
    k = 12
    proposals = Proposals(
        members,
        proposal_id,
        torch.randint(0, 4, (k,), generator=gen),
        batch[members[:12]],
        torch.zeros(k, dtype=torch.long),
    )
    params = torch.randn(k, ModelConfig().dynamic_head_params, generator=gen)
    for sem in (semantic, None):
        decoded = decode_masks(
            proposals,
            params,
            torch.zeros(3000, 16),
            xyz,
            batch,
            sem,
            20,
            0.3,
            ModelConfig().decoder_layer_sizes,
            True,
        )
        for p in range(k):
            pts = xyz[members[proposal_id == p]]
            lo, hi = pts.min(0).values - 0.3, pts.max(0).values + 0.3
            want = ((xyz >= lo) & (xyz <= hi)).all(1) & (batch == proposals.batch[p])
            if sem is not None:
                want &= sem == proposals.class_id[p]
            got = decoded.point_index[decoded.proposal_id == p]
            assert sorted(got.tolist()) == want.nonzero().squeeze(1).tolist()


def test_a_candidate_range_past_the_clouds_end_stays_in_its_own_class() -> None:
    """A proposal box reaching far beyond the cloud's x extent yields its own class's points
    only, not the next class's run of the (scene, class, x) sorted index."""
    xyz = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.2, 0, 0], [0.5, 0, 0]])
    batch = torch.zeros(4, dtype=torch.long)
    index = CandidateIndex(xyz, batch, torch.tensor([4, 4, 5, 4]), num_classes=20)
    proposals = Proposals(
        point_index=torch.tensor([0]),
        proposal_id=torch.tensor([0]),
        class_id=torch.tensor([4]),
        batch=torch.tensor([0]),
        source=torch.tensor([0]),
    )
    (start,), (stop,) = index.ranges(proposals, torch.tensor([-5.0]), torch.tensor([5.0]))
    assert sorted(index.order[start:stop].tolist()) == [0, 1, 3]


def test_mixed_precision_forward_backward_under_autocast() -> None:
    """The trainer uses autocast on GPU; CPU bfloat16 autocast exercises the same dtype mix."""
    torch.manual_seed(0)
    model = SegmentationNetwork(ModelConfig.from_dict(TINY)).train()
    xyz, rgb, semantic, instance = _scene_batch(600)
    batch = torch.zeros(len(xyz), dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xyz, rgb, batch, semantic, instance)
        targets = {"xyz": xyz, "semantic": semantic, "instance": instance, "batch": batch}
        losses = compute_losses(model, out, targets)
    losses["total"].backward()
    assert torch.isfinite(losses["total"])
    assert model.backbone.input_conv.weight.grad.abs().sum() > 0


def test_training_forward_survives_a_single_voxel_at_the_coarsest_level() -> None:
    """A tiny cropped scene leaves one voxel (one row) for BatchNorm at the deepest level."""
    from dyco_perception.model.unet import BatchNorm1d

    norm = BatchNorm1d(4).train()
    one_row = torch.randn(1, 4)
    out = norm(one_row)
    expected = (one_row - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    assert torch.allclose(out, expected * norm.weight + norm.bias)
    two_rows = torch.randn(2, 4)
    assert torch.allclose(norm(two_rows).mean(0), torch.zeros(4), atol=1e-5)


def test_a_decoders_own_thresholds_scores_and_classes_replace_the_shared_ones() -> None:
    """The optional decoder outputs post-processing reads: per-proposal mask thresholds (DKNet's
    Otsu), the method's own score (ISBNet, DKNet) and its own class probabilities."""
    from dyco_perception.model.postprocess import proposal_scores

    outputs = _outputs_with_masks([[0, 1, 2], [3, 4]], 10, [4, 6])
    outputs["masks"].logits[outputs["masks"].proposal_id == 1] = 0.0  # probability 0.5 everywhere
    mask_cfg = MaskHeadConfig(mask_threshold=0.6)
    cfg = InferenceConfig(score_mode="learned", class_source="cluster")
    inside, score, class_id, _ = proposal_scores(outputs, mask_cfg, cfg)
    assert not inside[outputs["masks"].proposal_id == 1].any()  # 0.5 is under the shared 0.6
    torch.testing.assert_close(score, torch.tensor([2.0, 1.0]).sigmoid())
    assert class_id.tolist() == [4, 6]

    outputs["mask_threshold"] = torch.tensor([0.6, 0.4])
    outputs["score"] = torch.tensor([0.3, 0.9])
    own = torch.zeros(2, 20)
    own[0, 8], own[1, 3] = 0.7, 0.8
    outputs["proposal_class_probs"] = own
    inside, score, class_id, _ = proposal_scores(outputs, mask_cfg, cfg)
    assert inside[outputs["masks"].proposal_id == 1].all()  # its own threshold 0.4
    assert inside[outputs["masks"].proposal_id == 0].sum() == 3  # still the 3 mask points
    torch.testing.assert_close(score, torch.tensor([0.3, 0.9]))
    assert class_id.tolist() == [8, 3]


def test_each_scene_of_a_batch_voxelizes_on_its_own() -> None:
    """Three scenes far apart in one batch: xyz features are relative to each scene's own
    mean; every point's voxel is of its own scene; coords start at 0 per scene (on a shared
    grid origin too) and lie inside spatial_shape."""
    gen = torch.Generator().manual_seed(5)
    batch = torch.arange(3).repeat_interleave(200)
    xyz = torch.rand(600, 3, generator=gen) * 0.5 + batch[:, None] * 10.0
    features = point_features(xyz, None, batch, use_rgb=False, use_xyz=True)
    for b in range(3):
        torch.testing.assert_close(features[batch == b].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    for origin in (None, torch.tensor([-1.0, -2.0, -3.0])):
        vox = voxelize(xyz, features, batch, 0.1, levels=3, grid_origin=origin)
        coords = vox.voxels.coords
        assert torch.equal(coords[vox.point_to_voxel, 0], batch)
        for b in range(3):
            assert coords[coords[:, 0] == b, 1:].amin(0).tolist() == [0, 0, 0]
        assert (coords[:, 1:] < torch.tensor(vox.voxels.spatial_shape)).all()


def test_a_scene_may_span_max_axis_voxels_and_no_more() -> None:
    """Along one axis a scene may span MAX_AXIS voxels; one more is refused by name."""
    ones, zero = torch.ones(2, 1), torch.zeros(2, dtype=torch.long)
    widest = torch.tensor([[0.0, 0.0, 0.0], [MAX_AXIS - 0.5, 0.0, 0.0]])
    assert voxelize(widest, ones, zero, 1.0, levels=3).voxels.coords[:, 1].tolist() == [
        0,
        MAX_AXIS - 1,
    ]
    with pytest.raises(ValueError, match=f"spans {MAX_AXIS + 1} voxels"):
        voxelize(widest + torch.tensor([[0.0, 0, 0], [1.0, 0, 0]]), ones, zero, 1.0, levels=3)


def test_points_on_either_side_of_the_grid_origin_fall_in_different_voxels() -> None:
    """Cells are floor((x - origin) / size): a point 0.3 voxel below a shared grid origin is
    in the cell before the one 0.3 voxel above it (truncation would merge the two)."""
    xyz = torch.tensor([[-0.3, 0.2, 0.2], [0.3, 0.2, 0.2], [0.9, 0.2, 0.2]])
    vox = voxelize(xyz, torch.ones(3, 1), torch.zeros(3, dtype=torch.long), 1.0, 3, torch.zeros(3))
    assert vox.voxels.coords[vox.point_to_voxel, 1].tolist() == [0, 1, 1]


def test_a_batch_may_hold_max_batch_scenes_and_no_more() -> None:
    ones = torch.ones(2, 1)
    xyz = torch.zeros(2, 3)
    vox = voxelize(xyz, ones, torch.tensor([0, MAX_BATCH - 1]), 0.1, levels=3)
    assert vox.voxels.coords[:, 0].tolist() == [0, MAX_BATCH - 1]
    with pytest.raises(ValueError, match=f"batch of {MAX_BATCH + 1} scenes"):
        voxelize(xyz, ones, torch.tensor([0, MAX_BATCH]), 0.1, levels=3)
