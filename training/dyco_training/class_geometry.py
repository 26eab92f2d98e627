"""Fitting the class-from-geometry prior (`dyco_perception.class_geometry`) on the ground-truth
instances of the scans a checkpoint trained on, so it never sees a room the network did not.

    python -m dyco_training.class_geometry --checkpoint runs/cv/.../model.safetensors

writes the fitted prior into the checkpoint's card (weights untouched). The shipped checkpoint
gets it with `python -m dyco_training.ledger set-inference class_geometry=alone`, which fits it
the same way and keeps the ledger's chain; an export whose config asks for it fits it too. With
`--leave-one-room-out` it writes nothing and reports how well priors fitted as the card's name
the ground-truth instances of each of its training rooms, each fitted on the other rooms: the
labels alone, measured on every room at no training cost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dyco_perception.checkpoint import ModelCard
from dyco_perception.class_geometry import (
    FEATURE_SETS,
    ClassGeometry,
    floor_height,
    geometry_features,
)
from dyco_perception.classes import INSTANCE_CLASS_IDS, NUM_SEMANTIC_CLASSES
from dyco_perception.evaluation import InstancePredictions, evaluate_predictions
from dyco_perception.scenes import Scene, load_npz_scene

from dyco_training.datasets import room_of
from dyco_training.train_config import REPO_ROOT

# L2 weight of the logistic regression. Chosen on the ground-truth instances of the 8 training
# rooms, each room classified by a prior fitted on the other 7 (session 18): accuracy 0.51 at
# 1e-3, 0.50 at 1e-4, 0.45 at 1e-2 (without the squared features 0.50 at best).
WEIGHT_DECAY = 1e-3
FRAGMENT_MIN_POINTS = 10


def gt_instances(
    scene: Scene, features: str = "size", fragments: int = 0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(FEATURE_SETS[features] (K, F), class ids (K,)) of the scene's thing instances; an
    instance's class is the most common label of its points, as the benchmark takes it. With
    `fragments`, each instance also gives that many random parts of itself (`fragment`)."""
    names = FEATURE_SETS[features]
    floor_z = floor_height(scene.xyz, scene.semantic)
    rng = np.random.default_rng(seed)
    rows_features, class_ids = [], []
    for rows, class_id in thing_instances(scene):
        points = scene.xyz[rows]
        parts = [points] + [fragment(points, rng) for _ in range(fragments)]
        for part in parts:
            if len(part) >= FRAGMENT_MIN_POINTS:
                rows_features.append(geometry_features(part, floor_z, names))
                class_ids.append(class_id)
    return np.reshape(rows_features, (-1, len(names))), np.asarray(class_ids, dtype=np.int64)


def thing_instances(scene: Scene) -> list[tuple[np.ndarray, int]]:
    """(point rows, class id) of each ground-truth instance whose points' most common label is
    a thing class (as the benchmark takes an instance's class)."""
    found = []
    for instance_id in np.unique(scene.instance[scene.instance > 0]):
        rows = np.flatnonzero(scene.instance == instance_id)
        labels = scene.semantic[rows]
        labels = labels[labels >= 0]
        if labels.size and (class_id := int(np.bincount(labels).argmax())) in INSTANCE_CLASS_IDS:
            found.append((rows, class_id))
    return found


def fragment(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A part of an instance as a clustering may find it: the points within a random slab
    spanning 50-100 % of its extent along x or y (the height is kept whole)."""
    axis = int(rng.integers(2))
    low, high = points[:, axis].min(), points[:, axis].max()
    width = (high - low) * rng.uniform(0.5, 1.0)
    start = low + rng.uniform(0, (high - low) - width)
    return points[(points[:, axis] >= start) & (points[:, axis] <= start + width)]


def fit_class_geometry(
    scenes: Iterable[Scene],
    features: str = "size",
    fragments: int = 0,
    weight_decay: float = WEIGHT_DECAY,
    balance: float = 0.0,
) -> ClassGeometry:
    """Multinomial logistic regression (L-BFGS, float64, deterministic) on FEATURE_SETS[features]
    over the classes the scenes' instances hold (and `fragments` random parts of each), each
    class weighted by its count^-balance."""
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"class_geometry balance must be in [0, 1], got {balance}")
    scenes = list(scenes)
    pairs = [gt_instances(scene, features, fragments, seed) for seed, scene in enumerate(scenes)]
    x = np.concatenate([f for f, _ in pairs])
    labels = np.concatenate([c for _, c in pairs])
    if labels.size < 2:
        raise ValueError(f"class_geometry: {labels.size} ground-truth instances; need at least 2")
    class_ids = sorted(set(labels.tolist()))
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = torch.from_numpy((x - mean) / std)
    target = torch.from_numpy(np.searchsorted(class_ids, labels))
    class_weight = torch.bincount(target).double() ** -balance
    class_weight /= class_weight[target].mean()  # the loss keeps its scale against the decay
    weight = torch.zeros(z.shape[1], len(class_ids), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(class_ids), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight + bias, target, class_weight)
        loss = loss + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return ClassGeometry(
        class_ids=class_ids,
        mean=mean.tolist(),
        std=std.tolist(),
        weight=weight.detach().numpy().tolist(),
        bias=bias.detach().numpy().tolist(),
        features=list(FEATURE_SETS[features]),
        fitted_on=[scene.name for scene in scenes],
        fragments=fragments,
        balance=balance,
    )


def leave_one_room_out(
    scenes: list[Scene], features: str = "size", fragments: int = 0, balance: float = 0.0
) -> dict:
    """Benchmark AP (`evaluate_predictions`) of priors naming the ground-truth instances of each
    room's scans, each prior fitted on the other rooms' scans. The masks are the ground truth's
    own, ranked by size: only the labels are measured, on every room at no training cost."""
    items = []
    for room in sorted({room_of(scene.name) for scene in scenes}):
        others = [scene for scene in scenes if room_of(scene.name) != room]
        prior = fit_class_geometry(others, features, fragments, balance=balance)
        for scene in (scene for scene in scenes if room_of(scene.name) == room):
            items.append((scene.semantic, scene.instance, _named_gt_instances(prior, scene)))
    return evaluate_predictions(items)


def _named_gt_instances(prior: ClassGeometry, scene: Scene) -> InstancePredictions:
    floor_z = floor_height(scene.xyz, scene.semantic)
    rows = [rows for rows, _ in thing_instances(scene)]
    features = np.reshape(
        [geometry_features(scene.xyz[r], floor_z, tuple(prior.features)) for r in rows],
        (len(rows), len(prior.features)),
    )
    labels = prior.probabilities(features, NUM_SEMANTIC_CLASSES).argmax(1)
    return InstancePredictions(labels, np.array([len(r) for r in rows], float), rows)


def training_scans(card: ModelCard, scans_dir: str | Path | None = None) -> list[Path]:
    """The real scans the card's network trained on (`training.data.real_scans`)."""
    data = (card.training or {}).get("data") or {}
    names = data.get("real_scans")
    if not names:
        raise ValueError("the card records no real training scans to fit class_geometry on")
    folder = Path(scans_dir or data.get("scans_dir") or "")
    if not folder.is_absolute() and not folder.is_dir():
        folder = REPO_ROOT / folder
    paths = [folder / f"{name}.npz" for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"class_geometry: training scans not found: {missing[:3]}")
    return paths


def with_class_geometry(
    card: ModelCard,
    scans_dir: str | Path | None = None,
    features: str | None = None,
    fragments: int | None = None,
    balance: float | None = None,
) -> ModelCard:
    """The card with a prior fitted on its own training scans (kept if it has one), on
    `features`, `fragments` and `balance` (defaults: the card's inference.class_geometry_*)."""
    if card.class_geometry is not None:
        return card
    settings = prior_settings(card, features, fragments, balance)
    scenes = [load_npz_scene(path) for path in training_scans(card, scans_dir)]
    card.class_geometry = fit_class_geometry(scenes, **settings).to_dict()
    return card


def prior_settings(
    card: ModelCard,
    features: str | None = None,
    fragments: int | None = None,
    balance: float | None = None,
) -> dict[str, Any]:
    """How a prior for `card` is fitted: the arguments given, else the card's
    inference.class_geometry_* (fit_class_geometry's keyword arguments)."""
    inference = card.config.inference
    return {
        "features": features or inference.class_geometry_features,
        "fragments": inference.class_geometry_fragments if fragments is None else fragments,
        "balance": inference.class_geometry_balance if balance is None else balance,
    }


def main(argv: list[str] | None = None) -> int:
    from dyco_training.ledger import rewrite_card

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, nargs="+")
    parser.add_argument(
        "--leave-one-room-out",
        action="store_true",
        help="report the prior's AP on each training room's ground-truth instances, fitted on "
        "the other rooms (writes nothing)",
    )
    parser.add_argument("--scans", help="default: the card's training.data.scans_dir")
    parser.add_argument(
        "--features", choices=sorted(FEATURE_SETS), help="default: the card's setting"
    )
    parser.add_argument("--fragments", type=int, help="default: the card's setting")
    parser.add_argument("--balance", type=float, help="default: the card's setting")
    args = parser.parse_args(argv)
    try:
        if args.leave_one_room_out:
            for checkpoint in args.checkpoint:
                _report_rooms(checkpoint, args)
            return 0
        for checkpoint in args.checkpoint:

            def refit(card: ModelCard) -> ModelCard:
                card.class_geometry = None
                return with_class_geometry(
                    card, args.scans, args.features, args.fragments, args.balance
                )

            rewrite_card(checkpoint, refit)
            print(f"{checkpoint}: class_geometry fitted")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _report_rooms(checkpoint: Path, args: argparse.Namespace) -> None:
    from dyco_perception.checkpoint import load_checkpoint

    card = load_checkpoint(checkpoint)[1]
    settings = prior_settings(card, args.features, args.fragments, args.balance)
    scenes = [load_npz_scene(path) for path in training_scans(card, args.scans)]
    result = leave_one_room_out(scenes, **settings)
    named = {k: v[1] for k, v in result["per_class"].items() if v[1] is not None}
    print(f"{checkpoint}: {settings}, {len(scenes)} scans")
    print(f"AP {result['AP']:.3f}  AP50 {result['AP50']:.3f}  AP25 {result['AP25']:.3f}")
    print("AP50 per class: " + ", ".join(f"{k} {v:.3f}" for k, v in named.items()))


if __name__ == "__main__":
    sys.exit(main())
