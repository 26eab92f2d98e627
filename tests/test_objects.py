"""The persistent object map (ROS-free): association, fusion, confirmation, misses, splits,
merges, crops, queries and its configuration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from dyco_perception.identity_metric import detected_ids, identity_stability
from dyco_perception.objects import (
    MapObject,
    ObjectMap,
    ObjectMapConfig,
    ObjectMapError,
    Observation,
    _Candidates,
    voxel_keys,
)
from dyco_perception.tiling import RegionOfInterest

CHAIR, TABLE, SOFA = 4, 6, 5
FLOOR = np.array([[-1.0, -1.0, -0.05], [6.0, 4.0, 0.0]])


def solid(lo, hi, count: int = 600, seed: int = 0) -> np.ndarray:
    """Points filling the box [lo, hi]."""
    return np.random.default_rng(seed).uniform(lo, hi, (count, 3))


def seen(points: np.ndarray, class_id: int = CHAIR, score: float = 0.8) -> Observation:
    return Observation(class_id=class_id, score=score, points=points)


class Maps:
    """Feeds maps with increasing stamps; the map's points are the objects' plus a floor.
    Each map is a fresh scan (every point moved by a tiny amount: new evidence everywhere)
    unless `fresh=False` (the same map republished)."""

    def __init__(self, **config) -> None:
        self.objects = ObjectMap(ObjectMapConfig(**config))
        self.stamp = 0
        self.floor = solid(*FLOOR, count=3000, seed=99)

    def points(self, observations, extra=(), crop=None, fresh=True) -> np.ndarray:
        points = np.concatenate([self.floor, *[o.points for o in observations], *extra])
        if crop is not None:
            points = points[points[:, 0] < crop]
        if fresh:
            points = points + np.random.default_rng(self.stamp).normal(0, 1e-4, points.shape)
        return points

    def update(self, observations: list[Observation], extra=(), crop=None, fresh=True, roi=None):
        points = self.points(observations, extra, crop, fresh)
        self.stamp += 1_000_000_000
        return self.objects.update(observations, points, self.stamp, "map", roi=roi)


CHAIR_A = solid([0, 0, 0], [0.5, 0.5, 0.9], seed=1)
CHAIR_B = solid([2, 0, 0], [2.5, 0.5, 0.9], seed=2)
LONG_TABLE = solid([0, 2, 0], [2, 3, 0.8], count=1200, seed=3)


def test_same_objects_keep_ids_and_confirm_after_n_sightings() -> None:
    maps = Maps(confirm_after=3)
    first = maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    assert first.object_ids == [1, 2] and first.created == [1, 2]
    assert maps.objects.confirmed_objects() == []
    maps.update([seen(CHAIR_B), seen(CHAIR_A)])  # order does not matter
    third = maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    assert third.object_ids == [1, 2] and third.created == [] and third.confirmed == [1, 2]
    chair = maps.objects.objects[1]
    assert (
        chair.num_observations == 3 and chair.first_seen == 10**9 and chair.last_seen == 3 * 10**9
    )
    np.testing.assert_allclose(chair.box_center, CHAIR_A.min(0) / 2 + CHAIR_A.max(0) / 2)


def test_a_moved_box_keeps_its_id_and_a_far_one_does_not() -> None:
    maps = Maps()
    maps.update([seen(CHAIR_A)])
    assert maps.update([seen(CHAIR_A + np.array([0.12, 0.05, 0.0]))]).object_ids == [1]
    far = maps.update([seen(CHAIR_A + np.array([3.0, 3.0, 0.0]))])
    assert far.object_ids == [2] and far.created == [2]


def test_association_is_class_aware_and_fuses_class_evidence() -> None:
    maps = Maps(min_class_similarity=0.5)
    maps.update([seen(CHAIR_A, CHAIR)])
    assert maps.update([seen(CHAIR_A, TABLE)]).object_ids == [2]  # same place, other class
    maps = Maps(min_class_similarity=0.5)
    unsure = np.zeros(20)
    unsure[[CHAIR, SOFA]] = [0.6, 0.4]
    maps.update([Observation(CHAIR, 0.8, CHAIR_A, class_probs=unsure)])
    flipped = np.zeros(20)
    flipped[[CHAIR, SOFA]] = [0.3, 0.7]
    for _ in range(3):  # the evidence accumulates until sofa outweighs chair
        assert maps.update([Observation(SOFA, 0.8, CHAIR_A, class_probs=flipped)]).object_ids == [1]
    sofa = maps.objects.objects[1]
    assert sofa.class_id == SOFA
    np.testing.assert_allclose(sofa.class_probs[[CHAIR, SOFA]], [0.375, 0.625])


def test_equal_overlap_goes_to_the_object_of_the_same_class() -> None:
    unsure = np.zeros(20)
    unsure[[CHAIR, SOFA]] = [0.4, 0.6]
    maps = Maps(confirm_after=1)
    maps.update([Observation(SOFA, 0.8, CHAIR_A, class_probs=unsure), seen(CHAIR_A, CHAIR)])
    assert maps.update([seen(CHAIR_A, CHAIR)]).object_ids == [2]  # not the sofa-ish object 1


def test_assignment_is_optimal_not_greedy() -> None:
    """Greedy would give object A the instance it overlaps most and leave B unmatched."""
    y, z = [0.0, 0.0], [1.0, 1.0]
    a_obj, b_obj = solid([0.0, *y], [1.0, *z], seed=4), solid([0.3, *y], [1.2, *z], seed=5)
    maps = Maps(min_overlap=0.3)
    maps.update([seen(a_obj), seen(b_obj)])
    obs_a = solid([-0.5, *y], [0.5, *z], seed=6)  # IoU 0.33 with A, 0.12 with B
    obs_b = solid([0.1, *y], [1.0, *z], seed=7)  # IoU 0.9 with A, 0.64 with B
    assert maps.update([seen(obs_a), seen(obs_b)]).object_ids == [1, 2]


def test_split_keeps_the_id_on_the_larger_part_and_confirms_a_lasting_split() -> None:
    maps = Maps(confirm_after=2)
    maps.update([seen(LONG_TABLE, TABLE)])
    maps.update([seen(LONG_TABLE, TABLE)])
    big = LONG_TABLE[LONG_TABLE[:, 0] < 1.3]
    small = LONG_TABLE[LONG_TABLE[:, 0] >= 1.3]
    split = maps.update([seen(small, TABLE), seen(big, TABLE)])
    assert split.object_ids[1] == 1 and split.object_ids[0] == 2
    assert split.split == {2: 1}
    assert not maps.objects.objects[2].confirmed  # tentative until the split persists
    assert maps.update([seen(small, TABLE), seen(big, TABLE)]).confirmed == [2]


def test_an_object_falling_into_many_small_parts_keeps_its_id() -> None:
    """No part passes the overlap gate; the largest part inside the object takes its id."""
    maps = Maps(min_overlap=0.4)
    maps.update([seen(LONG_TABLE, TABLE)])
    edges = [0.0, 0.7, 1.2, 1.6, 2.01]
    parts = [
        LONG_TABLE[(LONG_TABLE[:, 0] >= lo) & (LONG_TABLE[:, 0] < hi)]
        for lo, hi in itertools.pairwise(edges)
    ]
    update = maps.update([seen(p, TABLE) for p in parts])
    assert update.object_ids[0] == 1  # the largest part (0.7 m)
    assert sorted(update.split) == sorted(update.object_ids[1:])
    assert set(update.split.values()) == {1} and not update.retired


def test_a_split_object_keeps_its_id_on_the_part_with_most_voxels_inside_it() -> None:
    """A table (x 0..2) falls into three parts none of which passes the gate: x < 0.8 (8 of
    its 20 voxel columns), x 0.8..1.4 (6 columns) with a mapped shelf above it (3 more voxel
    layers: the larger part, but with fewer voxels inside the table) and x >= 1.4. The id
    goes to the part with the most voxels inside the table, not to the largest part."""
    table = solid([0, 2, 0], [2, 3, 0.8], count=6000, seed=30)
    shelf = solid([0.8, 2, 0.8], [1.4, 3, 1.1], count=1500, seed=31)
    maps = Maps(min_overlap=0.45)
    maps.update([seen(table, TABLE)], extra=[shelf])
    middle = (table[:, 0] >= 0.8) & (table[:, 0] < 1.4)
    parts = [table[table[:, 0] < 0.8], np.concatenate([table[middle], shelf])]
    parts.append(table[table[:, 0] >= 1.4])
    update = maps.update([seen(p, TABLE) for p in parts])
    assert update.object_ids == [1, 2, 3]
    assert update.split == {2: 1, 3: 1}


def test_an_instance_holding_part_of_an_object_and_much_more_is_a_new_object() -> None:
    """Chair x 0..0.5 next to a mapped wall x 0.5..2. An instance of the chair's x >= 0.3 and
    the wall shares 2 of the chair's 5 voxel columns but has 17: voxel IoU 2 / 20 (box IoU
    the same), under the 0.2 gate, though it holds 40 % of the chair: a new object."""
    chair = solid([0, 0, 0], [0.5, 0.5, 0.9], count=3000, seed=40)
    wall = solid([0.5, 0, 0], [2.0, 0.5, 0.9], count=9000, seed=41)
    maps = Maps()
    maps.update([seen(chair)], extra=[wall])
    front = chair[:, 0] >= 0.3
    update = maps.update([seen(np.concatenate([chair[front], wall]))], extra=[chair[~front]])
    assert update.object_ids == [2] and update.created == [2]


def _evidence(obj_id: int, keys: list[int], hits: list[int]) -> MapObject:
    empty = np.zeros((0, 3))
    return MapObject(
        obj_id, np.ones(20), 1.0, 1, 0, 0, empty, np.zeros(0, np.int64), np.zeros(3), np.ones(3),
        evidence_keys=np.array(keys, np.int64), hits=np.array(hits, np.int64),
        looks=np.array(hits, np.int64),
    )  # fmt: skip


def test_a_part_an_object_moved_its_core_away_from_is_free_for_the_next_object() -> None:
    """Object 0 (voxels 1..10, hits 2 on 1..5 and 5 on 6..10) was matched to instance 0
    (voxels 1..5) but holds its core in instance 1 (voxels 6..10, more hits per voxel): it
    moves there. Instance 0 is free again, and object 1 (voxels 1..5 at 5 hits, 11..15 at 2),
    matched to instance 2 (voxels 11..15), has its core in instance 0: it takes it."""
    objects = [
        _evidence(1, list(range(1, 11)), [2] * 5 + [5] * 5),
        _evidence(2, [*range(1, 6), *range(11, 16)], [5] * 5 + [2] * 5),
    ]
    known = [np.arange(1, 6), np.arange(6, 11), np.arange(11, 16)]
    candidates = _Candidates([], [], known, known, [], [], np.zeros((3, 3)), np.ones((3, 3)), None)
    similarity = np.array([[0.5, 0.3, 0.0], [0.3, 0.0, 0.5]])
    kept = ObjectMap()._keep_cores([(0, 0), (1, 2)], similarity, objects, candidates)
    assert kept == [(0, 1), (1, 0)]


def test_an_objects_voxels_count_in_its_iou_at_their_support() -> None:
    """Object voxels 1..10, each held by 1 of the 2 views that could show it (support 1/2):
    the object weighs 5. An instance on voxels 1..10 shares weight 5, so the weighted IoU is
    5 / (5 + 10 - 5) = 1/2 (the boxes are apart: box IoU 0)."""
    obj = _evidence(1, list(range(1, 11)), [1] * 10)
    obj.looks = np.full(10, 2, np.int64)
    known = [np.arange(1, 11)]
    candidates = _Candidates(
        [seen(np.zeros((1, 3)))], [], known, known, [], [], np.full((1, 3), 5.0),
        np.full((1, 3), 6.0), None,
    )  # fmt: skip
    similarity = ObjectMap()._similarity([obj], candidates, np.zeros((1, 1)), np.ones((1, 1)))
    assert similarity.tolist() == [[pytest.approx(0.5)]]


def test_after_a_loop_closure_a_part_in_an_objects_old_place_does_not_take_its_id() -> None:
    """The map's part x >= 1 moves 0.5 m along x. Chair S straddles that edge: its moved half
    lands in chair T's old place, T itself moves on. The half lies inside T's old voxels, but
    the map moved away from T in this update: not T's part (an id swap), a new object."""
    maps = Maps()
    chair_s = solid([0.6, 0, 0], [1.1, 0.5, 0.9], seed=16)
    chair_t = solid([1.3, 0, 0], [1.8, 0.5, 0.9], seed=17)
    for _ in range(2):
        assert maps.update([seen(chair_s), seen(chair_t)]).object_ids == [1, 2]
    shift = np.array([0.5, 0.0, 0.0])
    stays = chair_s[:, 0] < 1.0
    floor_moves = maps.floor[:, 0] >= 1.0
    observed = [chair_s[stays], chair_s[~stays] + shift, chair_t + shift]
    points = np.concatenate([maps.floor[~floor_moves], maps.floor[floor_moves] + shift, *observed])
    ids = closed_loop(maps, [seen(p) for p in observed], points, 0).object_ids
    assert ids[0] == 1 and ids[1] != 2


def test_merge_keeps_the_larger_id_and_the_parts_get_theirs_back() -> None:
    left = LONG_TABLE[LONG_TABLE[:, 0] < 1.2]
    right = LONG_TABLE[LONG_TABLE[:, 0] >= 1.2]
    maps = Maps(retire_after=2)
    maps.update([seen(left, TABLE), seen(right, TABLE)])
    merged = maps.update([seen(LONG_TABLE, TABLE)])
    assert merged.object_ids == [1] and merged.merged == {2: 1} and not merged.retired
    assert maps.objects.objects[2].merged_into == 1
    back = maps.update([seen(left, TABLE), seen(right, TABLE)])  # a one-map merge
    assert back.object_ids == [1, 2] and maps.objects.objects[2].merged_into == 0
    maps.update([seen(LONG_TABLE, TABLE)])
    lasting = maps.update([seen(LONG_TABLE, TABLE)])  # a lasting merge retires the part
    assert lasting.retired == [2] and 2 not in maps.objects.objects


def test_occluded_object_returns_with_its_id_unless_missed_too_long() -> None:
    maps = Maps(retire_after=3)
    maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    for _ in range(2):  # re-observed (its points in the map) but not detected
        assert maps.update([seen(CHAIR_B)], extra=[CHAIR_A]).retired == []
    assert maps.objects.objects[1].num_misses == 2
    assert maps.update([seen(CHAIR_A), seen(CHAIR_B)]).object_ids == [1, 2]
    assert maps.objects.objects[1].num_misses == 0 and maps.objects.objects[1].total_misses == 2
    for _ in range(3):
        last = maps.update([seen(CHAIR_B)], extra=[CHAIR_A])
    assert last.retired == [1]
    assert maps.update([seen(CHAIR_A), seen(CHAIR_B)]).object_ids == [3, 2]


def test_a_crop_that_hides_objects_keeps_them() -> None:
    maps = Maps(retire_after=1)
    maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    for _ in range(4):  # a window over x < 1.5: chair B is outside the map, not missed
        cropped = maps.update([seen(CHAIR_A)], crop=1.5)
        assert cropped.retired == [] and maps.objects.objects[2].num_misses == 0
    assert maps.update([seen(CHAIR_A), seen(CHAIR_B)]).object_ids == [1, 2]


def test_a_growing_object_keeps_its_id() -> None:
    """Only the part of the instance inside the previous map is compared (voxel IoU)."""
    maps = Maps(min_overlap=0.5)
    sofa = solid([0, 0, 0], [3.0, 1.0, 0.8], count=2000, seed=8)
    for reach in (0.6, 1.4, 2.2, 3.0):
        part = sofa[sofa[:, 0] < reach]
        assert maps.update([seen(part, SOFA)], crop=reach).object_ids == [1]


def test_query_filters_by_class_region_confidence_and_id() -> None:
    maps = Maps(confirm_after=1)
    maps.update([seen(CHAIR_A, CHAIR, 0.9), seen(CHAIR_B, CHAIR, 0.3), seen(LONG_TABLE, TABLE)])
    ids = lambda found: sorted(o.id for o in found)  # noqa: E731
    query = maps.objects.query
    assert ids(query()) == [1, 2, 3]
    assert ids(query(class_ids=[CHAIR])) == [1, 2]
    assert ids(query(region=([1.5, -1, -1], [3, 1, 2]))) == [2]
    assert ids(query(min_confidence=0.5)) == [1, 3]
    assert ids(query(object_id=3)) == [3]
    with pytest.raises(ValueError, match="no confirmed object with id 9"):
        query(object_id=9)
    assert maps.objects.reset() == 3 and query() == []
    assert maps.update([seen(CHAIR_A)]).object_ids == [1]  # ids restart after a reset


def test_another_frame_or_an_older_stamp_is_refused() -> None:
    objects = ObjectMap()
    objects.update([seen(CHAIR_A)], CHAIR_A, 5, "map")
    with pytest.raises(ObjectMapError, match="frame 'odom'"):
        objects.update([seen(CHAIR_A)], CHAIR_A, 6, "odom")
    with pytest.raises(ObjectMapError, match="older"):
        objects.update([seen(CHAIR_A)], CHAIR_A, 4, "map")


def test_config_is_validated_with_the_key_named() -> None:
    assert ObjectMapConfig.from_dict({"retire_after": 5}).retire_after == 5
    with pytest.raises(ValueError, match=r"objects\.min_overlap"):
        ObjectMapConfig.from_dict({"min_overlap": 1.5})
    with pytest.raises(ValueError, match=r"objects\.confirm_after"):
        ObjectMapConfig.from_dict({"confirm_after": 0.5})
    with pytest.raises(ValueError, match="unknown"):
        ObjectMapConfig.from_dict({"gate": 0.1})


def test_voxel_keys_ignore_non_finite_points_and_separate_neighbours() -> None:
    points = np.array([[0.01, 0.01, 0.01], [0.02, 0.05, 0.09], [0.11, 0, 0], [np.nan, 0, 0]])
    assert len(voxel_keys(points, 0.1)) == 2
    negative = voxel_keys(np.array([[-0.01, 0, 0], [0.01, 0, 0]]), 0.1)
    assert len(negative) == 2


def test_identity_stability_counts_single_ids_switches_and_fragments() -> None:
    gt = np.repeat([0, 1, 2, 3], 200)  # three ground-truth objects of 200 points each

    def predicted(ids_of_gt: dict[int, int], shrink: int = 0) -> np.ndarray:
        """Object ids per point: each ground-truth object's points get one id (0: missed);
        `shrink` points of each drop out (IoU 1 - shrink/200)."""
        out = np.zeros_like(gt)
        for g, obj in ids_of_gt.items():
            rows = np.flatnonzero(gt == g)
            out[rows[shrink:]] = obj
        return out

    maps = [
        (gt, predicted({1: 7, 2: 0, 3: 5})),  # object 2 not yet detected
        (gt, predicted({1: 7, 2: 9, 3: 0})),  # object 3 missed (a gap)
        (gt, predicted({1: 8, 2: 9, 3: 5}, shrink=90)),  # 1 switches id; IoU 0.55 still counts
        (gt, predicted({1: 7, 2: 9, 3: 5}, shrink=110)),  # IoU 0.45: all undetected
    ]
    stats = identity_stability([maps])
    assert stats["gt_objects"] == 3 and stats["detected"] == 3
    assert stats["single_id"] == 2 and stats["single_id_fraction"] == pytest.approx(2 / 3)
    assert stats["id_switches"] == 1  # object 1: 7 -> 8
    assert stats["fragmentations"] == 1  # object 3 resumed after a gap
    small = [(np.repeat([0, 1], [10, 50]), np.repeat([0, 4], [10, 50]))]
    assert identity_stability([small])["gt_objects"] == 0  # under min_points (100)
    assert identity_stability([small], min_points=10)["single_id_fraction"] == 1.0


def test_identity_shares_are_over_the_detected_objects_not_all_present() -> None:
    """An object present but never detected counts in gt_objects only: the single-id share and
    the switches per object divide by the detected ones; tracks do not run across scans."""
    gt = np.repeat([1, 2, 3], 200)  # object 3 is never detected
    stable, switching = np.repeat([5, 6, 0], 200), np.repeat([5, 7, 0], 200)
    stats = identity_stability([[(gt, stable), (gt, switching)], [(gt, switching)]])
    assert (stats["gt_objects"], stats["detected"], stats["single_id"]) == (6, 4, 3)
    assert stats["single_id_fraction"] == pytest.approx(3 / 4)
    assert stats["id_switches"] == 1 and stats["id_switches_per_object"] == pytest.approx(1 / 4)


def test_observations_without_finite_points_get_no_object_and_nan_rows_are_dropped() -> None:
    objects = ObjectMap()
    assert objects.update([], np.zeros((0, 3)), 1).object_ids == []  # an empty map is fine
    with_nan = CHAIR_A.copy()
    with_nan[:10] = np.nan
    update = objects.update(
        [seen(np.zeros((0, 3))), seen(with_nan), seen(np.full((4, 3), np.inf))], with_nan, 2
    )
    assert update.object_ids == [0, 1, 0]
    chair = objects.objects[1]
    assert chair.num_points == len(CHAIR_A) - 10 and np.isfinite(chair.centroid).all()


def test_assignment_prefers_the_better_match_over_more_matches() -> None:
    """A fits instance X almost exactly; B overlaps X a quarter and Y not at all; A overlaps Y a
    little. Maximising the number of matches gives A-Y and B-X, an id swap: the best total
    similarity gives A-X and leaves B and Y unmatched."""
    sim = np.array([[0.95, 0.12], [0.25, 0.0]])
    assert ObjectMap._assign(sim) == [(0, 0)]
    y, z = [0.0, 0.0], [1.0, 1.0]
    maps = Maps(min_overlap=0.05)
    maps.update(
        [seen(solid([0.0, *y], [1.0, *z], seed=4)), seen(solid([0.5, *y], [2.0, *z], seed=5))]
    )
    x_obs = solid([0.0, *y], [1.0, *z], seed=6)  # A's box: IoU 1 with A, 0.25 with B
    y_obs = solid([-1.5, *y], [0.3, *z], seed=7)  # IoU ~0.12 with A, 0 with B
    ids = maps.update([seen(x_obs), seen(y_obs)]).object_ids
    assert ids[0] == 1 and ids[1] not in (1, 2)


def test_objects_outside_the_region_of_interest_are_not_missed() -> None:
    """The map holds the whole cloud; only the region x < 1.5 is segmented. Chair B lies
    outside: not detected, not missed, never retired; chair A inside is missed as before."""
    roi = RegionOfInterest.box([-5, -5, -5], [1.5, 5, 5])
    maps = Maps(retire_after=2)
    maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    for _ in range(4):
        update = maps.update([seen(CHAIR_A)], extra=[CHAIR_B], roi=roi)
        assert update.retired == [] and maps.objects.objects[2].num_misses == 0
    missed = [maps.update([], extra=[CHAIR_A, CHAIR_B], roi=roi) for _ in range(2)]
    assert missed[-1].retired == [1] and 2 in maps.objects.objects


def test_an_object_cut_by_the_region_of_interest_edge_keeps_its_id() -> None:
    """Chair A is seen whole, then the region of interest moves away, then only a sliver of the
    chair lies inside it, then all of it again. The sliver is a part of the known chair (the
    previous map held its points, though it was not segmented there): not a new object, and the
    whole chair seen again is not given to one."""
    maps = Maps()
    for _ in range(2):
        maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    away = RegionOfInterest.box([1.5, -5, -5], [5, 5, 5])
    assert maps.update([seen(CHAIR_B)], extra=[CHAIR_A], roi=away).object_ids == [2]
    edge = RegionOfInterest.box([0.42, -5, -5], [5, 5, 5])
    sliver = CHAIR_A[CHAIR_A[:, 0] >= 0.42]
    assert maps.update([seen(sliver), seen(CHAIR_B)], extra=[CHAIR_A], roi=edge).object_ids == [
        1,
        2,
    ]
    whole = maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    assert whole.object_ids == [1, 2] and whole.created == []
    assert maps.objects.objects[1].num_misses == 0


NEIGHBOUR = solid([0.5, 0, 0], [1.0, 0.5, 0.9], seed=11)  # touches chair A's +x side


def test_one_under_or_over_segmented_map_does_not_rewrite_the_extent() -> None:
    """Evidence accumulates per voxel: a voxel is published when it was seen in enough of the
    views that could have shown it (`voxel_support`)."""
    maps = Maps()
    for _ in range(3):
        maps.update([seen(CHAIR_A)], extra=[NEIGHBOUR])
    chair = maps.objects.objects[1]
    full_min, full_max = chair.box_min.copy(), chair.box_max.copy()
    under = maps.update([seen(np.concatenate([CHAIR_A, NEIGHBOUR]))])  # swallows the neighbour
    assert under.object_ids == [1]
    np.testing.assert_allclose(chair.box_min, full_min)
    np.testing.assert_allclose(chair.box_max, full_max)
    assert len(chair.voxels) == len(voxel_keys(CHAIR_A, 0.1))
    assert chair.num_points == len(CHAIR_A)
    # The next map separates them again: the neighbour is a new object, the chair keeps its id.
    assert maps.update([seen(NEIGHBOUR), seen(CHAIR_A)]).object_ids == [2, 1]
    over = maps.update([seen(CHAIR_A[CHAIR_A[:, 0] < 0.25])], extra=[CHAIR_A, NEIGHBOUR])
    assert over.object_ids == [1]  # half the chair: the other half stays published
    np.testing.assert_allclose(chair.box_min, full_min, atol=0.01)  # a cut voxel's points change
    np.testing.assert_allclose(chair.box_max, full_max, atol=0.01)
    assert len(chair.voxels) == len(voxel_keys(CHAIR_A, 0.1))


def test_voxels_below_the_publishing_support_still_count_for_association() -> None:
    """The voxel overlap weighs every voxel the object's views held by its support (hits /
    looks), not only the published ones: an object once seen with its neighbour matches the
    next such view at three quarters, not at the half its published voxels give."""
    maps = Maps()
    for _ in range(2):
        maps.update([seen(CHAIR_A)], extra=[NEIGHBOUR])
    both = np.concatenate([CHAIR_A, NEIGHBOUR])
    assert maps.update([seen(both)]).object_ids == [1]  # the neighbour's voxels: 1 hit, 2 looks
    assert len(maps.objects.objects[1].voxels) == len(voxel_keys(CHAIR_A, 0.1))
    maps.objects.config.min_overlap = 0.6  # above the published voxels' and the boxes' half
    assert maps.update([seen(both)]).object_ids == [1]


def test_a_split_object_keeps_its_id_on_the_part_holding_its_core() -> None:
    """Seen alone three times, then once together with a region the map revealed just then
    (published at once), an object split in two keeps its id on the part its views held most
    often (its core), not on the larger part that is mostly the once-seen region."""
    maps = Maps()
    core = solid([0, 0, 0], [1.0, 1.0, 0.8], count=1500, seed=21)
    side = solid([1.0, 0, 0], [2.0, 1.0, 0.8], count=1500, seed=22)
    for _ in range(3):
        maps.update([seen(core, SOFA)], crop=1.0)
    assert maps.update([seen(np.concatenate([core, side]), SOFA)]).object_ids == [1]
    rim = core[:, 0] >= 0.7
    split = maps.update([seen(np.concatenate([core[rim], side]), SOFA), seen(core[~rim], SOFA)])
    assert split.object_ids == [2, 1] and split.split == {2: 1}


def test_a_region_revealed_by_a_growing_map_is_published_at_once() -> None:
    maps = Maps()
    sofa = solid([0, 0, 0], [3.0, 1.0, 0.8], count=2000, seed=8)
    for reach in (1.0, 2.0, 3.0):
        maps.update([seen(sofa[sofa[:, 0] < reach], SOFA)], crop=reach)
        assert maps.objects.objects[1].box_max[0] == pytest.approx(
            sofa[sofa[:, 0] < reach, 0].max()
        )


def test_voxel_support_is_a_validated_setting() -> None:
    assert ObjectMapConfig.from_dict({"voxel_support": 0.8}).voxel_support == 0.8
    with pytest.raises(ValueError, match=r"objects\.voxel_support"):
        ObjectMapConfig.from_dict({"voxel_support": 1.5})


def test_a_map_republished_unchanged_is_no_new_sighting_nor_miss() -> None:
    """A false positive seen once and republished: still one sighting, not confirmed; a fresh
    scan of its region is a second sighting. Misses likewise need new evidence."""
    maps = Maps(confirm_after=2, retire_after=2)
    first = maps.update([seen(CHAIR_A), seen(CHAIR_B)], fresh=False)
    assert first.object_ids == [1, 2]
    for _ in range(3):
        again = maps.update([seen(CHAIR_A)], extra=[CHAIR_B], fresh=False)
        assert again.object_ids == [1] and again.confirmed == [] and again.retired == []
    assert maps.objects.objects[1].num_observations == 1
    assert maps.objects.objects[2].num_misses == 0  # republished: no new evidence of absence
    fresh = maps.update([seen(CHAIR_A)], extra=[CHAIR_B])
    assert fresh.confirmed == [1] and maps.objects.objects[2].num_misses == 1


def test_new_evidence_in_one_region_only_counts_there() -> None:
    """The map grows at chair B only (chair A's points unchanged): B's sighting counts, A's
    does not."""
    maps = Maps(confirm_after=2)
    maps.update([seen(CHAIR_A), seen(CHAIR_B)], fresh=False)
    more_b = solid([2, 0, 0], [2.5, 0.5, 0.9], count=300, seed=12)
    points = np.concatenate([maps.points([seen(CHAIR_A), seen(CHAIR_B)], fresh=False), more_b])
    maps.stamp += 10**9
    update = maps.objects.update(
        [seen(CHAIR_A), seen(np.concatenate([CHAIR_B, more_b]))], points, maps.stamp, "map"
    )
    assert update.object_ids == [1, 2] and update.confirmed == [2]


def test_an_object_whose_region_a_loop_closure_emptied_is_retired() -> None:
    """A loop closure moves the part x < 1.5 of the map (floor and chair A) 0.8 m along x: the
    chair is found at its new place (a new object), its old region lies inside the map and is
    empty, so the old object is a ghost: retired at once, not kept confirmed forever."""
    maps = Maps(confirm_after=2)
    for _ in range(2):
        maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    assert [o.id for o in maps.objects.confirmed_objects()] == [1, 2]
    shift = np.array([0.8, 0.0, 0.0])
    moved_floor = maps.floor[maps.floor[:, 0] < 1.5] + shift
    kept_floor = maps.floor[maps.floor[:, 0] >= 1.5]
    for k in range(3):
        points = np.concatenate([moved_floor, kept_floor, CHAIR_A + shift, CHAIR_B])
        points = points + np.random.default_rng(k).normal(0, 1e-4, points.shape)
        maps.stamp += 10**9
        update = maps.objects.update(
            [seen(CHAIR_A + shift), seen(CHAIR_B)], points, maps.stamp, "map"
        )
        if k == 0:
            assert update.retired == [1] and update.object_ids == [3, 2]
    assert sorted(maps.objects.objects) == [2, 3]
    assert [o.id for o in maps.objects.confirmed_objects()] == [2, 3]


CORNER_CHAIR = solid([-1, -1, 0], [-0.5, -0.5, 0.9], seed=13)  # at the floor's corner


def closed_loop(maps: Maps, observations, points, k: int):
    points = points + np.random.default_rng(100 + k).normal(0, 1e-4, points.shape)
    maps.stamp += 10**9
    return maps.objects.update(observations, points, maps.stamp, "map")


def test_an_object_at_the_map_edge_left_behind_by_a_loop_closure_is_retired() -> None:
    """The part x < 1.5 of the map moves 0.5 m along x and y: the corner chair's old region
    is emptied (its outer sides were never mapped, so the map does not surround it), and the
    map's points reappeared next to it (moved, not removed): a ghost, retired."""
    maps = Maps(confirm_after=2)
    for _ in range(2):
        maps.update([seen(CORNER_CHAIR), seen(CHAIR_B)])
    shift = np.array([0.5, 0.5, 0.0])
    moved = maps.floor[:, 0] < 1.5
    floor = np.concatenate([maps.floor[moved] + shift, maps.floor[~moved]])
    for k in range(2):
        update = closed_loop(
            maps,
            [seen(CORNER_CHAIR + shift), seen(CHAIR_B)],
            np.concatenate([floor, CORNER_CHAIR + shift, CHAIR_B]),
            k,
        )
        if k == 0:
            assert update.retired == [1] and update.object_ids == [3, 2]
    assert sorted(maps.objects.objects) == [2, 3]


def test_the_part_of_an_object_a_loop_closure_moved_away_is_forgotten() -> None:
    """The table spans the loop closure's edge (x = 1.5): its part x < 1.5 moves 0.6 m along
    y. Whichever part keeps the id, the object's published points all lie in the map again
    (within a voxel's reach: no half left behind in emptied space)."""
    maps = Maps(confirm_after=2)
    for _ in range(2):
        maps.update([seen(LONG_TABLE, TABLE)])
    moved = LONG_TABLE[:, 0] < 1.5
    shift = np.array([0.0, 0.6, 0.0])
    floor_moved = maps.floor[:, 0] < 1.5
    parts = [LONG_TABLE[moved] + shift, LONG_TABLE[~moved]]
    points = np.concatenate([maps.floor[floor_moved] + shift, maps.floor[~floor_moved], *parts])
    for k in range(2):
        closed_loop(maps, [seen(p, TABLE) for p in parts], points, k)
    table = maps.objects.objects[1]
    gap = np.linalg.norm(table.points[:, None] - points[None], axis=2).min(axis=1)
    assert gap.max() < 0.2


def test_a_map_window_moving_away_or_a_loop_closure_elsewhere_keeps_objects() -> None:
    """A sliding map window drops the part x < 1.5 (chair A and the corner chair) while new
    points come in at its far end: the emptied regions are not ghosts (nothing reappeared
    near them). A loop closure far from chair B does not retire it either."""
    maps = Maps()
    for _ in range(2):
        maps.update([seen(CHAIR_A), seen(CORNER_CHAIR), seen(CHAIR_B)])
    ahead = solid([6, -1, -0.05], [8, 4, 0.0], count=900, seed=14)
    window = np.concatenate([maps.floor[maps.floor[:, 0] >= 1.5], ahead, CHAIR_B])
    for k in range(3):
        update = closed_loop(maps, [seen(CHAIR_B)], window, k)
        assert update.object_ids == [3] and update.retired == []
    assert sorted(maps.objects.objects) == [1, 2, 3]
    far = window + np.where(window[:, :1] > 5.5, [0.5, 0.5, 0.0], 0.0)  # ahead moves
    assert closed_loop(maps, [seen(CHAIR_B)], far, 9).retired == []
    assert sorted(maps.objects.objects) == [1, 2, 3]


def test_a_new_voxel_size_re_keys_the_stored_voxels() -> None:
    maps = Maps()
    for _ in range(2):
        maps.update([seen(CHAIR_A), seen(CHAIR_B)])
    maps.objects.config = ObjectMapConfig(voxel_size=0.2)
    update = maps.update([seen(CHAIR_A)], extra=[CHAIR_B])
    assert update.object_ids == [1] and update.voxel_size_changed == (0.1, 0.2)
    for obj in maps.objects.objects.values():  # matched or not, every key is on the new grid
        assert np.array_equal(obj.voxels, voxel_keys(obj.points, 0.2))
        assert np.array_equal(obj.evidence_keys, voxel_keys(obj.evidence_points, 0.2))
    assert maps.update([seen(CHAIR_A), seen(CHAIR_B)]).object_ids == [1, 2]
    assert maps.objects.objects[2].num_misses == 0


def test_evidence_of_all_objects_merged_in_one_pass_equals_one_object_at_a_time(
    monkeypatch,
) -> None:
    """The evidence of every sighted object is merged in one vectorised pass (objects in
    batches whose codes fit in int64): one object per batch gives the same map."""
    from dyco_perception import objects as objects_module

    def run() -> dict:
        maps = Maps(voxel_size=0.2)
        rng = np.random.default_rng(5)
        chairs = [
            solid([x, y, 0], [x + 0.5, y + 0.4, 0.9], seed=10 + x)
            for x, y in [(0, 0), (2, 0), (4, 1)]
        ]
        for step in range(6):
            shown = [c + rng.normal(0, 0.03, 3) for c in chairs]
            if step == 2:  # under-segmented: the first two as one
                views = [seen(np.concatenate(shown[:2])), seen(shown[2][:400])]
            elif step == 3:  # only part of the third
                views = [seen(shown[0]), seen(shown[1]), seen(shown[2][shown[2][:, 0] < 4.3])]
            else:
                views = [seen(s) for s in shown]
            maps.update(views)
        return {
            i: (
                o.evidence_keys,
                o.hits,
                o.looks,
                o.evidence_points,
                o.evidence_point_keys,
                o.voxels,
                o.points,
                o.box_min,
                o.box_max,
            )
            for i, o in maps.objects.objects.items()
        }

    together = run()
    monkeypatch.setattr(objects_module, "_CODE_LIMIT", 1.0)  # every object its own batch
    alone = run()
    assert together.keys() == alone.keys() and len(together) >= 3
    for key, arrays in together.items():
        for a, b in zip(arrays, alone[key], strict=True):
            np.testing.assert_array_equal(a, b)
    kept = together[1]
    assert np.array_equal(kept[0], np.unique(kept[4])) and (kept[1] <= kept[2]).all()


def test_a_stamp_equal_to_the_last_is_taken_and_an_empty_map_may_change_frame() -> None:
    """Only an older stamp is refused; a map without objects has no frame to keep."""
    objects = ObjectMap()
    objects.update([], FLOOR, 5, "odom")  # no objects yet
    assert objects.update([seen(CHAIR_A)], CHAIR_A, 5, "map").object_ids == [1]
    assert objects.update([seen(CHAIR_A)], CHAIR_A, 5, "map").object_ids == [1]


def test_confidence_counts_every_miss_and_min_confidence_is_inclusive() -> None:
    """confidence = mean score x sightings / (sightings + all misses, not only the current
    run of them); a query's min_confidence keeps an object of exactly that confidence."""
    maps = Maps(retire_after=3, confirm_after=1)
    maps.update([seen(CHAIR_A, score=0.8)])
    maps.update([], extra=[CHAIR_A])  # re-observed, not found: a miss
    maps.update([seen(CHAIR_A, score=0.8)])
    chair = maps.objects.objects[1]
    assert (chair.num_observations, chair.num_misses, chair.total_misses) == (2, 0, 1)
    assert chair.confidence == pytest.approx(0.8 * 2 / 3)
    assert [o.id for o in maps.objects.query(min_confidence=chair.confidence)] == [1]


def _two_clusters() -> tuple[np.ndarray, np.ndarray]:
    """An object of two equal clusters of points, one voxel (0.1 m) each, 0.5 m apart."""
    first = solid([0.0, 0.0, 0.2], [0.05, 0.05, 0.25], count=100, seed=11)
    return first, first + np.array([0.5, 0.0, 0.0])


def test_a_map_holding_exactly_the_observed_fraction_of_an_object_re_observes_it() -> None:
    """observed_fraction is a least share (inclusive): a new map covering half of the object's
    voxels, or a region of interest holding half of its points (and the map covering those),
    re-observes its region, so not finding it there is a miss (retire_after=1: retired)."""
    first, second = _two_clusters()
    objects = ObjectMap(ObjectMapConfig(retire_after=1, observed_fraction=0.5))
    objects.update([seen(np.vstack([first, second]))], np.vstack([first, second]), 1, "map")
    assert objects.update([], first + 1e-5, 2, "map").retired == [1]

    roi = RegionOfInterest.box([-1.0, -1.0, -1.0], [0.3, 1.0, 1.0])  # holds the first cluster
    objects = ObjectMap(ObjectMapConfig(retire_after=1, observed_fraction=0.5))
    objects.update([seen(np.vstack([first, second]))], np.vstack([first, second]), 1, "map")
    assert objects.update([], np.vstack([first, second]) + 1e-5, 2, "map", roi=roi).retired == [1]


def test_the_overlap_gate_is_inclusive() -> None:
    """A box twice as long sharing half of it, its other half already in the map (so it is no
    part of the object): box IoU exactly 1/2 (voxel IoU 1/3) passes min_overlap=0.5."""
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    longer = corners * np.array([2.0, 1.0, 1.0])
    both = np.vstack([corners, longer])
    objects = ObjectMap(ObjectMapConfig(min_overlap=0.5))
    objects.update([seen(corners)], both, 1, "map")
    assert objects.update([seen(longer)], both + 1e-6, 2, "map").object_ids == [1]


def test_boxes_apart_on_two_axes_do_not_overlap() -> None:
    """An instance diagonally beside an object (apart in x and in y) shares no volume with
    it: a new object, however low the overlap gate."""
    maps = Maps(min_overlap=0.1)
    maps.update([seen(CHAIR_A)])
    beside = CHAIR_A + np.array([0.8, 0.8, 0.0])  # a 0.3 m gap in x and in y
    assert maps.update([seen(beside)], extra=[CHAIR_A]).object_ids == [2]


def test_the_class_gate_is_the_bhattacharyya_coefficient() -> None:
    """Object 50 % chair / 50 % sofa against a sure chair: sum of sqrt(p q) = sqrt(0.5) = 0.707;
    against the same 50/50 distribution: 1."""
    unsure = np.zeros(20)
    unsure[[CHAIR, SOFA]] = 0.5
    for gate, expected in ((0.70, [1]), (0.72, [2])):
        maps = Maps(min_class_similarity=gate)
        maps.update([Observation(CHAIR, 0.8, CHAIR_A, class_probs=unsure)])
        assert maps.update([seen(CHAIR_A, CHAIR)]).object_ids == expected
    maps = Maps(min_class_similarity=0.99)
    maps.update([Observation(CHAIR, 0.8, CHAIR_A, class_probs=unsure)])
    assert maps.update([Observation(SOFA, 0.8, CHAIR_A, class_probs=unsure)]).object_ids == [1]


def test_a_split_part_is_recorded_as_split_from_the_object_it_lies_in() -> None:
    """With another object in the map, the part is recorded as split from the table it lies
    inside, not from the other object."""
    maps = Maps(confirm_after=2)
    maps.update([seen(LONG_TABLE, TABLE), seen(CHAIR_B)])
    big = LONG_TABLE[LONG_TABLE[:, 0] < 1.3]
    small = LONG_TABLE[LONG_TABLE[:, 0] >= 1.3]
    split = maps.update([seen(CHAIR_B), seen(small, TABLE), seen(big, TABLE)])
    assert split.object_ids == [2, 3, 1]
    assert split.split == {3: 1}


def test_a_boolean_is_no_number_in_the_config() -> None:
    """true/false is refused where an integer or a number is expected (Python's bool is an
    int, YAML's true is not a count)."""
    with pytest.raises(ValueError, match=r"objects\.confirm_after: expected an integer"):
        ObjectMapConfig.from_dict({"confirm_after": True})
    with pytest.raises(ValueError, match=r"objects\.min_overlap: expected a number"):
        ObjectMapConfig.from_dict({"min_overlap": True})


def test_detected_ids_thresholds_are_inclusive_and_objects_count_all_their_points() -> None:
    """detected_ids: an instance of exactly min_points counts; IoU exactly min_iou detects;
    an object's points off the instance (background included) enlarge its union."""
    gt = np.repeat([0, 1, 2], [200, 100, 200])
    obj = np.zeros_like(gt)
    obj[200:300] = 4  # instance 1, all 100 points: IoU 1
    obj[300:400] = 5  # half of instance 2: IoU 100 / 200 = 0.5
    obj[400:500] = 6  # the other half plus one background point: IoU 100 / 201
    obj[0] = 6
    assert detected_ids(gt, obj) == {1: 4, 2: 5}


def in_voxels(cells, count: int = 20, seed: int = 0) -> np.ndarray:
    """Points near the centres of these 0.1 m voxels (integer x, y, z voxel coordinates)."""
    centres = (np.repeat(np.asarray(cells, float), count, axis=0) + 0.5) * 0.1
    return centres + np.random.default_rng(seed).uniform(-0.03, 0.03, centres.shape)


def test_an_object_exactly_part_containment_inside_another_instance_is_merged() -> None:
    """part_containment is a least share (inclusive): 3 of a 5-voxel object's voxels (0.6)
    inside the instance matched to the chair beside it: merged into the chair."""
    rail = in_voxels([(x, 0, 2) for x in range(5)])
    chair = solid([0.5, 0.0, 0.0], [1.5, 0.5, 0.9], seed=18)
    maps = Maps(part_containment=0.6)
    maps.update([seen(rail), seen(chair)])
    both = np.vstack([chair, rail[rail[:, 0] < 0.3]])
    update = maps.update([seen(both)], extra=[rail])
    assert update.object_ids == [2] and update.merged == {1: 2}
    assert maps.objects.objects[1].merged_into == 2


def test_voxels_emptied_with_exactly_as_many_new_ones_nearby_moved_away() -> None:
    """A loop closure moves a 3-voxel object 0.4 m along x: 3 voxels emptied, exactly 3 new
    voxels appear next to them (at least as many: the points moved). The object is a ghost,
    retired at once; its new place is a new object."""
    thing = in_voxels([(x, 0, 2) for x in range(3)])
    wall = in_voxels([(x, 20, 2) for x in range(10)])  # the rest of the map, unchanged
    objects = ObjectMap()
    objects.update([seen(thing)], np.vstack([thing, wall]), 1, "map")
    shifted = thing + np.array([0.4, 0.0, 0.0])
    update = objects.update([seen(shifted)], np.vstack([shifted, wall]), 2, "map")
    assert update.retired == [1] and update.object_ids == [2]


def test_an_object_exactly_observed_fraction_of_which_moved_away_is_retired() -> None:
    """Half of the object's published voxels (observed_fraction 0.5, inclusive) moved away:
    a ghost, retired at once, not kept on its other half."""
    first, second = _two_clusters()
    wall = in_voxels([(x, 20, 2) for x in range(10)])
    objects = ObjectMap(ObjectMapConfig(observed_fraction=0.5))
    objects.update([seen(np.vstack([first, second]))], np.vstack([first, second, wall]), 1, "map")
    moved = first + np.array([-0.4, 0.0, 0.0])
    nearby = in_voxels([(-6, 2, 2)])  # a second new voxel near the emptied one
    update = objects.update([], np.vstack([moved, nearby, second, wall]), 2, "map")
    assert update.retired == [1] and 1 not in objects.objects


def test_an_object_the_map_surrounds_but_no_longer_covers_is_retired() -> None:
    """The map holds points on all four x-y sides of a 3 x 3-voxel object (each side beside
    one of its rows or columns other than the first), then loses the object's points (no new
    ones appear: no loop closure): the map no longer holds it, it is retired at once."""
    thing = in_voxels([(x, y, 2) for x in range(3) for y in range(3)])
    sides = in_voxels([(-1, 1, 2), (3, 2, 2), (2, -1, 2), (1, 3, 2)])
    objects = ObjectMap()
    objects.update([seen(thing)], np.vstack([thing, sides]), 1, "map")
    assert objects.update([], sides + 1e-5, 2, "map").retired == [1]


def test_a_part_recovered_by_one_object_is_not_given_to_another() -> None:
    """min_overlap 0.95: no part passes the gate, every object is recovered from its parts.
    Part P lies inside both the short object 1 and the long object 2; object 1 takes it, so
    object 2 takes its other (smaller) part Q, not P again."""
    short = in_voxels([(x, y, 2) for x in range(5) for y in range(3)], seed=1)
    long = in_voxels([(x, y, 2) for x in range(10) for y in range(3)], seed=2)
    maps = Maps(min_overlap=0.95)
    maps.update([seen(short), seen(long)])
    part_p = short[short[:, 0] < 0.3]
    part_q = long[(long[:, 0] > 0.6) & (long[:, 0] < 0.8)]
    update = maps.update([seen(part_p), seen(part_q)], extra=[long])
    assert update.object_ids == [1, 2] and update.created == []


def test_negative_class_probabilities_count_as_zero() -> None:
    probs = np.zeros(20)
    probs[[CHAIR, TABLE, SOFA]] = [0.6, 0.6, -0.2]
    maps = Maps()
    maps.update([Observation(CHAIR, 0.8, CHAIR_A, class_probs=probs)])
    fused = maps.objects.objects[1].class_probs
    np.testing.assert_allclose(fused[[CHAIR, TABLE, SOFA]], [0.5, 0.5, 0.0], atol=1e-6)
