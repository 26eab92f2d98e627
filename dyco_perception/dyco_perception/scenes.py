"""Labelled scans: the `Scene` every reader returns, and the scannet50k npz format.

The npz format is what `dyco-make-bag --scans` reads and the room generator writes; readers of
the other training layouts (PointGroup .pth, S3DIS) live in `dyco_training.datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dyco_perception import classes

IGNORE = classes.IGNORE_LABEL
_STUFF = np.asarray(classes.STUFF_CLASS_IDS)


@dataclass
class Scene:
    """One labelled scan: semantic ids 0..19 (-100 ignore), instance ids 1..K (0 = none)."""

    xyz: np.ndarray  # float32 (N, 3), metres, z up
    rgb: np.ndarray  # uint8 (N, 3)
    semantic: np.ndarray  # int64 (N,)
    instance: np.ndarray  # int64 (N,)
    name: str

    def __post_init__(self) -> None:
        n = len(self.xyz)
        shapes = {
            "xyz": (self.xyz.shape, (n, 3)),
            "rgb": (self.rgb.shape, (n, 3)),
            "semantic": (self.semantic.shape, (n,)),
            "instance": (self.instance.shape, (n,)),
        }
        for field_name, (have, want) in shapes.items():
            if have != want:
                raise ValueError(f"scene {self.name}: {field_name} has shape {have}, need {want}")
        if not np.all(np.isfinite(self.xyz)):
            raise ValueError(f"scene {self.name}: xyz contains NaN or inf")

    @property
    def num_points(self) -> int:
        return len(self.xyz)

    @property
    def num_instances(self) -> int:
        return int(np.unique(self.instance[self.instance > 0]).size)


def make_scene(
    xyz: np.ndarray, rgb: np.ndarray, semantic: np.ndarray, instance: np.ndarray, name: str
) -> Scene:
    """Build a Scene with the project's conventions enforced: instances of stuff and ignored
    points become 0 and the rest are renumbered 1..K in order of their original id."""
    semantic = np.asarray(semantic, dtype=np.int64)
    instance = np.asarray(instance, dtype=np.int64)
    if semantic.size and (semantic.max() >= classes.NUM_SEMANTIC_CLASSES):
        raise ValueError(f"scene {name}: semantic id {semantic.max()} outside 0..19")
    bad = (semantic < 0) & (semantic != IGNORE)
    if np.any(bad):
        raise ValueError(f"scene {name}: semantic ids must be 0..19 or {IGNORE}")
    no_instance = (instance <= 0) | (semantic == IGNORE) | np.isin(semantic, _STUFF)
    kept = np.where(no_instance, 0, instance)
    _, renumbered = np.unique(kept, return_inverse=True)
    instance = renumbered.reshape(-1) + (0 if np.any(kept == 0) else 1)
    return Scene(
        xyz=np.ascontiguousarray(xyz, dtype=np.float32),
        rgb=np.ascontiguousarray(rgb, dtype=np.uint8),
        semantic=semantic,
        instance=instance.astype(np.int64),
        name=name,
    )


_NPZ_KEYS = ("xyz", "rgb", "sem_nyu40", "instance")


def load_npz_scene(path: str | Path) -> Scene:
    """Read one scan in the scannet50k npz format."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in _NPZ_KEYS if k not in data.files]
        if missing:
            raise ValueError(f"{path}: not a scannet50k scan, missing arrays {missing}")
        xyz, rgb, nyu, instance = (data[k] for k in _NPZ_KEYS)
    if rgb.dtype != np.uint8:
        raise ValueError(f"{path}: rgb must be uint8, got {rgb.dtype}")
    return make_scene(xyz, rgb, classes.nyu40_to_semantic(nyu), instance, path.stem)


def save_scene_npz(scene: Scene, path: str | Path) -> Path:
    """Write a Scene in the scannet50k format (NYU40 ids; ignored points get NYU40 0)."""
    path = Path(path)
    if scene.instance.size and scene.instance.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"scene {scene.name}: too many instances for uint16")
    ignored = scene.semantic == IGNORE
    nyu = classes.semantic_to_nyu40(np.where(ignored, 0, scene.semantic))
    nyu = np.where(ignored, 0, nyu)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        xyz=scene.xyz.astype(np.float32),
        rgb=scene.rgb.astype(np.uint8),
        sem_nyu40=nyu.astype(np.uint16),
        instance=scene.instance.astype(np.uint16),
    )
    return path
