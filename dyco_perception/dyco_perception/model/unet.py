"""Submanifold sparse-conv U-Net (PointGroup / DyCo3D backbone): widths m, 2m, ..., L*m."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from dyco_perception.sparse import SparseConv, SparseVoxels


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that falls back to its running statistics for a single row in training.

    A cropped training scene can shrink to one voxel at the coarsest level (or one point),
    where batch statistics do not exist; torch's BatchNorm raises there.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] < 2:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class SparseBNReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = BatchNorm1d(channels, eps=1e-4, momentum=0.1)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        return x.with_features(nn.functional.relu(self.norm(x.features)))


class ResidualBlock(nn.Module):
    """Pre-activation block: BN-ReLU-SubM-BN-ReLU-SubM plus a (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.shortcut = nn.Identity() if c_in == c_out else nn.Linear(c_in, c_out, bias=False)
        self.act1 = SparseBNReLU(c_in)
        self.conv1 = SparseConv(c_in, c_out, "subm")
        self.act2 = SparseBNReLU(c_out)
        self.conv2 = SparseConv(c_out, c_out, "subm")

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        y = self.conv2(self.act2(self.conv1(self.act1(x))))
        return y.with_features(y.features + self.shortcut(x.features))


class UBlock(nn.Module):
    """One level: blocks, then (down -> deeper level -> up, concat skip, blocks)."""

    def __init__(
        self,
        widths: list[int],
        blocks: int,
        bottleneck: Callable[[int], nn.Module] | None,
    ):
        super().__init__()
        width = widths[0]
        self.blocks = nn.Sequential(*[ResidualBlock(width, width) for _ in range(blocks)])
        self.is_bottom = len(widths) == 1
        if self.is_bottom:
            self.bottleneck = bottleneck(width) if bottleneck else nn.Identity()
            return
        self.down = nn.Sequential(SparseBNReLU(width), SparseConv(width, widths[1], "down"))
        self.inner = UBlock(widths[1:], blocks, bottleneck)
        self.up = nn.Sequential(SparseBNReLU(widths[1]), SparseConv(widths[1], width, "up"))
        tail = [ResidualBlock(2 * width, width)]
        tail += [ResidualBlock(width, width) for _ in range(blocks - 1)]
        self.tail = nn.Sequential(*tail)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        x = self.blocks(x)
        if self.is_bottom:
            return self.bottleneck(x)
        y = self.up(self.inner(self.down(x)))
        merged = x.with_features(_cat(x.features, y.features))
        return self.tail(merged)


def _cat(a, b):
    import torch

    return torch.cat([a, b], dim=1)


class SparseUNet(nn.Module):
    """Input conv (in -> m), the U of `levels` levels, output BN+ReLU; features at level 0."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        levels: int,
        blocks: int,
        bottleneck: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        self.input_conv = SparseConv(in_channels, width, "subm")
        self.ublock = UBlock([width * (i + 1) for i in range(levels)], blocks, bottleneck)
        self.output = SparseBNReLU(width)

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        return self.output(self.ublock(self.input_conv(x)))


def point_mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    """Linear-BN-ReLU-Linear: the point heads' shape (PointGroup's offset head)."""
    return nn.Sequential(
        nn.Linear(c_in, hidden),
        BatchNorm1d(hidden, eps=1e-4),
        nn.ReLU(),
        nn.Linear(hidden, c_out),
    )
