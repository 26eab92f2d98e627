"""ISBNet decoder: its parts against hand-computed values, batches and empty inputs, and an
overfit run on touching identical boxes with a control (mask losses off)."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
from dyco_perception.model import SegmentationNetwork
from dyco_perception.model.decoders import isbnet as isbnet_module
from dyco_perception.model.decoders.base import DecoderInput, InstanceTargets
from dyco_perception.model.decoders.isbnet import (
    OUTSIDE_LOGIT,
    IsbnetDecoder,
    MaskBlock,
    PointAggregator,
    Queries,
    VoxelView,
    _cat_matches,
    _Decoding,
    class_loss,
    decode_scene,
    dynamic_inputs,
    dynamic_layer_sizes,
    foreground,
    gt_boxes,
    isbnet_losses,
    mask_losses,
    match_block,
    matching_cost,
    one_to_many_match,
    point_box_losses,
    query_box_losses,
    run_dynamic,
    thresholded_pairs,
    uncovered,
    voxel_view,
)
from dyco_perception.model.postprocess import select_instances
from dyco_perception.model.voxelizer import voxelize
from dyco_training.losses import LossConfig, compute_losses
from synthetic_scenes import fit_to_scene, segment_ap50, touching_boxes

from dyco_perception.config import ModelConfig

CHAIR, FLOOR = 4, 1
DECODER = {
    "name": "isbnet",
    "seed_samples": 64,
    # More queries than matched slots (4 boxes x S = 2), so no-object and the mask score also
    # learn what the extra inference chunks see: with 8 queries (all matched) an untrained
    # chunk-2 query scored 0.86 with a mask over all four boxes (AP50 0.06-1.0 over seeds 0-3).
    "train_queries": 16,
    "duplicate_gt": 2,
    "chunk1": 8,
    "chunk2": 4,
    "chunk3": 4,
    "mask_channels": 16,
    "dynamic_hidden": 16,
    # The released code's matching cost (0.5 cls + dice + BCE + 0.2 gIoU), not Eq. 4's
    # cls + 5 dice: over seeds 0-3 the fit reached AP50 0.75-1.0 with it, 0.0-1.0 with Eq. 4.
    "cost_cls": 0.5,
    "cost_dice": 1.0,
    "cost_bce": 1.0,
    "cost_giou": 0.2,
}
TINY = {
    "decoder": DECODER,
    "voxel": {"voxel_size": 0.04, "use_xyz": True},
    "backbone": {"width": 8, "levels": 3, "backend": "torch"},
    "transformer": {"enabled": False},
    "inference": {
        "min_instance_points": 20,
        "score_mode": "learned",
        "score_with_class_prob": False,
        "class_source": "cluster",
        "nms_iou": 0.2,
        "score_threshold": 0.0,
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_decoder(**options) -> IsbnetDecoder:
    cfg = ModelConfig.from_dict({**TINY, "decoder": {**DECODER, **options}})
    return IsbnetDecoder(cfg)


# --- IA-FPS (Eq. 1) -------------------------------------------------------------------------


def test_a_voxels_position_is_the_mean_of_its_points() -> None:
    """ISBNet works on voxels placed at the mean of their points (three points share one 0.1 m
    voxel, one point has its own), with the class probabilities of their points' logits."""
    xyz = torch.tensor([[0.01, 0.0, 0.0], [0.02, 0.06, 0.0], [0.09, 0.0, 0.03], [0.5, 0.5, 0.5]])
    batch = torch.zeros(4, dtype=torch.long)
    vox = voxelize(xyz, torch.zeros(4, 1), batch, 0.1, levels=1)
    logits = torch.zeros(4, 20)
    inp = DecoderInput(
        xyz=xyz,
        batch=batch,
        voxelized=vox,
        voxel_features=torch.zeros(2, 8),
        point_features=torch.zeros(4, 8),
        semantic_logits=logits,
        offsets=torch.zeros(4, 3),
    )
    view = voxel_view(inp)
    p2v = vox.point_to_voxel
    assert p2v[0] == p2v[1] == p2v[2] != p2v[3]
    assert torch.allclose(view.xyz[p2v[0]], xyz[:3].mean(0)) and torch.equal(
        view.xyz[p2v[3]], xyz[3]
    )
    assert torch.allclose(view.semantic_prob, torch.full((2, 20), 0.05))


def test_foreground_is_one_minus_stuff_probability_above_tau() -> None:
    probs = torch.zeros(4, 20)
    probs[:, 0] = torch.tensor([0.1, 0.3, 0.5, 0.0])  # wall
    probs[:, 1] = torch.tensor([0.2, 0.3, 0.0, 0.0])  # floor
    probs[:, CHAIR] = 1 - probs[:, 0] - probs[:, 1]
    # background 0.3, 0.6, 0.5 (not strictly above), 0.0
    assert foreground(probs, 0.5).tolist() == [True, False, False, True]


def test_thresholded_pairs_keep_the_points_above_the_mask_threshold() -> None:
    """At mask_threshold 0.8 (logit cut log 4) a query keeps its points of probability 0.88
    and 0.99 and drops the one of 0.73 and the one of 0.12."""
    block = MaskBlock(
        torch.tensor([3]), torch.tensor([10, 11, 12, 13]), torch.tensor([[2.0, 1.0, 5.0, -2.0]])
    )
    pairs = thresholded_pairs([block], 0.8, torch.device("cpu"), torch.zeros(1))
    assert pairs.point_index.tolist() == [10, 12]
    assert pairs.proposal_id.tolist() == [3, 3]
    assert pairs.logits.tolist() == [2.0, 5.0]


def test_uncovered_needs_every_earlier_mask_below_one_minus_tau() -> None:
    masks = torch.tensor([[0.1, 0.7, 0.2, 0.5], [0.3, 0.1, 0.9, 0.0]])
    assert uncovered(masks, 0.5).tolist() == [True, False, False, False]
    assert uncovered(masks[:0], 0.5).tolist() == [True] * 4


class _CoverLeftHalf:
    """A stub decoding: the first chunk's masks cover every seed with x < 1."""

    def __init__(self, seed_xyz: torch.Tensor):
        self.seed_xyz, self.calls = seed_xyz, 0

    def __call__(self, q: Queries, offset: int) -> list:
        self.calls += 1
        return []

    def seed_uncovered(self, blocks, seeds, offset, tau) -> torch.Tensor:
        return self.seed_xyz[:, 0] >= 1.0 if self.calls == 1 else torch.ones_like(seeds).bool()


def test_inference_chunks_sample_only_uncovered_unpicked_seeds() -> None:
    dec = tiny_decoder(chunk1=3, chunk2=4, chunk3=4).eval()
    xyz = torch.stack([torch.linspace(0, 2, 20), torch.zeros(20), torch.zeros(20)], 1)
    seed_set = (xyz, torch.zeros(20, dtype=torch.long), torch.randn(20, 8))
    with torch.no_grad():
        q, _ = dec.chunked_queries(torch.arange(20), seed_set, _CoverLeftHalf(xyz))
    assert q.xyz.shape[0] == 11
    first, later = q.xyz[:3, 0], q.xyz[3:, 0]
    assert (first < 1.0).any()  # plain FPS picks the left end first
    assert bool((later >= 1.0).all())  # later chunks avoid the covered left half
    assert torch.unique(q.xyz[:, 0]).numel() == 11  # a seed is never picked twice


def test_seed_coverage_reads_each_seed_voxel_in_its_scene_block() -> None:
    # Voxels 0-1 in scene 0, voxels 2-3 in scene 1; points 0..5 map to voxels 0,0,1,2,3,3.
    vox = VoxelView(
        torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 2, 3, 3]), None
    )
    decoding = _Decoding(tiny_decoder(), vox, torch.zeros(4, 1), torch.zeros(4, 6))
    logit = math.log(0.6 / 0.4)  # probability 0.6 > 1 - tau: covered
    blocks = [
        MaskBlock(torch.tensor([0]), torch.tensor([0, 1, 2]), torch.tensor([[-5.0, -5.0, logit]])),
        MaskBlock(torch.tensor([1]), torch.tensor([3, 4, 5]), torch.tensor([[logit, -5.0, -5.0]])),
    ]
    keep = decoding.seed_uncovered(blocks, torch.tensor([0, 1, 2, 3]), 0, 0.5)
    assert keep.tolist() == [True, False, False, True]


def test_training_queries_are_sampled_from_predicted_foreground_only() -> None:
    torch.manual_seed(0)
    dec = tiny_decoder(train_queries=16).train()
    inp = hand_input(torch.rand(400, 3) * torch.tensor([2.0, 1.0, 1.0]), fg=lambda p: p[:, 0] > 1)
    out = dec(inp)
    q = out["isbnet"]["queries"]
    assert q.xyz.shape[0] == 16
    assert bool((q.xyz[:, 0] > 0.95).all())  # voxel means of x > 1 points


# --- Point Aggregator (Eq. 2) ---------------------------------------------------------------


def test_aggregator_groups_within_radius_and_max_pools_with_residual() -> None:
    agg = PointAggregator(channels=2, radius=0.5, neighbours=8).eval()
    # Replace the MLP by a readable one: out = [feature_0, local x] (local x = dx / r).
    linear = torch.nn.Linear(5, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0]]))
    agg.mlp = linear
    xyz = torch.tensor([[0.0, 0, 0], [0.2, 0, 0], [0.45, 0, 0], [0.9, 0, 0]])
    feats = torch.tensor([[1.0, 0], [5.0, 0], [2.0, 0], [9.0, 0]])
    batch = torch.zeros(4, dtype=torch.long)
    centre = torch.tensor([[0.0, 0, 0]])
    out = agg(centre, batch[:1], torch.tensor([[10.0, 20.0]]), xyz, batch, feats)
    # Neighbours 0, 1, 2 (0.9 is outside r): max feature 5, max local x 0.45 / 0.5.
    assert torch.allclose(out, torch.tensor([[10.0 + 5.0, 20.0 + 0.9]]))


# --- box-aware dynamic convolution (Eq. 3) --------------------------------------------------


def test_dynamic_inputs_are_mask_features_relative_position_and_box_difference() -> None:
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    xyz = torch.tensor([[5.0, 5.0, 5.0], [6.0, 5.5, 4.0]])
    boxes = torch.tensor([[4.0, 4, 4, 6, 6, 6], [5.0, 5, 3, 7, 6, 5]])
    q_xyz = torch.tensor([[5.0, 5.0, 5.0]])  # away from the origin: the position is relative
    q_box = torch.tensor([[4.5, 4, 4, 6, 6, 6.5]])
    x = dynamic_inputs(feats, xyz, boxes, q_xyz, q_box)
    assert x.shape == (1, 2, 2 + 3 + 6)
    expected_1 = [3.0, 4.0, 1.0, 0.5, -1.0, 0.5, 1.0, 1.0, 1.0, 0.0, 1.5]
    assert x[0, 1].tolist() == expected_1
    assert x[0, 0].tolist() == [1.0, 2.0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0.5]


def test_run_dynamic_applies_each_query_its_own_layers_with_relu_between() -> None:
    sizes = [(1, 2), (2, 1)]
    # Per query: W1 (1x2), b1 (2), W2 (2x1), b2 (1).
    params = torch.tensor(
        [[1.0, -1.0, 0.0, 0.0, 2.0, 3.0, 0.5], [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]]
    )
    x = torch.tensor([[[2.0], [-2.0]], [[2.0], [-2.0]]])
    out = run_dynamic(x, params, sizes)
    # q0: h = relu([x, -x]) -> x=2: [2, 0] -> 4.5; x=-2: [0, 2] -> 6.5. q1: h = [1, 1] -> 2.
    assert out.tolist() == [[4.5, 6.5], [2.0, 2.0]]


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_decode_scene_equals_the_layers_on_the_concatenated_inputs(layers: int) -> None:
    torch.manual_seed(0)
    sizes = dynamic_layer_sizes(4, 8, layers)
    feats, xyz, boxes = torch.randn(50, 4), torch.rand(50, 3) * 3, torch.rand(50, 6) * 3
    q_xyz, q_box = torch.rand(7, 3) * 3 + 2, torch.rand(7, 6) * 3
    params = torch.randn(7, sum(a * b + b for a, b in sizes))
    inputs = (feats, xyz, boxes, q_xyz, q_box, params)
    for t in inputs:
        t.requires_grad_(True)
    direct = run_dynamic(dynamic_inputs(*inputs[:5]), params, sizes)
    weights = torch.randn_like(direct)  # any loss: the gradients must match too
    expected = torch.autograd.grad((direct * weights).sum(), inputs)
    with mock.patch("dyco_perception.model.decoders.isbnet._DECODE_CHUNK", 50 * 8 * 3):
        split = decode_scene(*inputs, sizes)  # under autograd: chunks of 3 queries
    assert torch.allclose(split, direct, atol=1e-4)
    with torch.no_grad(), mock.patch("dyco_perception.model.decoders.isbnet._DECODE_TILE", 3):
        inference = decode_scene(*inputs, sizes)  # one query at a time, tiles of 3 voxels
    assert torch.allclose(inference, direct, atol=1e-4)
    got = torch.autograd.grad((split * weights).sum(), inputs)
    for got_grad, want in zip(got, expected, strict=True):
        assert torch.allclose(got_grad, want, atol=1e-3)


def _random_decoding_inputs(v: int = 60, k: int = 5) -> tuple:
    torch.manual_seed(1)
    sizes = dynamic_layer_sizes(4, 8, 2)
    feats, xyz, boxes = torch.randn(v, 4), torch.rand(v, 3) * 3, torch.rand(v, 6) * 3
    q_xyz, q_box = torch.rand(k, 3) * 3, torch.rand(k, 6) * 3
    params = torch.randn(k, sum(a * b + b for a, b in sizes))
    return (feats, xyz, boxes, q_xyz, q_box, params), sizes


def test_box_restricted_decoding_equals_dense_near_the_box_and_outside_elsewhere() -> None:
    inputs, sizes = _random_decoding_inputs()
    _, xyz, _, _, q_box, params = inputs
    margin = 0.25
    q_box[0] = torch.tensor([-1.0, -1.0, -1.0, 4.0, 4.0, 4.0])  # every voxel
    q_box[1] = torch.tensor([1.0, 1.0, 1.0, 1.5, 1.5, 1.5])  # a few voxels
    q_box[2] = torch.tensor([2.5, 2.0, 2.5, 1.0, 0.5, 1.0])  # corners swapped (max first)
    q_box[3] = torch.tensor([9.0, 9.0, 9.0, 9.5, 9.5, 9.5])  # no voxel
    # Voxels 0 and 1 sit exactly on query 1's grown faces (inclusive), voxel 2 just beyond.
    xyz[0], xyz[1], xyz[2] = torch.tensor([[1.75, 1.2, 1.2], [0.75, 1.75, 0.75], [1.2, 1.2, 1.76]])
    low = torch.minimum(q_box[:, :3], q_box[:, 3:]) - margin
    high = torch.maximum(q_box[:, :3], q_box[:, 3:]) + margin
    near = ((xyz[None] >= low[:, None]) & (xyz[None] <= high[:, None])).all(2)
    assert near[0].all() and not near[3].any()
    assert near[1, :2].all() and not near[1, 2] and 3 <= int(near[1].sum()) < 60
    assert 0 < int(near[2].sum()) < 60
    dense = run_dynamic(dynamic_inputs(*inputs[:5]), params, sizes)
    with mock.patch("dyco_perception.model.decoders.isbnet._DECODE_TILE", 4):
        got = decode_scene(*inputs, sizes, box_margin=margin)
    expected = torch.where(near, dense, torch.full_like(dense, OUTSIDE_LOGIT))
    assert torch.allclose(got, expected, atol=1e-4)


def test_decode_scene_with_no_queries_or_no_voxels() -> None:
    (feats, xyz, boxes, q_xyz, q_box, params), sizes = _random_decoding_inputs()
    for margin in (None, 0.5):
        assert decode_scene(
            feats, xyz, boxes, q_xyz[:0], q_box[:0], params[:0], sizes, margin
        ).shape == (0, 60)
        none = decode_scene(feats[:0], xyz[:0], boxes[:0], q_xyz, q_box, params, sizes, margin)
        assert none.shape == (5, 0)


def test_box_margin_option_restricts_inference_only(monkeypatch: pytest.MonkeyPatch) -> None:
    margins = []
    real = isbnet_module.decode_scene

    def spy(*args, **kwargs):
        margins.append(args[7])
        return real(*args, **kwargs)

    monkeypatch.setattr(isbnet_module, "decode_scene", spy)
    torch.manual_seed(0)
    inp = hand_input(torch.rand(400, 3) * torch.tensor([2.0, 1.0, 1.0]), fg=lambda p: p[:, 0] > 1)
    tiny_decoder(decode_box_margin=0.3).train()(inp)
    assert margins and set(margins) == {None}  # training decodes every voxel
    margins.clear()
    with torch.no_grad():
        tiny_decoder(decode_box_margin=0.3).eval()(inp)
        assert margins and set(margins) == {0.3}
        margins.clear()
        tiny_decoder(decode_box_margin=-1.0).eval()(inp)
        tiny_decoder().eval()(inp)  # off by default
    assert margins and set(margins) == {None}
    with pytest.raises(ValueError, match="decode_box_margin"):
        tiny_decoder(decode_box_margin=-2.0)


# --- boxes and matching (Eq. 4) -------------------------------------------------------------


def test_gt_boxes_and_point_box_losses() -> None:
    xyz = torch.tensor([[0.0, 0, 0], [1.0, 2, 3], [5.0, 5, 5], [6.0, 6, 7], [9.0, 9, 9]])
    gt_id = torch.tensor([0, 0, 1, 1, -1])
    boxes = gt_boxes(xyz, gt_id, 2)
    assert boxes.tolist() == [[0.0, 0, 0, 1, 2, 3], [5.0, 5, 5, 6, 6, 7]]
    exact = boxes[gt_id.clamp_min(0)]
    terms = point_box_losses(exact, boxes, gt_id)
    assert float(terms["point_box_l1"]) == 0.0
    assert abs(float(terms["point_box_giou"])) < 1e-6
    shifted = exact.clone()
    shifted[:, 3] += 1.0  # every thing point's box 1 m too long in x
    shifted[4] += 100.0  # an unlabelled point's prediction is never trained
    terms = point_box_losses(shifted, boxes, gt_id)
    assert float(terms["point_box_l1"]) == pytest.approx(1.0)
    # gIoU 1 - IoU: box 0 volume 6 vs 12 (IoU 1/2), box 1 volume 2 vs 4 (IoU 1/2).
    assert float(terms["point_box_giou"]) == pytest.approx(0.5)


def test_point_box_losses_average_over_every_thing_points_box() -> None:
    """Only GT 0's two points predict a box 1 m too long in x: the L1 term is the mean over all
    four thing points, (1 + 1 + 0 + 0) / 4."""
    xyz = torch.tensor([[0.0, 0, 0], [1.0, 2, 3], [5.0, 5, 5], [6.0, 6, 7], [9.0, 9, 9]])
    gt_id = torch.tensor([0, 0, 1, 1, -1])
    boxes = gt_boxes(xyz, gt_id, 2)
    predicted = boxes[gt_id.clamp_min(0)].clone()
    predicted[:2, 3] += 1.0
    terms = point_box_losses(predicted, boxes, gt_id)
    assert float(terms["point_box_l1"]) == pytest.approx(0.5)


def test_point_boxes_are_the_heads_corners_around_each_points_voxel_position() -> None:
    """Section 3.2's point boxes are offsets from the voxel: with the box head's last layer at
    zero each point's box is the (min, max) corners both at its voxel's mean position."""
    torch.manual_seed(0)
    dec = tiny_decoder().eval()
    with torch.no_grad():
        dec.box_head[3].weight.zero_()
        dec.box_head[3].bias.zero_()
    xyz = torch.rand(300, 3)
    inp = hand_input(xyz, fg=lambda p: p[:, 0] > 0.5)
    with torch.no_grad():
        out = dec(inp)
    centre = voxel_view(inp).xyz[inp.voxelized.point_to_voxel]
    assert centre.abs().sum() > 0
    assert torch.allclose(out["isbnet"]["point_boxes"], centre.repeat(1, 2), atol=1e-6)


def test_queries_predict_their_box_around_their_own_position() -> None:
    """A query's box is its head's output added to the query's position (both corners): with
    the head at zero it is the point box at the picked seed."""
    dec = tiny_decoder().eval()
    with torch.no_grad():
        dec.query_box_head.weight.zero_()
        dec.query_box_head.bias.zero_()
    gen = torch.Generator().manual_seed(0)
    xyz = torch.rand(10, 3, generator=gen)
    feats = torch.randn(10, 8, generator=gen)
    with torch.no_grad():
        q = dec.queries(torch.tensor([2, 7]), (xyz, torch.zeros(10, dtype=torch.long), feats))
    assert torch.equal(q.xyz, xyz[[2, 7]])
    assert torch.allclose(q.box, xyz[[2, 7]].repeat(1, 2))


def test_matching_cost_is_class_plus_gamma_dice() -> None:
    opts = tiny_decoder(cost_cls=1.0, cost_dice=5.0, cost_giou=0.0, cost_bce=0.0).options
    logits = torch.tensor([[20.0, 20.0, -20.0, -20.0], [-20.0, -20.0, 20.0, 20.0]])
    gt = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    cls = torch.log(torch.tensor([[0.6, 0.4], [0.3, 0.7]]))
    cost = matching_cost(logits, gt, cls, torch.tensor([0]), opts)
    # Query 0: dice (2*2+1)/(2+2+1) = 1 -> 0; class -0.6. Query 1: dice 1 - 1/5; class -0.3.
    assert cost[:, 0].tolist() == pytest.approx([-0.6, -0.3 + 5 * 0.8], abs=1e-4)


def test_matching_cost_optional_bce_and_giou_terms() -> None:
    opts = tiny_decoder(cost_cls=0.0, cost_dice=0.0, cost_bce=1.0, cost_giou=0.5).options
    logits = torch.tensor([[0.0, 0.0]])
    gt = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    boxes = torch.tensor([[0.0, 0, 0, 1, 1, 1], [0.0, 0, 0, 1, 1, 2]])
    cost = matching_cost(
        logits, gt, torch.zeros(1, 2), torch.tensor([0, 0]), opts, boxes[:1], boxes
    )
    # BCE of logit 0 is log 2 per point either way; gIoU 1 (same box) and 1/2 (half the volume).
    assert cost[0].tolist() == pytest.approx([math.log(2) - 0.5, math.log(2) - 0.25], abs=1e-5)


def test_matching_cost_giou_pairs_each_query_with_each_gt_box() -> None:
    """Query 0 has the unit box A, query 1 box B (A doubled in z); the GT boxes are A and A
    again: gIoU 1 for query 0 with either, 1/2 for query 1, so cost_giou 0.5 gives rows
    (-0.5, -0.5) and (-0.25, -0.25)."""
    opts = tiny_decoder(cost_cls=0.0, cost_dice=0.0, cost_bce=0.0, cost_giou=0.5).options
    a, b = [0.0, 0, 0, 1, 1, 1], [0.0, 0, 0, 1, 1, 2]
    cost = matching_cost(
        torch.zeros(2, 2),
        torch.zeros(2, 2),
        torch.zeros(2, 2),
        torch.tensor([0, 0]),
        opts,
        torch.tensor([a, b]),
        torch.tensor([a, a]),
    )
    assert cost.tolist() == [pytest.approx([-0.5, -0.5]), pytest.approx([-0.25, -0.25])]


def test_matching_cost_bce_is_low_for_a_mask_that_agrees_with_its_gt() -> None:
    """The cost's BCE is the mean over points of softplus(-x) on GT points and softplus(x)
    elsewhere: logits (2, -1) against GT (1, 0) cost (log(1 + e^-2) + log(1 + e^-1)) / 2,
    the flipped GT (0, 1) costs (log(1 + e^2) + log(1 + e)) / 2."""
    opts = tiny_decoder(cost_cls=0.0, cost_dice=0.0, cost_bce=1.0, cost_giou=0.0).options
    logits = torch.tensor([[2.0, -1.0]])
    gt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cost = matching_cost(logits, gt, torch.zeros(1, 2), torch.tensor([0, 0]), opts)
    agree = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2
    disagree = (math.log1p(math.exp(2)) + math.log1p(math.exp(1))) / 2
    assert cost[0].tolist() == pytest.approx([agree, disagree], rel=1e-5)


def test_mask_dice_gradient_raises_the_logits_of_gt_points() -> None:
    """One query at p = 0.5 over GT 0's two points and two others: dice = 1 - (2I + 1) / D
    with I = 1, D = 5, so d dice / d p_j = -(2 t_j D - (2I + 1)) / D^2: -7/25 on GT points,
    +3/25 elsewhere, times p (1 - p) = 1/4 per logit. A detached intersection would push
    every logit down alike (+3/100)."""
    logits = torch.zeros(1, 4, requires_grad=True)
    block = MaskBlock(torch.tensor([0]), torch.arange(4), logits)
    q = Queries(
        torch.zeros(1, 3),
        torch.zeros(1, dtype=torch.long),
        torch.zeros(1, 2),
        torch.zeros(1, 6),
        torch.zeros(1),
        torch.zeros(1, 1),
    )
    gt_id = torch.tensor([0, 0, -1, -1])
    terms = mask_losses([block], [(torch.tensor([0]), torch.tensor([0]))], gt_id, q)
    assert terms["mask_dice"].item() == pytest.approx(1 - 3 / 5, rel=1e-6)
    terms["mask_dice"].backward()
    assert logits.grad[0].tolist() == pytest.approx([-7 / 100, -7 / 100, 3 / 100, 3 / 100])


def test_mask_losses_of_a_matched_query_by_hand() -> None:
    """One query matched to GT 0 (points 0..2) over points 0..3. Its binary mask (p > 0.5) is
    {0, 1, 3}: IoU 2 / |{0, 1, 2, 3}| = 0.5 (the union counts a shared point once); the mask
    score term is the squared error of sigmoid(score logit) against that IoU."""
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5]])
    block = MaskBlock(torch.tensor([0]), torch.arange(4), logits)
    gt_id = torch.tensor([0, 0, 0, -1])
    score_logit = 1.0
    q = Queries(
        torch.zeros(1, 3),
        torch.zeros(1, dtype=torch.long),
        torch.zeros(1, 2),
        torch.zeros(1, 6),
        torch.tensor([score_logit]),
        torch.zeros(1, 1),
    )
    terms = mask_losses([block], [(torch.tensor([0]), torch.tensor([0]))], gt_id, q)
    target = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(terms["mask_bce"]) == pytest.approx(float(bce), rel=1e-5)
    probs = logits.sigmoid()[0]
    dice = 1 - (2 * float(probs[:3].sum()) + 1) / (float(probs.sum()) + 3 + 1)
    assert float(terms["mask_dice"]) == pytest.approx(dice, rel=1e-5)
    predicted = 1 / (1 + math.exp(-score_logit))
    assert float(terms["mask_score"]) == pytest.approx((predicted - 0.5) ** 2, rel=1e-5)


def test_mask_losses_target_the_matched_gt_not_the_querys_position() -> None:
    """The block's query 0 matched to GT 1 (points 2, 3): its target is GT 1's points, so
    logits (-2, -2, 2, 2) agree with it (dice 1 - (2 * 2p + 1) / (4p + 2 + 1) with p the
    probabilities at +-2), not with GT 0 (points 0, 1)."""
    logits = torch.tensor([[-2.0, -2.0, 2.0, 2.0]])
    block = MaskBlock(torch.tensor([0]), torch.arange(4), logits)
    gt_id = torch.tensor([0, 0, 1, 1])
    terms = mask_losses([block], [(torch.tensor([0]), torch.tensor([1]))], gt_id, _queries(
        torch.zeros(1, 3), torch.zeros(1)
    ))  # fmt: skip
    p_in, p_out = torch.sigmoid(torch.tensor(2.0)).item(), torch.sigmoid(torch.tensor(-2.0)).item()
    want = 1 - (2 * 2 * p_in + 1) / (2 * p_in + 2 * p_out + 2 + 1)
    assert float(terms["mask_dice"]) == pytest.approx(want, rel=1e-5)
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert float(terms["mask_bce"]) == pytest.approx(float(bce), rel=1e-5)


def test_match_block_costs_each_gt_of_the_block_by_its_own_class() -> None:
    """The block holds GT 0 (points 0, 1; thing class 1) and GT 2 (points 2, 3; class 0), not
    GT 1: the class cost alone pairs query 0 (sure of class 0) with GT 2 and query 1 (class 1)
    with GT 0, and GT 0 is matched like any other id."""
    opts = tiny_decoder(
        cost_cls=1.0, cost_dice=0.0, cost_bce=0.0, cost_giou=0.0, duplicate_gt=1
    ).options
    block = MaskBlock(torch.tensor([0, 1]), torch.arange(4), torch.zeros(2, 4))
    q = _queries(torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]), torch.zeros(2))
    gt_id = torch.tensor([0, 0, 2, 2])
    zeros = torch.zeros(4, dtype=torch.long)
    targets = InstanceTargets(torch.zeros(4, 3), zeros, gt_id, zeros, gt_id, 3)
    gt_class = torch.tensor([1, 1, 0])
    local, matched = match_block(block, q, targets, (gt_class, torch.zeros(3, 6)), opts)
    assert sorted(zip(local.tolist(), matched.tolist(), strict=True)) == [(0, 2), (1, 0)]


def test_matches_of_each_scene_block_name_batch_query_rows() -> None:
    """Scene 1's block holds queries 2, 3: its match at block position 0 is query 2."""
    blocks = [
        MaskBlock(torch.tensor([0, 1]), torch.arange(2), torch.zeros(2, 2)),
        MaskBlock(torch.tensor([2, 3]), torch.arange(2, 4), torch.zeros(2, 2)),
    ]
    matched = [(torch.tensor([1]), torch.tensor([0])), (torch.tensor([0]), torch.tensor([5]))]
    query, gt = _cat_matches(blocks, matched, torch.device("cpu"))
    assert query.tolist() == [1, 2]
    assert gt.tolist() == [0, 5]


def test_match_block_matches_only_gts_of_its_own_points() -> None:
    """The block holds GT 0 (class 1) only; GT 1 (class 0, points 2, 3) lies outside it, in
    another scene. The query, sure of class 0, still matches GT 0: GT 1 is no candidate."""
    opts = tiny_decoder(
        cost_cls=1.0, cost_dice=0.0, cost_bce=0.0, cost_giou=0.0, duplicate_gt=1
    ).options
    block = MaskBlock(torch.tensor([0]), torch.arange(2), torch.zeros(1, 2))
    q = _queries(torch.tensor([[5.0, 0.0, 0.0]]), torch.zeros(1))
    gt_id = torch.tensor([0, 0, 1, 1])
    semantic, batch = torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 1, 1])
    targets = InstanceTargets(torch.zeros(4, 3), semantic, gt_id, batch, gt_id, 2)
    local, matched = match_block(block, q, targets, (torch.tensor([1, 0]), torch.zeros(2, 6)), opts)
    assert local.tolist() == [0] and matched.tolist() == [0]


def test_losses_pair_each_matched_query_with_its_own_gts_class_and_box() -> None:
    """GT 0 (points 0, 1; class 4, thing 0) and GT 1 (points 2, 3; class 6, thing 1). The
    class cost pairs query 0 (sure of thing 1) with GT 1 and query 1 with GT 0: the class
    loss targets (1, 0), and the box loss compares query 0's box with GT 1's box and query
    1's with GT 0's."""
    opts = tiny_decoder(
        cost_cls=1.0, cost_dice=0.0, cost_bce=0.0, cost_giou=0.0, duplicate_gt=1
    ).options
    xyz = torch.tensor([[0.0, 0, 0], [1, 1, 1], [5, 5, 5], [6, 7, 8]])
    gt_id = torch.tensor([0, 0, 1, 1])
    zeros = torch.zeros(4, dtype=torch.long)
    targets = InstanceTargets(xyz, torch.tensor([4, 4, 6, 6]), gt_id, zeros, gt_id, 2)
    class_logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    box = torch.tensor([[5.0, 5, 5, 6, 7, 8.5], [0, 0, 0, 1, 1, 1.5]])
    q = Queries(
        torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), class_logits, box, torch.zeros(2),
        torch.zeros(2, 1),
    )  # fmt: skip
    block = MaskBlock(torch.tensor([0, 1]), torch.arange(4), torch.zeros(2, 4))
    state = {"queries": q, "blocks": [block], "point_boxes": torch.zeros(4, 6)}
    terms = isbnet_losses(state, targets, opts, [4, 6])
    cls = class_loss(
        class_logits, torch.tensor([0, 1]), torch.tensor([1, 0]), opts.no_object_weight
    )
    assert float(terms["cls"]) == pytest.approx(opts.cls_weight * float(cls), rel=1e-5)
    boxes = query_box_losses(box, gt_boxes(xyz, gt_id, 2)[[1, 0]])
    assert float(terms["box_l1"]) == pytest.approx(
        opts.box_weight * float(boxes["box_l1"]), rel=1e-5
    )


def test_class_loss_weighs_the_no_object_class_by_its_own_weight() -> None:
    """Query 0 matched to thing class 1, query 1 unmatched (target: the last, no-object
    class): CE weighted by class, the no-object class at `no_object` and the others at 1."""
    logits = torch.tensor([[0.5, 2.0, -1.0], [1.0, 0.0, 0.3]])
    loss = class_loss(logits, torch.tensor([0]), torch.tensor([1]), 0.25)
    log_p = logits.log_softmax(1)
    want = -(1.0 * log_p[0, 1] + 0.25 * log_p[1, 2]) / (1.0 + 0.25)
    assert float(loss) == pytest.approx(float(want), rel=1e-5)


def test_one_to_many_matching_never_prefers_a_nan_cost() -> None:
    """A NaN cost (query 0 with GT 0) counts as prohibitive: the pairs (0, 1) and (1, 0)
    (cost 1.5) beat (0, 0) and (1, 1)."""
    cost = torch.tensor([[math.nan, 1.0], [0.5, 2.0]])
    q, g = one_to_many_match(cost, duplicates=1)
    assert sorted(zip(q.tolist(), g.tolist(), strict=True)) == [(0, 1), (1, 0)]


def test_one_to_many_matching_repeats_each_gt() -> None:
    cost = torch.tensor([[0.0, 5.0], [1.0, 5.0], [2.0, 0.0], [9.0, 3.0]])
    q, g = one_to_many_match(cost, duplicates=1)
    assert sorted(zip(q.tolist(), g.tolist(), strict=True)) == [(0, 0), (2, 1)]
    q, g = one_to_many_match(cost, duplicates=2)
    assert sorted(zip(q.tolist(), g.tolist(), strict=True)) == [(0, 0), (1, 0), (2, 1), (3, 1)]


# --- inference score ------------------------------------------------------------------------


def _queries(class_logits: torch.Tensor, score_logits: torch.Tensor) -> Queries:
    k = class_logits.shape[0]
    return Queries(
        torch.zeros(k, 3), torch.zeros(k, dtype=torch.long), class_logits, torch.zeros(k, 6),
        score_logits, torch.zeros(k, 1),
    )  # fmt: skip


@pytest.mark.parametrize("formula", ["product", "sqrt"])
def test_score_is_class_probability_times_mask_score(formula: str) -> None:
    dec = tiny_decoder(score_formula=formula).eval()
    logits = torch.full((1, 19), -30.0)
    logits[0, 2] = math.log(3.0)  # thing index 2 = semantic class 4 (chair)
    logits[0, -1] = 0.0  # no object: cls prob 3/4
    out = _outputs(dec, _queries(logits, torch.tensor([0.0])))  # mask score 0.5
    expected = 0.75 * 0.5 if formula == "product" else math.sqrt(0.75 * 0.5)
    assert float(out["score"][0]) == pytest.approx(expected, rel=1e-4)
    assert int(out["proposals"].class_id[0]) == CHAIR
    assert out["proposal_class_probs"][0].argmax().item() == CHAIR
    assert out["proposal_class_probs"][0, :2].tolist() == [0.0, 0.0]  # stuff is never a class


def _outputs(dec: IsbnetDecoder, q: Queries) -> dict:
    zero = torch.zeros(1, dtype=torch.long)
    vox = VoxelView(torch.zeros(1, 3), zero, zero, torch.zeros(1, 20))
    block = MaskBlock(torch.tensor([0]), torch.tensor([0]), torch.tensor([[3.0]]))
    return dec.outputs(q, [block], torch.zeros(1, 6), vox)


# --- batches and empty inputs ---------------------------------------------------------------


def hand_input(xyz: torch.Tensor, fg, m: int = 8) -> DecoderInput:
    """A decoder input with random features and semantics: chair where fg(xyz), else floor."""
    batch = torch.zeros(xyz.shape[0], dtype=torch.long)
    vox = voxelize(xyz, xyz, batch, 0.04, 3)
    v = vox.voxels.coords.shape[0]
    feats = torch.randn(v, m)
    logits = torch.zeros(xyz.shape[0], 20)
    logits[:, CHAIR] = torch.where(fg(xyz), 10.0, -10.0)
    logits[:, FLOOR] = -logits[:, CHAIR]
    return DecoderInput(
        xyz, batch, vox, feats, feats[vox.point_to_voxel], logits, torch.zeros_like(xyz)
    )


def scene_tensors(shift: float = 0.0, seed: int = 0, floor_points: int = 300) -> tuple:
    xyz, rgb, semantic, instance = touching_boxes(per_box=150, floor_points=floor_points, seed=seed)
    points = torch.from_numpy(xyz - xyz.min(0)) + shift
    colours = torch.from_numpy(rgb).float() / 127.5 - 1
    inst = torch.from_numpy(np.where(instance > 0, instance, -100))
    return points, colours, torch.from_numpy(semantic), inst


def test_batch_of_two_scenes_trains_and_keeps_masks_inside_their_scene() -> None:
    torch.manual_seed(0)
    a, b = scene_tensors(), scene_tensors(shift=0.1, seed=1)
    xyz, rgb, sem, inst = (torch.cat([x, y]) for x, y in zip(a, b, strict=True))
    batch = torch.cat([torch.zeros(len(a[0])), torch.ones(len(b[0]))]).long()
    model = SegmentationNetwork(ModelConfig.from_dict(TINY)).train()
    out = model(xyz, rgb, batch, sem, inst)
    targets = {"xyz": xyz, "semantic": sem, "instance": inst, "batch": batch}
    losses = compute_losses(model, out, targets, LossConfig())
    losses["total"].backward()
    assert torch.isfinite(losses["total"])
    q = out["isbnet"]["queries"]
    assert q.batch.tolist() == [0] * 16 + [1] * 16  # K queries per scene
    for block in out["isbnet"]["blocks"]:  # dense masks over the query's own scene only
        assert bool((batch[block.point_rows] == q.batch[block.query_rows[0]]).all())
        assert block.point_rows.numel() == int((batch == q.batch[block.query_rows[0]]).sum())
    assert model.decoder.controller.weight.grad.abs().sum() > 0
    masks, proposals = out["masks"], out["proposals"]
    assert bool((batch[masks.point_index] == proposals.batch[masks.proposal_id]).all())


def test_no_foreground_gives_no_queries_zero_losses_and_no_instances() -> None:
    torch.manual_seed(0)
    xyz = torch.rand(300, 3)
    for training in (True, False):
        dec = tiny_decoder().train(training)
        out = dec(hand_input(xyz, fg=lambda p: p[:, 0] > 5))
        assert out["proposals"].num == 0 and out["masks"].logits.numel() == 0
    sem = torch.full((300,), FLOOR)
    targets = InstanceTargets.from_targets(
        {
            "xyz": xyz,
            "semantic": sem,
            "instance": torch.full((300,), -100),
            "batch": torch.zeros(300).long(),
        }
    )
    dec.train()
    out = dec(hand_input(xyz, fg=lambda p: p[:, 0] > 5))
    losses = dec.losses(out, targets, LossConfig())
    assert all(float(v.detach()) == 0.0 and v.requires_grad for v in losses.values())
    dec.eval()
    with torch.no_grad():
        out = dec(hand_input(xyz, fg=lambda p: p[:, 0] > 5))
    out["semantic_logits"] = torch.zeros(300, 20)
    final = select_instances(out, 300, dec.cfg.mask_head, dec.cfg.inference)
    assert final.class_id.numel() == 0 and int(final.point_instance.max()) == 0


def test_empty_point_cloud() -> None:
    dec = tiny_decoder().eval()
    with torch.no_grad():
        out = dec(hand_input(torch.zeros(0, 3), fg=lambda p: p[:, 0] > 0))
    assert out["proposals"].num == 0 and out["score"].numel() == 0


# --- overfit (the learning path end to end) -------------------------------------------------

# Four identical chair boxes standing face to face, one colour: only geometry (relative
# position, predicted boxes) separates them, and NMS must keep one mask per box. No floor: with
# untrained semantics FPS picks the few floor points still predicted as foreground (outliers
# are what FPS picks first), so queries sat on the floor's corners for ~60 iterations (measured
# with 300 floor points: AP50 0-0.5 over seeds 0-3); the foreground filter has its own tests.
# Measured over seeds 0-3 at 80 iterations: AP50 0.75-1.0 with the mask losses, 0.0 without
# (no mask can then reach IoU 0.5). The floor 0.5 (two of four boxes) sits between.
AP50_FLOOR = 0.5


def fit(mask_weight: float, iterations: int = 80, seed: int = 0) -> float:
    """Train the tiny model on one scene (no augmentation), segment it like a user: AP50."""
    torch.manual_seed(seed)
    xyz, rgb, semantic, instance = touching_boxes(per_box=150, floor_points=0)
    cfg = {**TINY, "decoder": {**DECODER, "mask_weight": mask_weight}}
    model = SegmentationNetwork(ModelConfig.from_dict(cfg)).train()
    scene = (xyz, rgb, semantic, instance)
    return segment_ap50(fit_to_scene(model, scene, LossConfig(), iterations, lr=5e-3), scene)


def test_isbnet_separates_touching_objects_of_one_class() -> None:
    assert fit(mask_weight=5.0) >= AP50_FLOOR


def test_without_mask_losses_the_same_run_fails() -> None:
    """Documents the threshold: the same run with lambda_mask = 0 stays far below it."""
    assert fit(mask_weight=0.0) < AP50_FLOOR
