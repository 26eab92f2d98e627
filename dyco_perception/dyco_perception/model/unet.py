"""Submanifold sparse-conv U-Net (PointGroup / DyCo3D backbone): widths m, 2m, ..., L*m."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dyco_perception.sparse import SparseConv, SparseVoxels


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that falls back to its running statistics for a single row in training, and
    that can normalize by its input's own statistics at inference (`input_statistics`).

    A cropped training scene can shrink to one voxel at the coarsest level (or one point),
    where batch statistics do not exist; torch's BatchNorm raises there. Trained with one
    scene per batch, every layer learns on features normalized by that scene's own statistics;
    the running averages over many scenes are another normalization (`inference.norm_statistics`).
    """

    input_statistics: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] < 2:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if self.input_statistics and not self.training:
            # The input's own mean and variance; the running averages stay untouched.
            return nn.functional.batch_norm(
                x, None, None, self.weight, self.bias, True, 0.0, self.eps
            )
        return super().forward(x)


class SparseBNReLU(nn.Module):
    """BN + ReLU; after `fold_into` the BN lives in the preceding conv and only ReLU runs."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = BatchNorm1d(channels, eps=1e-4, momentum=0.1)
        self.folded = False

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        features = x.features if self.folded else self.norm(x.features)
        if torch.is_grad_enabled():
            return x.with_features(nn.functional.relu(features))
        # Inference: the input is a fresh conv/BN output no one else reads; in place saves
        # an allocation per layer (page faults dominate plain ReLU on 40k x C rows).
        return x.with_features(features.relu_())

    def fold_into(self, conv: SparseConv) -> None:
        """Fold this eval-mode BN into `conv` (whose output it normalizes)."""
        norm = self.norm
        if norm.input_statistics:
            raise RuntimeError("a BN that normalizes by its input's statistics cannot fold")
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.detach()
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias.detach()
        conv.fold_scale(scale, shift)
        self.folded = True

    def train(self, mode: bool = True) -> SparseBNReLU:
        if mode and self.folded:
            raise RuntimeError(FUSED_TRAIN_ERROR)
        return super().train(mode)


FUSED_TRAIN_ERROR = (
    "this model's batch norms are folded into its convs for inference "
    "(fuse_for_inference); it cannot train: build the model from the checkpoint again"
)


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
        if torch.is_grad_enabled():
            return y.with_features(y.features + self.shortcut(x.features))
        return y.with_features(y.features.add_(self.shortcut(x.features)))  # fresh conv output

    def fold_batch_norm(self) -> None:
        """Inference: act2's BN (after conv1, before its ReLU) into conv1's weight and bias.
        act1's BN cannot fold: its input is also the shortcut's."""
        self.act2.fold_into(self.conv1)


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
