"""Checkpoints: one `.safetensors` file = backend-neutral weights + a JSON model card.

Loading never executes code: safetensors holds only tensors and string metadata; a legacy
`.pt` file is read only through `torch.load(weights_only=True)`, which refuses pickled objects.

Classes: the project has one class list (`classes.py`). A checkpoint whose card lists other
classes or NYU40 ids is refused (the node would publish wrong names), rather than trusting the
card. The card's model config is validated like a YAML config, and every weight's shape is
checked against the model that config builds.

`python -m dyco_perception.checkpoint --random OUT [--config YAML]` writes a random-weight
checkpoint with the real card (for tests of the node before a trained one exists).
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dyco_perception import __version__, classes
from dyco_perception.class_geometry import ClassGeometry
from dyco_perception.config import ModelConfig, load_model_config

CARD_KEY = "model_card"
FORMAT_VERSION = 1
# Config keys added after format 1 was frozen, with the value that reproduces the network of a
# card written before them (a missing key must not silently turn an old checkpoint into the
# paper model, whose weights differ).
KEYS_ADDED_LATER = {
    "transformer": {"position": "absolute"},
    "mask_head": {"layers": 2, "generator": "pooled_mlp"},
}
# Settings outside `inference:` that decide how a trained network's outputs become instances
# (its clusters, where masks are decoded, how they are binarized), not what the weights
# compute: a card changes them as it changes its inference settings, as "section.key".
RUN_TIME_SETTINGS = {
    "grouping": ("radius", "min_points", "by_class", "thing_probability"),
    "mask_head": ("box_margin", "decode_region", "category_aware", "mask_threshold"),
}
# Values renamed later need nothing here: the config maps an earlier value to its new name
# itself (`validation.choice(..., renamed=...)`), for cards and YAMLs alike, e.g.
# `inference.class_source: cluster` -> `decoder`.


def inference_sections(changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"key" | "section.key" | section: {key: value}} -> {section: {key: value}}, a plain key
    being an `inference:` one. A section key outside RUN_TIME_SETTINGS is refused: it would
    change what the weights were trained to compute."""
    flat = {
        f"{key}.{name}" if isinstance(value, dict) else key: inner
        for key, value in changes.items()
        for name, inner in (value.items() if isinstance(value, dict) else [(None, value)])
    }
    sections: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        if section not in ("", "inference") and name not in RUN_TIME_SETTINGS.get(section, ()):
            allowed = [f"{s}.{k}" for s, keys in RUN_TIME_SETTINGS.items() for k in keys]
            raise ValueError(
                f"{key!r} cannot change at inference: the weights depend on it "
                f"(outside `inference:` only {', '.join(allowed)} can)"
            )
        sections.setdefault(section or "inference", {})[name] = value
    return sections


@dataclass
class ModelCard:
    model_config: dict[str, Any]
    classes: list[str] = field(default_factory=lambda: list(classes.SEMANTIC_CLASSES))
    nyu40_ids: list[int] = field(default_factory=lambda: list(classes.NYU40_IDS))
    training: dict[str, Any] = field(default_factory=dict)
    code_version: str = __version__
    format_version: int = FORMAT_VERSION
    # The fitted class-from-geometry prior (`class_geometry.ClassGeometry.to_dict`), or None.
    class_geometry: dict[str, Any] | None = None

    @classmethod
    def for_config(cls, cfg: ModelConfig, training: dict[str, Any] | None = None) -> ModelCard:
        return cls(model_config=cfg.to_dict(), training=dict(training or {}))

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(_with_keys_added_later(self.model_config))

    def with_inference(self, changes: dict[str, Any]) -> ModelCard:
        """A copy whose inference settings take `changes` (validated; the weights and the
        training record do not depend on them): how one trained model is scored or run with
        other inference settings. A key is an `inference:` one or a RUN_TIME_SETTINGS
        "section.key" (e.g. "grouping.radius")."""
        model_config = copy.deepcopy(self.model_config)
        for section, values in inference_sections(changes).items():
            model_config.setdefault(section, {}).update(values)
        card = replace(self, model_config=model_config)
        card.check()
        return card

    @property
    def voxel_size(self) -> float:
        return self.config.voxel.voxel_size

    @property
    def use_rgb(self) -> bool:
        return self.config.voxel.use_rgb

    def to_json(self) -> str:
        data = asdict(self)
        cfg = self.config
        # Redundant top-level copies for readers that do not parse the model config.
        data["voxel_size"] = cfg.voxel.voxel_size
        data["use_rgb"] = cfg.voxel.use_rgb
        data["in_channels"] = cfg.voxel.in_channels
        data["thresholds"] = asdict(cfg.inference)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"model card is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or "model_config" not in data:
            raise ValueError("model card must be a JSON object with a 'model_config' entry")
        known = {
            "model_config",
            "classes",
            "nyu40_ids",
            "training",
            "code_version",
            "format_version",
            "class_geometry",
        }
        card = cls(**{k: v for k, v in data.items() if k in known})
        card.check()
        return card

    def check(self) -> None:
        """Refuse cards that do not fit this code (class list, format, config)."""
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint format_version {self.format_version}; this code reads {FORMAT_VERSION}"
            )
        if list(self.classes) != list(classes.SEMANTIC_CLASSES):
            raise ValueError(
                f"checkpoint classes {self.classes} differ from classes.SEMANTIC_CLASSES "
                f"{list(classes.SEMANTIC_CLASSES)}"
            )
        if list(self.nyu40_ids) != list(classes.NYU40_IDS):
            raise ValueError(f"checkpoint NYU40 ids {self.nyu40_ids} differ from classes.py")
        cfg = self.config
        if cfg.num_classes != len(self.classes):
            raise ValueError(
                f"model_config.num_classes={cfg.num_classes} but the card lists "
                f"{len(self.classes)} classes"
            )
        if self.class_geometry is not None:
            ClassGeometry.from_dict(self.class_geometry)
        elif cfg.inference.class_geometry != "off":
            raise ValueError(
                f"inference.class_geometry={cfg.inference.class_geometry} needs the card's fitted "
                "class_geometry (python -m dyco_training.class_geometry --checkpoint ...)"
            )


def _with_keys_added_later(model_config: dict[str, Any]) -> dict[str, Any]:
    filled = {
        key: dict(value) if isinstance(value, dict) else value
        for key, value in model_config.items()
    }
    for section, defaults in KEYS_ADDED_LATER.items():
        if isinstance(filled.get(section), dict):
            filled[section] = {**defaults, **filled[section]}
    return filled


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard) -> Path:
    """Write weights + card to `path` (.safetensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoints are written as .safetensors, got {path.name}")
    card.check()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={CARD_KEY: card.to_json()})
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read (state_dict, card) without executing any code from the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    if path.suffix in (".pt", ".pth"):
        return _load_torch(path)
    raise ValueError(f"unknown checkpoint type {path.suffix!r}; use .safetensors (or .pt)")


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    if CARD_KEY not in metadata:
        raise ValueError(f"{path}: no '{CARD_KEY}' metadata; not a dyco_perception checkpoint")
    return state, ModelCard.from_json(metadata[CARD_KEY])


def _load_torch(path: Path) -> tuple[dict[str, torch.Tensor], ModelCard]:
    import pickle

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"{path}: refused; .pt checkpoints are read with weights_only=True and this file "
            f"holds more than tensors ({str(exc).splitlines()[0]})"
        ) from exc
    if not isinstance(data, dict) or "state_dict" not in data or CARD_KEY not in data:
        raise ValueError(f"{path}: a .pt checkpoint must be a dict with state_dict and {CARD_KEY}")
    card = data[CARD_KEY]
    card = ModelCard.from_json(card if isinstance(card, str) else json.dumps(card))
    return dict(data["state_dict"]), card


# Weights of DyCo3D's instance branch sat at the top level before decoders had their own module.
_MOVED_TO_DECODER = ("mask_feature_head.", "kernel_generator.", "score_head.")


def upgrade_state_keys(state: dict[str, torch.Tensor], card: ModelCard) -> dict[str, torch.Tensor]:
    """Weight names of older checkpoints under the current model's names."""
    return {
        (f"decoder.{name}" if name.startswith(_MOVED_TO_DECODER) else name): tensor
        for name, tensor in state.items()
    }


def build_model(state: dict[str, torch.Tensor], card: ModelCard) -> torch.nn.Module:
    """The network of `card` with `state` loaded; shape mismatches name the tensor."""
    from dyco_perception.model import SegmentationNetwork

    model = SegmentationNetwork(card.config)
    state = upgrade_state_keys(state, card)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint weights do not fit the card's model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"checkpoint weight {name} has shape {tuple(tensor.shape)}, the card's model "
                f"expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)
    return model


def write_random_checkpoint(out: str | Path, cfg: ModelConfig | None = None, seed: int = 0) -> Path:
    """A random-weight checkpoint with the real card (training info says so)."""
    from dyco_perception.model import SegmentationNetwork

    torch.manual_seed(seed)
    cfg = cfg or ModelConfig()
    model = SegmentationNetwork(cfg)
    card = ModelCard.for_config(cfg, training={"random_weights": True, "seed": seed})
    return save_checkpoint(out, model, card)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--random",
        metavar="OUT",
        required=True,
        help="write a random-weight checkpoint to OUT (.safetensors)",
    )
    parser.add_argument("--config", help="model config YAML (default: built-in defaults)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = load_model_config(args.config) if args.config else None
    print(write_random_checkpoint(args.random, cfg, args.seed))


if __name__ == "__main__":
    main()
