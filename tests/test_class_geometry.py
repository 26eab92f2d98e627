"""The class-from-geometry prior: features, floor, fit, the two modes, the card, the Segmenter."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from dyco_perception.checkpoint import ModelCard, build_model, load_checkpoint
from dyco_perception.class_geometry import (
    FEATURE_SETS,
    FLOOR_CLASS_ID,
    ClassGeometry,
    floor_height,
    geometry_features,
    instance_features,
)
from dyco_perception.classes import SEMANTIC_CLASSES
from dyco_perception.scenes import load_npz_scene, make_scene
from dyco_perception.segmenter import Segmenter
from dyco_perception.tiling import MergedInstances
from dyco_training.class_geometry import (
    fit_class_geometry,
    gt_instances,
    leave_one_room_out,
    with_class_geometry,
)
from dyco_training.class_geometry import main as class_geometry_main

REPO = Path(__file__).resolve().parents[1]
CHAIR, TABLE, DOOR = (SEMANTIC_CLASSES.index(n) for n in ("chair", "table", "door"))
SIZE = FEATURE_SETS["size"]


def box_corners(low, high, repeat: int = 10) -> np.ndarray:
    """The 8 corners, each `repeat` times: the 2nd and 98th percentiles are the corners."""
    corners = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float)
    points = np.asarray(low) + corners * (np.asarray(high) - np.asarray(low))
    return np.repeat(points, repeat, axis=0)


def test_features_of_a_box_by_hand() -> None:
    # 1.2 m long, 0.5 m deep, from 0.4 to 0.9 m above a floor at 0.1 m.
    box = box_corners([0, 0, 0.5], [0.5, 1.2, 1.0])
    base = [np.log(0.55), np.log(1.25), np.log(0.55), 0.4, 0.9]
    np.testing.assert_allclose(geometry_features(box, 0.1, SIZE), base + [v * v for v in base])
    # Half the corners on top, half at the bottom; footprint variances 0.25^2 and 0.6^2.
    shape = geometry_features(box, 0.1, FEATURE_SETS["size_shape"])[len(SIZE) :]
    np.testing.assert_allclose(shape, [0.5, 0.5, np.log(0.25**2 / 0.6**2 + 1e-6)], rtol=1e-6)
    # A chair-like cloud: a seat of many points at 45 cm, a few leg points below it.
    seat = np.column_stack([np.random.default_rng(0).uniform(0, 0.5, (90, 2)), np.full(90, 0.45)])
    legs = np.column_stack([np.zeros((10, 2)), np.linspace(0, 0.1, 10)])
    top, bottom, _ = geometry_features(np.vstack([seat, legs]), 0.0, FEATURE_SETS["size_shape"])[
        len(SIZE) :
    ]
    assert (top, bottom) == (0.9, 0.1)
    # A flat cloud (a rug): every point is in the bottom fifth, none in the top one.
    rug = np.column_stack([np.random.default_rng(2).uniform(0, 2, (50, 2)), np.full(50, 0.3)])
    shape = geometry_features(rug, 0.0, FEATURE_SETS["size_shape"])[len(SIZE) :]
    assert shape[:2].tolist() == [0.0, 1.0]
    # Heights 0, 0.01, ..., 1: the 2nd-98th percentiles 0.02-0.98, so the top fifth is
    # z > 0.788 (0.79..1.00, 22 points) and the bottom fifth z < 0.212 (0..0.21, 22 points).
    z = np.linspace(0, 1, 101)
    column = np.column_stack([np.random.default_rng(1).uniform(0, 0.5, (101, 2)), z])
    top, bottom, _ = geometry_features(column, 0.0, FEATURE_SETS["size_shape"])[len(SIZE) :]
    assert (top, bottom) == pytest.approx((22 / 101, 22 / 101))


def test_floor_is_the_labelled_floor_or_the_lowest_points() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 3, (1000, 3))
    semantic = np.full(1000, 5)
    semantic[:60], xyz[:60, 2] = FLOOR_CLASS_ID, 0.25
    assert floor_height(xyz, semantic) == pytest.approx(0.25)
    semantic[:10] = 5  # FLOOR_MIN_POINTS (50) floor points are enough to trust
    assert floor_height(xyz, semantic) == pytest.approx(0.25)
    semantic[:20] = 5  # 40 floor points: too few to trust
    assert floor_height(xyz, semantic) == pytest.approx(np.percentile(xyz[:, 2], 1))
    # The median: 51 floor points at 0.25 m outvote 20 mislabelled ones at 2 m (mean 0.74 m).
    semantic[:71], xyz[:71, 2] = FLOOR_CLASS_ID, np.r_[np.full(51, 0.25), np.full(20, 2.0)]
    assert floor_height(xyz, semantic) == pytest.approx(0.25)
    assert floor_height(np.zeros((0, 3)), np.zeros(0, np.int64)) == 0.0  # an empty cloud


def labelled_scene(objects: list[tuple[int, list, list]], name: str = "s", repeat: int = 10):
    """A scene of boxes (class, low, high), each corner `repeat` times, on a labelled floor at
    z = 0."""
    floor = np.column_stack([np.random.default_rng(1).uniform(0, 5, (200, 2)), np.zeros(200)])
    xyz, semantic, instance = [floor], [np.full(200, FLOOR_CLASS_ID)], [np.zeros(200)]
    for k, (class_id, low, high) in enumerate(objects, 1):
        points = box_corners(low, high, repeat)
        xyz.append(points)
        semantic.append(np.full(len(points), class_id))
        instance.append(np.full(len(points), k))
    xyz = np.concatenate(xyz).astype(np.float32)
    rgb = np.zeros((len(xyz), 3), np.uint8)
    return make_scene(xyz, rgb, np.concatenate(semantic), np.concatenate(instance), name)


def synthetic_rooms(count: int, seed: int = 0, repeat: int = 10):
    """Rooms of doors (tall, thin, on the floor), tables (top ~0.75 m) and chairs (small)."""
    rng = np.random.default_rng(seed)
    rooms = []
    for r in range(count):
        objects = []
        for _ in range(4):
            x, y = rng.uniform(0, 4, 2)
            w = rng.uniform(0.8, 1.0)
            objects.append((DOOR, [x, y, 0], [x + w, y + 0.05, rng.uniform(1.9, 2.1)]))
            t = rng.uniform(1.0, 1.6)
            objects.append((TABLE, [x, y, 0], [x + t, y + 0.8, rng.uniform(0.7, 0.8)]))
            c = rng.uniform(0.4, 0.5)
            objects.append((CHAIR, [x, y, 0], [x + c, y + c, rng.uniform(0.8, 0.95)]))
        rooms.append(labelled_scene(objects, f"room{r}", repeat))
    return rooms


def test_fit_learns_classes_that_geometry_tells_apart() -> None:
    prior = fit_class_geometry(synthetic_rooms(3))
    assert prior.class_ids == sorted([CHAIR, TABLE, DOOR])
    assert prior.fitted_on == ["room0", "room1", "room2"]
    features, truth = gt_instances(synthetic_rooms(1, seed=7)[0])
    probs = prior.probabilities(features, len(SEMANTIC_CLASSES))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert (
        probs[:, [i for i in range(len(SEMANTIC_CLASSES)) if i not in prior.class_ids]] == 0
    ).all()
    assert (probs.argmax(1) == truth).all()


def hand_prior(favoured: int, other: int) -> ClassGeometry:
    """A prior that ignores geometry: `favoured` 0.8, `other` 0.2, always."""
    f, bias = len(SIZE), np.log([0.8, 0.2])
    return ClassGeometry(
        class_ids=[favoured, other],
        mean=[0.0] * f,
        std=[1.0] * f,
        weight=[[0.0, 0.0]] * f,
        bias=bias.tolist(),
        features=list(SIZE),
        fitted_on=[],
    )


def test_alone_takes_the_prior_and_combined_multiplies_it_with_the_mask_classes() -> None:
    xyz = box_corners([0, 0, 0], [1, 1, 1])
    semantic, instance = np.full(len(xyz), CHAIR), np.ones(len(xyz), np.int32)
    mask_probs = np.zeros((1, len(SEMANTIC_CLASSES)), np.float32)
    mask_probs[0, [TABLE, CHAIR]] = 0.1, 0.9
    prior = hand_prior(favoured=TABLE, other=CHAIR)
    class_id, probs = prior.relabel("alone", xyz, semantic, instance, mask_probs)
    assert class_id.tolist() == [TABLE]
    assert probs[0, TABLE] == pytest.approx(0.8)
    class_id, probs = prior.relabel("combined", xyz, semantic, instance, mask_probs)
    # 0.8 * 0.1 for table against 0.2 * 0.9 for chair.
    assert class_id.tolist() == [CHAIR]
    assert probs[0, CHAIR] == pytest.approx(0.18 / (0.18 + 0.08))
    # The mask's probabilities to the power 1/4: 0.8 * 0.1^0.25 = 0.450 against 0.195.
    class_id, probs = prior.relabel("combined", xyz, semantic, instance, mask_probs, 0.25)
    assert class_id.tolist() == [TABLE]
    table, chair = 0.8 * 0.1**0.25, 0.2 * 0.9**0.25
    assert probs[0, TABLE] == pytest.approx(table / (table + chair), rel=1e-5)
    mask_probs[0] = 0
    mask_probs[0, DOOR] = 1.0  # nothing in common: the prior decides
    assert prior.relabel("combined", xyz, semantic, instance, mask_probs)[0].tolist() == [TABLE]
    for mode in ("off", "Combined"):  # "off" never gets here: the caller skips the prior
        with pytest.raises(ValueError, match=f"class_geometry mode '{mode}'"):
            prior.relabel(mode, xyz, semantic, instance, mask_probs)


def test_card_refuses_the_mode_without_a_prior_and_a_malformed_prior() -> None:
    card = load_checkpoint(REPO / "checkpoints" / "tiny_fixture.safetensors")[1]
    with pytest.raises(ValueError, match="needs the card's fitted class_geometry"):
        card.with_inference({"class_geometry": "combined"})
    card.class_geometry = hand_prior(TABLE, CHAIR).to_dict()
    restored = ModelCard.from_json(card.with_inference({"class_geometry": "alone"}).to_json())
    assert restored.class_geometry == card.class_geometry
    # A prior written before `fragments` and `balance` existed was fitted without either.
    older = hand_prior(TABLE, CHAIR).to_dict()
    del older["fragments"], older["balance"]
    assert ClassGeometry.from_dict(older).fragments == 0
    card.class_geometry["features"] = ["log_height"]
    with pytest.raises(ValueError, match="are none of this code's sets"):
        ModelCard.from_json(card.to_json())
    card.class_geometry["features"] = list(SIZE)
    card.class_geometry["bias"] = [0.0]
    with pytest.raises(ValueError, match=r"class_geometry\.bias: shape \(1,\)"):
        ModelCard.from_json(card.to_json())


def test_segmenter_relabels_its_instances_by_the_cards_prior(scannet_dir: Path) -> None:
    scene = load_npz_scene(scannet_dir / "scene0001_00.npz")
    path = REPO / "checkpoints" / "tiny_fixture.safetensors"
    plain = Segmenter.from_checkpoint(path, "cpu")
    assert plain.cfg.inference.class_geometry == "off"
    before = plain.segment(scene.xyz, scene.rgb)
    found = before.instances
    assert "class_geometry" not in before.timings
    with pytest.raises(ValueError, match="class_geometry"):  # the card holds no prior
        Segmenter.from_checkpoint(path, "cpu", inference={"class_geometry": "alone"})
    state, card = load_checkpoint(path)
    card.class_geometry = hand_prior(TABLE, CHAIR).to_dict()
    card = card.with_inference({"class_geometry": "alone"})
    segmenter = Segmenter(build_model(state, card), card, "cpu")
    after = segmenter.segment(scene.xyz, scene.rgb)
    relabelled = after.instances
    assert after.timings["class_geometry"] > 0
    assert [i.num_points for i in relabelled] == [i.num_points for i in found]  # same masks
    assert {i.class_name for i in relabelled} == {"table"}
    assert {i.class_name for i in found} != {"table"}


@pytest.mark.parametrize("features", sorted(FEATURE_SETS))
def test_prior_fitted_on_other_rooms_classifies_a_new_one_better_than_the_majority(
    scannet_dir: Path, features: str
) -> None:
    """Leave-one-room-out on real ground truth: fitted on 5 other rooms, the prior labels
    scene0002's objects by their geometry far better than always naming the commonest class."""
    names = ["scene0001_00", "scene0003_00", "scene0004_00", "scene0005_00", "scene0006_00"]
    prior = fit_class_geometry((load_npz_scene(scannet_dir / f"{n}.npz") for n in names), features)
    assert prior.features == list(FEATURE_SETS[features])
    x, truth = gt_instances(load_npz_scene(scannet_dir / "scene0002_00.npz"), features)
    predicted = prior.probabilities(x, len(SEMANTIC_CLASSES)).argmax(1)
    fitted_truth = np.concatenate(
        [gt_instances(load_npz_scene(scannet_dir / f"{n}.npz"))[1] for n in names]
    )
    majority = np.bincount(fitted_truth).argmax()
    assert (predicted == truth).mean() >= (truth == majority).mean() + 0.15


def test_with_class_geometry_fits_on_the_cards_training_scans(scannet_dir: Path) -> None:
    card = load_checkpoint(REPO / "checkpoints" / "tiny_fixture.safetensors")[1]
    card.class_geometry = None
    card.training = {"data": {"real_scans": ["scene0004_00", "scene0007_00"]}}
    fitted = with_class_geometry(card, scannet_dir)
    assert fitted.class_geometry["fitted_on"] == ["scene0004_00", "scene0007_00"]
    ClassGeometry.from_dict(fitted.class_geometry)
    card.training = {}
    card.class_geometry = None
    with pytest.raises(ValueError, match="records no real training scans"):
        with_class_geometry(card, scannet_dir)


def test_a_fragment_is_a_slab_of_half_to_all_of_the_object_along_x_or_y() -> None:
    from dyco_training.class_geometry import fragment

    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0, 0], [2.0, 1.0, 0.8], (4000, 3))
    spans = []
    for _ in range(50):
        part = fragment(points, rng)
        extent = part.max(0) - part.min(0)
        cut = [axis for axis, full in enumerate((2.0, 1.0)) if extent[axis] < 0.97 * full]
        assert len(cut) <= 1 and extent[2] > 0.75  # one horizontal axis cut, height whole
        spans += [extent[axis] / (2.0, 1.0)[axis] for axis in cut]
    assert min(spans) >= 0.48 and max(spans) <= 1.0 and len(spans) >= 20


def test_fragments_add_parts_of_each_instance_with_its_class() -> None:
    rng = np.random.default_rng(0)
    boxes = [(DOOR, [0, 0, 0], [0.9, 0.05, 2.0]), (TABLE, [2, 2, 0], [3.2, 2.8, 0.75])]
    xyz = np.concatenate([rng.uniform(lo, hi, (500, 3)) for _, lo, hi in boxes])
    semantic = np.repeat([c for c, _, _ in boxes], 500)
    instance = np.repeat([1, 2], 500)
    rgb = np.zeros_like(xyz, np.uint8)
    scene = make_scene(xyz.astype(np.float32), rgb, semantic, instance, "s")
    whole, truth = gt_instances(scene, "size_shape")
    with_parts, classes = gt_instances(scene, "size_shape", fragments=3)
    assert len(with_parts) == 4 * len(whole)  # dense boxes: every part keeps >= 10 points
    np.testing.assert_array_equal(classes, np.repeat(truth, 4))
    np.testing.assert_allclose(with_parts[::4], whole)  # the whole instance comes first
    prior = fit_class_geometry([scene], "size_shape", fragments=3)
    assert prior.fragments == 3


def test_relabel_reads_each_instances_own_points() -> None:
    """A fitted prior relabels instances 1..K of a per-point id: each from its own points (a
    door, a table, a chair in one cloud, ids out of cloud order, unassigned points between)."""
    prior = fit_class_geometry(synthetic_rooms(3))
    objects = [
        (TABLE, [0, 0, 0], [1.4, 0.8, 0.75]),
        (DOOR, [3, 0, 0], [3.9, 0.05, 2.0]),
        (CHAIR, [0, 3, 0], [0.45, 3.45, 0.9]),
    ]
    scene = labelled_scene(objects)
    instance = np.zeros(len(scene.xyz), np.int32)
    for k, new_id in zip((1, 2, 3), (3, 1, 2), strict=True):
        instance[scene.instance == k] = new_id  # door = 1, chair = 2, table = 3
    probs = np.zeros((3, len(SEMANTIC_CLASSES)), np.float32)
    class_id, _ = prior.relabel("alone", scene.xyz, scene.semantic, instance, probs)
    assert class_id.tolist() == [DOOR, CHAIR, TABLE]


def test_instance_features_are_each_instances_own_features() -> None:
    """Row k of instance_features holds geometry_features of instance k + 1's points, all of
    them (ids out of cloud order, unassigned points between); an id without points gets 0."""
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 2, (40, 3))
    instance = rng.permutation(np.repeat([0, 2, 1, 0], 10))
    features = instance_features(xyz, instance, 3, 0.1, SIZE)
    for k in (1, 2):
        np.testing.assert_allclose(
            features[k - 1], geometry_features(xyz[instance == k], 0.1, SIZE)
        )
    assert not features[2].any()


def test_a_ground_truth_instance_takes_its_points_majority_class() -> None:
    scene = labelled_scene([(TABLE, [0, 0, 0], [1.4, 0.8, 0.75]), (1, [2, 2, 0], [3, 3, 0.1])])
    first = scene.instance == 1
    semantic = scene.semantic.copy()
    semantic[np.flatnonzero(first)[:30]] = CHAIR  # 30 of its 80 points say chair
    mixed = make_scene(scene.xyz, scene.rgb, semantic, scene.instance, "mixed")
    _, classes = gt_instances(mixed)
    assert classes.tolist() == [TABLE]  # the majority; the floor-labelled box is no instance


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("class_ids", [0, CHAIR], "must be thing classes"),
        ("weight", [[float("nan"), 0.0]] * len(SIZE), "non-finite"),
        ("std", [0.0] * len(SIZE), "std <= 0"),
        ("bias", [float("inf"), 0.0], "non-finite"),
        ("mean", [float("nan")] * len(SIZE), "non-finite"),
        ("class_ids", [], "must be thing classes"),
    ],
)
def test_a_malformed_prior_is_refused(field: str, value, fragment: str) -> None:
    data = {**hand_prior(TABLE, CHAIR).to_dict(), field: value}
    with pytest.raises(ValueError, match=fragment):
        ClassGeometry.from_dict(data)


def test_rescored_instances_are_ranked_again_by_their_new_scores() -> None:
    merged = MergedInstances(
        semantic=np.zeros(6, np.int64),
        instance=np.array([1, 1, 2, 3, 3, 0], np.int32),
        score=np.array([0.9, 0.9, 0.5, 0.4, 0.4, 0.0], np.float32),
        class_id=np.array([CHAIR, TABLE, DOOR]),
        instance_score=np.array([0.9, 0.5, 0.4], np.float32),
        class_probs=np.eye(3, dtype=np.float32),
    )
    rescored = merged.rescored(np.array([0.1, 1.0, 0.5]))  # 0.09, 0.5, 0.2
    assert rescored.instance_score == pytest.approx([0.5, 0.2, 0.09])
    assert rescored.instance.tolist() == [3, 3, 1, 2, 2, 0]  # each point keeps its object
    assert rescored.score == pytest.approx([0.09, 0.09, 0.5, 0.2, 0.2, 0.0])
    assert rescored.class_id.tolist() == [TABLE, DOOR, CHAIR]
    assert rescored.class_probs.argmax(1).tolist() == [1, 2, 0]


def test_segmenter_scores_each_instance_times_the_priors_class_probability(
    scannet_dir: Path,
) -> None:
    scene = load_npz_scene(scannet_dir / "scene0001_00.npz")
    state, card = load_checkpoint(REPO / "checkpoints" / "tiny_fixture.safetensors")
    prior = hand_prior(TABLE, CHAIR)
    prior.weight[SIZE.index("top")] = [4.0, 0.0]  # the taller, the surer of table
    card.class_geometry = prior.to_dict()

    def run(score: bool):
        cfg = card.with_inference({"class_geometry": "alone", "class_geometry_score": score})
        return Segmenter(build_model(state, cfg), cfg, "cpu").segment(scene.xyz, scene.rgb)

    plain, rescored = run(False), run(True)
    assert len(plain.instances) >= 3
    plain_score = {tuple(i.point_indices[:5]): i for i in plain.instances}
    expected = []
    for inst in rescored.instances:
        before = plain_score[tuple(inst.point_indices[:5])]  # the same mask
        expected.append(before.score * before.class_probs[before.class_id])
        assert inst.class_id == before.class_id
        assert (rescored.instance[inst.point_indices] == inst.id).all()
    assert [i.score for i in rescored.instances] == pytest.approx(expected, rel=1e-5)
    assert sorted(expected, reverse=True) == pytest.approx(expected)
    plain_scores = [i.score for i in plain.instances]
    assert [i.score for i in rescored.instances] != pytest.approx(plain_scores)


@pytest.mark.parametrize(("balance", "chair"), [(0.0, 0.9), (0.5, 0.75), (1.0, 0.5)])
def test_class_weights_give_a_rare_class_its_share(balance: float, chair: float) -> None:
    """9 chairs and 1 table of one shape: the prior can only learn their weighted frequencies,
    9:1 unweighted, 9/3:1/1 with count^-0.5 weights, even with count^-1."""
    same_box = [[0, 0, 0], [0.5, 0.5, 0.9]]
    room = labelled_scene([(CHAIR, *same_box)] * 9 + [(TABLE, *same_box)])
    prior = fit_class_geometry([room], balance=balance)
    assert prior.balance == balance
    features, _ = gt_instances(room)
    probs = prior.probabilities(features, len(SEMANTIC_CLASSES))
    assert probs[:, CHAIR] == pytest.approx(np.full(10, chair), abs=1e-4)
    with pytest.raises(ValueError, match=r"balance must be in \[0, 1\], got 1.5"):
        fit_class_geometry([room], balance=1.5)


def test_leave_one_room_out_names_each_room_by_priors_fitted_on_the_others() -> None:
    """Doors, tables and chairs in every room are named right; a class only one room holds
    (sofas) is never named there, as no prior fitted without that room knows it: its sofas are
    named tables, the nearest class it knows, and cost the tables' AP."""
    rooms = synthetic_rooms(3, repeat=13)  # >= 100 points an object, as the benchmark counts
    sofa = SEMANTIC_CLASSES.index("sofa")
    only_here = labelled_scene([(sofa, [0, 0, 0], [2.0, 0.9, 0.85])] * 3, "sofa_room", 13)
    rooms.append(only_here)
    result = leave_one_room_out(rooms)
    per_class = {name: ap[1] for name, ap in result["per_class"].items()}
    assert (per_class["door"], per_class["chair"], per_class["sofa"]) == (1.0, 1.0, 0.0)
    assert per_class["table"] < 1.0
    assert leave_one_room_out(rooms[:3])["AP50"] == 1.0


def test_leave_one_room_out_cli_reports_and_writes_nothing(
    tmp_path: Path, scannet_dir: Path, capsys
) -> None:
    checkpoint = tmp_path / "tiny.safetensors"
    checkpoint.write_bytes((REPO / "checkpoints" / "tiny_fixture.safetensors").read_bytes())
    before = checkpoint.read_bytes()
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("scene0001_00", "scene0002_00"):  # two rooms
        (scans / f"{name}.npz").symlink_to(scannet_dir / f"{name}.npz")
    card = load_checkpoint(checkpoint)[1]
    card.training["data"]["real_scans"] = ["scene0001_00", "scene0002_00"]
    from dyco_training.ledger import rewrite_card

    rewrite_card(checkpoint, lambda _: card)
    before = checkpoint.read_bytes()
    argv = ["--checkpoint", str(checkpoint), "--scans", str(scans), "--leave-one-room-out"]
    assert class_geometry_main([*argv, "--balance", "1"]) == 0
    out = capsys.readouterr().out
    assert "'balance': 1.0" in out and "2 scans" in out
    assert re.search(r"AP50 per class: .*chair \d\.\d{3}", out)
    assert checkpoint.read_bytes() == before
    assert class_geometry_main([*argv, "--balance", "2"]) == 2  # refused with the reason
    assert "balance must be in [0, 1]" in capsys.readouterr().err


def test_segmenter_passes_the_mask_power_to_combined(scannet_dir: Path) -> None:
    """Power 0 leaves the mask's probabilities out: "combined" names what "alone" does, which
    the plain product (power 1) does not on this scan."""
    scene = load_npz_scene(scannet_dir / "scene0001_00.npz")
    state, card = load_checkpoint(REPO / "checkpoints" / "tiny_fixture.safetensors")
    card.class_geometry = hand_prior(TABLE, CHAIR).to_dict()

    def classes(**inference) -> list[int]:
        cfg = card.with_inference(inference)
        result = Segmenter(build_model(state, cfg), cfg, "cpu").segment(scene.xyz, scene.rgb)
        return [i.class_id for i in result.instances]

    alone = classes(class_geometry="alone")
    assert classes(class_geometry="combined", class_geometry_mask_power=0.0) == alone
    assert classes(class_geometry="combined", class_geometry_mask_power=1.0) != alone


def test_top_and_bottom_shares_count_the_points_in_each_fifth_of_the_height() -> None:
    """40 points at the bottom, 40 at the top and one at each tenth between: the top fifth
    (above 0.8 of the height) holds the 40 and the one at 0.9, the bottom fifth (below 0.2)
    the 40 and the one at 0.1; the points at 0.2 ... 0.8 are in neither."""
    z = np.concatenate([np.zeros(40), np.ones(40), np.arange(1, 10) / 10])
    xy = np.random.default_rng(2).uniform(0, 1, (len(z), 2))
    shape = geometry_features(np.column_stack([xy, z]), 0.0, FEATURE_SETS["size_shape"])
    top, bottom, _ = shape[len(SIZE) :]
    assert (top, bottom) == (pytest.approx(41 / 89), pytest.approx(41 / 89))


def test_probabilities_standardise_the_features_by_mean_and_std() -> None:
    """Softmax(((x - mean) / std) @ weight + bias): a feature 2 std above its mean with
    weight 1 for the first class gives logits (1, 0); a far-out instance stays a distribution
    and leaves the others' probabilities alone."""
    weight = [[0.0, 0.0] for _ in SIZE]
    weight[0] = [1.0, 0.0]
    prior = ClassGeometry(
        class_ids=[TABLE, CHAIR],
        mean=[1.0] * len(SIZE),
        std=[2.0] * len(SIZE),
        weight=weight,
        bias=[0.0, 0.0],
        features=list(SIZE),
        fitted_on=[],
    )
    features = np.ones((3, len(SIZE)))
    features[0, 0] = 5.0  # (5 - 1) / 2 = 2 std
    features[2, 0] = 2001.0  # 1000 std
    probs = prior.probabilities(features, len(SEMANTIC_CLASSES))
    assert probs[0, TABLE] == pytest.approx(np.exp(2) / (1 + np.exp(2)))
    assert probs[1, [TABLE, CHAIR]] == pytest.approx([0.5, 0.5])
    assert probs[2, [TABLE, CHAIR]] == pytest.approx([1.0, 0.0])


def test_a_ground_truth_instance_of_ten_points_counts_and_one_of_nine_does_not() -> None:
    """FRAGMENT_MIN_POINTS (10) points are enough for an instance to be fitted on."""
    rng = np.random.default_rng(3)
    xyz = rng.uniform(0, 1, (19, 3)).astype(np.float32)
    semantic = np.array([CHAIR] * 10 + [TABLE] * 9)
    instance = np.repeat([1, 2], [10, 9])
    scene = make_scene(xyz, np.zeros((19, 3), np.uint8), semantic, instance, "small")
    _, classes = gt_instances(scene)
    assert classes.tolist() == [CHAIR]
