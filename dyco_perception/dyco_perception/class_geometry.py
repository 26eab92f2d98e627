"""An instance's class from its shape and height: a prior that does not depend on the room.

The semantic head labels points from what it saw in the training rooms, and in a room it has
never seen its labels are what fails first (README "Results"). Size and height carry over
between rooms: a table top stands ~0.75 m above the floor, a door is ~2 m tall and thin, a
picture hangs on a wall. `ClassGeometry` is a multinomial logistic regression over a few such
features of an instance's points, fitted on the ground-truth instances of the training scans
(`dyco_training.class_geometry`), stored in the checkpoint's card (`class_geometry`) and used
per `inference.class_geometry`: "alone" (its class) or "combined" (its probabilities times
the mask's mean class probabilities, renormalized).

Features (`geometry_features`), robust to stray points (2nd-98th percentiles), in two sets
(`FEATURE_SETS`, `inference.class_geometry_features`; a card's prior lists its own):
- "size": log of the shorter and longer horizontal extent and of the height (each + 5 cm), the
  bottom and top above the floor, and the squares of the five;
- "size_shape": those and how the points spread: the share of them in the top and in the
  bottom fifth of the height (a table's top, a chair's seat and legs) and the log ratio of the
  footprint's two principal variances (a door or picture is a line from above, a table not).
The floor is the median height of the points labelled floor, or the 1st percentile of all
heights when fewer than FLOOR_MIN_POINTS are (`floor_height`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dyco_perception.classes import INSTANCE_CLASS_IDS, SEMANTIC_CLASSES

FLOOR_CLASS_ID = SEMANTIC_CLASSES.index("floor")
FLOOR_MIN_POINTS = 50
EXTENT_OFFSET = 0.05  # m, so that a flat or one-voxel extent has a finite log
SIZE = ("log_short_side", "log_long_side", "log_height", "bottom", "top")
SHAPE = ("top_share", "bottom_share", "log_footprint_ratio")
FEATURE_SETS = {
    "size": SIZE + tuple(f"{name}^2" for name in SIZE),
    "size_shape": SIZE + tuple(f"{name}^2" for name in SIZE) + SHAPE,
}
MODES = ("off", "alone", "combined")


def floor_height(xyz: np.ndarray, semantic: np.ndarray) -> float:
    """The floor's height: median z of the points labelled floor, else the 1st percentile of z
    (a map cropped above its floor, or a scene whose floor was not recognised)."""
    if xyz.shape[0] == 0:
        return 0.0
    floor = xyz[semantic == FLOOR_CLASS_ID, 2]
    if floor.size >= FLOOR_MIN_POINTS:
        return float(np.median(floor))
    return float(np.percentile(xyz[:, 2], 1))


def geometry_features(points: np.ndarray, floor_z: float, names: tuple[str, ...]) -> np.ndarray:
    """(len(names),) float64 features (of FEATURE_SETS) of one instance's (n, 3) points."""
    points = points.astype(np.float64)
    low, high = np.percentile(points, [2, 98], axis=0)
    extent = high - low
    short, long = np.sort(extent[:2])
    size = {
        "log_short_side": np.log(short + EXTENT_OFFSET),
        "log_long_side": np.log(long + EXTENT_OFFSET),
        "log_height": np.log(extent[2] + EXTENT_OFFSET),
        "bottom": low[2] - floor_z,
        "top": high[2] - floor_z,
    }
    values = {**size, **{f"{name}^2": value**2 for name, value in size.items()}}
    if any(name in SHAPE for name in names):
        values.update(_shape_features(points, low[2], extent[2]))
    return np.array([values[name] for name in names])


def _shape_features(points: np.ndarray, bottom: float, height: float) -> dict[str, float]:
    relative = (points[:, 2] - bottom) / max(height, 1e-3)
    footprint = points[:, :2] - points[:, :2].mean(0)
    minor, major = np.linalg.eigvalsh(np.cov(footprint.T) + 1e-9 * np.eye(2))
    return {
        "top_share": float((relative > 0.8).mean()),
        "bottom_share": float((relative < 0.2).mean()),
        "log_footprint_ratio": float(np.log(minor / major + 1e-6)),
    }


def instance_features(
    xyz: np.ndarray, instance: np.ndarray, count: int, floor_z: float, names: tuple[str, ...]
) -> np.ndarray:
    """(count, len(names)) features of instances 1..count of a per-point `instance` (0 =
    none); an instance without points gets zeros."""
    features = np.zeros((count, len(names)))
    order = np.argsort(instance, kind="stable")
    bounds = np.searchsorted(instance[order], np.arange(1, count + 2))
    for k in range(count):
        rows = order[bounds[k] : bounds[k + 1]]
        if rows.size:
            features[k] = geometry_features(xyz[rows], floor_z, names)
    return features


@dataclass
class ClassGeometry:
    """Softmax(((x - mean) / std) @ weight + bias) over `class_ids` (thing classes)."""

    class_ids: list[int]
    mean: list[float]
    std: list[float]
    weight: list[list[float]]  # (len(features), len(class_ids))
    bias: list[float]
    features: list[str]
    fitted_on: list[str]  # the scans whose GT instances it was fitted on
    fragments: int = 0  # random parts of each GT instance it was also fitted on
    balance: float = 0.0  # class weights in the fit: (the class's instances)^-balance

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassGeometry:
        try:
            geometry = cls(**data)
        except TypeError as error:
            raise ValueError(f"class_geometry: {error}") from None
        geometry.check()
        return geometry

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        f, c = len(self.features), len(self.class_ids)
        if tuple(self.features) not in FEATURE_SETS.values():
            raise ValueError(
                f"class_geometry.features {self.features} are none of this code's sets "
                f"{sorted(FEATURE_SETS)}"
            )
        if not set(self.class_ids) <= set(INSTANCE_CLASS_IDS) or c == 0:
            raise ValueError(f"class_geometry.class_ids must be thing classes: {self.class_ids}")
        shapes = {
            "mean": np.shape(self.mean),
            "std": np.shape(self.std),
            "weight": np.shape(self.weight),
            "bias": np.shape(self.bias),
        }
        expected = {"mean": (f,), "std": (f,), "weight": (f, c), "bias": (c,)}
        for name, shape in shapes.items():
            if shape != expected[name]:
                raise ValueError(f"class_geometry.{name}: shape {shape}, expected {expected[name]}")
        values = np.concatenate([np.ravel(self.mean), np.ravel(self.weight), np.ravel(self.bias)])
        if not np.isfinite(values).all() or not (np.asarray(self.std) > 0).all():
            raise ValueError("class_geometry holds non-finite values or a std <= 0")

    def probabilities(self, features: np.ndarray, num_classes: int) -> np.ndarray:
        """(K, num_classes) class probabilities of (K, len(self.features)) features (classes it
        does not model: 0)."""
        z = (features - np.asarray(self.mean)) / np.asarray(self.std)
        logits = z @ np.asarray(self.weight) + np.asarray(self.bias)
        logits -= logits.max(1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(1, keepdims=True)
        full = np.zeros((features.shape[0], num_classes))
        full[:, self.class_ids] = probs
        return full

    def relabel(
        self,
        mode: str,
        xyz: np.ndarray,
        semantic: np.ndarray,
        instance: np.ndarray,
        class_probs: np.ndarray,
        mask_power: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(class ids (K,), class probabilities (K, C)) of instances 1..K: `mode` "alone"
        takes this prior's; "combined" multiplies them with `class_probs` (the mask's mean
        class probabilities) to the power `mask_power` and renormalizes."""
        count, num_classes = class_probs.shape
        floor_z = floor_height(xyz, semantic)
        features = instance_features(xyz, instance, count, floor_z, tuple(self.features))
        prior = self.probabilities(features, num_classes)
        if mode == "combined":
            joint = prior * class_probs.astype(np.float64) ** mask_power
            total = joint.sum(1, keepdims=True)
            # Where the two agree on nothing, the prior decides.
            prior = np.where(total > 0, joint / np.where(total > 0, total, 1), prior)
        elif mode != "alone":
            raise ValueError(f"class_geometry mode {mode!r}; expected one of {MODES[1:]}")
        return prior.argmax(1).astype(np.int64), prior.astype(np.float32)
