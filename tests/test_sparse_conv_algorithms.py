"""Issue 20: gather-GEMM and bf16 algorithms, the measured per-layer table, BN folding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dyco_perception.checkpoint import build_model, load_checkpoint
from dyco_perception.model.voxelizer import point_features, voxelize
from dyco_perception.segmenter import Segmenter
from dyco_perception.sparse import SparseConv, SparseVoxels, spconv_available
from dyco_perception.sparse.algorithms import (
    default_table,
    load_algorithm_table,
    parse_algorithm_table,
)
from test_sparse_conv import conv_weight_as_dense, dense, random_voxels, sample

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "checkpoints" / "tiny_fixture.safetensors"
needs_spconv = pytest.mark.skipif(not spconv_available(), reason="spconv.pytorch not importable")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems; a shared 2-core box


def run(layer: SparseConv, x: SparseVoxels, backend: str, precision: str = "float32"):
    layer.backend, layer.precision = backend, precision
    return layer(x.with_features(x.features))


def real_voxels(scan_sample, channels: int = 6) -> SparseVoxels:
    xyz, rgb = scan_sample("scene0001_00", 6000)
    points = torch.from_numpy(xyz)
    colours = torch.from_numpy(rgb).float() / 127.5 - 1
    batch = torch.zeros(len(points), dtype=torch.long)
    features = point_features(points, colours, batch, True, True)[:, :channels]
    return voxelize(points, features, batch, 0.04, 3).voxels


def test_gather_gemm_matches_dense_conv_and_the_per_offset_path() -> None:
    """Against F.conv3d: an asymmetric random kernel catches a flipped neighbour offset."""
    x = random_voxels()
    layer = SparseConv(3, 5, "subm").double()
    expected = sample(F.conv3d(dense(x, 12), conv_weight_as_dense(layer), padding=1), x.coords)
    torch.testing.assert_close(run(layer, x, "gemm").features, expected)
    torch.testing.assert_close(run(layer, x, "torch").features, expected)
    assert layer.last_algorithm == "torch"


def test_gather_gemm_backward_equals_the_per_offset_path() -> None:
    x = random_voxels()
    features = x.features.clone().requires_grad_(True)
    layer = SparseConv(3, 4, "subm").double()
    grads = {}
    for backend in ("torch", "gemm"):
        layer.weight.grad, features.grad = None, None
        out = run(layer, x.with_features(features), backend).features
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        grads[backend] = (layer.weight.grad.clone(), features.grad.clone())
    for a, b in zip(grads["torch"], grads["gemm"], strict=True):
        torch.testing.assert_close(a, b)


@needs_spconv
def test_every_algorithm_agrees_on_real_coordinates(scan_sample) -> None:
    x = real_voxels(scan_sample)
    torch.manual_seed(0)
    layer = SparseConv(6, 16, "subm")
    with torch.no_grad():
        reference = run(layer, x, "torch").features
        for backend in ("gemm", "spconv"):
            torch.testing.assert_close(run(layer, x, backend).features, reference)
        for backend in ("torch", "gemm"):  # bfloat16 matmuls: ~3 significant digits
            out = run(layer, x, backend, "bfloat16").features
            assert layer.last_algorithm == f"{backend}_bf16"
            torch.testing.assert_close(out, reference, atol=0.05, rtol=0.02)


def test_bfloat16_is_inference_only() -> None:
    layer = SparseConv(3, 4, "subm")
    x = random_voxels()
    x = x.with_features(x.features.float())
    with pytest.raises(RuntimeError, match="inference-only"):
        run(layer, x, "gemm", "bfloat16")


def test_auto_trains_on_the_old_path_and_infers_from_the_table() -> None:
    x = random_voxels()
    x = x.with_features(x.features.float())
    layer = SparseConv(3, 4, "subm", backend="auto")
    layer(x)
    assert layer.last_algorithm == ("spconv" if spconv_available() else "torch")
    with torch.no_grad():
        layer(x)
    table = default_table()
    assert table is not None, "sparse/algorithms.yaml is shipped"
    expected = table.choose("subm", len(x.coords), 3, 4, "float32", {layer.last_algorithm})
    assert layer.last_algorithm == expected


def test_the_table_picks_the_fastest_allowed_algorithm_of_the_nearest_shape() -> None:
    table = parse_algorithm_table(
        {
            "layers": [
                {
                    "kind": "subm",
                    "voxels": 100,
                    "c_in": 64,
                    "c_out": 64,
                    "ms": {"torch": 2.0, "gemm": 1.0, "gemm_bf16": 0.5},
                },
                {
                    "kind": "subm",
                    "voxels": 20000,
                    "c_in": 16,
                    "c_out": 16,
                    "ms": {"torch": 5.0, "gemm": 9.0},
                },
            ]
        }
    )
    usable = {"torch", "gemm", "gemm_bf16"}
    assert table.choose("subm", 120, 64, 64, "float32", usable) == "gemm"
    assert table.choose("subm", 120, 64, 64, "bfloat16", usable) == "gemm_bf16"
    assert table.choose("subm", 30000, 16, 16, "float32", usable) == "torch"
    assert table.choose("down", 30000, 16, 32, "float32", usable) is None


def test_a_level_does_not_build_two_kinds_of_maps_to_save_less_than_one_costs() -> None:
    """Per layer spconv is faster, but the level already needs pairs for its faster torch layer
    and spconv's maps cost more than spconv saves: the level runs torch throughout."""
    layers = [
        {
            "kind": "subm",
            "voxels": 1000,
            "c_in": 8,
            "c_out": 8,
            "ms": {"torch": 1.0, "spconv": 0.9},
            "count": 2,
        },
        {
            "kind": "subm",
            "voxels": 1000,
            "c_in": 16,
            "c_out": 8,
            "ms": {"torch": 1.0, "spconv": 2.0},
        },
    ]
    usable = {"torch", "spconv"}
    cheap_maps = parse_algorithm_table(
        {"layers": layers, "maps": [{"voxels": 1000, "ms": {"pairs": 1.0, "spconv": 0.1}}]}
    )
    dear_maps = parse_algorithm_table(
        {"layers": layers, "maps": [{"voxels": 1000, "ms": {"pairs": 1.0, "spconv": 5.0}}]}
    )
    assert cheap_maps.choose("subm", 1000, 8, 8, "float32", usable) == "spconv"
    assert dear_maps.choose("subm", 1000, 8, 8, "float32", usable) == "torch"
    assert dear_maps.level_plan(1000, usable) == {"torch"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layers: []", "'layers' is empty"),
        ("[1, 2]", "expected a mapping with a 'layers' list"),
        (
            "layers: [{kind: conv, voxels: 1, c_in: 1, c_out: 1, ms: {torch: 1}}]",
            r"layers\[0\].kind: 'conv'",
        ),
        (
            "layers: [{kind: subm, voxels: 0, c_in: 1, c_out: 1, ms: {torch: 1}}]",
            r"layers\[0\].voxels",
        ),
        (
            "layers: [{kind: down, voxels: 9, c_in: 1, c_out: 1, ms: {gemm: 1}}]",
            r"ms.gemm: not an algorithm for kind 'down'",
        ),
        (
            "layers: [{kind: subm, voxels: 9, c_in: 1, c_out: 1, ms: {torch: -1}}]",
            r"ms.torch: expected positive",
        ),
        (
            "layers: [{kind: subm, voxels: 9, c_in: 1, c_out: 1, ms: {torch: 1}, speed: 2}]",
            r"unknown keys \['speed'\]",
        ),
        ("layers: [{kind: subm", "not valid YAML"),
        (
            "{layers: [{kind: up, voxels: 9, c_in: 1, c_out: 1, ms: {torch: 1}}],"
            " maps: [{voxels: 9, ms: {hash: 1}}]}",
            r"maps\[0\].ms.hash: not a map kind",
        ),
        (
            "{layers: [{kind: up, voxels: 9, c_in: 1, c_out: 1, ms: {torch: 1}}], speed: 1}",
            r"unknown keys \['speed'\]",
        ),
    ],
)
def test_the_table_loader_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "algorithms.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_algorithm_table(path)


def test_the_shipped_table_loads() -> None:
    table = default_table()
    assert table is not None and {e.kind for e in table.layers} == {"subm", "down", "up"}


# ---- batch norm folded into the convs ------------------------------------------------------
def tiny_model():
    state, card = load_checkpoint(TINY)
    return build_model(state, card)


def backbone_features(model, scan_sample, dtype=torch.float32):
    xyz, rgb = scan_sample("scene0001_00", 4000)
    points = torch.from_numpy(xyz)
    colours = torch.from_numpy(rgb).float() / 127.5 - 1
    batch = torch.zeros(len(points), dtype=torch.long)
    cfg = model.cfg
    features = point_features(points, colours, batch, cfg.voxel.use_rgb, cfg.voxel.use_xyz)
    vox = voxelize(points, features.to(dtype), batch, cfg.voxel.voxel_size, cfg.backbone.levels)
    with torch.no_grad():
        return model.backbone(vox.voxels).features


def test_fused_model_equals_the_unfused_one(scan_sample) -> None:
    """float64 and a tight tolerance: an unscaled bias or an ignored BN eps fails here."""
    plain, fused = tiny_model().eval().double(), tiny_model().double().fuse_for_inference()
    for model in (plain, fused):
        model.set_backend("torch")
    expected = backbone_features(plain, scan_sample, torch.float64)
    got = backbone_features(fused, scan_sample, torch.float64)
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_fused_segmenter_gives_the_same_labels(scan_sample) -> None:
    xyz, rgb = scan_sample("scene0001_00", 5000)
    fused = Segmenter.from_checkpoint(TINY, device="cpu")
    plain = Segmenter.from_checkpoint(TINY, device="cpu", backend="torch", fuse=False)
    a, b = fused.segment(xyz, rgb), plain.segment(xyz, rgb)
    assert np.array_equal(a.semantic, b.semantic)
    assert np.array_equal(a.instance, b.instance)


def test_fusing_keeps_the_state_dict_and_refuses_training() -> None:
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fuse_for_inference()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(RuntimeError, match="cannot train"):
        model.train()
    with pytest.raises(RuntimeError, match="cannot train"):
        model.backbone.train()  # a submodule too
    model.eval()  # eval stays allowed (the Segmenter restores the mode it found)


NO_SPCONV_AT_INFERENCE = """
import sys
import numpy as np
from dyco_perception.segmenter import Segmenter
segmenter = Segmenter.from_checkpoint(sys.argv[1], device="cpu")
scan = np.load(sys.argv[2])
result = segmenter.segment(scan["xyz"][:5000], scan["rgb"][:5000])
print(len(result.semantic), "spconv" in " ".join(sys.modules))
"""


def test_cpu_inference_never_imports_spconv(scannet_dir) -> None:
    """Importing spconv costs 6-12 s (its GPU kernel catalogue, built in Python) at every node
    start; CPU inference ("auto") must run without it."""
    import subprocess
    import sys
    from pathlib import Path

    checkpoint = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny_fixture.safetensors"
    scan = scannet_dir / "scene0001_00.npz"
    done = subprocess.run(
        [sys.executable, "-c", NO_SPCONV_AT_INFERENCE, str(checkpoint), str(scan)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5000", "False"], done.stdout
