"""Training augmentation as in PointGroup / DyCo3D: flip, rotation about z, scaling, jitter,
elastic distortion at two scales, and a crop to a point budget; colour shift, jitter and dropout
and Mix3D's overlay of two scenes (issue 18's generalisation candidates, off unless a config
sets them).

Every function takes numpy arrays and a `numpy.random.Generator`, so runs are reproducible.
`augment_scene` applies the whole chain from an `AugmentConfig` and keeps all per-point
arrays (xyz, rgb, semantic, instance) aligned by indexing them with the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dyco_perception.validation import build_config, ranged
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import convolve1d


@dataclass
class ElasticScale:
    # PointGroup (scale 50 voxels/m): granularity 6 and 20 voxels, magnitude 40 and 160 voxels;
    # its noise grid spans +-(cells-1)*granularity, i.e. a spacing of twice the granularity
    # (12 and 40 voxels = 0.24 and 0.8 m), which is what this field is.
    granularity: float = ranged(0.24, 1e-3, 100.0, "noise grid spacing (m)")
    magnitude: float = ranged(0.8, 0.0, 100.0, "factor on the smoothed noise (m)")


def _pointgroup_elastic() -> list[ElasticScale]:
    return [ElasticScale(0.24, 0.8), ElasticScale(0.8, 3.2)]


@dataclass
class AugmentConfig:
    enabled: bool = True
    flip_x_prob: float = ranged(0.5, 0.0, 1.0, "probability of mirroring x")
    rotate_z: bool = True
    scale_min: float = ranged(0.9, 0.01, 100.0)
    scale_max: float = ranged(1.1, 0.01, 100.0)
    # PointGroup multiplies xyz by (I + N(0, 0.1)): a small random linear distortion.
    matrix_jitter_std: float = ranged(0.1, 0.0, 1.0)
    point_jitter_std: float = ranged(0.0, 0.0, 1.0, "per-point Gaussian noise (m)")
    elastic_prob: float = ranged(1.0, 0.0, 1.0)
    elastic: list = field(default_factory=_pointgroup_elastic)
    colour_jitter_std: float = ranged(0.0, 0.0, 255.0, "per-point RGB noise (0..255 units)")
    # One RGB offset for the whole scene (another camera's exposure and white balance).
    colour_shift_std: float = ranged(0.0, 0.0, 255.0, "per-scene RGB offset (0..255 units)")
    # The whole scene's colour replaced by mid-grey: the model must also segment by geometry
    # (a door and the wall around it often share a colour; a robot's map may carry none).
    colour_dropout_prob: float = ranged(0.0, 0.0, 1.0, "probability of a colourless scene")
    max_points: int = ranged(250_000, 10, 100_000_000, "crop budget")
    # Mix3D (Nekrasov et al., 3DV 2021): a second scene of the pool overlaid on this one, each
    # augmented on its own and cropped to half the budget (so an iteration costs the same), their
    # xy centres and floors aligned: objects out of their usual context, so the labels must come
    # from the object itself rather than from the room around it.
    mix_prob: float = ranged(0.0, 0.0, 1.0, "probability of overlaying a second scene")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        data = dict(data)
        scales = data.pop("elastic", None)
        cfg = build_config(cls, data, "augment.")
        if scales is not None:
            if not isinstance(scales, list):
                raise ValueError("augment.elastic: expected a list of {granularity, magnitude}")
            cfg.elastic = [
                build_config(ElasticScale, s, f"augment.elastic[{i}].")
                for i, s in enumerate(scales)
            ]
        if cfg.scale_min > cfg.scale_max:
            raise ValueError("augment.scale_min must be <= augment.scale_max")
        return cfg


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def linear_transform(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """The 3x3 matrix of jitter, flip, rotation and scaling (applied as xyz @ M)."""
    m = np.eye(3) + rng.normal(0.0, cfg.matrix_jitter_std, (3, 3)) * (cfg.matrix_jitter_std > 0)
    if rng.random() < cfg.flip_x_prob:
        m[0] *= -1.0
    if cfg.rotate_z:
        m = m @ rotation_z(rng.uniform(0.0, 2.0 * np.pi))
    return m * rng.uniform(cfg.scale_min, cfg.scale_max)


def elastic_distortion(
    xyz: np.ndarray, granularity: float, magnitude: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth random displacement (SparseConvNet/PointGroup style): Gaussian noise on a grid
    of `granularity` spacing, box-blurred twice along each axis, trilinearly interpolated,
    times `magnitude`. Each displacement component is a convex combination of grid values."""
    lo = xyz.min(0)
    cells = ((xyz.max(0) - lo) / granularity).astype(np.int64) + 3
    noise = rng.standard_normal((3, *cells)).astype(np.float32)
    box = np.ones(3, dtype=np.float32) / 3.0
    for _ in range(2):
        for axis in (1, 2, 3):
            noise = convolve1d(noise, box, axis=axis, mode="constant")
    axes = [np.arange(n) * granularity + lo[i] - granularity for i, n in enumerate(cells)]
    shift = np.stack(
        [
            RegularGridInterpolator(axes, noise[c], bounds_error=False, fill_value=0.0)(xyz)
            for c in range(3)
        ],
        axis=1,
    )
    return (xyz + shift * magnitude).astype(xyz.dtype)


GREY = 127.5  # mid-range of 0..255: the network's colour input 0


def colour_augment(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Scene shift, per-point jitter, then dropout (0..255 units; clipped by the caller). Each
    draws from `rng` only when enabled, so configs without it keep their random stream."""
    if cfg.colour_shift_std > 0:
        rgb = rgb + rng.normal(0.0, cfg.colour_shift_std, 3).astype(np.float32)
    if cfg.colour_jitter_std > 0:
        rgb = rgb + rng.normal(0.0, cfg.colour_jitter_std, rgb.shape).astype(np.float32)
    if cfg.colour_dropout_prob > 0 and rng.random() < cfg.colour_dropout_prob:
        rgb = np.full_like(rgb, GREY)
    return rgb


def crop_to_budget(xyz: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of a random axis-aligned xy box holding at most `max_points` points (all rows if
    the scene fits). The box is centred on a random point and shrunk until it fits."""
    n = len(xyz)
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    centre = xyz[rng.integers(n), :2]
    half = (xyz[:, :2].max(0) - xyz[:, :2].min(0)) / 2.0 + 1e-6
    distance = np.abs(xyz[:, :2] - centre)
    while True:
        inside = np.flatnonzero(np.all(distance <= half, axis=1))
        if len(inside) <= max_points:
            return inside
        half = half * 0.9


def augment_scene(
    xyz: np.ndarray, rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyz', rgb', rows): augmented coordinates and colours of the kept rows (index the
    labels with `rows`). Coordinates are re-centred so the crop starts at the origin."""
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"xyz and rgb must both be (N, 3), got {xyz.shape} and {rgb.shape}")
    xyz = xyz.astype(np.float32)
    rgb = rgb.astype(np.float32)
    if cfg.enabled:
        xyz = (xyz - xyz.mean(0)) @ linear_transform(cfg, rng).astype(np.float32)
        if rng.random() < cfg.elastic_prob:
            for scale in cfg.elastic:
                xyz = elastic_distortion(xyz, scale.granularity, scale.magnitude, rng)
        if cfg.point_jitter_std > 0:
            xyz = xyz + rng.normal(0.0, cfg.point_jitter_std, xyz.shape).astype(np.float32)
        rgb = colour_augment(rgb, cfg, rng)
    rows = crop_to_budget(xyz, cfg.max_points, rng)
    xyz, rgb = xyz[rows], np.clip(rgb[rows], 0.0, 255.0)
    return (xyz - xyz.min(0)).astype(np.float32), rgb.astype(np.float32), rows
