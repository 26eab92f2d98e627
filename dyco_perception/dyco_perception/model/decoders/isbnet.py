"""ISBNet's instance branch (Ngo et al., CVPR 2023; docs/decoders/isbnet.md): instance-aware
furthest point sampling (IA-FPS, Eq. 1) over predicted foreground, two Point Aggregators
(ball query + MLP + max pool + residual, Eq. 2), linear query heads (class, box, kernel, mask
score), box-aware dynamic convolution over [mask features; relative position; |box_i - box_k|]
(Eq. 3), trained with one-to-many Hungarian matching (Eq. 4) and Eq. 5's losses.

Everything runs on voxels (the paper's late devoxelization; voxels also stand in for its
superpoints); mask logits are devoxelized to points for the losses and the output.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from dyco_perception import ops
from dyco_perception.classes import STUFF_CLASS_IDS
from dyco_perception.config import ModelConfig
from dyco_perception.model.decoders import register_decoder
from dyco_perception.model.decoders.base import (
    DecoderInput,
    InstanceDecoder,
    InstanceTargets,
    zero_like_graph,
)
from dyco_perception.model.decoders.common import DecodedMasks, split_decoder_params
from dyco_perception.model.grouping import Proposals
from dyco_perception.model.unet import BatchNorm1d, point_mlp
from dyco_perception.model.voxelizer import devoxelize
from dyco_perception.validation import choice, ranged


@dataclass
class IsbnetOptions:
    """ISBNet's own settings; defaults are the paper's (section 4.1) unless marked code/ours."""

    mask_channels: int = ranged(32, 1, 256, "H: mask-feature channels (Tab. 10: 41 = 32+3+6)")
    fg_threshold: float = ranged(0.5, 0.0, 1.0, "tau of Eq. 1 (code's superpoint filter: 0.1)")
    seed_samples: int = ranged(2048, 1, 1_000_000, "PA-1 FPS samples per scene (code: 2048)")
    seed_radius: float = ranged(0.2, 1e-3, 10.0, "PA-1 ball-query radius r (m)")
    seed_neighbours: int = ranged(32, 1, 1024, "PA-1 neighbours Q")
    query_radius: float = ranged(0.4, 1e-3, 10.0, "PA-2 ball-query radius r (m)")
    query_neighbours: int = ranged(32, 1, 1024, "PA-2 neighbours Q")
    train_queries: int = ranged(256, 1, 100_000, "K sampled at once in training")
    # Inference: IA-FPS in chunks (192, 128, 64), each from seeds not covered by earlier masks.
    chunk1: int = ranged(192, 1, 100_000)
    chunk2: int = ranged(128, 0, 100_000, "0 ends the chunk list")
    chunk3: int = ranged(64, 0, 100_000, "0 ends the chunk list")
    query_hidden: int = ranged(
        0, 0, 4096, "0: the paper's linear heads on E; >0 an MLP first (code: 128)"
    )
    dynamic_layers: int = ranged(2, 1, 3, "BA-DyCo layers: paper 2 (41,32,1), code 3 (41,32,16,1)")
    dynamic_hidden: int = ranged(32, 1, 256, "first hidden width; each further layer halves it")
    score_formula: str = choice("product", ("product", "sqrt"), "cls x mask score; code: sqrt")
    # Off by default: 1 m matched dense decoding on the 5 val scans (IoU 1.0) but not on 9 of
    # the 15 training scans (IoU down to 0.22), 2 m not on one (0.985): README, ISBNet decoding.
    decode_box_margin: float = ranged(
        -1.0,
        -1.0,
        100.0,
        "ours, inference only: decode a query over the voxels within this distance (m) of its"
        " box, the rest outside its mask; -1: every voxel (the paper; training always)",
    )
    duplicate_gt: int = ranged(4, 1, 64, "S: one-to-many matching duplicates each GT S times")
    cost_cls: float = ranged(1.0, 0.0, 100.0, "Eq. 4 class cost weight (code: 0.5)")
    cost_dice: float = ranged(5.0, 0.0, 100.0, "gamma_mask of Eq. 4 (code: 1)")
    cost_bce: float = ranged(0.0, 0.0, 100.0, "mask BCE cost (not in Eq. 4; code: 1)")
    cost_giou: float = ranged(0.0, 0.0, 100.0, "-gIoU box cost (not in Eq. 4; code: 0.2)")
    cls_weight: float = ranged(1.0, 0.0, 100.0, "Eq. 5: L_cls (code: 0.5)")
    no_object_weight: float = ranged(1.0, 0.0, 1.0, "CE weight of the no-object class")
    box_weight: float = ranged(1.0, 0.0, 100.0, "lambda_box (L1 + gIoU)")
    mask_weight: float = ranged(5.0, 0.0, 100.0, "lambda_mask (BCE + dice; code: 1 each)")
    mask_score_weight: float = ranged(1.0, 0.0, 100.0, "lambda_ms")
    point_box_weight: float = ranged(1.0, 0.0, 100.0, "point-wise box L1 + gIoU (code: 0.25)")


def thing_classes(num_classes: int) -> list[int]:
    return [c for c in range(num_classes) if c not in STUFF_CLASS_IDS]


# --- voxels and the foreground of Eq. 1 ---------------------------------------------------------


@dataclass
class VoxelView:
    xyz: torch.Tensor  # (V, 3) mean point position per voxel
    batch: torch.Tensor  # (V,)
    point_to_voxel: torch.Tensor  # (N,)
    semantic_prob: torch.Tensor  # (V, C)


def voxel_view(inp: DecoderInput) -> VoxelView:
    p2v = inp.voxelized.point_to_voxel
    num = inp.voxel_features.shape[0]
    xyz = ops.scatter_mean(inp.xyz.float(), p2v, num)
    batch = inp.voxelized.voxels.coords[:, 0].long()
    # All points of a voxel share its logits: one point per voxel reads them back.
    first = torch.full((num,), max(p2v.numel() - 1, 0), dtype=torch.long, device=p2v.device)
    first.scatter_reduce_(0, p2v, torch.arange(p2v.numel(), device=p2v.device), "amin")
    # index_select: advanced indexing ([first]) gathers rows several times slower on CPU.
    semantic = inp.semantic_logits.detach().index_select(0, first)
    return VoxelView(xyz, batch, p2v, semantic.softmax(1))


def foreground(semantic_prob: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 1 with no mask yet: 1 - m_(0) > tau, m_(0) = probability of a stuff class."""
    background = semantic_prob[:, list(STUFF_CLASS_IDS)].sum(1)
    return (1 - background) > tau


def uncovered(mask_probs: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 1 over earlier masks (K', M) -> (M,): min_k (1 - m_(k)) > tau."""
    if mask_probs.shape[0] == 0:
        return torch.ones(mask_probs.shape[1], dtype=torch.bool, device=mask_probs.device)
    return (1 - mask_probs).amin(0) > tau


# --- Point Aggregator (Eq. 2) -------------------------------------------------------------------


class PointAggregator(nn.Module):
    """e_k = f_k + max_q MLP([F_local; P_local / r]); MLP = 3 x (Linear-BN-ReLU), D+3 -> D."""

    def __init__(self, channels: int, radius: float, neighbours: int):
        super().__init__()
        self.radius, self.neighbours = radius, neighbours
        layers: list[nn.Module] = []
        for c_in in (channels + 3, channels, channels):
            layers += [nn.Linear(c_in, channels), BatchNorm1d(channels, eps=1e-4), nn.ReLU()]
        self.mlp = nn.Sequential(*layers)

    def forward(
        self,
        centre_xyz: torch.Tensor,
        centre_batch: torch.Tensor,
        centre_features: torch.Tensor,
        xyz: torch.Tensor,
        batch: torch.Tensor,
        features: torch.Tensor,
    ) -> torch.Tensor:
        query, rows = group(centre_xyz, centre_batch, xyz, batch, self.radius, self.neighbours)
        local = (xyz[rows] - centre_xyz[query]) / self.radius
        hidden = self.mlp(torch.cat([features[rows], local], 1))
        return centre_features + ops.scatter_max(hidden, query, centre_xyz.shape[0])


def group(
    centre_xyz: torch.Tensor,
    centre_batch: torch.Tensor,
    xyz: torch.Tensor,
    batch: torch.Tensor,
    radius: float,
    neighbours: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ball query as flat (centre, row) pairs without the -1 padding."""
    found, _ = ops.ball_query(centre_xyz, centre_batch, xyz, batch, radius, neighbours)
    query, slot = (found >= 0).nonzero().unbind(1)
    return query, found[query, slot]


# --- box-aware dynamic convolution (Eq. 3) ------------------------------------------------------


def dynamic_layer_sizes(mask_channels: int, hidden: int, layers: int) -> list[tuple[int, int]]:
    """[H + 3 + 6] -> hidden -> hidden/2 ... -> 1 (paper: 41, 32, 1; code: 41, 32, 16, 1)."""
    dims = [mask_channels + 9] + [max(1, hidden // 2**i) for i in range(layers - 1)] + [1]
    return list(itertools.pairwise(dims))


def dynamic_inputs(
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    boxes: torch.Tensor,
    query_xyz: torch.Tensor,
    query_boxes: torch.Tensor,
) -> torch.Tensor:
    """(K, V, H+9): [F_mask; F_pos = p_i - p_k; F_geo = |f_box(i) - f_box(k)|] per pair."""
    k, v = query_xyz.shape[0], xyz.shape[0]
    position = xyz[None] - query_xyz[:, None]
    geometry = (boxes[None] - query_boxes[:, None]).abs()
    return torch.cat([mask_features[None].expand(k, v, -1), position, geometry], 2)


def init_controller(controller: nn.Linear, sizes: list[tuple[int, int]]) -> None:
    """Small per-query weights around one shared, Linear-initialized kernel (the bias).

    With all-zero kernels (DyCo3D's init) every layer's gradient is scaled by the others'
    near-zero weights, and the masks stayed flat for ~50 iterations in the overfit test.
    """
    nn.init.normal_(controller.weight, std=0.01)
    chunks = []
    for c_in, c_out in sizes:
        bound = 1 / math.sqrt(c_in)
        chunks += [torch.empty(c_in * c_out).uniform_(-bound, bound), torch.zeros(c_out)]
    with torch.no_grad():
        controller.bias.copy_(torch.cat(chunks))


def run_dynamic(
    inputs: torch.Tensor, params: torch.Tensor, sizes: list[tuple[int, int]]
) -> torch.Tensor:
    """(K, V, in) through each query's own 1x1 convs -> (K, V) logits; ReLU between layers."""
    x = inputs
    layers = split_decoder_params(params, sizes)
    for i, (weight, bias) in enumerate(layers):
        x = torch.bmm(x, weight) + bias[:, None]
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x.squeeze(2)


# Voxels per decoding tile: one query's (C, tile) activations stay in the L2 cache.
_DECODE_TILE = 4096
# Under autograd: pairs x hidden channels per chunk of queries (bounds the (K, V, C) activations).
_DECODE_CHUNK = 1 << 22
# Logit of a voxel that box-restricted decoding skips: below every mask threshold, sigmoid 0
# (finite, so no inf - inf or 0 * inf reaches a NaN downstream).
OUTSIDE_LOGIT = -1e4


def decode_scene(
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    boxes: torch.Tensor,
    query_xyz: torch.Tensor,
    query_boxes: torch.Tensor,
    params: torch.Tensor,
    sizes: list[tuple[int, int]],
    box_margin: float | None = None,
) -> torch.Tensor:
    """run_dynamic(dynamic_inputs(...)) -> (K, V) without building the (K, V, H+9) inputs.

    The first layer splits into [F_mask; p_i] @ W (one GEMM over voxels per query) - p_k @ W_pos
    (a per-query constant) + |f_box(i) - f_box(k)| @ W_box. Each query runs alone over tiles of
    voxels, channels first, so every product is a plain GEMM with the voxels as its long side
    and the activations stay in cache (batched (K, V, C) products with inner sizes 35 and 6
    took 1.5x as long on the val scans: bench/bench_isbnet_decode.py). `box_margin`
    (inference): decode only the voxels whose position lies within that distance (m) of the
    query's box, the rest get OUTSIDE_LOGIT; None decodes every voxel.
    """
    inputs = (mask_features, xyz, boxes, query_xyz, query_boxes, params)
    if box_margin is None and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        # Training: the batched chunks' backward beat the per-query loop's (0.90 vs 1.08 s
        # forward + backward, 64 queries x 23k voxels), so training decodes as before.
        return _decode_batched(*inputs, sizes)
    k, v = query_xyz.shape[0], xyz.shape[0]
    dtype = params.dtype
    # (V, H+9): [F_mask; p_i] (pair-independent) and the voxel's box, one row to gather.
    voxels = torch.cat([mask_features, xyz, boxes], 1).to(dtype)
    query_boxes = query_boxes.to(dtype)
    h3 = voxels.shape[1] - 6
    layers = [(w.transpose(1, 2), b) for w, b in split_decoder_params(params, sizes)]
    (w1, b1), rest = layers[0], layers[1:]  # weights (K, out, in)
    # Per query, the bias less the query position's share of the relative position p_i - p_k.
    constant = b1 - torch.bmm(w1[:, :, h3 - 3 : h3], query_xyz.to(dtype)[:, :, None]).squeeze(2)
    queries = [
        (w1[i], constant[i], [(w[i], b[i]) for w, b in rest], query_boxes[i]) for i in range(k)
    ]
    if box_margin is None:
        rows = [_decode_query(voxels, q) for q in queries]
        return torch.stack(rows) if rows else voxels.new_zeros((0, v))
    # Voxels sorted by x: a box's x range is one slice, only y and z are tested per voxel
    # (as contiguous 1-D columns: a (V, 2) test with .all(1) took 3x as long).
    order = torch.argsort(xyz[:, 0])
    x, y, z = xyz[order].T.contiguous()
    low, high = _box_range(query_boxes.to(x.dtype), box_margin)
    first = torch.searchsorted(x, low[:, 0].contiguous(), side="left").tolist()
    last = torch.searchsorted(x, high[:, 0].contiguous(), side="right").tolist()
    out = voxels.new_full((k, v), OUTSIDE_LOGIT)
    for i, (lo, hi) in enumerate(zip(low.tolist(), high.tolist(), strict=True)):
        cut = slice(first[i], last[i])
        ys, zs = y[cut], z[cut]
        near = (ys >= lo[1]) & (ys <= hi[1]) & (zs >= lo[2]) & (zs <= hi[2])
        # index_select: gathers rows 3x faster than advanced indexing.
        cols = order[cut].index_select(0, near.nonzero().squeeze(1))
        out[i].index_copy_(0, cols, _decode_query(voxels.index_select(0, cols), queries[i]))
    return out


def _decode_batched(
    mask_features: torch.Tensor,
    xyz: torch.Tensor,
    boxes: torch.Tensor,
    query_xyz: torch.Tensor,
    query_boxes: torch.Tensor,
    params: torch.Tensor,
    sizes: list[tuple[int, int]],
) -> torch.Tensor:
    """decode_scene as batched (K, V, C) products over chunks of queries (same result)."""
    k, v = query_xyz.shape[0], xyz.shape[0]
    step = max(1, _DECODE_CHUNK // max(1, v * sizes[0][1]))
    shared = torch.cat([mask_features, xyz], 1).to(params.dtype)  # (V, H+3): pair-independent
    boxes = boxes.to(params.dtype)
    out = [xyz.new_zeros((0, v))]
    for first in range(0, k, step):
        sel = slice(first, first + step)
        queries = (query_xyz[sel], query_boxes[sel], params[sel])
        out.append(_decode_chunk(shared, boxes, queries, sizes))
    return torch.cat(out)


def _decode_chunk(
    shared: torch.Tensor,
    boxes: torch.Tensor,
    queries: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    sizes: list[tuple[int, int]],
) -> torch.Tensor:
    query_xyz, query_boxes, params = queries
    layers = split_decoder_params(params, sizes)
    (w1, b1), rest = layers[0], layers[1:]
    h3 = shared.shape[1]  # mask channels + 3 position channels
    # Per query, the bias less the query position's share of the relative position p_i - p_k.
    constant = b1[:, None] - torch.bmm(query_xyz[:, None].to(w1.dtype), w1[:, h3 - 3 : h3])
    geometry = (boxes[None] - query_boxes[:, None].to(w1.dtype)).abs_()
    x = torch.baddbmm(constant, geometry, w1[:, h3:])  # (K, V, C), in place from here on
    x += torch.matmul(shared, w1[:, :h3])
    for weight, bias in rest:
        x = torch.baddbmm(bias[:, None], x.relu_(), weight)
    return x.squeeze(2)


def _box_range(boxes: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 3) low and high corners grown by `margin` (either corner order: a box head may swap
    them)."""
    low = torch.minimum(boxes[:, :3], boxes[:, 3:]) - margin
    return low, torch.maximum(boxes[:, :3], boxes[:, 3:]) + margin


def _decode_query(voxels: torch.Tensor, query: tuple) -> torch.Tensor:
    """One query's logits (V,) from the voxels' [F_mask; p_i; box] rows (V, H+9)."""
    w1, constant, rest, box = query
    h3 = voxels.shape[1] - 6
    out = [voxels.new_zeros(0)]
    for start in range(0, voxels.shape[0], _DECODE_TILE):
        tile = voxels[start : start + _DECODE_TILE]
        # Channels first: (C, in) @ (in, tile), the voxels on the GEMM's long side.
        x = torch.addmm(constant[:, None], w1[:, :h3], tile[:, :h3].T)
        x = x.addmm_(w1[:, h3:], (tile[:, h3:] - box).abs_().T)
        for weight, bias in rest:
            x = torch.addmm(bias[:, None], weight, x.relu_())
        out.append(x[0])
    return torch.cat(out)


# --- the decoder --------------------------------------------------------------------------------


@dataclass
class MaskBlock:
    """One scene's dense masks: queries `query_rows` x the scene's points `point_rows`."""

    query_rows: torch.Tensor  # (Ks,) rows of the batch's query list
    point_rows: torch.Tensor  # (Ns,)
    logits: torch.Tensor  # (Ks, Ns)


@dataclass
class Queries:
    xyz: torch.Tensor  # (K, 3)
    batch: torch.Tensor  # (K,)
    class_logits: torch.Tensor  # (K, T+1), last = no object
    box: torch.Tensor  # (K, 6) min, max corners
    score_logits: torch.Tensor  # (K,) mask score (Eq. 5's L_MS)
    params: torch.Tensor  # (K, P) dynamic-conv kernels


def cat_queries(parts: list[Queries]) -> Queries:
    return Queries(
        *(torch.cat([getattr(p, f) for p in parts]) for f in Queries.__dataclass_fields__)
    )


@register_decoder
class IsbnetDecoder(InstanceDecoder):
    """Settings: the `decoder:` options (`IsbnetOptions`); `mask_head.mask_threshold` binarizes."""

    name = "isbnet"
    Options = IsbnetOptions

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        o, m = self.options, cfg.backbone.width
        self.things = thing_classes(cfg.num_classes)
        self.sizes = dynamic_layer_sizes(o.mask_channels, o.dynamic_hidden, o.dynamic_layers)
        self.mask_head = point_mlp(m, m, o.mask_channels)
        self.box_head = point_mlp(m, m, 6)
        self.seed_aggregator = PointAggregator(m, o.seed_radius, o.seed_neighbours)
        self.query_aggregator = PointAggregator(m, o.query_radius, o.query_neighbours)
        width = o.query_hidden or m
        self.query_mlp = (
            nn.Sequential(nn.Linear(m, width), nn.ReLU()) if o.query_hidden else nn.Identity()
        )
        self.class_head = nn.Linear(width, len(self.things) + 1)
        self.query_box_head = nn.Linear(width, 6)
        self.score_head = nn.Linear(width, 1)
        self.controller = nn.Linear(width, sum(a * b + b for a, b in self.sizes))
        init_controller(self.controller, self.sizes)

    def forward(self, inp: DecoderInput) -> dict[str, Any]:
        o = self.options
        vox = voxel_view(inp)
        feats = inp.voxel_features
        mask_features = self.mask_head(feats)
        boxes = self.box_head(feats) + vox.xyz.repeat(1, 2)  # corners = voxel + offsets
        fg = foreground(vox.semantic_prob, o.fg_threshold)
        seeds = ops.furthest_point_sample(vox.xyz, vox.batch, o.seed_samples, fg)
        seed_xyz, seed_batch = vox.xyz[seeds], vox.batch[seeds]
        fg_rows = fg.nonzero().squeeze(1)
        seed_feats = self.seed_aggregator(
            seed_xyz, seed_batch, feats[seeds], vox.xyz[fg_rows], vox.batch[fg_rows], feats[fg_rows]
        )
        seed_set = (seed_xyz, seed_batch, seed_feats)
        margin = o.decode_box_margin
        restrict = None if self.training or margin < 0 else margin
        decode = _Decoding(self, vox, mask_features, boxes, restrict)
        if self.training:
            picks = ops.furthest_point_sample(seed_xyz, seed_batch, o.train_queries)
            queries = self.queries(picks, seed_set)
            inp.lap("grouping")
            blocks = decode(queries, 0)
        else:
            # IA-FPS needs each chunk's masks before the next chunk: "grouping" includes them.
            queries, blocks = self.chunked_queries(seeds, seed_set, decode)
            inp.lap("grouping")
        return self.outputs(queries, blocks, boxes, vox)

    def queries(self, picks: torch.Tensor, seed_set: tuple) -> Queries:
        """PA-2 over the seeds at the picked seeds, then the linear heads on E."""
        xyz, batch, feats = seed_set
        e = self.query_aggregator(xyz[picks], batch[picks], feats[picks], xyz, batch, feats)
        h = self.query_mlp(e)
        box = self.query_box_head(h) + xyz[picks].repeat(1, 2)
        return Queries(
            xyz[picks],
            batch[picks],
            self.class_head(h),
            box,
            self.score_head(h).squeeze(1),
            self.controller(h),
        )

    def chunked_queries(
        self, seeds: torch.Tensor, seed_set: tuple, decode: _Decoding
    ) -> tuple[Queries, list[MaskBlock]]:
        """IA-FPS at inference: each chunk from seeds neither picked nor covered by a mask."""
        o = self.options
        xyz, batch, _ = seed_set
        available = torch.ones(seeds.numel(), dtype=torch.bool, device=xyz.device)
        parts: list[Queries] = [self.queries(seeds[:0], seed_set)]
        blocks: list[MaskBlock] = []
        for size in _chunks(o):
            picks = ops.furthest_point_sample(xyz, batch, size, available)
            if picks.numel() == 0:
                break
            part = self.queries(picks, seed_set)
            offset = sum(p.xyz.shape[0] for p in parts)
            new_blocks = decode(part, offset)
            available[picks] = False
            available &= decode.seed_uncovered(new_blocks, seeds, offset, o.fg_threshold)
            parts.append(part)
            blocks += new_blocks
        return cat_queries(parts), blocks

    def outputs(
        self, q: Queries, blocks: list[MaskBlock], boxes: torch.Tensor, vox: VoxelView
    ) -> dict[str, Any]:
        threshold = self.cfg.mask_head.mask_threshold
        masks = thresholded_pairs(blocks, threshold, q.xyz.device, q.score_logits)
        k, num_classes = q.xyz.shape[0], self.cfg.num_classes
        probs = q.class_logits.softmax(1)
        class_probs = probs.new_zeros(k, num_classes)
        class_probs[:, self.things] = probs[:, :-1]
        top, top_index = probs[:, :-1].max(1)
        score = top * q.score_logits.sigmoid()
        if self.options.score_formula == "sqrt":
            score = score.sqrt()
        things = torch.tensor(self.things, dtype=torch.long, device=q.xyz.device)
        proposals = Proposals(
            masks.point_index,
            masks.proposal_id,
            things[top_index],
            q.batch,
            torch.zeros_like(q.batch),
        )
        return {
            "proposals": proposals,
            "masks": masks,
            "score_logits": q.score_logits,
            "score": score.detach(),
            "proposal_class_probs": class_probs.detach(),
            "isbnet": {"queries": q, "blocks": blocks, "point_boxes": devoxelize(boxes, vox)},
        }

    def losses(
        self, outputs: dict[str, Any], targets: InstanceTargets, loss_cfg: Any
    ) -> dict[str, torch.Tensor]:
        return isbnet_losses(outputs["isbnet"], targets, self.options, self.things)


def _chunks(o: IsbnetOptions) -> list[int]:
    sizes = [o.chunk1, o.chunk2, o.chunk3]
    return sizes[: sizes.index(0)] if 0 in sizes else sizes


class _Decoding:
    """Each scene's queries decoded over that scene's voxels (all of them, or those near each
    query's box: `box_margin`), devoxelized to points."""

    def __init__(self, net: IsbnetDecoder, vox: VoxelView, mask_features, boxes, box_margin=None):
        self.net, self.vox, self.mask_features, self.boxes = net, vox, mask_features, boxes
        self.box_margin = box_margin
        self.local = torch.zeros_like(vox.batch)  # voxel row within its scene
        self.scenes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for s in torch.unique(vox.batch).tolist():
            rows = (vox.batch == s).nonzero().squeeze(1)
            self.local[rows] = torch.arange(rows.numel(), device=rows.device)
            points = (vox.batch[vox.point_to_voxel] == s).nonzero().squeeze(1)
            self.scenes[s] = (rows, points)

    def __call__(self, q: Queries, offset: int) -> list[MaskBlock]:
        blocks = []
        for s in torch.unique(q.batch).tolist():
            mine = (q.batch == s).nonzero().squeeze(1)
            rows, points = self.scenes[s]
            logits = decode_scene(
                self.mask_features[rows],
                self.vox.xyz[rows],
                self.boxes[rows],
                q.xyz[mine],
                q.box[mine],
                q.params[mine],
                self.net.sizes,
                self.box_margin,
            )
            # index_select: 3x faster than logits[:, columns] for the (K, N) gather.
            point_logits = logits.index_select(1, self.local[self.vox.point_to_voxel[points]])
            blocks.append(MaskBlock(mine + offset, points, point_logits))
        return blocks

    def seed_uncovered(
        self, blocks: list[MaskBlock], seeds: torch.Tensor, offset: int, tau: float
    ) -> torch.Tensor:
        """(S,) seeds that no mask of `blocks` covers (Eq. 1), read at one point per seed."""
        keep = torch.ones(seeds.numel(), dtype=torch.bool, device=seeds.device)
        for block in blocks:
            point_voxel = self.vox.point_to_voxel[block.point_rows]
            column = torch.full_like(self.local, -1)
            column[point_voxel] = torch.arange(point_voxel.numel(), device=seeds.device)
            mine = (column[seeds] >= 0).nonzero().squeeze(1)
            probs = block.logits[:, column[seeds[mine]]].sigmoid()
            keep[mine] &= uncovered(probs, tau)
        return keep


def thresholded_pairs(
    blocks: list[MaskBlock], threshold: float, device: torch.device, like: torch.Tensor
) -> DecodedMasks:
    """(query, point, logit) triples of the points inside each mask (prob > threshold): the
    pairs post-processing reads (it treats every other point as outside)."""
    logit_cut = math.log(threshold / (1 - threshold)) if 0 < threshold < 1 else -math.inf
    logits, points, ids = [like.new_zeros(0)], [], []
    for b in blocks:
        k, j = (b.logits > logit_cut).nonzero().unbind(1)
        logits.append(b.logits[k, j])
        points.append(b.point_rows[j])
        ids.append(b.query_rows[k])
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return DecodedMasks(torch.cat(logits), torch.cat([empty, *points]), torch.cat([empty, *ids]))


# --- matching (Eq. 4) and losses (Eq. 5) --------------------------------------------------------


def gt_boxes(xyz: torch.Tensor, gt_id: torch.Tensor, num_gt: int) -> torch.Tensor:
    """(G, 6) axis-aligned box (min, max corners) of each GT instance's points."""
    rows = (gt_id >= 0).nonzero().squeeze(1)
    index = gt_id[rows, None].expand(-1, 3)
    inf = torch.full((num_gt, 3), math.inf, dtype=xyz.dtype, device=xyz.device)
    low = inf.scatter_reduce(0, index, xyz[rows], "amin")
    high = (-inf).scatter_reduce(0, index, xyz[rows], "amax")
    return torch.cat([low, high], 1)


def matching_cost(
    mask_logits: torch.Tensor,
    gt_masks: torch.Tensor,
    class_logits: torch.Tensor,
    gt_class: torch.Tensor,
    o: IsbnetOptions,
    query_boxes: torch.Tensor | None = None,
    boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """(K, G) Eq. 4: cost_cls * (-p_k(class_j)) + gamma_mask * dice, plus the code's optional
    cost_bce * BCE and cost_giou * (-gIoU(query box, GT box))."""
    probs = mask_logits.sigmoid()
    inter = probs @ gt_masks.T
    dice = 1 - (2 * inter + 1) / (probs.sum(1)[:, None] + gt_masks.sum(1)[None] + 1)
    n = max(mask_logits.shape[1], 1)
    bce = (F.softplus(-mask_logits) @ gt_masks.T + F.softplus(mask_logits) @ (1 - gt_masks).T) / n
    cls = -class_logits.softmax(1)[:, gt_class]
    cost = o.cost_cls * cls + o.cost_dice * dice + o.cost_bce * bce
    if o.cost_giou and query_boxes is not None and boxes is not None:
        k, g = cost.shape
        pairs = ops.generalized_box_iou_3d(
            query_boxes.repeat_interleave(g, 0), boxes.repeat(k, 1).to(query_boxes.dtype)
        )
        cost = cost - o.cost_giou * pairs.view(k, g)
    return cost


def one_to_many_match(cost: torch.Tensor, duplicates: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian matching with each GT column repeated `duplicates` times -> (query, gt)."""
    g = cost.shape[1]
    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=cost.device)
        return empty, empty
    repeated = cost.detach().float().cpu().numpy()
    repeated = np.nan_to_num(np.tile(repeated, (1, duplicates)), nan=1e6, posinf=1e6)
    rows, cols = linear_sum_assignment(repeated)
    rows_t = torch.as_tensor(rows, dtype=torch.long, device=cost.device)
    return rows_t, torch.as_tensor(cols % g, dtype=torch.long, device=cost.device)


def isbnet_losses(
    state: dict[str, Any], t: InstanceTargets, o: IsbnetOptions, things: list[int]
) -> dict[str, torch.Tensor]:
    q: Queries = state["queries"]
    boxes = gt_boxes(t.xyz.float(), t.gt_id, t.num_gt)
    gt_class = class_index(t.gt_class(), things)
    terms = point_box_losses(state["point_boxes"], boxes, t.gt_id)
    matched = [match_block(b, q, t, (gt_class, boxes), o) for b in state["blocks"]]
    query, gt = _cat_matches(state["blocks"], matched, q.xyz.device)
    terms["cls"] = class_loss(q.class_logits, query, gt_class[gt], o.no_object_weight)
    terms.update(mask_losses(state["blocks"], matched, t.gt_id, q))
    terms.update(query_box_losses(q.box[query], boxes[gt]))
    weights = {
        "point_box_l1": o.point_box_weight,
        "point_box_giou": o.point_box_weight,
        "cls": o.cls_weight,
        "mask_bce": o.mask_weight,
        "mask_dice": o.mask_weight,
        "mask_score": o.mask_score_weight,
        "box_l1": o.box_weight,
        "box_giou": o.box_weight,
    }
    anchor = zero_like_graph(q.params) + zero_like_graph(state["point_boxes"])
    return {name: weights[name] * value + anchor for name, value in terms.items()}


def class_index(semantic: torch.Tensor, things: list[int]) -> torch.Tensor:
    """Semantic class -> index among the thing classes (a stuff id maps to 0, never used)."""
    lookup = torch.zeros(max(things) + 1 if things else 1, dtype=torch.long)
    lookup[things] = torch.arange(len(things))
    return lookup.to(semantic.device)[semantic.clamp(0, lookup.numel() - 1)]


def match_block(
    b: MaskBlock,
    q: Queries,
    t: InstanceTargets,
    gt: tuple[torch.Tensor, torch.Tensor],
    o: IsbnetOptions,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Matches of one scene as (position in the block, batch GT id); gt = (class, box)."""
    ids = torch.unique(t.gt_id[b.point_rows])
    ids = ids[ids >= 0]
    gt_masks = (t.gt_id[b.point_rows][None] == ids[:, None]).float()
    cost = matching_cost(
        b.logits.detach(),
        gt_masks,
        q.class_logits[b.query_rows].detach(),
        gt[0][ids],
        o,
        q.box[b.query_rows].detach(),
        gt[1][ids],
    )
    local, column = one_to_many_match(cost, o.duplicate_gt)
    return local, ids[column]


def _cat_matches(
    blocks: list[MaskBlock], matched: list, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch query rows and GT ids of every scene's matches."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return (
        torch.cat([empty] + [b.query_rows[m[0]] for b, m in zip(blocks, matched, strict=True)]),
        torch.cat([empty] + [m[1] for m in matched]),
    )


def class_loss(
    logits: torch.Tensor, query: torch.Tensor, target: torch.Tensor, no_object: float
) -> torch.Tensor:
    if logits.shape[0] == 0:
        return zero_like_graph(logits)
    labels = torch.full((logits.shape[0],), logits.shape[1] - 1, device=logits.device)
    labels[query] = target
    weight = torch.ones(logits.shape[1], device=logits.device)
    weight[-1] = no_object
    return F.cross_entropy(logits, labels, weight=weight)


def mask_losses(
    blocks: list[MaskBlock], matched: list, gt_id: torch.Tensor, q: Queries
) -> dict[str, torch.Tensor]:
    """Matched masks: BCE (per-mask mean), dice, and the mask score against the mask's IoU."""
    bce, dice, score = [], [], []
    for b, (local, gt) in zip(blocks, matched, strict=True):
        if local.numel() == 0:
            continue
        logits = b.logits[local]
        target = (gt_id[b.point_rows][None] == gt[:, None]).float()
        bce.append(F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1))
        probs = logits.sigmoid()
        inter = (probs * target).sum(1)
        dice.append(1 - (2 * inter + 1) / (probs.sum(1) + target.sum(1) + 1))
        hard = (probs > 0.5).float().detach()
        iou = (hard * target).sum(1) / (hard + target).clamp(max=1).sum(1).clamp_min(1)
        predicted = q.score_logits[b.query_rows[local]].sigmoid()
        score.append((predicted - iou) ** 2)
    if not bce:
        zero = zero_like_graph(q.score_logits)
        return {"mask_bce": zero, "mask_dice": zero, "mask_score": zero}
    return {
        "mask_bce": torch.cat(bce).mean(),
        "mask_dice": torch.cat(dice).mean(),
        "mask_score": torch.cat(score).mean(),
    }


def box_terms(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 over the 6 corner coordinates and 1 - gIoU, each averaged over boxes."""
    if pred.shape[0] == 0:
        zero = zero_like_graph(pred)
        return zero, zero
    l1 = (pred - target).abs().sum(1).mean()
    giou = (1 - ops.generalized_box_iou_3d(pred, target.to(pred.dtype))).mean()
    return l1, giou


def query_box_losses(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    l1, giou = box_terms(pred, target)
    return {"box_l1": l1, "box_giou": giou}


def point_box_losses(
    point_boxes: torch.Tensor, boxes: torch.Tensor, gt_id: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each thing point regresses its instance's box (section 3.2)."""
    rows = (gt_id >= 0).nonzero().squeeze(1)
    l1, giou = box_terms(point_boxes[rows], boxes[gt_id[rows]])
    return {"point_box_l1": l1, "point_box_giou": giou}
