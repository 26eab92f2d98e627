"""The light-weight transformer on the bottleneck voxels (DyCo3D section 3.2).

Self-attention layers, each followed by a feed-forward layer, within each scene. Position is
encoded relatively: every head adds a learned bias for the integer offset between two
bottleneck voxels, one table per axis (offsets clipped to +-relative_clip), so attention
depends on where tokens are relative to each other, not on where the scene sits.

Attention is quadratic in the token count. A scene with more than `max_tokens` bottleneck voxels
(a big map) attends within spatial windows of `window` voxels a side, each cut into chunks of
at most `max_tokens` (a window that dense is rare: bottleneck voxels cover surfaces). What ran
is kept in `last_mode` ("off", "global" or "windowed") for the model's diagnostics.
"""

from __future__ import annotations

import torch
from torch import nn

from dyco_perception.sparse import SparseVoxels


class RelativePositionBias(nn.Module):
    """(T,3) integer coords -> (heads, T, T) attention bias from per-axis offset tables."""

    def __init__(self, heads: int, clip: int):
        super().__init__()
        self.clip = clip
        self.tables = nn.Parameter(torch.zeros(3, 2 * clip + 1, heads))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        offset = (coords[:, None, :] - coords[None, :, :]).clamp(-self.clip, self.clip) + self.clip
        bias = sum(self.tables[axis][offset[..., axis]] for axis in range(3))
        return bias.permute(2, 0, 1)


class RelativeAttentionLayer(nn.Module):
    """Pre-LN self-attention with an additive (heads, T, T) position bias, then a feed-forward
    layer. Written out rather than nn.TransformerEncoderLayer, whose inference fast path returns
    NaN for a per-head float mask (torch 2.13, CPU)."""

    def __init__(self, channels: int, heads: int, ffn_channels: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.ffn = nn.Sequential(
            nn.Linear(channels, ffn_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_channels, channels),
        )

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (T, C), bias (heads, T, T) -> (T, C)."""
        t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(t, 3, self.heads, c // self.heads).unbind(1)
        attended = nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1),
            k.transpose(0, 1),
            v.transpose(0, 1),
            attn_mask=bias.to(x.dtype),
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.out(attended.transpose(0, 1).reshape(t, c))
        return x + self.ffn(self.norm2(x))


class BottleneckTransformer(nn.Module):
    """Pre-LN encoder layers over the coarsest voxels of each scene."""

    def __init__(
        self,
        channels: int,
        layers: int,
        heads: int,
        ffn_ratio: float,
        dropout: float,
        max_tokens: int,
        position: str = "relative",
        relative_clip: int = 8,
        window: int = 8,
    ):
        super().__init__()
        self.heads, self.max_tokens, self.window = heads, max_tokens, window
        self.relative = position == "relative"
        if self.relative:
            self.position = RelativePositionBias(heads, relative_clip)
        else:
            self.position = nn.Sequential(
                nn.Linear(3, channels), nn.ReLU(), nn.Linear(channels, channels)
            )
        ffn = int(channels * ffn_ratio)
        self.layers = nn.ModuleList(
            [
                RelativeAttentionLayer(channels, heads, ffn, dropout)
                if self.relative
                else nn.TransformerEncoderLayer(
                    channels, heads, ffn, dropout, batch_first=True, norm_first=True
                )
                for _ in range(layers)
            ]
        )
        self.last_mode = "off"

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        out = x.features
        modes = set()
        for b in range(x.batch_size):
            rows = (x.coords[:, 0] == b).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            groups = [rows] if rows.numel() <= self.max_tokens else self._windows(x.coords, rows)
            modes.add("global" if len(groups) == 1 else "windowed")
            for group in groups:
                out = out.index_copy(0, group, self._attend(out[group], x.coords[group, 1:]))
        self.last_mode = "windowed" if "windowed" in modes else modes.pop() if modes else "off"
        return x.with_features(out)

    def _attend(self, tokens: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        if self.relative:
            bias = self.position(coords)
            for layer in self.layers:
                tokens = layer(tokens, bias)
            return tokens
        pos = coords.to(tokens.dtype)
        pos = (pos - pos.mean(0)) / 8.0  # bottleneck units; keeps the embedding input small
        tokens = (tokens + self.position(pos)).unsqueeze(0)
        for layer in self.layers:
            tokens = layer(tokens)
        return tokens.squeeze(0)

    def _windows(self, coords: torch.Tensor, rows: torch.Tensor) -> list[torch.Tensor]:
        """Rows grouped by window cell, each group split into chunks of <= max_tokens."""
        cell = coords[rows, 1:] // self.window
        key = (cell[:, 0] * 65536 + cell[:, 1]) * 65536 + cell[:, 2]
        order = torch.argsort(key, stable=True)
        rows, key = rows[order], key[order]
        _, counts = torch.unique_consecutive(key, return_counts=True)
        groups = []
        for window_rows in torch.split(rows, counts.tolist()):
            groups.extend(torch.split(window_rows, self.max_tokens))
        return groups
