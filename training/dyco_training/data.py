"""Training data: the pool of scenes (real scans + generated rooms) and the augmented,
cropped batches drawn from it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from dyco_perception.scenes import Scene, load_npz_scene

from dyco_training.augment import AugmentConfig, augment_scene
from dyco_training.datasets import list_npz_scans
from dyco_training.train_config import REPO_ROOT, DataConfig


def load_scans(cfg: DataConfig, split: str, names: list[str]) -> list[Scene]:
    """Real scans of one split (or the named ones); [] for split 'none' without names."""
    if split == "none" and not names:
        return []
    scans_dir = Path(cfg.scans_dir)
    if not scans_dir.is_absolute() and not scans_dir.exists():
        scans_dir = REPO_ROOT / scans_dir  # configs name ../shared relative to the repository
    paths = list_npz_scans(scans_dir, None if split in ("all", "none") else split, names or None)
    return [load_npz_scene(p) for p in paths]


def build_pool(cfg: DataConfig) -> list[Scene]:
    """The training pool: real train scans (x real_repeat) + generated rooms."""
    real = load_scans(cfg, cfg.train_split, cfg.train_scans) if cfg.real_repeat else []
    pool = real * cfg.real_repeat
    if cfg.generated_rooms:
        from dyco_perception.data.room_generator import generate_room

        pool += [
            generate_room(cfg.generated_seed + i, cfg.generated_points)
            for i in range(cfg.generated_rooms)
        ]
    if not pool:
        raise ValueError("data: the training pool is empty (no real scans and no generated rooms)")
    return pool


MAX_CROP_TRIES = 20


def augment_spanning(
    scene: Scene, augment: AugmentConfig, rng: np.random.Generator, min_extent: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """augment_scene, redrawn until the crop spans more than `min_extent` metres along some
    axis: a crop inside one bottleneck voxel leaves BatchNorm a single value (a crash)."""
    for _ in range(MAX_CROP_TRIES):
        xyz, rgb, rows = augment_scene(scene.xyz, scene.rgb, augment, rng)
        if len(xyz) and float(np.ptp(xyz, axis=0).max()) > min_extent:
            return xyz, rgb, rows
    raise ValueError(
        f"scene {scene.name}: {MAX_CROP_TRIES} crops of augment.max_points="
        f"{augment.max_points} all fit inside one bottleneck voxel ({min_extent:.2f} m); "
        "raise augment.max_points or lower model backbone.levels / voxel_size"
    )


def augmented_sample(
    scene: Scene, augment: AugmentConfig, rng: np.random.Generator, min_extent: float
) -> dict[str, np.ndarray]:
    """One scene augmented and cropped: xyz (from the origin), rgb (0..255), sem, inst."""
    xyz, rgb, rows = augment_spanning(scene, augment, rng, min_extent)
    return {"xyz": xyz, "rgb": rgb, "sem": scene.semantic[rows], "inst": scene.instance[rows]}


def _xy_centre(xyz: np.ndarray) -> np.ndarray:
    return (xyz[:, :2].min(0) + xyz[:, :2].max(0)) / 2.0


def overlay(base: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mix3D's union of two samples: `other` moved so its xy centre is `base`'s and the floors
    (lowest points) meet; its instances renumbered after `base`'s, so none is merged."""
    shift = np.zeros(3, dtype=np.float32)
    shift[:2] = _xy_centre(base["xyz"]) - _xy_centre(other["xyz"])
    shift[2] = base["xyz"][:, 2].min() - other["xyz"][:, 2].min()
    first_free = base["inst"].max(initial=0)
    moved = {
        "xyz": other["xyz"] + shift,
        "rgb": other["rgb"],
        "sem": other["sem"],
        "inst": np.where(other["inst"] > 0, other["inst"] + first_free, 0),
    }
    mixed = {k: np.concatenate([base[k], moved[k]]) for k in base}
    mixed["xyz"] = (mixed["xyz"] - mixed["xyz"].min(0)).astype(np.float32)
    return mixed


def training_sample(
    scene: Scene,
    augment: AugmentConfig,
    rng: np.random.Generator,
    min_extent: float,
    pool: list[Scene] | None,
) -> dict[str, np.ndarray]:
    """`scene` augmented and cropped; with `augment.mix_prob`, overlaid (Mix3D) on a second
    scene drawn from `pool`, each cropped to half the point budget. The mix draws from `rng`
    only when enabled, so configs without it keep their random stream."""
    if not (pool and augment.mix_prob > 0 and rng.random() < augment.mix_prob):
        return augmented_sample(scene, augment, rng, min_extent)
    partner = pool[int(rng.integers(len(pool)))]
    half = replace(augment, max_points=max(augment.max_points // 2, 1))
    return overlay(
        augmented_sample(scene, half, rng, min_extent),
        augmented_sample(partner, half, rng, min_extent),
    )


def make_batch(
    scenes: list[Scene],
    augment: AugmentConfig,
    rng: np.random.Generator,
    device: torch.device,
    min_extent: float = 0.0,
    pool: list[Scene] | None = None,
) -> dict[str, torch.Tensor]:
    """Augment + crop (+ mix, with `pool`) each scene and concatenate them with a per-point
    scene index."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("xyz", "rgb", "sem", "inst", "batch")}
    for b, scene in enumerate(scenes):
        sample = training_sample(scene, augment, rng, min_extent, pool)
        for key in ("xyz", "sem", "inst"):
            parts[key].append(sample[key])
        parts["rgb"].append(sample["rgb"] / 127.5 - 1.0)
        parts["batch"].append(np.full(len(sample["xyz"]), b, dtype=np.int64))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    instance = np.where(cat["inst"] > 0, cat["inst"], -100)  # losses: no instance = ignore
    return {
        "xyz": torch.from_numpy(cat["xyz"].astype(np.float32)).to(device),
        "rgb": torch.from_numpy(cat["rgb"].astype(np.float32)).to(device),
        "semantic": torch.from_numpy(cat["sem"].astype(np.int64)).to(device),
        "instance": torch.from_numpy(instance.astype(np.int64)).to(device),
        "batch": torch.from_numpy(cat["batch"]).to(device),
    }
