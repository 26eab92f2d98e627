"""dyco-make-bag --grow (a scan revealed as K growing maps with pose noise) and dyco-replay's
handling of such bags: grouping by scan, AP on the final maps, identity stability read from the
labelled clouds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from builtin_interfaces.msg import Time
from dyco_perception.ros.outputs import Labelled, instance_array_msg, labelled_cloud_msg
from dyco_perception.segmenter import Instance
from dyco_perception.tools import bags, replay
from dyco_perception.tools.client import Result
from dyco_perception.tools.make_bag import GrowthConfig, growing_maps, reveal_order
from dyco_perception.tools.make_bag import main as make_bag_main
from std_msgs.msg import Header


@pytest.fixture(scope="module")
def scene(scannet_dir):
    from dyco_perception.scenes import load_npz_scene

    return load_npz_scene(scannet_dir / "scene0009_00.npz")


def test_maps_grow_to_the_whole_scan_with_ground_truth_ids_kept(scene) -> None:
    order = reveal_order(scene.xyz, 10)
    assert order.min() == 0 and order.max() == 9
    sizes = np.bincount(order, minlength=10).cumsum()
    assert np.all(np.diff(sizes) > 0) and sizes[0] < 0.4 * len(order)  # every map adds points
    maps = list(growing_maps(scene, GrowthConfig(updates=10, seed=3)))
    assert [len(m.xyz) for m in maps] == sizes.tolist()
    assert [bags.split_growing_name(m.name) for m in maps] == [(scene.name, k) for k in range(10)]
    last = maps[-1]
    np.testing.assert_array_equal(last.instance, scene.instance)  # same ids, not renumbered
    np.testing.assert_array_equal(last.rgb, scene.rgb)
    # Pose noise: a small rigid motion in x-y (distances kept, z untouched).
    moved = np.linalg.norm(last.xyz - scene.xyz, axis=1)
    assert 0 < np.median(moved) < 0.2
    np.testing.assert_allclose(last.xyz[:, 2], scene.xyz[:, 2], atol=1e-6)
    pairs = np.random.default_rng(0).integers(0, len(scene.xyz), (500, 2))
    np.testing.assert_allclose(
        np.linalg.norm(last.xyz[pairs[:, 0]] - last.xyz[pairs[:, 1]], axis=1),
        np.linalg.norm(scene.xyz[pairs[:, 0]] - scene.xyz[pairs[:, 1]], axis=1),
        atol=1e-4,
    )
    still = list(growing_maps(scene, GrowthConfig(updates=3, translation_noise=0, yaw_noise=0)))
    np.testing.assert_allclose(still[-1].xyz, scene.xyz, atol=1e-6)


def test_make_bag_grow_writes_named_maps_and_refuses_bad_values(scannet_dir, tmp_path) -> None:
    out = tmp_path / "growing"
    files = [str(scannet_dir / f"scene0010_0{k}.npz") for k in (0, 1)]
    make_bag_main(["--scans", *files, "--grow", "3", "--out", str(out)])
    scans = bags.read_scan_bag(out)
    names = [s.name for s in scans]
    assert names == [bags.growing_name(f"scene0010_0{k}", u) for k in (0, 1) for u in range(3)]
    groups = replay.growing_scans(scans)
    assert [len(g) for g in groups] == [3, 3]
    assert [s.name for s in replay.final_maps(scans)] == [names[2], names[5]]
    assert scans[2].num_points == 50_000 and scans[0].num_points < scans[1].num_points
    with pytest.raises(SystemExit, match=r"--grow must lie in 2\.\.1000"):
        make_bag_main(["--scans", *files, "--grow", "1", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="pose noise"):
        make_bag_main(
            [
                "--scans",
                *files,
                "--grow",
                "3",
                "--pose-noise",
                "-1",
                "0",
                "--out",
                str(tmp_path / "y"),
            ]
        )


def test_growing_names_number_the_maps_with_two_digits() -> None:
    """Zero-padded, so that a growing bag's names sort in map order."""
    assert [bags.growing_name("scene0001_00", k) for k in (3, 12)] == [
        "scene0001_00/map_03",
        "scene0001_00/map_12",
    ]


def test_plain_bags_are_not_growing() -> None:
    plain = [bags.BagScan(k, b"", 0, None, None, f"scene{k}") for k in range(3)]
    assert replay.growing_scans(plain) is None and replay.final_maps(plain) == plain
    assert bags.split_growing_name("a/map_x") is None
    assert bags.split_growing_name("a/b/map_07") == ("a/b", 7)
    assert bags.split_growing_name("a/map_1/map_02") == ("a/map_1", 2)  # the last /map_ splits
    # A bag without scan names names its scans by their stamps: digits, yet no growing maps.
    by_stamp = [bags.BagScan(k, b"", 0, None, None, str(10**18 + k)) for k in range(2)]
    assert bags.split_growing_name(by_stamp[0].name) is None
    assert replay.growing_scans(by_stamp) is None
    # One map name among others does not make a growing bag; neither does an empty one.
    mixed = [bags.BagScan(0, b"", 0, None, None, bags.growing_name("a", 0)), plain[0]]
    assert replay.growing_scans(mixed) is None and replay.final_maps(mixed) == mixed
    assert replay.growing_scans([]) is None


def _result(scene, object_of_gt: dict[int, int], stamp: int) -> Result:
    """The node's cloud + instances for a scene whose instances are exactly the ground truth,
    with the given object id for each ground-truth id."""
    gt_ids = sorted(object_of_gt)
    instances, object_ids = [], []
    lookup = np.zeros(int(scene.instance.max()) + 1, np.uint32)
    for new_id, gt in enumerate(gt_ids, start=1):
        mask = scene.instance == gt
        lookup[gt] = new_id
        instances.append(
            Instance(new_id, int(scene.semantic[mask][0]), "x", 0.9, np.flatnonzero(mask),
                     np.zeros(3), np.ones(3), np.zeros(3), int(mask.sum()))
        )  # fmt: skip
        object_ids.append(object_of_gt[gt])
    labelled = Labelled(
        xyz=scene.xyz,
        semantic=scene.semantic.astype(np.int32),
        instance=lookup[scene.instance],
        score=np.zeros(len(scene.xyz), np.float32),
        instances=instances,
        object_ids=object_ids,
    )
    header = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="map")
    result = Result(published_at=0.0)
    result.messages["cloud"] = labelled_cloud_msg(header, labelled)
    result.messages["instances"] = instance_array_msg(header, labelled, 0.1, False)
    return result


def _objects(instance: np.ndarray, min_points: int = 100) -> set[int]:
    ids, counts = np.unique(instance[instance > 0], return_counts=True)
    return {int(g) for g, n in zip(ids, counts, strict=True) if n >= min_points}


def test_identity_metrics_read_object_ids_from_the_labelled_clouds(scene) -> None:
    maps = list(growing_maps(scene, GrowthConfig(updates=4, seed=0)))
    switching = min(_objects(maps[2].instance) & _objects(maps[3].instance))
    report = replay.ReplayReport(num_clouds=len(maps), results={}, scans=[])
    for k, m in enumerate(maps):
        present = [int(g) for g in np.unique(m.instance) if g > 0]
        # Stable ids (100 + gt), except that one object gets a new id in the last map.
        ids = {g: 100 + g + (1000 if g == switching and k == 3 else 0) for g in present}
        stamp = (k + 1) * 10**9
        report.results[stamp] = _result(m, ids, stamp)
        report.scans.append(bags.BagScan(stamp, b"", len(m.xyz), m.semantic, m.instance, m.name))
    identity = replay.identity_metrics(report)
    # A map whose results never came counts in no track.
    unanswered = bags.BagScan(99, b"", 1, np.zeros(1), np.ones(1), bags.growing_name(scene.name, 4))
    more = replay.ReplayReport(len(maps) + 1, report.results, [*report.scans, unanswered])
    assert replay.identity_metrics(more) == identity
    tracked = set().union(*(_objects(m.instance) for m in maps))
    assert identity["gt_objects"] == identity["detected"] == len(tracked)
    assert identity["id_switches"] == 1 and identity["single_id"] == len(tracked) - 1
    metrics = replay.evaluate(report)
    assert metrics["num_scenes"] == 1  # the final map only
    assert metrics["AP"] == pytest.approx(1.0)
    assert "kept one id" in replay.format_identity(identity)


def test_reveal_reach_grows_with_the_square_root_of_the_map_number() -> None:
    """1001 points 1 mm apart along x (heights random: they do not count): map k of 4 holds
    those within 1 m * sqrt((k + 1) / 4) of the end it starts from, whichever end that is."""
    x = np.linspace(0, 1, 1001)
    z = np.random.default_rng(0).uniform(0, 2, 1001)
    order = reveal_order(np.column_stack([x, np.zeros_like(x), z]), 4)
    assert np.bincount(order).cumsum().tolist() == [501, 708, 867, 1001]


def test_pose_noise_is_an_independent_xy_shift_per_map_drawn_from_the_seed(scene, tmp_path) -> None:
    """Without yaw, each map is its points moved by one (dx, dy), dx and dy drawn apart; the
    seed decides the draws."""
    growth = GrowthConfig(updates=3, translation_noise=0.05, yaw_noise=0, seed=4)
    maps = list(growing_maps(scene, growth))
    order = reveal_order(scene.xyz, 3)
    for k, m in enumerate(maps):
        moved = m.xyz - scene.xyz[order <= k]
        np.testing.assert_allclose(moved, moved[:1].repeat(len(moved), 0), atol=1e-4)
        assert moved[0, 2] == 0 and abs(moved[0, 0] - moved[0, 1]) > 1e-3
    again = list(growing_maps(scene, growth))
    other = list(growing_maps(scene, dataclasses.replace(growth, seed=5)))
    np.testing.assert_array_equal(again[-1].xyz, maps[-1].xyz)
    assert not np.allclose(other[-1].xyz, maps[-1].xyz, atol=1e-3)
    for updates, noise in ((0, (0.02, 0.5)), (3, (0.02, 45.5)), (3, (1.5, 0.5))):
        with pytest.raises(ValueError):
            GrowthConfig(updates, *noise)
    GrowthConfig(1000, 1.0, 45.0)  # the limits themselves are allowed
    with pytest.raises(SystemExit, match=r"--grow must lie in 2\.\.1000"):  # not "no --grow"
        make_bag_main(
            ["--rooms", "1", "--points", "1000", "--grow", "0", "--out", str(tmp_path / "x")]
        )
