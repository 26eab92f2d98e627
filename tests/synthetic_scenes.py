"""Small synthetic scenes with known instances, for learning tests."""

from __future__ import annotations

import numpy as np

FLOOR, CHAIR = 1, 4  # semantic ids (dyco_perception.classes)


def box_surface(lo: np.ndarray, hi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points uniform over a box's top and four sides (a scanner does not see the bottom)."""
    size = hi - lo
    faces = [(axis, side) for axis in range(3) for side in (0, 1) if (axis, side) != (2, 0)]
    areas = np.array([np.prod(np.delete(size, axis)) for axis, _ in faces])
    pick = rng.choice(len(faces), n, p=areas / areas.sum())
    points = lo + rng.random((n, 3)) * size
    for f, (axis, side) in enumerate(faces):
        points[pick == f, axis] = hi[axis] if side else lo[axis]
    return points


def touching_boxes(
    grid: int = 2, side: float = 0.4, per_box: int = 300, floor_points: int = 800, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """grid x grid identical chair-class boxes standing face to face on a floor, all one colour:
    only geometry (offsets, relative position) tells them apart.
    Returns xyz float32 (N,3), rgb uint8 (N,3), semantic (N,), instance (N,) (0 = none)."""
    rng = np.random.default_rng(seed)
    extent = grid * side
    floor = np.c_[rng.random((floor_points, 2)) * (extent + 0.8) - 0.4, np.zeros(floor_points)]
    xyz, semantic, instance = [floor], [np.full(floor_points, FLOOR)], [np.zeros(floor_points)]
    for k in range(grid * grid):
        lo = np.array([k // grid * side, k % grid * side, 0.0])
        hi = lo + np.array([side, side, 0.5])
        xyz.append(box_surface(lo, hi, per_box, rng))
        semantic.append(np.full(per_box, CHAIR))
        instance.append(np.full(per_box, k + 1))
    semantic_all = np.concatenate(semantic).astype(np.int64)
    colour = np.where(semantic_all[:, None] == FLOOR, [90, 90, 90], [150, 110, 70])
    rgb = np.clip(colour + rng.normal(0, 4, colour.shape), 0, 255).astype(np.uint8)
    return (
        np.concatenate(xyz).astype(np.float32),
        rgb,
        semantic_all,
        np.concatenate(instance).astype(np.int64),
    )


# --- fitting a network to one scene (the overfit tests of every decoder) ----------------------

Scene = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # xyz, rgb, semantic, instance


def scene_targets(scene: Scene) -> dict:
    """The network's inputs and training targets for one scene (min corner at the origin)."""
    import torch

    xyz, rgb, semantic, instance = scene
    return {
        "xyz": torch.from_numpy(xyz - xyz.min(0)),
        "rgb": torch.from_numpy(rgb).float() / 127.5 - 1,
        "semantic": torch.from_numpy(semantic),
        "instance": torch.from_numpy(np.where(instance > 0, instance, -100)),
        "batch": torch.zeros(len(xyz), dtype=torch.long),
    }


def fit_to_scene(model, scene: Scene, loss_cfg, iterations: int, lr: float = 1e-2):
    """Adam on the full training loss of one scene, no augmentation; returns the model."""
    import torch
    from dyco_training.losses import compute_losses

    t = scene_targets(scene)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(iterations):
        out = model(t["xyz"], t["rgb"], t["batch"], t["semantic"], t["instance"])
        loss = compute_losses(model, out, t, loss_cfg)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def segment_ap50(model, scene: Scene) -> float:
    """Segment the scene like a user would (Segmenter, eval mode): its AP50."""
    from dyco_perception.evaluation import evaluate_predictions
    from dyco_perception.segmenter import Segmenter

    xyz, rgb, semantic, instance = scene
    result = Segmenter.from_model(model.eval()).segment(xyz, rgb)
    return evaluate_predictions([(semantic, instance, result.instances)])["AP50"] or 0.0
