"""Procedural rooms: determinism, label consistency, physical plausibility, npz output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dyco_perception.data.room_generator import generate_room
from dyco_perception.scenes import load_npz_scene
from dyco_training.cli_eval import generate_rooms_main

from dyco_perception import classes

SEEDS = (0, 1, 4, 11)
WALL_MOUNTED = {classes.SEMANTIC_CLASSES.index(n) for n in ("window", "picture")}


@pytest.fixture(scope="module")
def rooms() -> dict[int, object]:
    return {seed: generate_room(seed, num_points=20000) for seed in SEEDS}


def test_same_seed_same_room_other_seed_other_room(rooms) -> None:
    again = generate_room(SEEDS[0], num_points=20000)
    first = rooms[SEEDS[0]]
    for name in ("xyz", "rgb", "semantic", "instance"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert not np.array_equal(rooms[SEEDS[1]].xyz, first.xyz)


def test_point_count_and_dtypes(rooms) -> None:
    for scene in rooms.values():
        assert scene.num_points == 20000
        assert scene.xyz.dtype == np.float32 and scene.rgb.dtype == np.uint8


def test_labels_are_consistent(rooms) -> None:
    for scene in rooms.values():
        assert set(np.unique(scene.semantic)) <= set(range(classes.NUM_SEMANTIC_CLASSES))
        stuff = np.isin(scene.semantic, classes.STUFF_CLASS_IDS)
        assert stuff.any() and np.all(scene.instance[stuff] == 0)
        assert np.all(scene.instance[~stuff] > 0)
        ids = np.unique(scene.instance[scene.instance > 0])
        assert ids.size > 3
        for inst in ids:
            assert np.unique(scene.semantic[scene.instance == inst]).size == 1


def test_objects_rest_on_the_floor_and_stay_in_the_room(rooms) -> None:
    for scene in rooms.values():
        floor = scene.semantic == classes.SEMANTIC_CLASSES.index("floor")
        floor_z = np.median(scene.xyz[floor, 2])
        lo, hi = scene.xyz[floor, :2].min(axis=0), scene.xyz[floor, :2].max(axis=0)
        assert np.all(scene.xyz[:, :2] >= lo - 0.05) and np.all(scene.xyz[:, :2] <= hi + 0.05)
        for inst in np.unique(scene.instance[scene.instance > 0]):
            members = scene.instance == inst
            if scene.semantic[members][0] in WALL_MOUNTED:
                continue
            z = scene.xyz[members, 2]
            # Lowest sample of n uniform ones lies within 8 H / n of the bottom (p > 0.999).
            tolerance = max(0.05, 8 * (z.max() - z.min()) / z.size)
            assert z.min() - floor_z < tolerance, f"{scene.name} id {inst} floats"


def test_many_classes_over_seeds(rooms) -> None:
    seen = set()
    for scene in rooms.values():
        seen |= set(np.unique(scene.semantic[scene.instance > 0]).tolist())
    assert len(seen) >= 8


def test_cli_writes_loadable_npz(tmp_path: Path) -> None:
    assert generate_rooms_main(["--out", str(tmp_path), "--count", "2", "--seed", "5",
                                "--points", "3000"]) == 0  # fmt: skip
    files = sorted(tmp_path.glob("*.npz"))
    assert [f.stem for f in files] == ["room_000005", "room_000006"]
    scene = load_npz_scene(files[0])
    np.testing.assert_array_equal(scene.instance, generate_room(5, num_points=3000).instance)


def test_too_few_points_rejected() -> None:
    with pytest.raises(ValueError, match="num_points"):
        generate_room(0, num_points=10)
