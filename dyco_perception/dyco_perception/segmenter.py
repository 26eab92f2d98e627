"""`Segmenter`: numpy point cloud in, per-point labels and instances out (ROS-free).

    seg = Segmenter.from_checkpoint("model.safetensors", device="auto", backend="auto",
                                    precision="float32")
    result = seg.segment(xyz, rgb)  # xyz (N,3) float; rgb (N,3) uint8 0..255 or float 0..1
    result = seg.segment(xyz, rgb, roi=RegionOfInterest.around((x, y), 5.0))

Input handling: xyz float64 is cast to float32; rows with NaN/inf in xyz (or rgb) are dropped
and counted (their outputs: semantic -1, instance 0, score 0), and so are rows outside the
optional region of interest. Empty clouds, single points and identical points give valid
(possibly empty) results. Maps larger than a block (`TilingConfig`) run block by block, with
instances merged across block borders (`tiling.py`), so memory stays bounded whatever the map
size; on CPU, `tiling.workers` blocks run side by side (one torch thread each: independent
blocks scale where one block's intra-op threads wait on each other). A block that still
exceeds `voxel.max_voxels` (a single block of extreme density, or tiling off) is voxelized
coarser, with a warning, and counted in `coarse_blocks`. The same input gives the same output,
whatever the workers (eval mode, no randomness; CPU kernels are deterministic; blocks merge in
order; on CUDA, atomic adds make results equal only up to float rounding).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dyco_perception import classes
from dyco_perception.checkpoint import ModelCard, build_model, load_checkpoint
from dyco_perception.class_geometry import ClassGeometry
from dyco_perception.columns import column_min, finite_rows
from dyco_perception.model import SegmentationNetwork
from dyco_perception.model.postprocess import select_instances
from dyco_perception.tiling import (
    Block,
    BlockMerger,
    MergedInstances,
    RegionOfInterest,
    TilingConfig,
    plan_blocks,
)

log = logging.getLogger(__name__)


@dataclass
class Instance:
    id: int
    class_id: int
    class_name: str
    score: float
    point_indices: np.ndarray  # int64 rows of the input cloud
    box_center: np.ndarray  # (3,) float32, axis-aligned box
    box_size: np.ndarray  # (3,) float32
    centroid: np.ndarray  # (3,) float32, mean of the points
    num_points: int
    # (num_classes,) float32: mean class probabilities over the mask (stuff classes 0): how sure
    # the class is, and the runner-up classes (`class_hypotheses`).
    class_probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


@dataclass
class SegmentationResult:
    semantic: np.ndarray  # (N,) int64 class id 0..19, -1 for dropped points
    instance: np.ndarray  # (N,) int32 1..K, 0 = none
    score: np.ndarray  # (N,) float32 owning instance's score, 0 = none
    instances: list[Instance] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    num_dropped_points: int = 0
    num_outside_roi: int = 0  # rows outside the region of interest (semantic -1, instance 0)
    voxel_size: float = 0.0  # the largest voxel size a block used (the model's unless capped)
    block_points: list[int] = field(default_factory=list)  # points the model saw per block
    coarse_blocks: int = 0  # blocks voxelized coarser than the model's voxel size
    # Bottleneck attention that ran: "off", "global" (one attention per scene) or "windowed"
    # (a block with more bottleneck voxels than transformer.max_tokens attended in windows).
    transformer: str = "off"


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    return device


class Segmenter:
    def __init__(
        self,
        model: SegmentationNetwork,
        card: ModelCard,
        device: str | torch.device = "auto",
        backend: str | None = None,
        tiling: TilingConfig | None = None,
        precision: str | None = None,
    ):
        self.device = resolve_device(device)
        self.card = card
        self.model = model.to(self.device)
        if backend is not None:
            self.model.set_backend(backend)
        if precision is not None:
            self.model.set_precision(precision)
        self.cfg = model.cfg
        self.tiling = (tiling or TilingConfig()).validate()
        card.check()  # refuses a class_geometry mode the card holds no prior for
        prior = card.class_geometry
        self.class_geometry = ClassGeometry.from_dict(prior) if prior is not None else None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        backend: str = "auto",
        tiling: TilingConfig | None = None,
        precision: str = "float32",
        fuse: bool = True,
        inference: dict[str, Any] | None = None,
    ) -> Segmenter:
        """The Segmenter owns this model, so its batch norms are folded into the convs
        (`fuse`, inference only). `precision`: "float32" | "bfloat16" sparse-conv matmuls.
        `inference`: settings that replace the card's `inference` ones (same weights)."""
        state, card = load_checkpoint(path)
        if inference:
            card = card.with_inference(inference)
        model = build_model(state, card)
        if fuse:
            model.fuse_for_inference()
        return cls(model, card, device, backend, tiling, precision)

    @classmethod
    def from_model(
        cls,
        model: SegmentationNetwork,
        card: ModelCard | None = None,
        device: str | torch.device | None = None,
    ) -> Segmenter:
        """Runs a caller's model as it is (never fused: a trainer passes its own model)."""
        card = card or ModelCard.for_config(model.cfg)
        device = device or next(model.parameters()).device
        return cls(model, card, device)

    @property
    def backend(self) -> str:
        return self.model.backend

    @torch.no_grad()
    def segment(
        self, xyz: np.ndarray, rgb: np.ndarray | None = None, roi: RegionOfInterest | None = None
    ) -> SegmentationResult:
        start = time.perf_counter()
        xyz32, rgb_unit, keep = self._check_input(xyz, rgb)
        n = xyz32.shape[0]
        result = SegmentationResult(
            semantic=np.full(n, -1, dtype=np.int64),
            instance=np.zeros(n, dtype=np.int32),
            score=np.zeros(n, dtype=np.float32),
            num_dropped_points=int(n - keep.size),
            voxel_size=self.cfg.voxel.voxel_size,
        )
        if result.num_dropped_points:
            log.warning("dropped %d points with NaN/inf values", result.num_dropped_points)
        if roi is not None:
            inside = keep[roi.contains(xyz32[keep])]
            result.num_outside_roi = int(keep.size - inside.size)
            keep = inside
        timings = {"preprocess": time.perf_counter() - start}
        if keep.size:
            self._run_in_eval_mode(
                xyz32[keep], None if rgb_unit is None else rgb_unit[keep], keep, result, timings
            )
        timings["total"] = time.perf_counter() - start
        result.timings = timings
        return result

    # ---- input checks ---------------------------------------------------------------------
    def _check_input(
        self, xyz: np.ndarray, rgb: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        if not isinstance(xyz, np.ndarray):
            raise ValueError(f"xyz must be a numpy array, got {type(xyz).__name__}")
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
        if not np.issubdtype(xyz.dtype, np.floating):
            raise ValueError(f"xyz must be float32/float64, got {xyz.dtype}")
        xyz32 = np.ascontiguousarray(xyz, dtype=np.float32)
        finite = finite_rows(xyz32)
        rgb_unit = None
        if self.cfg.voxel.use_rgb:
            if rgb is None:
                raise ValueError("this model uses colour: pass rgb (N,3) uint8 or float 0..1")
            rgb_unit = self._check_rgb(rgb, xyz32.shape[0])
            finite &= finite_rows(rgb_unit)
            rgb_unit = rgb_unit * 2.0 - 1.0  # the network's colour range [-1, 1]
        elif rgb is not None:
            self._check_rgb(rgb, xyz32.shape[0])
        return xyz32, rgb_unit, np.flatnonzero(finite)

    @staticmethod
    def _check_rgb(rgb: np.ndarray, n: int) -> np.ndarray:
        if not isinstance(rgb, np.ndarray):
            raise ValueError(f"rgb must be a numpy array, got {type(rgb).__name__}")
        if rgb.shape != (n, 3):
            raise ValueError(f"rgb must have shape ({n}, 3) like xyz, got {rgb.shape}")
        if rgb.dtype == np.uint8:
            return rgb.astype(np.float32) / 255.0
        if not np.issubdtype(rgb.dtype, np.floating):
            raise ValueError(f"rgb must be uint8 (0..255) or float (0..1), got {rgb.dtype}")
        rgb = rgb.astype(np.float32)
        finite = rgb[np.isfinite(rgb)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise ValueError(
                f"float rgb must lie in 0..1, got {finite.min():.3g}..{finite.max():.3g} "
                "(pass uint8 for 0..255 colours)"
            )
        return rgb

    # ---- inference --------------------------------------------------------------------------
    def _voxel_size_for(self, xyz: torch.Tensor) -> float:
        """Model voxel size, grown while the block would exceed voxel.max_voxels."""
        v = self.cfg.voxel
        size = v.voxel_size
        while _count_voxels(xyz, size) > v.max_voxels:
            size *= v.oversize_growth
        if size != v.voxel_size:
            message = (
                f"a block of {xyz.shape[0]} points exceeds voxel.max_voxels={v.max_voxels} at "
                f"{v.voxel_size} m; voxelizing it at {size:.4f} m instead (lower quality: "
                "lower tiling.max_block_points or raise voxel.max_voxels)"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            log.warning(message)
        return size

    def _run_in_eval_mode(self, *args) -> None:
        # Eval mode for inference, restored afterwards: a trainer may pass its own model.
        was_training = self.model.training
        self.model.eval()
        try:
            self._run(*args)
        finally:
            self.model.train(was_training)

    def _run(
        self,
        xyz: np.ndarray,
        rgb: np.ndarray | None,
        keep: np.ndarray,
        result: SegmentationResult,
        timings: dict[str, float],
    ) -> None:
        """Every block through the model, then the blocks' instances merged (one block:
        the model's own instances, unchanged)."""
        t0 = time.perf_counter()
        blocks = plan_blocks(xyz[:, :2], self.tiling)
        merger = BlockMerger(xyz.shape[0], self.cfg.num_classes)
        _add_time(timings, "tiling", t0)
        # One voxel grid for the whole map: a point falls in the same voxel whichever block
        # sees it, so blocks agree where they overlap.
        origin = torch.from_numpy(column_min(xyz))
        for block, run in zip(blocks, self._infer_blocks(blocks, xyz, rgb, origin), strict=True):
            merger.add(block, *run.outputs)
            run.report_to(result, timings)
        t1 = time.perf_counter()
        merged = merger.finish(self.tiling.merge_overlap, self.cfg.inference.min_instance_points)
        _add_time(timings, "tiling", t1)
        merged = self._classes_from_geometry(xyz, merged, timings)
        t1 = time.perf_counter()
        result.semantic[keep] = merged.semantic
        result.instance[keep] = merged.instance
        result.score[keep] = merged.score
        result.instances = _describe(result, merged, xyz, keep)
        _add_time(timings, "tiling", t1)

    def _classes_from_geometry(
        self, xyz: np.ndarray, merged: MergedInstances, timings: dict[str, float]
    ) -> MergedInstances:
        """Instance classes from the card's class-geometry prior (`inference.class_geometry`),
        and with `class_geometry_score` the scores times the probability of that class."""
        inference = self.cfg.inference
        if inference.class_geometry == "off" or not merged.class_id.size:
            return merged
        start = time.perf_counter()
        merged.class_id, merged.class_probs = self.class_geometry.relabel(
            inference.class_geometry,
            xyz,
            merged.semantic,
            merged.instance,
            merged.class_probs,
            inference.class_geometry_mask_power,
        )
        if inference.class_geometry_score:
            rows = np.arange(merged.class_id.size)
            merged = merged.rescored(merged.class_probs[rows, merged.class_id])
        _add_time(timings, "class_geometry", start)
        return merged

    def _infer_blocks(
        self, blocks: list[Block], xyz: np.ndarray, rgb: np.ndarray | None, origin: torch.Tensor
    ) -> Iterator[BlockRun]:
        """The blocks' runs, in block order (so the merge, and the result, do not depend on
        the workers); on CPU `tiling.workers` at a time, each worker on one torch thread."""

        def infer(block: Block) -> BlockRun:
            colours = None if rgb is None else rgb[block.context]
            return self._infer(xyz[block.context], colours, origin)

        workers = min(self.tiling.workers, len(blocks))
        if workers == 1 or self.device.type != "cpu":
            yield from map(infer, blocks)  # lazily: one block's model memory at a time
            return
        threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(
                workers, initializer=torch.set_num_threads, initargs=(1,)
            ) as pool:
                yield from pool.map(infer, blocks)
        finally:
            torch.set_num_threads(threads)  # the workers changed torch's process-wide default

    @torch.no_grad()  # grad mode is per thread: a block worker does not inherit segment()'s
    def _infer(
        self, xyz: np.ndarray, rgb: np.ndarray | None, grid_origin: torch.Tensor
    ) -> BlockRun:
        """One block through the model: semantic, instance (n,), and per instance class id,
        score, class probabilities; with what the result reports about the block."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        points = torch.from_numpy(xyz).to(self.device)
        colours = None if rgb is None else torch.from_numpy(rgb).to(self.device)
        batch = torch.zeros(points.shape[0], dtype=torch.long, device=self.device)
        voxel_size = self._voxel_size_for(points)
        _add_time(timings, "preprocess", t0)
        outputs = self.model(
            points,
            colours,
            batch,
            voxel_size=voxel_size,
            timings=timings,
            grid_origin=grid_origin.to(self.device),
        )
        t1 = time.perf_counter()
        final = select_instances(outputs, points.shape[0], self.cfg.mask_head, self.cfg.inference)
        block = (
            outputs["semantic_logits"].argmax(1),
            final.point_instance,
            final.class_id,
            final.score,
            final.class_probs,
        )
        block = tuple(t.cpu().numpy() for t in block)
        _add_time(timings, "postprocess", t1)
        return BlockRun(
            outputs=block,
            voxel_size=voxel_size,
            coarse=voxel_size != self.cfg.voxel.voxel_size,
            points=int(points.shape[0]),
            transformer=outputs["diagnostics"]["transformer"],
            timings=timings,
        )


@dataclass
class BlockRun:
    """One block's model outputs and what the result reports about it (kept apart from the
    result while blocks run side by side)."""

    outputs: tuple[np.ndarray, ...]
    voxel_size: float
    coarse: bool
    points: int
    transformer: str
    timings: dict[str, float]

    def report_to(self, result: SegmentationResult, timings: dict[str, float]) -> None:
        result.voxel_size = max(result.voxel_size, self.voxel_size)
        result.coarse_blocks += int(self.coarse)
        result.block_points.append(self.points)
        modes = ("off", "global", "windowed")  # a map reports the most approximate block
        result.transformer = max(result.transformer, self.transformer, key=modes.index)
        for stage, seconds in self.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds


def _add_time(timings: dict[str, float], stage: str, since: float) -> None:
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - since


def _count_voxels(xyz: torch.Tensor, voxel_size: float) -> int:
    cell = torch.floor(xyz / voxel_size).long()
    cell -= cell.min(0).values
    key = (cell[:, 0] << 42) | (cell[:, 1] << 21) | cell[:, 2]
    return int(torch.unique(key).numel())


def _describe(
    result: SegmentationResult, merged: MergedInstances, xyz: np.ndarray, keep: np.ndarray
) -> list[Instance]:
    class_ids, scores = merged.class_id, merged.instance_score
    class_probs = merged.class_probs
    instances = []
    kept_instance = result.instance[keep]
    order = np.argsort(kept_instance, kind="stable")
    bounds = np.searchsorted(kept_instance[order], np.arange(1, len(class_ids) + 2))
    for k in range(len(class_ids)):
        local = order[bounds[k] : bounds[k + 1]]
        pts = xyz[local]
        lo, hi = pts.min(0), pts.max(0)
        class_id = int(class_ids[k])
        instances.append(
            Instance(
                id=k + 1,
                class_id=class_id,
                class_name=classes.SEMANTIC_CLASSES[class_id],
                score=float(scores[k]),
                point_indices=keep[local].astype(np.int64),
                box_center=((lo + hi) / 2).astype(np.float32),
                box_size=(hi - lo).astype(np.float32),
                centroid=pts.mean(0).astype(np.float32),
                num_points=int(local.size),
                class_probs=class_probs[k],
            )
        )
    return instances
