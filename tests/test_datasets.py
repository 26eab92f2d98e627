"""Scene readers: scannet50k npz, PointGroup .pth, S3DIS rooms; npz writer and splits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from dyco_perception.scenes import IGNORE, Scene, load_npz_scene, make_scene, save_scene_npz
from dyco_training.datasets import (
    SCANNET50K_DIR,
    list_npz_scans,
    list_s3dis_rooms,
    load_pointgroup_pth,
    load_s3dis_room,
    load_scene,
    split_names,
)

from dyco_perception import classes

SCANNET50K = SCANNET50K_DIR
needs_scannet = pytest.mark.skipif(
    not SCANNET50K.is_dir(), reason=f"real scans not found at {SCANNET50K}"
)
CHAIR = classes.SEMANTIC_CLASSES.index("chair")
TABLE = classes.SEMANTIC_CLASSES.index("table")
BOOKSHELF = classes.SEMANTIC_CLASSES.index("bookshelf")
WALL, FLOOR = 0, 1


@needs_scannet
def test_real_npz_scan_follows_scene_conventions() -> None:
    raw = np.load(SCANNET50K / "scene0009_00.npz")
    scene = load_npz_scene(SCANNET50K / "scene0009_00.npz")
    assert scene.name == "scene0009_00"
    assert scene.xyz.dtype == np.float32 and scene.rgb.dtype == np.uint8
    assert scene.semantic.dtype == np.int64 and scene.instance.dtype == np.int64
    # Semantic ids agree with the NYU40 labels; unknown NYU40 ids are ignored.
    np.testing.assert_array_equal(scene.semantic, classes.nyu40_to_semantic(raw["sem_nyu40"]))
    stuff_or_ignored = np.isin(scene.semantic, [WALL, FLOOR, IGNORE])
    assert np.all(scene.instance[stuff_or_ignored] == 0)
    ids = np.unique(scene.instance[scene.instance > 0])
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))
    # Renumbering keeps the grouping: each new id is exactly one original object.
    for new_id in ids[:10]:
        assert np.unique(raw["instance"][scene.instance == new_id]).size == 1
    assert scene.num_instances > 5


@needs_scannet
def test_split_keeps_rooms_apart_and_selects_names() -> None:
    val = list_npz_scans(SCANNET50K, split="val")
    train = list_npz_scans(SCANNET50K, split="train")
    assert [p.stem for p in val] == [
        "scene0009_00", "scene0009_01", "scene0009_02", "scene0010_00", "scene0010_01",
    ]  # fmt: skip
    assert len(train) == 15 and not {p.stem[:9] for p in train} & {"scene0009", "scene0010"}
    picked = list_npz_scans(SCANNET50K, names=["scene0002_01", "scene0001_00"])
    assert [p.stem for p in picked] == ["scene0001_00", "scene0002_01"]
    with pytest.raises(ValueError, match="not found"):
        list_npz_scans(SCANNET50K, names=["scene9999_00"])


def test_split_names_groups_rescans() -> None:
    split = split_names(["scene0010_01", "scene0001_00", "room_00007", "scene0009_00"])
    assert split == {
        "train": ["room_00007", "scene0001_00"],
        "val": ["scene0009_00", "scene0010_01"],
    }


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    semantic = np.array([WALL, FLOOR, CHAIR, CHAIR, TABLE, IGNORE, BOOKSHELF])
    instance = np.array([9, 9, 4, 4, 7, 3, 12])
    scene = make_scene(rng.normal(size=(7, 3)), rng.integers(0, 256, (7, 3)), semantic, instance,
                       "s")  # fmt: skip
    assert scene.instance.tolist() == [0, 0, 1, 1, 2, 0, 3]
    path = save_scene_npz(scene, tmp_path / "s.npz")
    raw = np.load(path)
    assert raw["sem_nyu40"].dtype == np.uint16 and raw["instance"].dtype == np.uint16
    assert raw["sem_nyu40"].tolist() == [1, 2, 5, 5, 7, 0, 10]
    back = load_scene(path)
    np.testing.assert_array_equal(back.xyz, scene.xyz)
    np.testing.assert_array_equal(back.rgb, scene.rgb)
    np.testing.assert_array_equal(back.semantic, scene.semantic)
    np.testing.assert_array_equal(back.instance, scene.instance)


def _pointgroup_tuple(n: int = 6) -> tuple[np.ndarray, ...]:
    xyz = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    rgb = np.linspace(-1, 1, n * 3).reshape(n, 3).astype(np.float32)
    semantic = np.array([WALL, CHAIR, CHAIR, TABLE, IGNORE, TABLE], dtype=np.int64)[:n]
    instance = np.array([-100, 0, 0, 1, -100, 2], dtype=np.int64)[:n]
    return xyz, rgb, semantic, instance


def test_pointgroup_pth_numpy_tuple(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "scene0123_00_inst_nostuff.pth"
    torch.save(_pointgroup_tuple(), path)
    scene = load_pointgroup_pth(path)
    assert scene.name == "scene0123_00"
    assert scene.rgb[0].tolist() == [0, 15, 30] and scene.rgb[-1, -1] == 255
    assert scene.semantic.tolist() == [WALL, CHAIR, CHAIR, TABLE, IGNORE, TABLE]
    # -100 -> 0; PointGroup's 0-based ids become 1-based, in order.
    assert scene.instance.tolist() == [0, 1, 1, 2, 0, 3]


def test_pointgroup_pth_tensor_tuple(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "t.pth"
    torch.save(tuple(torch.from_numpy(a) for a in _pointgroup_tuple()), path)
    assert load_pointgroup_pth(path).instance.tolist() == [0, 1, 1, 2, 0, 3]


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_pointgroup_pth_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "evil.pth"
    torch.save((*_pointgroup_tuple(), _Payload()), path)
    with pytest.raises(ValueError, match="refusing"):
        load_pointgroup_pth(path)


def _write_annotation(room: Path, name: str, xyz: np.ndarray, rgb: tuple[int, int, int]) -> None:
    rows = np.hstack([xyz, np.tile(rgb, (len(xyz), 1))])
    np.savetxt(room / "Annotations" / name, rows, fmt="%.3f %.3f %.3f %d %d %d")


def _s3dis_room(room: Path, files: list[tuple[str, int, tuple[int, int, int]]], seed: int) -> Path:
    """A room directory whose Annotations hold (name, point count, colour) files of random
    points, written in order from one generator."""
    (room / "Annotations").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name, count, rgb in files:
        _write_annotation(room, f"{name}.txt", rng.random((count, 3)), rgb)
    return room


def test_s3dis_room_maps_classes_and_instances(tmp_path: Path) -> None:
    room = _s3dis_room(
        tmp_path / "Area_2" / "office_3",
        [
            ("chair_1", 5, (10, 20, 30)),
            ("chair_2", 4, (10, 20, 30)),
            ("wall_1", 3, (200, 200, 200)),
            ("bookcase_1", 2, (1, 2, 3)),
            ("clutter_4", 2, (1, 2, 3)),
            ("board_1", 2, (1, 2, 3)),
        ],
        seed=1,
    )
    with open(room / "Annotations" / "chair_2.txt", "a") as f:
        f.write("1.0 2.0 \x10 3 4 5\n")  # S3DIS ships a few corrupt lines like this

    scene = load_scene(room)
    assert scene.name == "Area_2_office_3" and scene.num_points == 18
    by_class = {c: scene.instance[scene.semantic == c] for c in (CHAIR, WALL, BOOKSHELF)}
    assert by_class[CHAIR].size == 9 and np.unique(by_class[CHAIR]).size == 2
    assert np.all(by_class[WALL] == 0) and np.unique(by_class[BOOKSHELF]).size == 1
    assert np.sum(scene.semantic == IGNORE) == 4  # clutter + board
    assert scene.rgb[scene.semantic == WALL].tolist() == [[200, 200, 200]] * 3
    assert list_s3dis_rooms(tmp_path) == [room]
    assert load_s3dis_room(room, max_points=10).num_points == 10


def test_bad_inputs_raise_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="semantic id"):
        make_scene(np.zeros((2, 3)), np.zeros((2, 3)), np.array([0, 25]), np.zeros(2), "x")
    with pytest.raises(ValueError, match="shape"):
        make_scene(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros(2), np.zeros(2), "x")
    np.savez(tmp_path / "bad.npz", xyz=np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="missing arrays"):
        load_npz_scene(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="unknown scan layout"):
        load_scene(tmp_path)


def test_instances_are_numbered_from_one_and_non_finite_xyz_is_refused(tmp_path: Path) -> None:
    """make_scene numbers instances 1..K even when every point has one (0 means none); ids
    up to uint16's maximum save; a scene with NaN xyz is refused."""
    rng = np.random.default_rng(1)
    xyz, rgb = rng.normal(size=(3, 3)), np.zeros((3, 3), np.uint8)
    scene = make_scene(xyz, rgb, np.full(3, CHAIR), np.array([7, 7, 2]), "all")
    assert scene.instance.tolist() == [2, 2, 1]
    scene.instance = np.array([0, 1, 40_000])
    assert load_npz_scene(save_scene_npz(scene, tmp_path / "s.npz")).instance.tolist() == [0, 1, 2]
    scene.instance = np.array([0, 1, 65_535])  # uint16's maximum itself fits
    assert load_npz_scene(save_scene_npz(scene, tmp_path / "m.npz")).instance.tolist() == [0, 1, 2]
    scene.instance = np.array([0, 1, 70_000])
    with pytest.raises(ValueError, match="uint16"):
        save_scene_npz(scene, tmp_path / "t.npz")
    with pytest.raises(ValueError, match="NaN"):
        make_scene(np.full((3, 3), np.nan), rgb, np.full(3, CHAIR), np.ones(3), "nan")


def test_scene_checks_take_exactly_the_valid_values(tmp_path: Path) -> None:
    """Semantic ids 0..19 or -100 (20 and -1 refused); every per-point array one row per
    point; xyz finite (inf refused too); npz rgb uint8 with all four arrays present."""
    xyz, rgb = np.zeros((2, 3)), np.zeros((2, 3), np.uint8)
    scene = make_scene(xyz, rgb, np.array([19, IGNORE]), np.array([1, 1]), "ok")
    assert scene.semantic.tolist() == [19, IGNORE]
    with pytest.raises(ValueError, match="semantic id 20 outside"):
        make_scene(xyz, rgb, np.array([0, 20]), np.zeros(2), "x")
    with pytest.raises(ValueError, match=r"must be 0\.\.19 or -100"):
        make_scene(xyz, rgb, np.array([0, -1]), np.zeros(2), "x")
    with pytest.raises(ValueError, match="instance has shape"):
        Scene(xyz.astype(np.float32), rgb, np.zeros(2, np.int64), np.zeros(3, np.int64), "x")
    with pytest.raises(ValueError, match="NaN or inf"):
        make_scene(np.array([[0, 0, 0], [0, np.inf, 0]]), rgb, np.zeros(2), np.zeros(2), "x")
    np.savez(tmp_path / "f.npz", xyz=xyz.astype(np.float32), rgb=rgb.astype(np.float64),
             sem_nyu40=np.zeros(2, np.uint16), instance=np.zeros(2, np.uint16))  # fmt: skip
    with pytest.raises(ValueError, match="rgb must be uint8"):
        load_npz_scene(tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", rgb=rgb, sem_nyu40=np.zeros(2), instance=np.zeros(2))
    with pytest.raises(ValueError, match=r"missing arrays \['xyz'\]"):
        load_npz_scene(tmp_path / "g.npz")


def test_a_scene_counts_its_instances_not_the_unlabelled_points() -> None:
    scene = make_scene(np.zeros((4, 3)), np.zeros((4, 3)), np.full(4, CHAIR), [0, 3, 3, 5], "s")
    assert scene.instance.tolist() == [0, 1, 1, 2] and scene.num_instances == 2


def test_a_split_other_than_train_or_val_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        list_npz_scans(tmp_path, split="all")


@needs_scannet
def test_named_scans_are_taken_within_the_split() -> None:
    """split and names together: the named scans of that split only (a training scan named
    with the val split is not returned)."""
    picked = list_npz_scans(SCANNET50K, split="val", names=["scene0001_00", "scene0009_01"])
    assert [p.stem for p in picked] == ["scene0009_01"]


def test_pointgroup_pth_refuses_colours_outside_minus_one_one(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    xyz, rgb, semantic, instance = _pointgroup_tuple()
    path = tmp_path / "raw_colours.pth"
    torch.save((xyz, rgb * 255.0, semantic, instance), path)  # 0..255, not PointGroup's layout
    with pytest.raises(ValueError, match=r"rgb must lie in \[-1, 1\]"):
        load_pointgroup_pth(path)


def test_s3dis_first_annotation_file_is_an_instance_and_unknown_classes_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each annotation file of a thing class is one instance, the first (sorted) one too; a
    class neither mapped nor known-ignored is ignored and named in the warning, alone."""
    files = [("chair_1", 3), ("clutter_1", 2), ("sink_1", 2), ("table_1", 4)]
    room = _s3dis_room(
        tmp_path / "Area_1" / "office_1", [(name, n, (1, 2, 3)) for name, n in files], seed=0
    )
    with caplog.at_level("WARNING"):
        scene = load_s3dis_room(room)
    assert scene.semantic.tolist() == [CHAIR] * 3 + [IGNORE] * 4 + [TABLE] * 4
    assert scene.num_instances == 2 and np.all(scene.instance[:3] > 0)
    assert "unknown S3DIS classes ignored: ['sink']" in caplog.text


def test_s3dis_rooms_of_the_chosen_areas_and_annotations_need_six_columns(tmp_path: Path) -> None:
    for area, name in ((1, "office_1"), (2, "hallway_1"), (2, "office_2")):
        (tmp_path / f"Area_{area}" / name / "Annotations").mkdir(parents=True)
    assert [r.name for r in list_s3dis_rooms(tmp_path, areas=[2])] == ["hallway_1", "office_2"]
    with pytest.raises(ValueError, match="no S3DIS rooms"):
        list_s3dis_rooms(tmp_path, areas=[5])
    room = tmp_path / "Area_1" / "office_1"
    np.savetxt(room / "Annotations" / "chair_1.txt", np.ones((3, 4)), fmt="%.1f")  # x y z r
    with pytest.raises(ValueError, match="need 6 columns"):
        load_s3dis_room(room)


def test_exactly_the_20_nyu40_ids_map_to_semantic_ids_and_back() -> None:
    """The benchmark's 20 NYU40 ids (otherfurniture, 39, the last) map to 0..19 in list order
    and back; the other ids of 0..255 are ignored; ids outside 0..255 are refused."""
    semantic = classes.nyu40_to_semantic(np.arange(256))
    assert np.flatnonzero(semantic != IGNORE).tolist() == sorted(classes.NYU40_IDS)
    assert semantic[list(classes.NYU40_IDS)].tolist() == list(range(20))
    assert semantic[39] == classes.SEMANTIC_CLASSES.index("otherfurniture") == 19
    np.testing.assert_array_equal(classes.semantic_to_nyu40(np.arange(20)), classes.NYU40_IDS)
    assert classes.nyu40_to_semantic(np.array([], np.int64)).shape == (0,)
    for bad in ([-1], [5, 256]):
        with pytest.raises(ValueError, match=r"0\.\.255"):
            classes.nyu40_to_semantic(np.array(bad))
