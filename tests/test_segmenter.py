"""Segmenter: input handling (bad, degenerate, huge), result contract, determinism."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from dyco_perception.checkpoint import ModelCard, save_checkpoint
from dyco_perception.model import SegmentationNetwork
from dyco_perception.model.decoders import DECODERS
from dyco_perception.segmenter import BlockRun, SegmentationResult, Segmenter, _describe
from dyco_perception.tiling import MergedInstances, TilingConfig

from dyco_perception import classes
from dyco_perception.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "backbone": {"width": 4, "levels": 3, "backend": "torch"},
    "transformer": {"heads": 2},
    "grouping": {"min_points": 5},
    "inference": {"min_instance_points": 5, "score_threshold": 0.0},
}


def make_segmenter(**overrides: dict) -> Segmenter:
    torch.manual_seed(0)
    data = {**TINY, **overrides}
    return Segmenter.from_model(SegmentationNetwork(ModelConfig.from_dict(data)), device="cpu")


@pytest.fixture(scope="module")
def segmenter() -> Segmenter:
    return make_segmenter()


@pytest.fixture(scope="module")
def cloud() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 2, (3000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (3000, 3), dtype=np.uint8)
    return xyz, rgb


def check_contract(result, n: int) -> None:
    assert result.semantic.shape == (n,) and result.semantic.dtype == np.int64
    assert result.instance.shape == (n,) and result.instance.dtype == np.int32
    assert result.score.shape == (n,) and result.score.dtype == np.float32
    ids = sorted(set(result.instance.tolist()) - {0})
    assert ids == [inst.id for inst in result.instances] == list(range(1, len(ids) + 1))
    for inst in result.instances:
        assert np.array_equal(np.flatnonzero(result.instance == inst.id), inst.point_indices)
        assert inst.num_points == len(inst.point_indices)
        assert np.all(result.score[inst.point_indices] == np.float32(inst.score))
        probs = inst.class_probs
        assert probs.shape == (classes.NUM_SEMANTIC_CLASSES,) and probs.dtype == np.float32
        assert (probs >= 0).all() and probs.sum() <= 1 + 1e-5
        assert (probs[list(classes.STUFF_CLASS_IDS)] == 0).all()
    assert (result.score[result.instance == 0] == 0).all()


def test_result_contract_and_float64_input(segmenter, cloud) -> None:
    xyz, rgb = cloud
    result = segmenter.segment(xyz.astype(np.float64), rgb)
    check_contract(result, len(xyz))
    assert result.num_dropped_points == 0
    assert (result.semantic >= 0).all() and (result.semantic < 20).all()
    assert {"backbone", "grouping", "decoding", "postprocess", "total"} <= set(result.timings)
    same = segmenter.segment(xyz, rgb)
    assert np.array_equal(same.semantic, result.semantic)


def test_instances_found_on_a_real_scan_are_consistent(segmenter, scannet_dir: Path) -> None:
    scan = np.load(scannet_dir / "scene0001_00.npz")
    result = segmenter.segment(scan["xyz"][:20000], scan["rgb"][:20000])
    check_contract(result, 20000)
    for inst in result.instances:
        pts = scan["xyz"][:20000][inst.point_indices]
        np.testing.assert_allclose(inst.box_center, (pts.min(0) + pts.max(0)) / 2, atol=1e-5)
        np.testing.assert_allclose(inst.centroid, pts.mean(0), atol=1e-4)


def test_trained_tiny_checkpoint_finds_the_objects_of_its_scan(scannet_dir: Path) -> None:
    """The trained fixture (`make tiny-fixture`, fitted to scene0001_00) run like a user would:
    real instances, each consistent, of thing classes, most of them right (AP50 0.71 when
    trained; a broken pipeline between checkpoint and result finds none)."""
    from dyco_perception.evaluation import evaluate_predictions
    from dyco_perception.scenes import load_npz_scene

    scene = load_npz_scene(scannet_dir / "scene0001_00.npz")
    trained = Segmenter.from_checkpoint(REPO / "checkpoints" / "tiny_fixture.safetensors", "cpu")
    result = trained.segment(scene.xyz, scene.rgb)
    check_contract(result, len(scene.xyz))
    assert len(result.instances) >= 10
    assert all(inst.class_id in classes.INSTANCE_CLASS_IDS for inst in result.instances)
    metrics = evaluate_predictions([(scene.semantic, scene.instance, result.instances)])
    assert metrics["AP50"] >= 0.5


def test_same_input_same_output(segmenter, cloud) -> None:
    xyz, rgb = cloud
    a, b = segmenter.segment(xyz, rgb), segmenter.segment(xyz.copy(), rgb.copy())
    assert np.array_equal(a.semantic, b.semantic)
    assert np.array_equal(a.instance, b.instance)
    assert np.array_equal(a.score, b.score)


def test_non_finite_rows_are_dropped_and_counted(segmenter, cloud) -> None:
    xyz, rgb = cloud
    bad = xyz.copy()
    bad[[3, 10]] = np.nan
    bad[20, 1] = np.inf
    bad[30, 2] = -np.inf  # each column is checked
    bad[40, 0] = np.nan
    result = segmenter.segment(bad, rgb)
    check_contract(result, len(xyz))
    dropped = [3, 10, 20, 30, 40]
    assert result.num_dropped_points == len(dropped)
    assert (result.semantic[dropped] == -1).all()
    assert (result.instance[dropped] == 0).all()
    assert (np.delete(result.semantic, dropped) >= 0).all()


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_point_clouds(segmenter, n: int) -> None:
    result = segmenter.segment(np.zeros((n, 3), np.float32), np.zeros((n, 3), np.uint8))
    check_contract(result, n)
    assert result.instances == []


def test_all_identical_points_and_all_nan(segmenter) -> None:
    result = segmenter.segment(np.ones((500, 3)), np.full((500, 3), 0.5))
    check_contract(result, 500)
    assert len(set(result.semantic.tolist())) == 1  # one voxel: one prediction
    nan = segmenter.segment(np.full((4, 3), np.nan), np.zeros((4, 3), np.uint8))
    assert nan.num_dropped_points == 4 and (nan.semantic == -1).all()


@pytest.mark.parametrize(
    ("xyz", "rgb", "fragment"),
    [
        (np.zeros((5, 2)), np.zeros((5, 3), np.uint8), r"shape \(N, 3\)"),
        (np.zeros((5, 3), np.int32), np.zeros((5, 3), np.uint8), "float32/float64"),
        ([[0.0, 0.0, 0.0]], np.zeros((1, 3), np.uint8), "numpy array"),
        (np.zeros((5, 3)), None, "uses colour"),
        (np.zeros((5, 3)), np.zeros((4, 3), np.uint8), r"rgb must have shape \(5, 3\)"),
        (np.zeros((5, 3)), np.zeros((5, 3), np.int64), "uint8"),
        (np.zeros((5, 3)), np.full((5, 3), 200.0), "0..1"),
        (np.zeros((5, 3)), np.full((5, 3), -0.1), "0..1"),
    ],
)
def test_bad_input_raises_a_specific_value_error(segmenter, xyz, rgb, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        segmenter.segment(xyz, rgb)


def test_xyz_only_model_accepts_no_rgb() -> None:
    seg = make_segmenter(voxel={"use_rgb": False, "use_xyz": True})
    result = seg.segment(np.random.default_rng(1).uniform(0, 1, (400, 3)))
    check_contract(result, 400)


def test_voxel_cap_coarsens_with_a_warning(cloud) -> None:
    seg = make_segmenter(voxel={"max_voxels": 1000})
    xyz, rgb = cloud
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = seg.segment(xyz, rgb)
    assert any("max_voxels" in str(w.message) for w in caught)
    assert result.voxel_size > 0.02
    cells = np.floor(xyz / result.voxel_size).astype(np.int64)
    assert len(np.unique(cells, axis=0)) <= 1000
    check_contract(result, len(xyz))


def test_the_voxel_cap_counts_a_cloud_below_the_origin_like_one_above_it() -> None:
    """An 11^3 lattice of voxel centres holds 1331 voxels wherever it sits: at negative
    coordinates too it exceeds max_voxels=1000 and is voxelized coarser, with a warning."""
    seg = make_segmenter(voxel={"max_voxels": 1000})
    size = seg.cfg.voxel.voxel_size
    cells = np.stack(np.meshgrid(*[np.arange(11)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for shift in (0.0, -5.0):
        xyz = ((cells + 0.5) * size + shift).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = seg.segment(xyz, np.zeros((len(xyz), 3), np.uint8))
        assert any("max_voxels" in str(w.message) for w in caught)
        assert result.coarse_blocks == 1 and result.voxel_size > size


def test_a_map_reports_its_most_approximate_transformer_mode() -> None:
    result = SegmentationResult(
        semantic=np.zeros(0, np.int64),
        instance=np.zeros(0, np.int32),
        score=np.zeros(0, np.float32),
    )

    def block(mode: str) -> BlockRun:
        return BlockRun((), 0.02, False, 10, mode, {})

    block("windowed").report_to(result, {})
    block("global").report_to(result, {})
    block("off").report_to(result, {})
    assert result.transformer == "windowed"


def test_run_time_settings_reach_the_decoder(scannet_dir: Path) -> None:
    """A card's run-time settings outside `inference:` (`grouping.min_points`,
    `mask_head.mask_threshold`) change what the same weights return on a real scan."""
    from dyco_perception.scenes import load_npz_scene

    scene = load_npz_scene(scannet_dir / "scene0001_00.npz")
    path = REPO / "checkpoints" / "tiny_fixture.safetensors"

    def instances(**changes) -> list:
        return (
            Segmenter.from_checkpoint(path, "cpu", inference=changes or None)
            .segment(scene.xyz, scene.rgb)
            .instances
        )

    found = instances()
    assert len(found) >= 10
    assert instances(**{"grouping.min_points": 1_000_000}) == []  # no cluster is that large
    looser = instances(**{"mask_head.mask_threshold": 0.05})
    assert sum(i.num_points for i in looser) > sum(i.num_points for i in found)


def test_from_checkpoint_matches_from_model(tmp_path: Path, segmenter, cloud) -> None:
    path = save_checkpoint(
        tmp_path / "m.safetensors", segmenter.model, ModelCard.for_config(segmenter.cfg)
    )
    loaded = Segmenter.from_checkpoint(path, device="cpu", backend="torch")
    xyz, rgb = cloud
    assert np.array_equal(loaded.segment(xyz, rgb).semantic, segmenter.segment(xyz, rgb).semantic)


def test_unknown_backend_and_device_are_refused(tmp_path: Path, segmenter) -> None:
    path = save_checkpoint(
        tmp_path / "m.safetensors", segmenter.model, ModelCard.for_config(segmenter.cfg)
    )
    with pytest.raises(ValueError, match="backend"):
        Segmenter.from_checkpoint(path, device="cpu", backend="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Segmenter.from_checkpoint(path, device="cuda")


def test_segment_leaves_a_training_model_in_training_mode(cloud) -> None:
    model = SegmentationNetwork(ModelConfig.from_dict(TINY)).train()
    seg = Segmenter.from_model(model)
    xyz, rgb = cloud
    a = seg.segment(xyz, rgb)
    assert model.training
    assert np.array_equal(a.semantic, seg.segment(xyz, rgb).semantic)  # BN used running stats


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_every_decoder_returns_valid_results_on_degenerate_clouds(decoder: str) -> None:
    """One point, identical points, a thin line, scattered points: each method's own candidate
    search (clusters, heat-map peaks, farthest-point seeds) meets clouds it cannot group."""
    path = (
        Path(__file__).resolve().parents[1] / "checkpoints" / f"{decoder}_scannet_m16.safetensors"
    )
    segmenter = Segmenter.from_checkpoint(path, device="cpu")
    rng = np.random.default_rng(0)
    line = np.linspace(0, 5, 500, dtype=np.float32)
    clouds = [
        np.zeros((1, 3), np.float32),
        np.ones((10, 3), np.float32),
        np.c_[line, 0 * line, 0 * line],
        rng.random((300, 3)).astype(np.float32),
    ]
    for xyz in clouds:
        result = segmenter.segment(xyz, np.full((len(xyz), 3), 128, np.uint8))
        assert result.instance.shape == (len(xyz),) and result.semantic.shape == (len(xyz),)
        ids = sorted(inst.id for inst in result.instances)
        assert ids == list(range(1, len(ids) + 1))
        assert set(np.unique(result.instance)) - {0} == set(ids)


def _best_iou(mask: np.ndarray, others: list[np.ndarray]) -> float:
    return max(((mask & o).sum() / (mask | o).sum() for o in others), default=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("decoder", ["dyco3d", "dknet", "isbnet"])
def test_cuda_segmentation_matches_cpu(decoder: str) -> None:
    """The GPU path is the CPU path's twin: a trained model segments a furnished room the same
    on both (float32 both; only summation order differs)."""
    from dyco_perception.data.room_generator import generate_room

    scene = generate_room(5, num_points=30000)
    path = REPO / "checkpoints" / f"{decoder}_scannet_m16.safetensors"
    cpu, gpu = (
        Segmenter.from_checkpoint(path, device=device, backend="torch").segment(
            scene.xyz, scene.rgb
        )
        for device in ("cpu", "cuda")
    )
    check_contract(gpu, len(scene.xyz))
    assert (cpu.semantic == gpu.semantic).mean() > 0.99
    assert len(cpu.instances) > 0
    gpu_masks = [gpu.instance == inst.id for inst in gpu.instances]
    matched = [_best_iou(cpu.instance == inst.id, gpu_masks) > 0.9 for inst in cpu.instances]
    assert np.mean(matched) > 0.9 and abs(len(cpu.instances) - len(gpu.instances)) <= 2


def test_float_colours_reach_one_and_rows_with_non_finite_colours_are_dropped(
    segmenter, cloud
) -> None:
    """Float rgb lies in 0..1 inclusive (white is 1.0); a row whose colour is NaN or inf is
    dropped and counted like a row with a non-finite xyz."""
    xyz, rgb = cloud
    colours = rgb.astype(np.float32) / 255.0
    colours[0] = 1.0
    colours[5, 1], colours[7, 2] = np.nan, np.inf
    result = segmenter.segment(xyz, colours)
    check_contract(result, len(xyz))
    assert result.num_dropped_points == 2
    assert (result.semantic[[5, 7]] == -1).all() and result.semantic[0] >= 0


def test_colours_reach_the_network_in_minus_one_to_one_as_in_training(segmenter) -> None:
    """uint8 0..255 and float 0..1 colours both become rgb / 127.5 - 1 (the range make_batch
    trains on): black -1, white 1."""
    xyz = np.zeros((3, 3), np.float32)
    rgb = np.array([[0, 255, 51], [255, 255, 255], [0, 0, 0]], np.uint8)
    expected = rgb.astype(np.float32) / 127.5 - 1.0
    for colours in (rgb, rgb.astype(np.float32) / 255.0):
        _, rgb_unit, keep = segmenter._check_input(xyz, colours)
        np.testing.assert_allclose(rgb_unit, expected, atol=1e-6, rtol=0)
        assert keep.tolist() == [0, 1, 2]


def test_an_instance_reports_its_box_centre_size_and_mean_point() -> None:
    """Instance geometry from its kept points: the box is their min/max corners (centre and
    size), the centroid their mean, which differ for an uneven object."""
    xyz = np.array([[1, 1, 1], [1, 1, 1], [1, 3, 1], [5, 1, 2], [9, 9, 9]], np.float32)
    keep = np.array([0, 2, 3, 5, 6])  # rows 1 and 4 of the input were dropped
    result = SegmentationResult(
        semantic=np.full(7, -1), instance=np.zeros(7, np.int32), score=np.zeros(7, np.float32)
    )
    result.instance[keep] = [1, 1, 1, 1, 0]
    merged = MergedInstances(
        semantic=np.full(5, 5),
        instance=result.instance[keep],
        score=np.array([0.8, 0.8, 0.8, 0.8, 0], np.float32),
        class_id=np.array([5]),
        instance_score=np.array([0.8], np.float32),
        class_probs=np.zeros((1, classes.NUM_SEMANTIC_CLASSES), np.float32),
    )
    (inst,) = _describe(result, merged, xyz, keep)
    assert inst.point_indices.tolist() == [0, 2, 3, 5] and inst.num_points == 4
    np.testing.assert_allclose(inst.box_center, [3.0, 2.0, 1.5])
    np.testing.assert_allclose(inst.box_size, [4.0, 2.0, 1.0])
    np.testing.assert_allclose(inst.centroid, [2.0, 1.5, 1.25])


def test_a_block_of_exactly_max_voxels_keeps_the_model_voxel_size() -> None:
    """voxel.max_voxels is the most voxels a block may hold: a lattice filling exactly that
    many voxels is segmented at the model's voxel size, without a warning."""
    seg = make_segmenter(voxel={"max_voxels": 1000})
    cells = np.stack(np.meshgrid(*[np.arange(10)] * 3, indexing="ij"), -1).reshape(-1, 3)
    xyz = ((cells + 0.5) * seg.cfg.voxel.voxel_size).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = seg.segment(xyz, np.zeros((1000, 3), np.uint8))
    assert result.voxel_size == seg.cfg.voxel.voxel_size and result.coarse_blocks == 0


def test_a_map_reports_the_largest_voxel_size_of_its_blocks(cloud) -> None:
    """With tiling, a dense block voxelized coarser and a sparse block at the model's size:
    the result reports the coarser size (the largest a block used), and one coarse block."""
    seg = make_segmenter(voxel={"max_voxels": 1000})
    seg.tiling = TilingConfig(block_size=1.0, overlap=0.0, min_block_size=0.5).validate()
    xyz, rgb = cloud
    dense = xyz * np.float32(0.45)  # 3000 points in x < 0.9: far more than 1000 voxels
    sparse = dense[:200] + np.float32([1.1, 0.0, 0.0])  # 200 points in x > 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = seg.segment(np.concatenate([dense, sparse]), np.concatenate([rgb, rgb[:200]]))
    assert result.block_points == [3000, 200] and result.coarse_blocks == 1
    assert result.voxel_size > seg.cfg.voxel.voxel_size


def test_a_class_geometry_mode_without_the_cards_prior_is_refused() -> None:
    """A model whose inference wants the class-geometry prior cannot run from a card that
    holds none: the Segmenter refuses it when built, not at the first cloud."""
    inference = {**TINY["inference"], "class_geometry": "alone"}
    model = SegmentationNetwork(ModelConfig.from_dict({**TINY, "inference": inference}))
    with pytest.raises(ValueError, match="class_geometry"):
        Segmenter.from_model(model, device="cpu")
