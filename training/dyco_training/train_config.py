"""Training configuration: the sections of a training YAML as validated dataclasses
(`TrainConfig`), YAML reading with `base:` inheritance (`read_train_yaml`) and validation
(`train_config_from_dict`, `load_train_config`); errors name the offending key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dyco_perception.validation import build_config, choice, ranged

from dyco_perception.config import ModelConfig
from dyco_training.augment import AugmentConfig
from dyco_training.datasets import SCANNET50K_DIR
from dyco_training.losses import LossConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DataConfig:
    scans_dir: str = str(SCANNET50K_DIR)
    train_split: str = choice("train", ("train", "val", "all"))
    val_split: str = choice("val", ("train", "val", "none"))
    train_scans: list = field(default_factory=list)  # names; empty = the whole split
    val_scans: list = field(default_factory=list)
    real_repeat: int = ranged(1, 0, 1000, "copies of each real scan per epoch of the pool")
    generated_rooms: int = ranged(0, 0, 100_000, "procedural rooms added to the pool")
    generated_points: int = ranged(50_000, 1_000, 10_000_000)
    generated_seed: int = ranged(1000, 0, 2**31 - 1)


@dataclass
class OptimConfig:
    name: str = choice("adam", ("adam", "adamw"))
    lr: float = ranged(1e-3, 1e-7, 1.0)
    weight_decay: float = ranged(0.0, 0.0, 1.0)
    beta1: float = ranged(0.9, 0.0, 0.9999)
    beta2: float = ranged(0.999, 0.0, 0.99999)
    grad_clip: float = ranged(0.0, 0.0, 1e6, "max gradient norm; 0 = off")


@dataclass
class ScheduleConfig:
    name: str = choice("cosine", ("cosine", "poly", "constant"))
    warmup_iters: int = ranged(0, 0, 10_000_000)
    min_lr_ratio: float = ranged(0.0, 0.0, 1.0, "final lr / lr (cosine)")
    power: float = ranged(0.9, 0.0, 10.0, "poly exponent")


@dataclass
class LoopConfig:
    iterations: int = ranged(1000, 1, 100_000_000)
    # Wall-clock budget: training stops after this many minutes and the lr schedule runs over
    # whichever of iterations / minutes ends first (0 = iterations only).
    max_minutes: float = ranged(0.0, 0.0, 1e6)
    batch_size: int = ranged(1, 1, 1024, "scenes per iteration per process")
    prepare_iters: int = ranged(0, 0, 100_000_000, "mask losses off before this iteration")
    device: str = choice("auto", ("auto", "cpu", "cuda"))
    amp: bool = True  # bfloat16 autocast on CUDA GPUs that support it (not float16)
    threads: int = ranged(0, 0, 1024, "torch CPU threads; 0 = torch's default")
    seed: int = ranged(0, 0, 2**31 - 1)
    find_unused_parameters: bool = True


# Parts of the network shared by every decoder (what `init.scope: backbone` copies).
BACKBONE_PREFIXES = ("backbone.", "semantic_head.", "offset_head.")


@dataclass
class InitConfig:
    """Warm start: weights copied from a checkpoint before training (not a resume: the
    optimiser, schedule and step start fresh)."""

    checkpoint: str = ""  # .safetensors path relative to the working directory; empty = none
    # "all": every weight (the model must match the checkpoint's); "backbone": the U-Net and
    # the semantic and offset heads, so a new decoder trains on a pretrained backbone.
    scope: str = choice("all", ("all", "backbone"))


@dataclass
class LogConfig:
    every: int = ranged(10, 1, 1_000_000, "iterations between log rows")
    val_every: int = ranged(0, 0, 100_000_000, "iterations between validations; 0 = end only")
    # Each validation also scores the real training scans (no augmentation): the train curve
    # next to the val curve shows under- vs overfitting.
    train_curve: bool = False
    save_every: int = ranged(100, 1, 100_000_000, "iterations between training-state saves")
    tensorboard: bool = True
    progress: bool = True


@dataclass
class ExportConfig:
    checkpoint: str = ""  # .safetensors path; empty = <out>/model.safetensors
    dtype: str = choice("float32", ("float32", "float16"))
    curves_png: str = ""  # extra copy of the curves PNG (e.g. next to the checkpoint)


@dataclass
class TrainConfig:
    model: ModelConfig
    model_config: str = ""
    out_dir: str = "runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: InitConfig = field(default_factory=InitConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    log: LogConfig = field(default_factory=LogConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    source: dict = field(default_factory=dict)  # the YAML as read (recorded in the model card)


_SECTIONS = {
    "data": DataConfig,
    "optim": OptimConfig,
    "init": InitConfig,
    "schedule": ScheduleConfig,
    "train": LoopConfig,
    "log": LogConfig,
    "export": ExportConfig,
}
_TOP_KEYS = {"model_config", "model", "out_dir", "augment", "loss", *_SECTIONS}


def apply_override(config: dict[str, Any], assignment: str) -> None:
    """'a.b.c=value' (value parsed as YAML) into the nested config mapping."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"expected key.path=value, got {assignment!r}")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{key}: {part} is not a mapping")
    node[leaf] = yaml.safe_load(text)


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}."""
    config: dict[str, Any] = {}
    for assignment in assignments:
        apply_override(config, assignment)
    return config


def _resolve(path: str, base: Path) -> Path:
    """Relative paths: from the working directory if they exist there, else the repo root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for root in (base, REPO_ROOT):
        if (root / p).exists():
            return root / p
    raise ValueError(f"model_config: file {path} not found (cwd, {base} or {REPO_ROOT})")


def deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override`, nested mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _string_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}: expected a list of scan names, got {value!r}")
    return list(value)


def train_config_from_dict(data: dict[str, Any], base: Path | None = None) -> TrainConfig:
    """Validate a training config mapping; errors name the offending key."""
    if not isinstance(data, dict):
        raise ValueError(f"training config must be a mapping, got {type(data).__name__}")
    if "base" in data:
        raise ValueError("base: read the file with load_train_config / read_train_yaml")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"unknown training config key(s) {unknown}; allowed {sorted(_TOP_KEYS)}")
    model_dict: dict[str, Any] = {}
    if data.get("model_config"):
        with open(_resolve(str(data["model_config"]), base or Path.cwd()), encoding="utf-8") as f:
            model_dict = yaml.safe_load(f) or {}
    overrides = data.get("model") or {}
    if not isinstance(overrides, dict):
        raise ValueError("model: expected a mapping of model config overrides")
    try:
        model = ModelConfig.from_dict(deep_merge(model_dict, overrides))
    except ValueError as exc:
        raise ValueError(f"model: {exc}") from exc
    sections = {}
    for name, cls in _SECTIONS.items():
        sections[name] = build_config(cls, data.get(name) or {}, f"{name}.")
    sections["data"].train_scans = _string_list(sections["data"].train_scans, "data.train_scans")
    sections["data"].val_scans = _string_list(sections["data"].val_scans, "data.val_scans")
    out_dir = data.get("out_dir", "runs/train")
    if not isinstance(out_dir, str):
        raise ValueError(f"out_dir: expected a path string, got {out_dir!r}")
    return TrainConfig(
        model=model,
        model_config=str(data.get("model_config", "")),
        out_dir=out_dir,
        augment=AugmentConfig.from_dict(data.get("augment") or {}),
        loss=LossConfig.from_dict(data.get("loss") or {}),
        source=copy.deepcopy(data),
        **sections,
    )


def read_train_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML at `path`, merged over the config its `base:` names (relative to `path`)."""
    if path.resolve() in seen:
        raise ValueError(f"base: {path} includes itself")
    if not path.is_file():
        raise ValueError(f"base: training config {path} does not exist")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"training config must be a mapping, got {type(data).__name__}")
    if "base" not in data:
        return data
    parent = read_train_yaml(path.parent / str(data.pop("base")), (*seen, path.resolve()))
    return deep_merge(parent, data)


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"training config {path} does not exist")
    try:
        data = read_train_yaml(path, seen=())
        return train_config_from_dict(data, base=path.parent)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
