"""Light-weight transformer on the bottleneck voxels (self-attention within each scene)."""

from __future__ import annotations

import logging

from torch import nn

from dyco_perception.sparse import SparseVoxels

log = logging.getLogger(__name__)


class BottleneckTransformer(nn.Module):
    """Pre-LN encoder layers over the coarsest voxels, with a learned xyz position embedding.

    Attention is quadratic in the token count; scenes with more than `max_tokens` bottleneck
    voxels skip it (logged) instead of running out of memory.
    """

    def __init__(
        self,
        channels: int,
        layers: int,
        heads: int,
        ffn_ratio: float,
        dropout: float,
        max_tokens: int,
    ):
        super().__init__()
        self.max_tokens = max_tokens
        self.position = nn.Sequential(
            nn.Linear(3, channels), nn.ReLU(), nn.Linear(channels, channels)
        )
        self.layers = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(
                    channels,
                    heads,
                    int(channels * ffn_ratio),
                    dropout,
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(layers)
            ]
        )

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        out = x.features
        for b in range(x.batch_size):
            rows = (x.coords[:, 0] == b).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            if rows.numel() > self.max_tokens:
                log.warning(
                    "transformer skipped: %d bottleneck voxels > max_tokens=%d",
                    rows.numel(),
                    self.max_tokens,
                )
                continue
            pos = x.coords[rows, 1:].to(out.dtype)
            pos = (pos - pos.mean(0)) / 8.0  # bottleneck units; keeps the embedding input small
            tokens = (out[rows] + self.position(pos)).unsqueeze(0)
            for layer in self.layers:
                tokens = layer(tokens)
            out = out.index_copy(0, rows, tokens.squeeze(0))
        return x.with_features(out)
