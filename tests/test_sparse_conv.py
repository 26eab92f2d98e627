"""Sparse conv: torch backend vs dense convolution (known answers) and vs spconv (same weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dyco_perception.model import SegmentationNetwork
from dyco_perception.model.unet import ResidualBlock, SparseBNReLU, UBlock
from dyco_perception.model.voxelizer import point_features, voxelize
from dyco_perception.sparse import SparseConv, SparseVoxels, spconv_available

from dyco_perception.config import ModelConfig

needs_spconv = pytest.mark.skipif(not spconv_available(), reason="spconv.pytorch not importable")
SIDE = 12


def random_voxels(
    num: int = 600, channels: int = 3, batch_size: int = 2, seed: int = 0
) -> SparseVoxels:
    gen = torch.Generator().manual_seed(seed)
    coords = torch.randint(0, SIDE, (num, 4), generator=gen)
    coords[:, 0] = torch.randint(0, batch_size, (num,), generator=gen)
    coords = torch.unique(coords, dim=0)
    coords = coords[torch.randperm(len(coords), generator=gen)]  # unsorted input order
    features = torch.randn(len(coords), channels, generator=gen, dtype=torch.float64)
    return SparseVoxels(features, coords, 1, (SIDE, SIDE, SIDE), batch_size)


def dense(x: SparseVoxels, side: int) -> torch.Tensor:
    grid = torch.zeros(x.batch_size, x.features.shape[1], side, side, side, dtype=torch.float64)
    b, i, j, k = x.coords.T
    grid[b, :, i, j, k] = x.features
    return grid


def sample(grid: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    b, i, j, k = coords.T
    return grid[b, :, i, j, k]


def conv_weight_as_dense(layer: SparseConv) -> torch.Tensor:
    """Neutral (k^3, in, out) -> conv3d layout (out, in, k, k, k)."""
    k = layer.kernel_size
    return (
        layer.weight.detach()
        .double()
        .reshape(k, k, k, layer.in_channels, layer.out_channels)
        .permute(4, 3, 0, 1, 2)
    )


def test_submanifold_conv_matches_dense_conv_at_active_voxels() -> None:
    x = random_voxels()
    layer = SparseConv(3, 5, "subm", backend="torch").double()
    out = layer(x)
    expected = sample(F.conv3d(dense(x, SIDE), conv_weight_as_dense(layer), padding=1), x.coords)
    assert torch.equal(out.coords, x.coords)
    torch.testing.assert_close(out.features, expected)


def test_down_and_up_conv_match_dense_strided_and_transposed_conv() -> None:
    x = random_voxels()
    down = SparseConv(3, 4, "down", backend="torch").double()
    up = SparseConv(4, 2, "up", backend="torch").double()
    coarse = down(x)
    assert coarse.stride == 2 and coarse.spatial_shape == (SIDE // 2,) * 3
    expected_coords = torch.unique(torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2], 1), dim=0)
    assert torch.equal(torch.unique(coarse.coords, dim=0), expected_coords)
    dense_down = F.conv3d(dense(x, SIDE), conv_weight_as_dense(down), stride=2)
    torch.testing.assert_close(coarse.features, sample(dense_down, coarse.coords))
    fine = up(coarse)
    assert torch.equal(fine.coords, x.coords)
    up_weight = conv_weight_as_dense(up).transpose(0, 1)  # conv_transpose3d: (in, out, k, k, k)
    dense_up = F.conv_transpose3d(dense(coarse, SIDE // 2), up_weight, stride=2)
    torch.testing.assert_close(fine.features, sample(dense_up, x.coords))


def test_scenes_of_a_batch_do_not_mix() -> None:
    x = random_voxels(batch_size=2)
    layer = SparseConv(3, 3, "subm", backend="torch").double()
    both = layer(x).features
    first = x.coords[:, 0] == 0
    alone = SparseVoxels(x.features[first], x.coords[first], 1, x.spatial_shape, 1)
    torch.testing.assert_close(both[first], layer(alone).features)


@needs_spconv
@pytest.mark.parametrize("kinds", [["subm"], ["down"], ["down", "subm", "up"]])
def test_backends_agree_on_random_voxels_forward_and_backward(kinds: list[str]) -> None:
    x = random_voxels()
    x = SparseVoxels(x.features.float(), x.coords, 1, x.spatial_shape, x.batch_size)
    channels = [3, 6, 6, 4]
    torch.manual_seed(0)  # the layers' initial weights
    layers = [SparseConv(channels[i], channels[i + 1], k) for i, k in enumerate(kinds)]
    results = {}
    for backend in ("torch", "spconv"):
        for layer in layers:
            layer.backend = backend
            layer.weight.grad = None
        y = SparseVoxels(x.features, x.coords, 1, x.spatial_shape, x.batch_size)
        for layer in layers:
            y = layer(y)
        order = torch.argsort(_coord_key(y.coords))
        (y.features[order] * torch.arange(y.features.numel()).view_as(y.features)).sum().backward()
        results[backend] = (
            y.coords[order],
            y.features[order].detach(),
            [layer.weight.grad.clone() for layer in layers],
        )
    (c_t, f_t, g_t), (c_s, f_s, g_s) = results["torch"], results["spconv"]
    assert torch.equal(c_t, c_s)
    torch.testing.assert_close(f_t, f_s, atol=1e-5, rtol=1e-5)
    for grad_t, grad_s in zip(g_t, g_s, strict=True):
        # float32 sums of ~1000 weighted terms in another order: rounding scales with the
        # gradient's magnitude, not with each (possibly cancelled) entry.
        scale = float(grad_s.abs().max())
        torch.testing.assert_close(grad_t, grad_s, atol=1e-5 * scale, rtol=1e-4)


def _coord_key(coords: torch.Tensor) -> torch.Tensor:
    return ((coords[:, 0] * 4096 + coords[:, 1]) * 4096 + coords[:, 2]) * 4096 + coords[:, 3]


@needs_spconv
def test_backends_agree_on_a_real_scan_with_the_default_unet(scannet_dir: Path) -> None:
    """One set of weights (default m=16, 7 levels, transformer) in both backends, real scan."""
    torch.manual_seed(0)
    model = SegmentationNetwork(ModelConfig()).eval()
    scan = np.load(scannet_dir / "scene0001_00.npz")
    xyz = torch.from_numpy(scan["xyz"])
    rgb = torch.from_numpy(scan["rgb"]).float() / 127.5 - 1
    batch = torch.zeros(len(xyz), dtype=torch.long)
    features = point_features(xyz, rgb, batch, True, False)
    outputs = {}
    with torch.no_grad():
        for backend in ("torch", "spconv"):
            model.set_backend(backend)
            vox = voxelize(xyz, features, batch, 0.02, 7)
            outputs[backend] = model.backbone(vox.voxels).features
    assert outputs["torch"].shape == (vox.voxels.coords.shape[0], 16)
    assert outputs["torch"].abs().max() > 1e-2  # the comparison is not between zeros
    difference = (outputs["torch"] - outputs["spconv"]).abs().max().item()
    print(f"real scan: max abs difference torch vs spconv = {difference:.3g}")
    assert difference < 1e-4, f"max abs difference {difference}"


def _random_norms(*acts: SparseBNReLU) -> None:
    """Eval statistics far from identity, with variances small enough for eps to matter."""
    for act in acts:
        norm = act.norm
        for tensor, low, high in (
            (norm.running_mean, -1.0, 1.0),
            (norm.running_var, 1e-3, 2e-3),
            (norm.weight.data, 0.5, 2.0),
            (norm.bias.data, -0.5, 0.5),
        ):
            tensor.uniform_(low, high)


def test_residual_block_runs_alike_with_autograd_without_it_and_folded() -> None:
    """An eval residual block gives one output with autograd, without it (the in-place
    inference path) and with its second BN folded into its first conv."""
    torch.manual_seed(0)
    block = ResidualBlock(3, 5).double()
    _random_norms(block.act1, block.act2)
    block.eval()
    x = random_voxels(channels=3)
    expected = block(x).features.detach()
    with torch.no_grad():
        torch.testing.assert_close(block(x).features, expected)
        block.fold_batch_norm()
        torch.testing.assert_close(block(x).features, expected)


def test_a_unet_level_concatenates_its_skip_before_the_upsampled_features() -> None:
    """The decoder side of a level reads cat(skip, up) (PointGroup's channel order, which
    trained weights depend on): with the up conv zeroed, the tail's first `width` input
    channels are the level's block output and the rest are 0."""
    torch.manual_seed(0)
    level = UBlock([4, 8], blocks=1, bottleneck=None).double().eval()
    level.up[1].weight.data.zero_()
    seen: dict[str, torch.Tensor] = {}
    level.blocks.register_forward_hook(lambda _m, _i, out: seen.update(skip=out.features))
    level.tail.register_forward_pre_hook(lambda _m, args: seen.update(merged=args[0].features))
    level(random_voxels(channels=4))
    torch.testing.assert_close(seen["merged"][:, :4], seen["skip"])
    assert torch.all(seen["merged"][:, 4:] == 0)
