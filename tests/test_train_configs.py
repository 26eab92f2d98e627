"""The training recipes in config/train: each loads and validates, and each comparison's
candidate differs from the recipe it is measured against only in the setting it names."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import dyco_perception.model  # noqa: F401 (the decoder registry validates `decoder:`)
import pytest
from dyco_training.train_config import load_train_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "train"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config dataclass as {"section.key": value}."""
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def differing_keys(a: str, b: str) -> set[str]:
    """The settings in which two recipes differ, apart from where their outputs go and
    `source` (the YAML as read)."""
    left = flatten(dataclasses.replace(load_train_config(CONFIG_DIR / a), source={}))
    right = flatten(dataclasses.replace(load_train_config(CONFIG_DIR / b), source={}))
    differing = {k for k in left.keys() | right.keys() if left.get(k) != right.get(k)}
    return {k for k in differing if not k.startswith(("export.", "out_dir"))}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_training_config_loads(path: Path) -> None:
    cfg = load_train_config(path)
    assert cfg.optim.lr > 0 and cfg.train.iterations > 0


@pytest.mark.parametrize(
    ("candidate", "against", "setting"),
    [
        ("continue_full_lr.yaml", "continue.yaml", {"optim.lr"}),  # make cv-continue-lr
        (  # make cv-continue-balanced
            "continue_balanced.yaml",
            "continue.yaml",
            {"loss.semantic_class_weighting"},
        ),
        ("continue_without_elastic.yaml", "continue.yaml", {"augment.elastic_prob"}),
        (  # make cv-continue-mix3d
            "continue_segment12_mix3d.yaml",
            "continue_segment12.yaml",
            {"augment.mix_prob"},
        ),
        (  # make cv-continue-real-only
            "continue_segment12_real_only.yaml",
            "continue_segment12.yaml",
            {"data.generated_rooms"},
        ),
        ("continue_segment13.yaml", "continue_segment12.yaml", {"augment.mix_prob"}),  # Mix3D
        ("continue_mix_all.yaml", "continue_segment13.yaml", {"augment.mix_prob"}),
        (  # make cv-continue-wide-scale
            "continue_wide_scale.yaml",
            "continue_segment13.yaml",
            {"augment.scale_min", "augment.scale_max"},
        ),
        (  # make cv-continue-semantic
            "continue_label_smoothing.yaml",
            "continue_segment13.yaml",
            {"loss.semantic_label_smoothing"},
        ),
        (
            "continue_colour.yaml",
            "continue_segment13.yaml",
            {
                "augment.colour_shift_std",
                "augment.colour_dropout_prob",
            },
        ),
        ("continue.yaml", "continue_segment13.yaml", {"loss.semantic_label_smoothing"}),  # adopted
        ("continue_whole_scans.yaml", "continue.yaml", {"augment.max_points"}),  # cv-continue-crop
        (  # make cv-class-geometry-balance
            "continue_unweighted_prior.yaml",
            "continue.yaml",
            {"model.inference.class_geometry_balance"},
        ),
        (
            "continue_prior_sqrt_balanced.yaml",
            "continue.yaml",
            {"model.inference.class_geometry_balance"},
        ),
        (  # make cv-class-geometry-fragments
            "continue.yaml",
            "continue_whole_instances.yaml",
            {"model.inference.class_geometry_fragments"},
        ),
        (  # make cv-class-geometry (continue.yaml has had fragments since)
            "continue_whole_instances.yaml",
            "continue_size_prior.yaml",
            {"model.inference.class_geometry_features"},
        ),
        (  # make cv-continue-joint: session 16's two changes together
            "continue_real_only.yaml",
            "continue_segment12.yaml",
            {"augment.mix_prob", "data.generated_rooms"},
        ),
        ("dyco3d_portion.yaml", "dyco3d.yaml", {"loss.target_rule"}),  # make cv-targets
        (
            "dyco3d_portion_all.yaml",
            "dyco3d.yaml",
            {"loss.target_rule", "model.mask_head.decode_region"},
        ),
        ("dyco3d_focal.yaml", "dyco3d.yaml", {"loss.semantic_focal_gamma"}),
        (  # make cv-augment
            "dyco3d_colour.yaml",
            "dyco3d.yaml",
            {"augment.colour_dropout_prob", "augment.colour_shift_std"},
        ),
        (  # make cv-pretrain: the start differs, nothing else
            "stage1_from_generated.yaml",
            "shipped_stage1.yaml",
            {"init.checkpoint", "init.scope"},
        ),
    ],
)
def test_a_candidate_differs_only_in_its_setting(candidate: str, against: str, setting) -> None:
    assert differing_keys(candidate, against) == setting
