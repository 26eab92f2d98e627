"""Classical baseline: plane removal, clustering, scoring, config handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dyco_perception.scenes import make_scene
from dyco_training.baseline import (
    DEFAULT_CONFIG,
    BaselineConfig,
    cluster,
    load_config,
    remove_planes,
    score_scenes,
    segment,
    tune,
)

CHAIR, TABLE, WALL, FLOOR = 4, 6, 0, 1


def _box_surface(rng: np.random.Generator, lo, hi, n: int) -> np.ndarray:
    lo, hi = np.array(lo, float), np.array(hi, float)
    points = lo + rng.random((n, 3)) * (hi - lo)
    axis = rng.integers(0, 3, n)
    low_side = (rng.random(n) < 0.5) & (axis != 2)  # no bottom face: it is never scanned
    points[np.arange(n), axis] = np.where(low_side, lo[axis], hi[axis])
    return points


def _toy_room(seed: int = 0):
    """Floor 4x4 m, two walls, a box 'chair' and a box 'table' 1 m apart."""
    rng = np.random.default_rng(seed)
    floor = np.column_stack([rng.random((6000, 2)) * 4, np.zeros(6000)])
    wall_x = np.column_stack([np.zeros(3000), rng.random(3000) * 4, rng.random(3000) * 2.5])
    wall_y = np.column_stack([rng.random(3000) * 4, np.full(3000, 4.0), rng.random(3000) * 2.5])
    chair = _box_surface(rng, (1, 1, 0), (1.5, 1.5, 0.9), 5000)
    table = _box_surface(rng, (2.5, 1, 0), (3.5, 2, 0.75), 8000)
    xyz = np.concatenate([floor, wall_x, wall_y, chair, table])
    xyz += rng.normal(0, 0.003, xyz.shape)
    semantic = np.repeat([FLOOR, WALL, WALL, CHAIR, TABLE], [6000, 3000, 3000, 5000, 8000])
    instance = np.repeat([0, 0, 0, 1, 2], [6000, 3000, 3000, 5000, 8000])
    return make_scene(xyz, np.zeros_like(xyz), semantic, instance, f"toy{seed}")


def test_removes_floor_and_walls_but_keeps_object_tops() -> None:
    scene = _toy_room()
    keep = remove_planes(scene.xyz.astype(float), BaselineConfig())
    objects = scene.instance > 0
    assert keep[~objects].mean() < 0.02  # floor and walls gone
    # Kept: the table top (a big horizontal plane); lost: side points within 3 cm of the floor.
    assert keep[objects].mean() > 0.95


def test_finds_the_two_objects_with_perfect_class_agnostic_ap() -> None:
    scene = _toy_room()
    instances = segment(scene.xyz, BaselineConfig())
    assert len(instances) == 2
    assert instances[0].score > instances[1].score  # the larger (table) ranks first
    assert score_scenes([scene], [instances]) == pytest.approx(
        {"AP": 1.0, "AP50": 1.0, "AP25": 1.0}
    )


def test_tuning_prefers_a_radius_that_separates_objects() -> None:
    scenes = [_toy_room(1)]
    grid = {"cluster_radius": (0.05, 1.2)}  # 1.2 m merges chair and table into one cluster
    best, rows = tune(scenes, BaselineConfig(), grid)
    assert best.cluster_radius == 0.05 and len(rows) == 2
    assert rows[1]["AP50"] < rows[0]["AP50"]


def test_shipped_config_loads_and_bad_configs_raise(tmp_path: Path) -> None:
    assert isinstance(load_config(DEFAULT_CONFIG), BaselineConfig)
    (tmp_path / "bad.yaml").write_text("cluster_radius: 0.05\nradius_typo: 1\n")
    with pytest.raises(ValueError, match="unknown baseline parameters"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="cluster_radius"):
        BaselineConfig(cluster_radius=0.0)
    with pytest.raises(ValueError, match="xyz must be"):
        segment(np.zeros((5, 2)), BaselineConfig())


def test_clusters_of_at_least_the_minimum_size_largest_first() -> None:
    """Three chains of points 1 cm apart: 100, 150 and 99 points. With min_cluster_size 100
    the 150-point chain comes first, then the 100-point one; the 99-point chain is dropped."""
    chains = [np.column_stack([x0 + np.arange(n) * 0.01, np.zeros(n), np.zeros(n)])
              for x0, n in ((0.0, 100), (5.0, 150), (10.0, 99))]  # fmt: skip
    found = cluster(np.concatenate(chains), BaselineConfig(min_cluster_size=100))
    assert [c.tolist() for c in found] == [list(range(100, 250)), list(range(100))]


def test_the_floor_is_the_lowest_horizontal_plane_wherever_the_room_lies() -> None:
    """The toy room moved 10 m along y either way: the floor still goes, the object tops stay
    (the floor height is read from z, not from another axis)."""
    scene = _toy_room()
    objects = scene.instance > 0
    for shift in (-10.0, 10.0):
        moved = scene.xyz.astype(float) + np.array([0.0, shift, 0.0])
        keep = remove_planes(moved, BaselineConfig())
        assert keep[~objects].mean() < 0.02 and keep[objects].mean() > 0.95


def test_a_wall_needs_more_than_half_of_the_points_on_one_side() -> None:
    assert BaselineConfig(wall_side_fraction=1.0).wall_side_fraction == 1.0
    for fraction in (0.5, 1.01):
        with pytest.raises(ValueError, match="wall_side_fraction"):
            BaselineConfig(wall_side_fraction=fraction)


def test_tuning_a_plane_removal_knob_recomputes_the_planes() -> None:
    """max_planes 0 removes nothing, so at an 8 cm radius floor, walls and objects form one
    cluster (AP 0); each tuning row scores the plane removal its own value asks for."""
    best, rows = tune([_toy_room(1)], BaselineConfig(cluster_radius=0.08), {"max_planes": (0, 8)})
    assert [(r["max_planes"], r["AP"]) for r in rows] == [(0, 0.0), (8, 1.0)]
    assert best.max_planes == 8
