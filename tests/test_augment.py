"""Augmentation: known answers for each transform and the crop's budget/label alignment."""

import numpy as np
import pytest
import torch
from dyco_perception.scenes import make_scene
from dyco_training.augment import (
    AugmentConfig,
    augment_scene,
    colour_augment,
    crop_to_budget,
    elastic_distortion,
    linear_transform,
    rotation_z,
)
from dyco_training.data import augmented_sample, make_batch, overlay, training_sample


def _cloud(n=2000, seed=0, size=(4.0, 3.0, 2.5)):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 3)) * np.asarray(size)).astype(np.float32)


def _pairwise(x):
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


def test_rotation_about_z_keeps_distances_and_height():
    xyz = _cloud(200)
    rotated = xyz @ rotation_z(1.234)
    np.testing.assert_allclose(_pairwise(rotated), _pairwise(xyz), atol=1e-5)
    np.testing.assert_allclose(rotated[:, 2], xyz[:, 2], atol=1e-6)
    # A quarter turn maps the x axis onto +-y (row-vector convention: xyz @ R).
    np.testing.assert_allclose(
        np.abs(np.array([[1.0, 0, 0]]) @ rotation_z(np.pi / 2)), [[0, 1, 0]], atol=1e-12
    )


def test_rigid_chain_without_jitter_or_scale_is_an_isometry():
    cfg = AugmentConfig(scale_min=1.0, scale_max=1.0, matrix_jitter_std=0.0, flip_x_prob=1.0)
    m = linear_transform(cfg, np.random.default_rng(3))
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(m) == pytest.approx(-1.0)  # a mirror (flip) and a rotation


def test_scaling_scales_distances_by_the_drawn_factor():
    cfg = AugmentConfig(scale_min=1.5, scale_max=1.5, matrix_jitter_std=0.0, flip_x_prob=0.0)
    xyz = _cloud(100)
    out = xyz @ linear_transform(cfg, np.random.default_rng(0))
    np.testing.assert_allclose(_pairwise(out), 1.5 * _pairwise(xyz), rtol=1e-5, atol=1e-5)


def test_elastic_is_smooth_and_bounded():
    rng = np.random.default_rng(1)
    xyz = _cloud(5000, size=(3.0, 3.0, 2.0))
    magnitude = 0.8
    shift = elastic_distortion(xyz, 0.12, magnitude, rng) - xyz
    assert np.abs(shift).max() > 0.01  # it does move points
    # Bounded: each component is magnitude * a convex combination of blurred N(0,1) values;
    # two 3-tap box blurs per axis shrink the std to ~0.11, so 6 sigma is ~0.7 * magnitude.
    assert np.abs(shift).max() < 0.7 * magnitude
    # Smooth: points 5 mm apart move almost together (far less than the shift itself).
    near = xyz + np.float32(0.005)
    shift_near = elastic_distortion(
        np.vstack([xyz, near]), 0.12, magnitude, np.random.default_rng(7)
    ) - np.vstack([xyz, near])
    diff = np.abs(shift_near[:5000] - shift_near[5000:])
    # Piecewise-linear on a 12 cm grid: a 5 mm step changes the shift by ~5/120 of the
    # neighbouring cells' difference, so on average only a few % of the typical shift.
    assert diff.mean() < 0.15 * np.abs(shift_near[:5000]).mean()
    assert diff.max() < 0.5 * np.abs(shift_near[:5000]).max()


def test_crop_respects_budget_and_keeps_a_box():
    xyz = _cloud(20000, size=(8.0, 6.0, 2.5))
    rows = crop_to_budget(xyz, 5000, np.random.default_rng(0))
    assert 0 < len(rows) <= 5000
    assert len(np.unique(rows)) == len(rows)
    # Every point inside the kept xy box is kept (a box region, not a random subsample).
    lo, hi = xyz[rows, :2].min(0), xyz[rows, :2].max(0)
    inside = np.all((xyz[:, :2] >= lo) & (xyz[:, :2] <= hi), axis=1)
    assert set(np.flatnonzero(inside)) == set(rows.tolist())


def test_crop_keeps_everything_under_budget_and_rejects_bad_budget():
    xyz = _cloud(100)
    np.testing.assert_array_equal(
        crop_to_budget(xyz, 100, np.random.default_rng(0)), np.arange(100)
    )
    with pytest.raises(ValueError, match="max_points"):
        crop_to_budget(xyz, 0, np.random.default_rng(0))


def test_augment_scene_keeps_labels_aligned_with_points():
    xyz = _cloud(8000, size=(6.0, 6.0, 2.5))
    rgb = np.random.default_rng(2).integers(0, 256, (8000, 3)).astype(np.uint8)
    cfg = AugmentConfig(
        max_points=3000, scale_min=1.0, scale_max=1.0, matrix_jitter_std=0.0, elastic_prob=0.0
    )
    out_xyz, out_rgb, rows = augment_scene(xyz, rgb, cfg, np.random.default_rng(5))
    assert len(out_xyz) == len(out_rgb) == len(rows) <= 3000
    np.testing.assert_array_equal(out_rgb, rgb[rows].astype(np.float32))  # no colour jitter
    # Rigid transform: distances between kept points are the originals' distances.
    sample = np.arange(0, len(rows), max(1, len(rows) // 150))
    np.testing.assert_allclose(_pairwise(out_xyz[sample]), _pairwise(xyz[rows][sample]), atol=1e-4)
    assert np.allclose(out_xyz.min(0), 0.0)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"augment\.flip_x_prob"):
        AugmentConfig.from_dict({"flip_x_prob": 2.0})
    with pytest.raises(ValueError, match=r"augment\.mix_prob"):
        AugmentConfig.from_dict({"mix_prob": -0.5})
    with pytest.raises(ValueError, match=r"augment\.elastic\[1\]\.granularity"):
        AugmentConfig.from_dict(
            {
                "elastic": [
                    {"granularity": 0.1, "magnitude": 0.1},
                    {"granularity": -1.0, "magnitude": 0.1},
                ]
            }
        )
    with pytest.raises(ValueError, match="scale_min"):
        AugmentConfig.from_dict({"scale_min": 1.2, "scale_max": 1.1})
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig.from_dict({"flip_y_prob": 0.5})
    cfg = AugmentConfig.from_dict({"elastic": [{"granularity": 0.2, "magnitude": 0.5}]})
    assert len(cfg.elastic) == 1 and cfg.elastic[0].granularity == 0.2


def _colours(n=500, seed=3):
    return np.random.default_rng(seed).integers(0, 256, (n, 3)).astype(np.float32)


def test_colour_shift_moves_every_point_by_one_offset():
    rgb = _colours()
    out = colour_augment(rgb, AugmentConfig(colour_shift_std=20.0), np.random.default_rng(1))
    offset = out - rgb
    assert np.allclose(offset, offset[0]) and np.abs(offset[0]).max() > 1.0


def test_colour_dropout_greys_the_whole_scene_at_its_rate():
    rgb = _colours()
    always = colour_augment(rgb, AugmentConfig(colour_dropout_prob=1.0), np.random.default_rng(0))
    assert np.all(always == 127.5)
    rng = np.random.default_rng(4)
    cfg = AugmentConfig(colour_dropout_prob=0.3)
    dropped = [np.all(colour_augment(rgb, cfg, rng) == 127.5) for _ in range(400)]
    assert 0.22 < np.mean(dropped) < 0.38


def test_colour_augmentation_off_leaves_colours_and_the_random_stream_alone():
    rgb = _colours()
    rng = np.random.default_rng(9)
    np.testing.assert_array_equal(colour_augment(rgb, AugmentConfig(), rng), rgb)
    assert rng.random() == np.random.default_rng(9).random()  # nothing was drawn


# --- Mix3D: a second scene overlaid ------------------------------------------------------------


def _sample(xyz, sem, inst):
    n = len(xyz)
    return {
        "xyz": np.asarray(xyz, np.float32),
        "rgb": np.full((n, 3), 7.0 * n, np.float32),
        "sem": np.asarray(sem),
        "inst": np.asarray(inst),
    }


def test_overlay_centres_the_second_scene_on_the_first_floors_meeting_and_keeps_instances_apart():

    base = _sample([[0, 0, 0], [2, 2, 1], [1, 1, 0.5], [2, 0, 0]], [1, 5, 5, 2], [0, 1, 2, 2])
    other = _sample([[10, 5, 3], [14, 6, 4], [12, 5, 3.5]], [3, 4, 4], [0, 1, 3])
    mixed = overlay(base, other)
    assert len(mixed["xyz"]) == 7
    top, bottom = mixed["xyz"][:4], mixed["xyz"][4:]
    # The first scene keeps its shape; the second is only translated.
    np.testing.assert_allclose(top - top[0], base["xyz"] - base["xyz"][0], atol=1e-6)
    np.testing.assert_allclose(bottom - bottom[0], other["xyz"] - other["xyz"][0], atol=1e-6)
    centre = lambda xyz: (xyz[:, :2].min(0) + xyz[:, :2].max(0)) / 2  # noqa: E731
    np.testing.assert_allclose(centre(bottom), centre(top), atol=1e-6)
    assert bottom[:, 2].min() == pytest.approx(top[:, 2].min())
    np.testing.assert_allclose(mixed["xyz"].min(0), 0.0, atol=1e-6)
    np.testing.assert_array_equal(mixed["sem"], [1, 5, 5, 2, 3, 4, 4])
    np.testing.assert_array_equal(mixed["inst"], [0, 1, 2, 2, 0, 3, 5])  # 0 stays "no instance"
    np.testing.assert_array_equal(mixed["rgb"][:, 0], [28] * 4 + [21] * 3)


def _flat_scene(name, semantic, instances, seed):

    rng = np.random.default_rng(seed)
    n = 3000
    xyz = (rng.random((n, 3)) * np.array([5.0, 4.0, 2.0])).astype(np.float32)
    instance = 1 + (np.arange(n) % instances)
    return make_scene(xyz, np.zeros((n, 3), np.uint8), np.full(n, semantic), instance, name)


def test_training_sample_mixes_at_its_rate_within_the_point_budget():

    scene, partner = _flat_scene("a", 5, 3, 0), _flat_scene("b", 8, 4, 1)
    cfg = AugmentConfig(max_points=2000, elastic_prob=0.0, mix_prob=0.5)
    rng = np.random.default_rng(3)
    mixed = 0
    for _ in range(200):
        sample = training_sample(scene, cfg, rng, 0.0, [partner])
        assert len(sample["xyz"]) <= 2000
        if 8 in sample["sem"]:
            mixed += 1
            own = sample["sem"] == 5
            assert own.sum() <= 1000 and (~own).sum() <= 1000  # half the budget each
            assert set(sample["inst"][own]).isdisjoint(sample["inst"][~own])
    assert 70 <= mixed <= 130


def test_without_mixing_or_a_pool_the_sample_and_random_stream_are_unchanged():

    scene, partner = _flat_scene("a", 5, 3, 0), _flat_scene("b", 8, 4, 1)
    cfg = AugmentConfig(max_points=2000)
    for mix_cfg, pool in ((cfg, [partner]), (AugmentConfig(max_points=2000, mix_prob=1.0), None)):
        got = training_sample(scene, mix_cfg, np.random.default_rng(4), 0.0, pool)
        want = augmented_sample(scene, cfg, np.random.default_rng(4), 0.0)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_the_mixed_partner_is_drawn_from_the_whole_pool():

    scene = _flat_scene("a", 5, 3, 0)
    pool = [_flat_scene(name, cls, 2, seed) for name, cls, seed in (("b", 6, 1), ("c", 7, 2))]
    pool.append(_flat_scene("d", 8, 2, 3))
    cfg = AugmentConfig(max_points=2000, elastic_prob=0.0, mix_prob=1.0)
    rng = np.random.default_rng(6)
    partners = set()
    for _ in range(40):
        classes = set(training_sample(scene, cfg, rng, 0.0, pool)["sem"].tolist())
        assert 5 in classes and len(classes) == 2  # the scene itself and one partner
        partners |= classes - {5}
    assert partners == {6, 7, 8}


def test_a_flip_without_rotation_mirrors_x_only():
    """flip_x_prob=1, no rotation, jitter or scaling: the transform is diag(-1, 1, 1)."""
    cfg = AugmentConfig(
        flip_x_prob=1.0, rotate_z=False, scale_min=1.0, scale_max=1.0, matrix_jitter_std=0.0
    )
    m = linear_transform(cfg, np.random.default_rng(0))
    np.testing.assert_allclose(m, np.diag([-1.0, 1.0, 1.0]))


def test_elastic_displacement_scales_with_magnitude_and_reaches_every_point():
    """Same noise (same seed): magnitude 2 moves each point twice as far as magnitude 1, and
    the noise grid covers the whole cloud (no point, not even at the far corner, is left
    unmoved)."""
    xyz = _cloud(500, seed=4)
    xyz = np.vstack([xyz, xyz.max(0)])  # the far corner itself
    one = elastic_distortion(xyz, 0.5, 1.0, np.random.default_rng(1)) - xyz
    two = elastic_distortion(xyz, 0.5, 2.0, np.random.default_rng(1)) - xyz
    np.testing.assert_allclose(two, 2 * one, rtol=1e-4, atol=1e-6)
    assert (np.abs(one).max(axis=1) > 0).all()


def test_elastic_distortion_moves_the_clouds_corners_about_as_much_as_its_middle():
    """The noise grid reaches a cell beyond the cloud: the blur's zero padding lies outside,
    so the corner points' displacement (rms over 300 draws) is nearly the middle's, not a
    third of it as on the grid's outermost nodes."""
    xyz = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], np.float32)
    rng = np.random.default_rng(0)
    shifts = np.stack([elastic_distortion(xyz, 0.5, 1.0, rng) - xyz for _ in range(300)])
    low, middle, high = np.sqrt((shifts**2).mean(axis=(0, 2)))
    assert low > 0.75 * middle and high > 0.75 * middle


def test_augmented_colours_stay_within_0_255():
    """Colour jitter beyond the range is clipped to 0..255."""
    xyz = _cloud(300, seed=5)
    rgb = np.full_like(xyz, 250.0)
    rgb[::2] = 5.0
    cfg = AugmentConfig(colour_jitter_std=100.0, elastic_prob=0.0)
    _, out, _ = augment_scene(xyz, rgb, cfg, np.random.default_rng(2))
    assert out.min() == 0.0 and out.max() == 255.0


def test_a_fixed_scale_is_a_valid_config():
    """scale_min may equal scale_max (a fixed scale); only min > max is refused."""
    cfg = AugmentConfig.from_dict({"scale_min": 1.0, "scale_max": 1.0})
    assert cfg.scale_min == cfg.scale_max == 1.0


def test_overlay_floors_meet_for_scenes_of_different_heights():
    """The second scene's lowest point is moved to the first's lowest, whatever their tops."""
    base = _sample([[0, 0, 0], [2, 2, 3]], [1, 1], [1, 1])
    other = _sample([[0, 0, 5], [1, 1, 6]], [2, 2], [1, 1])
    mixed = overlay(base, other)
    assert mixed["xyz"][2:, 2].min() == pytest.approx(mixed["xyz"][:2, 2].min())
    assert mixed["xyz"][3, 2] == pytest.approx(1.0)


def test_a_batch_maps_colours_to_minus_one_one_and_no_instance_to_ignore():
    """make_batch: rgb 0..255 -> -1..1; instance 0 (none) becomes -100 (ignored by the
    losses), the others keep their ids."""
    xyz = _cloud(40, seed=6)
    rgb = np.zeros((40, 3), np.uint8)
    rgb[20:] = 255
    instance = np.repeat([0, 1, 2, 3], 10)
    scene = make_scene(xyz, rgb, np.full(40, 4), instance, "s")
    batch = make_batch(
        [scene], AugmentConfig(enabled=False), np.random.default_rng(0), torch.device("cpu")
    )
    assert sorted(batch["instance"].tolist()) == [-100] * 10 + [1] * 10 + [2] * 10 + [3] * 10
    assert sorted(set(batch["rgb"].flatten().tolist())) == [-1.0, 1.0]


def test_a_batch_numbers_its_scenes_in_order():
    """make_batch concatenates the scenes' points with the scene index 0, 1, ... of each."""
    scenes = [
        make_scene(_cloud(n, seed=n), np.zeros((n, 3), np.uint8), np.full(n, 4), np.ones(n), "s")
        for n in (30, 20)
    ]
    batch = make_batch(
        scenes, AugmentConfig(enabled=False), np.random.default_rng(0), torch.device("cpu")
    )
    assert batch["batch"].tolist() == [0] * 30 + [1] * 20


def test_rotation_angles_cover_the_whole_turn():
    """rotate_z draws its angle uniformly in [0, 2 pi) radians: over 400 draws every quarter
    turn occurs (an angle in degrees read as radians would stay below 6.3 degrees)."""
    cfg = AugmentConfig(flip_x_prob=0.0, scale_min=1.0, scale_max=1.0, matrix_jitter_std=0.0)
    rng = np.random.default_rng(0)
    matrices = [linear_transform(cfg, rng) for _ in range(400)]
    angles = [np.arctan2(m[0, 1], m[0, 0]) for m in matrices]
    quarters = np.floor(np.mod(angles, 2 * np.pi) / (np.pi / 2)).astype(int)
    assert np.bincount(quarters, minlength=4).min() > 60


def test_scale_is_drawn_over_the_whole_range():
    """With scale_min 0.5 and scale_max 2 and nothing else, the drawn factor (|det|^(1/3))
    spans the range: its mean is 1.25 and some draws exceed 1.9."""
    cfg = AugmentConfig(
        flip_x_prob=0.0, rotate_z=False, scale_min=0.5, scale_max=2.0, matrix_jitter_std=0.0
    )
    rng = np.random.default_rng(0)
    factors = np.array([np.linalg.det(linear_transform(cfg, rng)) ** (1 / 3) for _ in range(400)])
    assert factors.min() >= 0.5 and factors.max() <= 2.0
    assert factors.mean() == pytest.approx(1.25, abs=0.06) and factors.max() > 1.9


def test_matrix_jitter_has_the_configured_spread():
    """No flip, rotation or scaling: the matrix is I + N(0, std) entry by entry."""
    cfg = AugmentConfig(flip_x_prob=0.0, rotate_z=False, scale_min=1.0, scale_max=1.0)
    rng = np.random.default_rng(0)
    noise = np.stack([linear_transform(cfg, rng) - np.eye(3) for _ in range(300)])
    assert noise.mean() == pytest.approx(0.0, abs=0.01)
    assert noise.std() == pytest.approx(cfg.matrix_jitter_std, rel=0.06)


def test_elastic_noise_is_blurred_twice_along_each_spatial_axis_only():
    """At interior grid nodes the displacement is the blurred noise itself: two 3-tap box blurs
    per axis leave a variance of (19/81)^3 (rms 0.114; one pass would leave 0.192), and the
    three components stay independent (no blur across them)."""
    g = np.arange(15, dtype=np.float32)
    xyz = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    inner = np.all((xyz >= 3) & (xyz <= 11), axis=1)  # out of the zero padding's reach
    rng = np.random.default_rng(0)
    shift = np.concatenate(
        [(elastic_distortion(xyz, 1.0, 1.0, rng) - xyz)[inner] for _ in range(10)]
    )
    assert np.sqrt((shift**2).mean()) == pytest.approx((19 / 81) ** 1.5, rel=0.1)
    correlation = np.corrcoef(shift.T)
    assert np.abs(correlation[np.triu_indices(3, 1)]).max() < 0.15


def test_crop_keeps_a_box_that_just_fits_the_budget():
    """Points at x = 0, 1 and 10, budget 2: a box centred on 0 or 1 (half-width 5) already
    holds exactly 2 points and is kept; one centred on 10 holds only that point."""
    xyz = np.array([[0.0, 0, 0], [1.0, 0, 0], [10.0, 0, 0]], np.float32)
    for seed in range(10):
        rows = crop_to_budget(xyz, 2, np.random.default_rng(seed)).tolist()
        assert rows in ([0, 1], [2])


def test_crop_fills_most_of_its_budget():
    """The box shrinks by 10 % per step, so on a uniform cloud it keeps over 80 % of the
    budget, also through augment_scene."""
    xyz = _cloud(20000, size=(8.0, 6.0, 2.5))
    for seed in range(10):
        assert len(crop_to_budget(xyz, 5000, np.random.default_rng(seed))) > 4000
    cfg = AugmentConfig(max_points=5000, elastic_prob=0.0)
    for seed in range(5):
        _, _, rows = augment_scene(xyz, np.zeros_like(xyz), cfg, np.random.default_rng(seed))
        assert 4000 < len(rows) <= 5000


def test_augment_scene_refuses_colours_that_do_not_match_the_points():
    xyz = _cloud(10)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        augment_scene(xyz, np.zeros((9, 3)), AugmentConfig(), np.random.default_rng(0))
