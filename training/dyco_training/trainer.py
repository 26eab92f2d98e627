"""DyCo3D training: the optimisation loop, validation, export (`Trainer`).

One process or many (`torchrun`, DistributedDataParallel). Each iteration draws
`batch_size` scenes from this rank's shard of the pool (real train scans + generated rooms),
augments and crops them, runs the model and the losses, and steps the optimiser. The mask
branch's losses are off for the first `prepare_iters` iterations (DyCo3D's staged start: the
offsets must be sensible before clusters are worth decoding). The training state (model,
optimiser, scheduler, step) is a `torch.save` of tensors and plain containers only,
read back with `weights_only=True`.

The config (`TrainConfig`, YAML with `base:`) lives in `train_config.py`, the pool and batches
in `data.py`; their names are re-exported here for older importers.
"""

from __future__ import annotations

import copy
import logging
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from dyco_perception.scenes import Scene

from dyco_training.data import (
    MAX_CROP_TRIES,
    augment_spanning,
    build_pool,
    load_scans,
    make_batch,
)
from dyco_training.distributed import (
    DistInfo,
    average_scalars,
    barrier,
    init_distributed,
    shard_indices,
    shutdown_distributed,
)
from dyco_training.logging_utils import RunLogger
from dyco_training.losses import compute_losses, semantic_class_weights
from dyco_training.train_config import (
    BACKBONE_PREFIXES,
    REPO_ROOT,
    DataConfig,
    ExportConfig,
    InitConfig,
    LogConfig,
    LoopConfig,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    load_train_config,
    read_train_yaml,
    train_config_from_dict,
)

__all__ = [
    "BACKBONE_PREFIXES",
    "MAX_CROP_TRIES",
    "REPO_ROOT",
    "DataConfig",
    "ExportConfig",
    "InitConfig",
    "LogConfig",
    "LoopConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "Trainer",
    "augment_spanning",
    "build_pool",
    "git_commit",
    "load_scans",
    "load_train_config",
    "lr_factor",
    "make_batch",
    "make_optimizer",
    "read_train_yaml",
    "resolve_init_path",
    "resolve_train_device",
    "train_config_from_dict",
    "warm_start",
]

log = logging.getLogger(__name__)


# --- optimisation -----------------------------------------------------------------------------


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return kind(
        model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )


def lr_factor(step: int, total: int, cfg: ScheduleConfig, time_progress: float = 0.0) -> float:
    """Multiplier on the base lr at `step` (linear warm-up, then cosine / poly / constant).
    `time_progress` (elapsed / time budget) moves the schedule on when time runs out first."""
    if step < cfg.warmup_iters:
        return (step + 1) / cfg.warmup_iters
    progress = min(1.0, (step - cfg.warmup_iters) / max(1, total - cfg.warmup_iters))
    progress = max(progress, min(1.0, time_progress))
    if cfg.name == "cosine":
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "poly":
        return (1 - progress) ** cfg.power
    return 1.0


def resolve_train_device(name: str, info: DistInfo) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_init_path(checkpoint: str) -> Path:
    """An `init.checkpoint` as a path: relative to the working directory, else the repository."""
    path = Path(checkpoint)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def warm_start(model: torch.nn.Module, cfg: InitConfig) -> dict[str, Any] | None:
    """Copy `cfg.scope`'s weights from `cfg.checkpoint` into `model`; returns what was copied
    (for the model card) or None. Mismatched names or shapes are errors, not silent skips."""
    if not cfg.checkpoint:
        return None
    import hashlib

    from dyco_perception.checkpoint import load_checkpoint, upgrade_state_keys

    path = resolve_init_path(cfg.checkpoint)
    state, card = load_checkpoint(path)
    state = upgrade_state_keys(state, card)
    own = model.state_dict()
    if cfg.scope == "backbone":
        state = {k: v for k, v in state.items() if k.startswith(BACKBONE_PREFIXES)}
        wanted = {k for k in own if k.startswith(BACKBONE_PREFIXES)}
    else:
        wanted = set(own)
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or unexpected:
        raise ValueError(
            f"init.checkpoint {path}: its weights do not fit this model (scope {cfg.scope}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != own[name].shape:
            raise ValueError(
                f"init.checkpoint {path}: {name} has shape {tuple(tensor.shape)}, this model "
                f"expects {tuple(own[name].shape)}"
            )
        own[name] = tensor.to(own[name].dtype)
    model.load_state_dict(own)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    log.info("warm start: %d tensors (%s) from %s", len(state), cfg.scope, path)
    return {"checkpoint": str(path), "sha256_16": digest, "scope": cfg.scope, "tensors": len(state)}


# --- the trainer ------------------------------------------------------------------------------


def uses_bf16_autocast(amp: bool, device: torch.device) -> bool:
    """Mixed precision: bfloat16 autocast on CUDA GPUs that have it (Ampere on), float32
    elsewhere. Not float16: on an H200 its autocast broke training within a few steps of the
    tiny test model (the loss doubled, and the gradient scaler then skipped every step), while
    bfloat16, with float32's exponent range and no scaler, trained it as float32 does."""
    return amp and device.type == "cuda" and torch.cuda.is_bf16_supported()


class Trainer:
    """Builds everything from a TrainConfig; `run()` trains and returns the final metrics."""

    def __init__(
        self, cfg: TrainConfig, out_dir: str | Path | None = None, resume: str | Path | None = None
    ):
        self.cfg = cfg
        self.out_dir = Path(out_dir or cfg.out_dir)
        loop = cfg.train
        wanted = (
            "cuda"
            if loop.device == "cuda" or (loop.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
        self.info = init_distributed(wanted)
        self.device = resolve_train_device(loop.device, self.info)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if loop.threads:
            torch.set_num_threads(loop.threads)
        torch.manual_seed(loop.seed)  # same initial weights on every rank
        from dyco_perception.model import SegmentationNetwork

        self.model = SegmentationNetwork(cfg.model)
        self.init_source = warm_start(self.model, cfg.init)
        self.model.to(self.device)
        self.net: torch.nn.Module = self.model
        if self.info.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=loop.find_unused_parameters,
            )
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.elapsed = 0.0  # training seconds so far (kept across resumes)
        self.shared_time_progress = 0.0  # rank 0's, so every rank uses the same lr
        self._clock_start = time.perf_counter()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, loop.iterations, cfg.schedule, self.shared_time_progress),
        )
        self.use_amp = uses_bf16_autocast(loop.amp, self.device)
        self.step = 0
        self.code_version = git_commit()  # at the start: the code that does the training
        self.pool = build_pool(cfg.data)
        # The real scans of the pool, each once (the pool repeats them `real_repeat` times).
        real = {s.name: s for s in self.pool[: len(self.pool) - cfg.data.generated_rooms]}
        self.real_scenes = [real[name] for name in sorted(real)]
        self.real_names = sorted(real)
        self.class_geometry = self.fit_class_geometry()
        self.class_weights = semantic_class_weights(
            self.pool, cfg.model.num_classes, cfg.loss.semantic_class_weighting
        )
        self.val_scenes = (
            load_scans(cfg.data, cfg.data.val_split, cfg.data.val_scans)
            if self.info.is_main
            else []
        )
        self.train_eval_scenes = (
            load_scans(cfg.data, cfg.data.train_split, cfg.data.train_scans)
            if self.info.is_main and cfg.log.train_curve
            else []
        )
        self.logger = RunLogger(
            self.out_dir, enabled=self.info.is_main, tensorboard=cfg.log.tensorboard
        )
        if resume:
            self.load_state(resume)

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self._clock_start

    def time_progress(self) -> float:
        budget = self.cfg.train.max_minutes * 60.0
        return self.seconds() / budget if budget > 0 else 0.0

    def out_of_time(self) -> bool:
        """Same answer (and lr) on every rank: rank 0's clock decides."""
        if self.cfg.train.max_minutes <= 0:
            return False
        progress = torch.tensor([self.time_progress()], dtype=torch.float64)
        if self.info.enabled:
            torch.distributed.broadcast(progress, 0)
        self.shared_time_progress = float(progress.item())
        return self.shared_time_progress >= 1.0

    # ---- data ----
    def _scenes_for(self, step: int) -> list[Scene]:
        per_rank = -(-len(self.pool) // self.info.world_size)
        chosen = []
        for j in range(self.cfg.train.batch_size):
            position = step * self.cfg.train.batch_size + j
            shard = shard_indices(
                len(self.pool), position // per_rank, self.cfg.train.seed, self.info
            )
            chosen.append(self.pool[shard[position % per_rank]])
        return chosen

    def batch_for(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.cfg.train.seed, self.info.rank, step])
        model = self.cfg.model
        bottleneck = model.voxel.voxel_size * 2 ** (model.backbone.levels - 1)
        scenes = self._scenes_for(step)
        return make_batch(scenes, self.cfg.augment, rng, self.device, bottleneck, self.pool)

    # ---- one iteration ----
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.net.train()
        # The staged start: the decoder's terms only once the offsets are sensible.
        decoder_scale = 0.0 if self.step < self.cfg.train.prepare_iters else 1.0
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_amp):
            outputs = self.net(
                batch["xyz"], batch["rgb"], batch["batch"], batch["semantic"], batch["instance"]
            )
            losses = compute_losses(
                self.net, outputs, batch, self.cfg.loss, decoder_scale, self.class_weights
            )
        total = losses["total"]
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss at iteration {self.step}: "
                f"{ {k: float(v) for k, v in losses.items()} }"
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = None
        if self.cfg.optim.grad_clip > 0:
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
            )
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        values = {f"loss_{k}": float(v.detach()) for k, v in losses.items()}
        values["proposals"] = float(outputs["proposals"].num)
        if grad_norm is not None:
            values["grad_norm"] = grad_norm
        return values

    def fit_class_geometry(self) -> dict[str, Any] | None:
        """The class-from-geometry prior on this run's real training scans, when the model
        config asks for one (validation and the exported card use it)."""
        inference = self.cfg.model.inference
        if inference.class_geometry == "off":
            return None
        if not self.real_names:
            raise ValueError(
                "model.inference.class_geometry fits its prior on the real training scans, "
                "and this run has none (data.real_repeat: 0 or no scans)"
            )
        from dyco_training.class_geometry import fit_class_geometry

        prior = fit_class_geometry(
            self.real_scenes,
            inference.class_geometry_features,
            inference.class_geometry_fragments,
            balance=inference.class_geometry_balance,
        )
        return prior.to_dict()

    # ---- validation ----
    def validate(self, scenes: list[Scene] | None = None) -> dict[str, Any]:
        """Benchmark AP / AP50 / AP25 of the current model on the val scans (main rank)."""
        from dyco_perception.checkpoint import ModelCard
        from dyco_perception.evaluation import evaluate_predictions
        from dyco_perception.segmenter import Segmenter

        scenes = self.val_scenes if scenes is None else scenes
        if not scenes:
            return {}
        card = ModelCard.for_config(self.model.cfg)
        card.class_geometry = self.class_geometry
        segmenter = Segmenter.from_model(self.model, card, device=self.device)
        items, seconds = [], 0.0
        for scene in scenes:
            start = time.perf_counter()
            result = segmenter.segment(scene.xyz, scene.rgb)
            seconds += time.perf_counter() - start
            items.append((scene.semantic, scene.instance, result.instances))
        self.model.train()
        metrics = evaluate_predictions(items)
        metrics["seconds_per_scan"] = seconds / len(scenes)
        return metrics

    @staticmethod
    def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
        flat = {k: metrics.get(k) for k in ("AP", "AP50", "AP25")}
        for k, v in (metrics.get("class_agnostic") or {}).items():
            flat[f"agnostic_{k}"] = v
        flat["seconds_per_scan"] = metrics.get("seconds_per_scan")
        return {k: float(v) for k, v in flat.items() if v is not None}

    # ---- state ----
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "elapsed": self.seconds(),
            "config": yaml.safe_dump(self.cfg.source, sort_keys=False),
        }

    def save_state(self, path: str | Path | None = None) -> Path:
        path = Path(path or self.out_dir / "state.pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)  # atomic: an interrupted save never leaves a torn state file
        return path

    def load_state(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--resume: training state {path} does not exist")
        state = torch.load(path, map_location=self.device, weights_only=True)
        missing = {"model", "optimizer", "scheduler", "step"} - set(state)
        if missing:
            raise ValueError(f"{path}: not a training state, missing {sorted(missing)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self._clock_start = time.perf_counter()
        self.out_of_time()  # the restored schedule sees the restored clock
        log.info("resumed from %s at iteration %d", path, self.step)

    # ---- export ----
    def export(self, metrics: dict[str, Any], seconds: float) -> Path:
        from dyco_perception.checkpoint import ModelCard, save_checkpoint

        path = Path(self.cfg.export.checkpoint or self.out_dir / "model.safetensors")
        model = self.model
        if self.cfg.export.dtype == "float16":
            model = copy.deepcopy(self.model).cpu().half()
        data = self.cfg.data
        card = ModelCard.for_config(
            self.cfg.model,
            training={
                "data": {
                    "real_scans": self.real_names,
                    "real_repeat": data.real_repeat,
                    "generated_rooms": data.generated_rooms,
                    "generated_points": data.generated_points,
                    "val_scans": [s.name for s in self.val_scenes],
                    "scans_dir": data.scans_dir,
                },
                "config": self.cfg.source,
                "iterations": self.step,
                "world_size": self.info.world_size,
                "train_seconds": round(seconds, 1),
                "device": str(self.device),
                "weights_dtype": self.cfg.export.dtype,
                "val_metrics": metrics,
                "init": self.init_source,
                "git_commit": self.code_version,
            },
        )
        card.class_geometry = self.class_geometry
        return save_checkpoint(path, model, card)

    # ---- the loop ----
    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        cfg, main = self.cfg, self.info.is_main
        total = cfg.train.iterations
        bar = tqdm(
            total=total,
            initial=self.step,
            desc="train",
            unit="it",
            disable=not (main and cfg.log.progress),
        )
        window: list[dict[str, float]] = []
        last = time.perf_counter()
        while self.step < total and not self.out_of_time():
            values = self.train_step(self.batch_for(self.step))
            window.append(values)
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss_total']:.3f}")
            if (
                self.step % cfg.log.every == 0
                or self.step == total
                or (cfg.train.max_minutes and self.time_progress() >= 1.0)
            ):
                row = {k: float(np.nanmean([w[k] for w in window])) for k in window[0]}
                row = average_scalars(row, self.info)
                now = time.perf_counter()
                row["seconds_per_iter"] = (now - last) / len(window)
                row["lr"] = self.optimizer.param_groups[0]["lr"]
                last, window = now, []
                self.logger.log("train", self.step, row)
            if cfg.log.val_every and self.step % cfg.log.val_every == 0 and self.step < total:
                self._validate_and_log()
            if self.step % cfg.log.save_every == 0 and main:
                self.save_state()
        bar.close()
        metrics = self._validate_and_log()
        result: dict[str, Any] = {"val": metrics, "steps": self.step}
        if main:
            self.save_state()
            result["checkpoint"] = str(self.export(metrics, self.seconds()))
            png = self.logger.plot()
            if png is not None and cfg.export.curves_png:
                Path(cfg.export.curves_png).parent.mkdir(parents=True, exist_ok=True)
                self.logger.plot(cfg.export.curves_png)
            result["curves"] = str(png)
        self.logger.close()
        barrier(self.info)
        return result

    def _validate_and_log(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self.info.is_main:
            metrics = self.validate()
            if metrics:
                flat = self.flat_metrics(metrics)
                self.logger.log("val", self.step, flat)
                log.info("iteration %d val %s", self.step, flat)
            if self.train_eval_scenes:
                flat = self.flat_metrics(self.validate(self.train_eval_scenes))
                self.logger.log("train_eval", self.step, flat)
                log.info("iteration %d train scans %s", self.step, flat)
            self.logger.plot()
        barrier(self.info)
        return metrics

    def close(self) -> None:
        shutdown_distributed()
