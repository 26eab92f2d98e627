"""The native output-stationary submanifold conv (dyco_ops `subm_conv3d`, sparse/native_conv.py)
against the per-offset torch algorithm and a dense conv; its errors; "auto" without the build."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from dyco_perception.model.voxelizer import point_features, voxelize
from dyco_perception.sparse import SparseConv, SparseVoxels, conv, gemm, native_conv
from dyco_perception.sparse.algorithms import parse_algorithm_table
from dyco_perception.sparse.torch_backend import CENTER
from native_ops import assert_releases_gil
from test_sparse_conv import conv_weight_as_dense, dense, random_voxels, sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems; a shared 2-core box
# Channel pairs: the model's widths, odd ones, and ones that take two column blocks + a tail.
CHANNELS = [(6, 16), (16, 16), (32, 32), (48, 48), (5, 7), (3, 70), (7, 56)]
TOL = {"atol": 2e-5, "rtol": 1e-4}  # float32, summed in another order than the reference


@pytest.fixture
def subm_conv3d():
    """The native kernel, or a skip that says why it is not loaded."""
    why = native_conv.unavailable_reason()
    if native_conv.kernel() is None:
        pytest.skip(f"native subm_conv3d not loaded: {why}")
    return native_conv.kernel()


def real_voxels(scan_sample, channels: int) -> SparseVoxels:
    """Level-0 voxels of a real scan (2 cm, ~5 neighbours each) with random features."""
    xyz, rgb = scan_sample("scene0001_00", 20000)
    points = torch.from_numpy(xyz)
    colours = torch.from_numpy(rgb).float() / 127.5 - 1
    batch = torch.zeros(len(points), dtype=torch.long)
    features = point_features(points, colours, batch, True, True)
    x = voxelize(points, features, batch, 0.02, 3).voxels
    gen = torch.Generator().manual_seed(channels)
    return x.with_features(torch.randn(len(x.coords), channels, generator=gen))


def isolated_and_clustered(channels: int) -> SparseVoxels:
    """Voxels with no neighbour at all, a full 3x3x3 block, and the same coordinates in a
    second batch (which must not be neighbours of the first)."""
    block = torch.cartesian_prod(torch.arange(3), torch.arange(3), torch.arange(3)) + 4
    lone = torch.tensor([[0, 0, 0], [9, 0, 9], [0, 9, 0]])
    xyz = torch.cat([lone, block])
    coords = torch.cat([torch.cat([torch.full((len(xyz), 1), b), xyz], 1) for b in (0, 1)])
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(len(coords), channels, generator=gen)
    return SparseVoxels(features, coords, 1, (12, 12, 12), 2)


def reference(x: SparseVoxels, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    layer = SparseConv(weight.shape[1], weight.shape[2], "subm", backend="torch")
    layer.weight.data.copy_(weight)
    out = layer(x.with_features(x.features)).features
    return out if bias is None else out + bias


def random_weight(c_in: int, c_out: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(27, c_in, c_out, generator=torch.Generator().manual_seed(seed)) / c_in**0.5


@pytest.mark.parametrize(("c_in", "c_out"), CHANNELS)
@pytest.mark.parametrize("with_bias", [False, True])
def test_native_equals_the_torch_algorithm_on_a_real_scan(
    subm_conv3d, scan_sample, c_in: int, c_out: int, with_bias: bool
) -> None:
    x = real_voxels(scan_sample, c_in)
    weight = random_weight(c_in, c_out)
    bias = torch.randn(c_out) if with_bias else None
    with torch.no_grad():
        got = native_conv.subm_conv_native(x, weight, bias).features
    torch.testing.assert_close(got, reference(x, weight, bias), **TOL)


@pytest.mark.parametrize(("c_in", "c_out"), [(6, 16), (5, 7), (48, 48)])
def test_native_equals_a_dense_conv_with_isolated_voxels_and_batches(
    subm_conv3d, c_in: int, c_out: int
) -> None:
    """Against F.conv3d in float64: an isolated voxel gets only its centre term, and the
    second batch's copies of the coordinates add nothing."""
    x = isolated_and_clustered(c_in)
    layer = SparseConv(c_in, c_out, "subm")
    layer.weight.data.copy_(random_weight(c_in, c_out, seed=2))
    with torch.no_grad():
        got = native_conv.subm_conv_native(x, layer.weight).features
    dense_out = F.conv3d(
        dense(x.with_features(x.features.double()), 12), conv_weight_as_dense(layer), padding=1
    )
    torch.testing.assert_close(got.double(), sample(dense_out, x.coords), **TOL)
    lone = x.features[:3] @ layer.weight[CENTER]
    torch.testing.assert_close(got[:3], lone, **TOL)


def test_sparse_conv_runs_native_with_a_folded_bias_and_threads_agree(subm_conv3d) -> None:
    x = random_voxels(num=900, channels=16)
    x = x.with_features(x.features.float())
    layer = SparseConv(16, 16, "subm", backend="native")
    layer.fold_scale(torch.rand(16) + 0.5, torch.randn(16))
    with torch.no_grad():
        got = layer(x).features
        assert layer.last_algorithm == "native"
        layer.backend = "torch"
        torch.testing.assert_close(got, layer(x).features, **TOL)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(2)  # rows are independent: any split gives the same bits
            assert torch.equal(
                native_conv.subm_conv_native(x, layer.folded_weight, layer.bias).features, got
            )
        finally:
            torch.set_num_threads(threads)


def test_int32_table_and_empty_input(subm_conv3d) -> None:
    x = isolated_and_clustered(4)
    weight = random_weight(4, 9)
    table = gemm.subm_table(x)
    with torch.no_grad():
        wide = subm_conv3d(x.features, table, weight)
        assert torch.equal(subm_conv3d(x.features, table.int(), weight), wide)
        empty = subm_conv3d(torch.zeros(0, 4), torch.zeros(0, 27, dtype=torch.long), weight)
    assert empty.shape == (0, 9)


def test_native_errors_name_the_wrong_input(subm_conv3d) -> None:
    x = isolated_and_clustered(4)
    f, w, table = x.features, random_weight(4, 8), gemm.subm_table(x)
    v = len(f)
    cases = [
        ((f.double(), table, w, None), "features must be \\(V, Cin\\) float32"),
        ((f.double(), table, w, None), f"float32, got \\[{v}, 4\\] Double$"),  # check.h's format
        ((f, table[:, :26], w, None), f"= \\({v}, 27\\), got \\[{v}, 26\\]$"),
        ((f[0], table, w, None), "features must be"),
        ((f, table[:, :26], w, None), "table must be \\(V, 27\\)"),
        ((f, table[:-1], w, None), "table must be \\(V, 27\\)"),
        ((f, table.float(), w, None), "table must be int64 or int32"),
        ((f, table, random_weight(5, 8), None), "weight must be \\(27, Cin, Cout\\) float32"),
        ((f, table, w[:26], None), "weight must be"),
        ((f, table, w, torch.zeros(7)), "bias must be \\(Cout,\\)"),
        ((f, table.clone().fill_(v + 1), w, None), "table entries must lie in \\[0, V\\]"),
        ((f, table.clone().fill_(-1), w, None), "table entries must lie in \\[0, V\\]"),
    ]
    with torch.no_grad():
        for args, message in cases:
            with pytest.raises(RuntimeError, match=message):
                subm_conv3d(*args)
    with pytest.raises(RuntimeError, match="inference only"):
        subm_conv3d(f, table, w.requires_grad_(True))


def test_native_is_refused_with_a_reason_under_autograd_or_float64(subm_conv3d) -> None:
    x = random_voxels(channels=3)  # float64
    layer = SparseConv(3, 4, "subm", backend="native").double()
    with torch.no_grad(), pytest.raises(RuntimeError, match="float32 features only"):
        layer(x)
    x = x.with_features(x.features.float())
    layer.float()
    with pytest.raises(RuntimeError, match="inference only"):
        layer(x)
    assert "native" not in conv._usable_algorithms("subm", x)
    with torch.no_grad():
        assert "native" in conv._usable_algorithms("subm", x)
        assert "native" not in conv._usable_algorithms("down", x)


def test_auto_skips_native_where_it_is_not_built(monkeypatch) -> None:
    """A table measured with the native kernel still serves a machine without the build: the
    fastest usable algorithm of the entry is chosen instead."""
    monkeypatch.setattr(native_conv, "kernel", lambda: None)
    table = parse_algorithm_table(
        {
            "layers": [
                {
                    "kind": "subm",
                    "voxels": 500,
                    "c_in": 3,
                    "c_out": 4,
                    "ms": {"torch": 2.0, "gemm": 3.0, "native": 0.5},
                }
            ]
        }
    )
    monkeypatch.setattr(conv, "default_table", lambda: table)
    x = random_voxels()
    x = x.with_features(x.features.float())
    layer = SparseConv(3, 4, "subm", backend="auto")
    with torch.no_grad():
        assert "native" not in conv._usable_algorithms("subm", x)
        layer(x)
    assert layer.last_algorithm == "torch"
    assert native_conv.unavailable_reason() is not None
    with torch.no_grad(), pytest.raises(RuntimeError, match="native submanifold conv unavail"):
        native_conv.subm_conv_native(x, layer.weight)


def test_auto_runs_native_where_the_table_says_it_is_fastest(subm_conv3d, monkeypatch) -> None:
    entry = {"kind": "subm", "voxels": 500, "c_in": 3, "c_out": 4}
    table = parse_algorithm_table({"layers": [{**entry, "ms": {"torch": 2.0, "native": 0.5}}]})
    monkeypatch.setattr(conv, "default_table", lambda: table)
    x = random_voxels()
    x = x.with_features(x.features.float())
    layer = SparseConv(3, 4, "subm", backend="auto")
    with torch.no_grad():
        got = layer(x).features
    assert layer.last_algorithm == "native"
    layer(x)  # with autograd: never native
    assert layer.last_algorithm != "native"
    torch.testing.assert_close(got, reference(x, layer.weight.detach(), None), **TOL)


def test_the_portable_build_of_the_kernel_gives_the_same_result(subm_conv3d, tmp_path) -> None:
    """DYCO_OPS_PORTABLE=1 runs the code a CPU without AVX2 gets (a fresh process: the choice
    is made once). Same channel blocks and summation order, so equal up to FMA rounding."""
    x = isolated_and_clustered(7)
    weight, bias = random_weight(7, 61), torch.randn(61)
    table = gemm.subm_table(x)
    torch.save({"f": x.features, "t": table, "w": weight, "b": bias}, tmp_path / "in.pt")
    script = (
        "import torch; from dyco_perception.sparse import native_conv as n; "
        f"d = torch.load({str(tmp_path / 'in.pt')!r}); "
        "torch.set_grad_enabled(False); "
        f"torch.save(n.kernel()(d['f'], d['t'], d['w'], d['b']), {str(tmp_path / 'out.pt')!r})"
    )
    env = {**os.environ, "DYCO_OPS_PORTABLE": "1"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    with torch.no_grad():
        expected = subm_conv3d(x.features, table, weight, bias)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, **TOL)


def test_the_gil_check_fails_a_call_that_holds_the_gil() -> None:
    """The check itself: sorting a million floats is one C call that keeps the GIL."""
    values = torch.rand(1_000_000, generator=torch.Generator().manual_seed(0)).tolist()
    with pytest.raises(AssertionError, match="the GIL was held"):
        assert_releases_gil(lambda: sorted(values))


def test_the_kernel_releases_the_gil_so_blocks_run_side_by_side(subm_conv3d) -> None:
    side = torch.arange(44)
    xyz = torch.cartesian_prod(side, side, side)  # a solid block: 27 neighbours per voxel
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1)
    x = SparseVoxels(torch.randn(len(coords), 32), coords, 1, (44, 44, 44), 1)
    table, weight = gemm.subm_table(x), random_weight(32, 32)
    assert_releases_gil(lambda: subm_conv3d(x.features, table, weight, None))
