"""ScanNet benchmark evaluator: the official script's reference results and hand-worked cases."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from dyco_perception.evaluation import (
    InstanceEvaluator,
    InstancePredictions,
    benchmark_gt_ids,
    build_evaluator,
    class_hypotheses,
    evaluate_case,
    evaluate_predictions,
)
from dyco_training.cli_eval import eval_vectors_main
from dyco_training.datasets import EVAL_VECTORS_DIR

from dyco_perception import classes

VECTORS = EVAL_VECTORS_DIR
EXPECTED = VECTORS / "expected.json"
CASES = sorted(json.loads(EXPECTED.read_text())) if EXPECTED.is_file() else []
needs_vectors = pytest.mark.skipif(
    not EXPECTED.is_file(), reason=f"reference eval vectors not found at {VECTORS}"
)

CHAIR, TABLE, WALL = 5, 7, 1  # NYU40 ids


def _assert_official_equal(expected: dict, got: dict, tol: float = 1e-9) -> None:
    assert set(expected) == set(got)
    for key, values in expected.items():
        for want, have in zip(values, got[key], strict=True):
            if want is None:
                assert have is None, key
            else:
                assert have is not None and abs(want - have) <= tol, (key, want, have)


@needs_vectors
@pytest.mark.parametrize("case", CASES)
def test_reproduces_official_script(case: str) -> None:
    expected = json.loads(EXPECTED.read_text())[case]["official"]
    _assert_official_equal(expected, evaluate_case(str(VECTORS / f"{case}.npz")).official_dict())


@needs_vectors
def test_cli_prints_official_layout(capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES[-1]
    assert eval_vectors_main([str(VECTORS / f"{case}.npz"), "--expected", str(EXPECTED)]) == 0
    printed = json.loads(capsys.readouterr().out)
    _assert_official_equal(json.loads(EXPECTED.read_text())[case]["official"], printed)


def _scene() -> np.ndarray:
    """Chair A (200 pts), chair B (300), 100 wall points, 300 unannotated, table (150)."""
    return np.concatenate(
        [
            np.full(200, CHAIR * 1000 + 1),
            np.full(300, CHAIR * 1000 + 2),
            np.full(100, WALL * 1000 + 3),
            np.zeros(300, np.int64),
            np.full(150, TABLE * 1000 + 4),
        ]
    )


def _indices_of(gt: np.ndarray, gt_id: int) -> np.ndarray:
    return np.flatnonzero(gt == gt_id)


def _evaluate(gt: np.ndarray, masks: list, labels: list, scores: list):
    evaluator = InstanceEvaluator()
    evaluator.add_scene(gt, masks, np.array(labels), np.array(scores))
    return evaluator.compute()


def test_perfect_prediction_scores_one_and_absent_classes_none() -> None:
    gt = _scene()
    ids = [CHAIR * 1000 + 1, CHAIR * 1000 + 2, TABLE * 1000 + 4]
    result = _evaluate(gt, [_indices_of(gt, i) for i in ids], [CHAIR, CHAIR, TABLE], [1, 1, 1])
    assert (result.ap, result.ap50, result.ap25) == pytest.approx((1.0, 1.0, 1.0))
    assert result.per_class["chair"] == pytest.approx((1.0, 1.0, 1.0))
    assert result.per_class["bed"] == (None, None, None)
    assert result.class_agnostic["AP"] == pytest.approx(1.0)
    assert result.num_gt_instances["chair"] == 2


def test_empty_prediction_scores_zero() -> None:
    result = _evaluate(_scene(), [], [], [])
    assert (result.ap, result.ap50, result.ap25) == (0.0, 0.0, 0.0)
    assert result.class_agnostic == {"AP": 0.0, "AP50": 0.0, "AP25": 0.0}


def test_prediction_on_void_is_not_a_false_positive() -> None:
    gt = _scene()
    void_and_wall = np.flatnonzero((gt == 0) | (gt == WALL * 1000 + 3))[:250]
    masks = [_indices_of(gt, CHAIR * 1000 + 1), _indices_of(gt, CHAIR * 1000 + 2), void_and_wall]
    result = _evaluate(gt, masks, [CHAIR, CHAIR, CHAIR], [0.5, 0.5, 0.9])
    assert result.per_class["chair"] == pytest.approx((1.0, 1.0, 1.0))


def test_confident_partial_prediction_is_a_false_positive_until_iou_025() -> None:
    # Chair A found (score 0.5); 40 % of chair B predicted alone with score 0.9 (IoU 0.4).
    # At IoU 0.5: sorted scores [0.5 TP, 0.9 FP], one missed GT -> precision/recall points
    # (0.5, 0.5), (0, 0) and the artificial (1, 0); the benchmark's step integration gives
    # 0.5 * 0.25 = 0.125. At IoU 0.25 both chairs are matched: AP25 = 1.
    gt = _scene()
    part_of_b = _indices_of(gt, CHAIR * 1000 + 2)[:120]
    result = _evaluate(
        gt, [_indices_of(gt, CHAIR * 1000 + 1), part_of_b], [CHAIR, CHAIR], [0.5, 0.9]
    )
    ap, ap50, ap25 = result.per_class["chair"]
    assert ap50 == pytest.approx(0.125)
    assert ap25 == pytest.approx(1.0)
    assert ap == pytest.approx(0.125)  # the same at every threshold 0.5..0.9


@pytest.mark.parametrize(("points", "threshold"), [(400, 0.5), (200, 0.25)])
def test_a_match_needs_iou_strictly_above_the_threshold(points: int, threshold: float) -> None:
    """Part of chair B (800 points) alone: `points` of them give IoU exactly `threshold`, which
    the benchmark does not count as a match (IoU > threshold); one point more does."""
    gt = np.concatenate([np.full(200, CHAIR * 1000 + 1), np.full(800, CHAIR * 1000 + 2)])
    chair_a, chair_b = _indices_of(gt, CHAIR * 1000 + 1), _indices_of(gt, CHAIR * 1000 + 2)
    column = {0.5: 1, 0.25: 2}[threshold]  # (AP, AP50, AP25)
    at = _evaluate(gt, [chair_a, chair_b[:points]], [CHAIR, CHAIR], [0.5, 0.9])
    above = _evaluate(gt, [chair_a, chair_b[: points + 1]], [CHAIR, CHAIR], [0.5, 0.9])
    assert at.per_class["chair"][column] == pytest.approx(0.125)  # a false positive
    assert above.per_class["chair"][column] == pytest.approx(1.0)


def test_one_prediction_over_two_instances_matches_only_the_first_of_them() -> None:
    """One mask over chairs A (200 points) and B (300): IoU 0.4 with A and 0.6 with B. At IoU
    0.25 chair A (lower id) takes it and B, whose only candidate is taken, is missed: one
    true positive, one miss, AP25 = 0.5 (a prediction counts for one ground truth only).
    At IoU 0.5 only B overlaps enough: again one of two found, AP50 = 0.5."""
    gt = _scene()
    both = np.concatenate([_indices_of(gt, CHAIR * 1000 + 1), _indices_of(gt, CHAIR * 1000 + 2)])
    _, ap50, ap25 = _evaluate(gt, [both], [CHAIR], [0.9]).per_class["chair"]
    assert ap25 == pytest.approx(0.5)
    assert ap50 == pytest.approx(0.5)


def test_matching_runs_in_prediction_order_not_score_order() -> None:
    """Prediction 0 (score 0.5) covers chairs A and B (IoU 0.4 and 0.6), prediction 1 (0.9)
    is chair A. At IoU 0.25 chair A takes prediction 0 first (prediction order), prediction 1
    is its duplicate (A keeps the higher 0.9, a false positive at 0.5) and B, whose only
    candidate is taken, is missed: AP25 = 0.5 (score-ordered matching would find both).
    At IoU 0.5 prediction 0 matches only B: both found, AP50 = 1."""
    gt = _scene()
    chair_a, chair_b = _indices_of(gt, CHAIR * 1000 + 1), _indices_of(gt, CHAIR * 1000 + 2)
    masks = [np.concatenate([chair_a, chair_b]), chair_a]
    _, ap50, ap25 = _evaluate(gt, masks, [CHAIR, CHAIR], [0.5, 0.9]).per_class["chair"]
    assert ap25 == pytest.approx(0.5)
    assert ap50 == pytest.approx(1.0)


def test_a_class_with_only_too_small_instances_has_no_ap() -> None:
    """A 50-point table is no ground truth (under 100 points): the table class scores None
    (absent), not 0 for a missed instance, and the mean stays at the chairs' 1.0."""
    gt = np.concatenate(
        [
            np.full(200, CHAIR * 1000 + 1),
            np.full(300, CHAIR * 1000 + 2),
            np.full(50, TABLE * 1000 + 3),
        ]
    )
    masks = [_indices_of(gt, CHAIR * 1000 + 1), _indices_of(gt, CHAIR * 1000 + 2)]
    result = _evaluate(gt, masks, [CHAIR, CHAIR], [0.9, 0.8])
    assert result.per_class["table"] == (None, None, None)
    assert (result.ap, result.ap50, result.ap25) == pytest.approx((1.0, 1.0, 1.0))
    assert result.num_gt_instances["table"] == 0


def test_a_prediction_half_on_void_is_a_false_positive_at_iou_05() -> None:
    """An unmatched prediction is ignored only when its share on void *exceeds* the threshold
    (the official script counts it a false positive while the share <= threshold): 100 of its
    200 points on void is exactly 0.5, a false positive at IoU 0.5; 101 of 200 is ignored."""
    gt = np.concatenate(
        [np.full(200, CHAIR * 1000 + 1), np.full(800, CHAIR * 1000 + 2), np.zeros(200, np.int64)]
    )
    chair_a, chair_b = _indices_of(gt, CHAIR * 1000 + 1), _indices_of(gt, CHAIR * 1000 + 2)
    void = _indices_of(gt, 0)
    half = np.concatenate([void[:100], chair_b[:100]])  # IoU 1/9 with chair B: no match
    more = np.concatenate([void[:101], chair_b[:99]])
    at = _evaluate(gt, [chair_a, half], [CHAIR, CHAIR], [0.5, 0.9])
    above = _evaluate(gt, [chair_a, more], [CHAIR, CHAIR], [0.5, 0.9])
    alone = _evaluate(gt, [chair_a], [CHAIR], [0.5])
    assert at.per_class["chair"][1] == pytest.approx(0.125)  # [0.5 TP, 0.9 FP], chair B missed
    assert above.per_class["chair"][1] == pytest.approx(alone.per_class["chair"][1])
    assert alone.per_class["chair"][1] > 0.125


def test_small_instances_and_predictions_are_ignored() -> None:
    gt = np.concatenate([np.full(99, CHAIR * 1000 + 1), np.full(200, CHAIR * 1000 + 2)])
    small_gt_pred = np.arange(99)  # under 100 points: dropped
    big = np.arange(99, 299)
    over_small_gt = np.arange(100)  # 99 % on the small GT: ignored even at IoU 0.9
    result = _evaluate(gt, [small_gt_pred, big, over_small_gt], [CHAIR] * 3, [0.9, 0.5, 0.8])
    assert result.per_class["chair"] == pytest.approx((1.0, 1.0, 1.0))
    assert result.num_gt_instances["chair"] == 1


def test_a_prediction_mostly_on_a_too_small_instance_is_ignored_above_that_share() -> None:
    """A fragment with 55 of its 200 points on a 99-point (uncounted) chair and the rest on
    chair C (IoU 0.23 and 0.17: no match anywhere) has 27.5 % on too-small ground truth: more
    than 0.25, so AP25 ignores it (chairs B and C found: 1.0), but no more than 0.5, so at
    IoU 0.5 it is a false positive above both true ones."""
    gt = np.concatenate(
        [
            np.full(99, CHAIR * 1000 + 1),
            np.full(200, CHAIR * 1000 + 2),
            np.full(800, CHAIR * 1000 + 3),
        ]
    )
    small, chair_b, chair_c = (_indices_of(gt, CHAIR * 1000 + i) for i in (1, 2, 3))
    fragment = np.concatenate([small[:55], chair_c[:145]])
    result = _evaluate(gt, [chair_b, chair_c, fragment], [CHAIR] * 3, [0.5, 0.6, 0.9])
    _, ap50, ap25 = result.per_class["chair"]
    assert ap25 == pytest.approx(1.0)
    assert ap50 is not None and ap50 < 1.0


def test_a_prediction_mostly_on_an_instance_of_exactly_min_region_size_is_a_false_positive() -> (
    None
):
    """Chair C has exactly 100 points: ground truth (not too small), so a fragment with 70 of
    its 120 points on C (IoU 70/150 < 0.5) is no ignored prediction at IoU 0.5 but a false
    positive above chair D (found, score 0.5): AP50 0.125 as for [0.5 TP, 0.9 FP] and one
    miss. At IoU 0.25 it matches C: AP25 = 1."""
    gt = np.concatenate([np.full(100, CHAIR * 1000 + 1), np.full(800, CHAIR * 1000 + 2)])
    chair_c, chair_d = _indices_of(gt, CHAIR * 1000 + 1), _indices_of(gt, CHAIR * 1000 + 2)
    fragment = np.concatenate([chair_c[:70], chair_d[:50]])
    _, ap50, ap25 = _evaluate(gt, [chair_d, fragment], [CHAIR] * 2, [0.5, 0.9]).per_class["chair"]
    assert ap50 == pytest.approx(0.125)
    assert ap25 == pytest.approx(1.0)


def test_class_agnostic_ignores_wrong_labels() -> None:
    gt = _scene()
    masks = [
        _indices_of(gt, CHAIR * 1000 + 1),
        _indices_of(gt, CHAIR * 1000 + 2),
        _indices_of(gt, TABLE * 1000 + 4),
    ]
    result = _evaluate(gt, masks, [TABLE, CHAIR, CHAIR], [0.9, 0.8, 0.7])
    assert result.per_class["chair"][1] < 1.0
    assert result.class_agnostic["AP50"] == pytest.approx(1.0)


def test_evaluate_predictions_takes_semantic_ids_and_instance_lists() -> None:
    chair, table = classes.SEMANTIC_CLASSES.index("chair"), classes.SEMANTIC_CLASSES.index("table")
    semantic = np.array([0] * 100 + [chair] * 150 + [table] * 120 + [-100] * 50)
    instance = np.array([0] * 100 + [1] * 150 + [2] * 120 + [0] * 50)
    as_dicts = [
        {"class_id": chair, "score": 0.9, "point_indices": np.arange(100, 250)},
        {"class_id": table, "score": 0.8, "point_indices": np.arange(250, 370)},
        {"class_id": chair, "score": 0.95, "point_indices": np.arange(0, 100)},  # on wall
    ]
    as_arrays = InstancePredictions(np.array([chair]), np.array([0.9]), [np.arange(100, 250)])
    # SimpleNamespace: the shape of dyco_perception's SegmentationResult
    segmentation_result = SimpleNamespace(
        instances=[SimpleNamespace(class_id=chair, score=0.9, point_indices=np.arange(100, 250))]
    )
    result = evaluate_predictions(
        [
            (semantic, instance, as_dicts),
            (semantic, instance, as_arrays),
            (semantic, instance, segmentation_result),
        ]
    )
    assert result["per_class"]["chair"] == pytest.approx([1.0, 1.0, 1.0])
    assert result["per_class"]["table"][1] == pytest.approx(1 / 3)  # one of three tables found
    assert math.isclose(result["AP50"], (1 + 1 / 3) / 2)


def test_a_resample_of_the_scenes_scores_as_those_scenes_added_again() -> None:
    chair = classes.SEMANTIC_CLASSES.index("chair")
    semantic = np.array([0] * 100 + [chair] * 300)
    instance = np.array([0] * 100 + [1] * 150 + [2] * 150)
    found = {"class_id": chair, "score": 0.9, "point_indices": np.arange(100, 250)}
    found_both = [found, {**found, "point_indices": np.arange(250, 400)}]
    scenes = [(semantic, instance, [found]), (semantic, instance, found_both)]
    evaluator = build_evaluator(scenes)
    assert evaluator.compute().ap50 == pytest.approx(0.75)  # 3 of the 4 chairs, all confident
    assert evaluator.compute([1]).ap50 == pytest.approx(1.0)
    assert evaluator.compute([0]).ap50 == pytest.approx(0.5)
    drawn = evaluator.compute([0, 0, 1])  # scene 0 drawn twice: 4 of 6 chairs
    assert drawn.ap50 == pytest.approx(evaluate_predictions([scenes[0], *scenes])["AP50"])
    assert drawn.num_scenes == 3 and drawn.num_gt_instances["chair"] == 6


def test_class_hypotheses_let_a_mislabelled_mask_count_for_its_runner_up_class() -> None:
    chair, table = classes.SEMANTIC_CLASSES.index("chair"), classes.SEMANTIC_CLASSES.index("table")
    semantic = np.array([chair] * 150 + [table] * 120)
    instance = np.array([1] * 150 + [2] * 120)
    sure, unsure = np.zeros(classes.NUM_SEMANTIC_CLASSES), np.zeros(classes.NUM_SEMANTIC_CLASSES)
    sure[[chair, table]] = [0.9, 0.1]
    unsure[[chair, table]] = [0.6, 0.4]
    # Both masks are right, both called chair; the table's runner-up class is table.
    predicted = [
        SimpleNamespace(class_id=chair, score=0.9, point_indices=np.arange(150), class_probs=sure),
        SimpleNamespace(
            class_id=chair, score=0.8, point_indices=np.arange(150, 270), class_probs=unsure
        ),
    ]
    single = class_hypotheses(predicted, 1)
    assert single.labels.tolist() == [chair, chair]
    double = class_hypotheses(predicted, 2)
    assert double.labels.tolist() == [chair, table, chair, table]
    assert double.scores.tolist() == pytest.approx([0.9, 0.1, 0.8, 0.8 * 0.4 / 0.6])
    one = evaluate_predictions([(semantic, instance, single)])
    two = evaluate_predictions([(semantic, instance, double)])
    assert one["per_class"]["table"][1] == 0.0
    assert two["per_class"]["table"][1] == pytest.approx(1.0)
    # Each class's false copy ranks below its true mask, so neither class loses precision.
    assert two["per_class"]["chair"][1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="class hypotheses"):
        class_hypotheses(predicted, 0)


def test_benchmark_gt_ids_makes_stuff_and_ignore_void() -> None:
    semantic = np.array([0, 1, 4, 4, -100, 4])
    instance = np.array([3, 4, 1, 1, 2, 0])
    assert benchmark_gt_ids(semantic, instance).tolist() == [0, 0, 5001, 5001, 0, 0]


@pytest.mark.parametrize(
    ("masks", "labels", "scores", "message"),
    [
        ([np.arange(5)], [CHAIR, CHAIR], [1.0, 1.0], "masks"),
        ([np.array([0, 2000])], [CHAIR], [1.0], "out of range"),
        ([np.arange(5)], [CHAIR], [math.nan], "finite"),
        ([np.array([0.5, 1.5])], [CHAIR], [1.0], "integers"),
    ],
)
def test_bad_input_raises_value_error(masks, labels, scores, message) -> None:
    with pytest.raises(ValueError, match=message):
        InstanceEvaluator().add_scene(_scene(), masks, np.array(labels), np.array(scores))


def test_an_instance_of_exactly_min_region_size_points_is_ground_truth() -> None:
    """min_region_size is inclusive (the official script keeps instances with >= 100 points):
    a 100-point chair is counted, found (AP 1) or missed (AP 0), never absent (None)."""
    gt = np.full(100, CHAIR * 1000 + 1)
    found = _evaluate(gt, [np.arange(100)], [CHAIR], [0.9])
    assert found.per_class["chair"] == (1.0, 1.0, 1.0)
    assert found.num_gt_instances["chair"] == 1
    assert _evaluate(gt, [], [], []).per_class["chair"] == (0.0, 0.0, 0.0)


def test_class_hypotheses_skip_runner_up_classes_of_zero_probability() -> None:
    """A runner-up class the mask gives no probability is no hypothesis, whatever `k`."""
    chair, table = classes.SEMANTIC_CLASSES.index("chair"), classes.SEMANTIC_CLASSES.index("table")
    probs = np.zeros(classes.NUM_SEMANTIC_CLASSES)
    probs[[chair, table]] = [0.75, 0.25]
    mask = SimpleNamespace(class_id=chair, score=0.8, point_indices=np.arange(5), class_probs=probs)
    hypotheses = class_hypotheses([mask], 4)
    assert hypotheses.labels.tolist() == [chair, table]
    assert hypotheses.scores.tolist() == pytest.approx([0.8, 0.8 / 3])
