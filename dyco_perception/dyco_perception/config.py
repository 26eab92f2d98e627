"""Model configuration: dataclasses with YAML loading and strict validation.

Every method choice of the network and the inference pipeline is a field here. Each field
declares its allowed range (`ranged`) or choices (`choice`) in its metadata; loading rejects
unknown keys, wrong types and out-of-range values with a ValueError that names the key
(`validation.py`; `build_config`, `ranged` and `choice` are re-exported here for older importers:
new code imports them from `dyco_perception.validation`).

The `decoder:` section's schema belongs to the decoders (`model/decoders/`), a layer above this
module: the decoders package registers its validator here when imported
(`register_decoder_section`), so this module never imports the model. Importing anything from
`dyco_perception.model` loads it; before that, only the section's shape (a mapping with a string
`name`) is checked, and the network checks the rest when it is built.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dyco_perception.validation import build_config, choice, ranged

__all__ = [
    "BackboneConfig",
    "GroupingConfig",
    "InferenceConfig",
    "MaskHeadConfig",
    "ModelConfig",
    "TransformerConfig",
    "VoxelConfig",
    "build_config",
    "choice",
    "load_model_config",
    "ranged",
    "register_decoder_section",
]

# (decoder name, its options without `name`) -> that decoder's validated `Options`; raises
# ValueError naming the key. Set by `dyco_perception.model.decoders` when it is imported.
DecoderSectionValidator = Callable[[str, dict[str, Any]], Any]
_decoder_section: DecoderSectionValidator | None = None


def register_decoder_section(validator: DecoderSectionValidator) -> None:
    """Install the `decoder:` section's validator (the decoder registry calls this)."""
    global _decoder_section
    _decoder_section = validator


@dataclass
class VoxelConfig:
    voxel_size: float = ranged(0.02, 1e-3, 1.0, "voxel edge length in metres")
    use_rgb: bool = True
    use_xyz: bool = False
    # Beyond this many voxels the scene is voxelized coarser (bounded memory), with a warning.
    max_voxels: int = ranged(1_500_000, 1_000, 100_000_000)
    # Factor by which the voxel size grows per step while the scene exceeds max_voxels.
    oversize_growth: float = ranged(1.25, 1.01, 4.0)

    @property
    def in_channels(self) -> int:
        return 3 * int(self.use_rgb) + 3 * int(self.use_xyz)


@dataclass
class BackboneConfig:
    width: int = ranged(16, 1, 256, "m: channels of level 1; level i has i*m")
    levels: int = ranged(7, 1, 10)
    blocks_per_level: int = ranged(2, 1, 8)
    backend: str = choice("auto", ("auto", "torch", "spconv", "gemm"))


@dataclass
class TransformerConfig:
    enabled: bool = True
    layers: int = ranged(2, 1, 8, "self-attention + feed-forward layers (DyCo3D: 2)")
    heads: int = ranged(4, 1, 32)
    ffn_ratio: float = ranged(2.0, 0.5, 8.0)
    dropout: float = ranged(0.0, 0.0, 0.9)
    # "relative": a learned per-head attention bias indexed by the clipped integer offset between
    # two bottleneck voxels (the paper's relative position encoding); "absolute": an MLP of the
    # voxel position added to the tokens (checkpoints before the paper model).
    position: str = choice("relative", ("relative", "absolute"))
    relative_clip: int = ranged(8, 1, 64, "largest |offset| (bottleneck voxels) with its own bias")
    # Attention is quadratic: a scene with more bottleneck voxels than this attends within
    # spatial windows of `window` bottleneck voxels a side (chunked to max_tokens) instead.
    max_tokens: int = ranged(2048, 16, 1_000_000)
    window: int = ranged(8, 1, 1024, "window edge in bottleneck voxels for large scenes")


@dataclass
class GroupingConfig:
    # PointGroup / DyCo3D cluster on shifted coordinates with a 3 cm ball.
    radius: float = ranged(0.03, 1e-3, 1.0, "ball radius (m) on shifted coordinates")
    min_points: int = ranged(50, 1, 1_000_000, "smallest cluster kept as a proposal")
    # Group only points predicted as one class (PointGroup, DyCo3D), or all thing points
    # together (a semantic error then cannot cut an object apart; the class is the majority's).
    by_class: bool = True
    # 0: a point is grouped when its most probable class is a thing (the papers); above 0, also
    # when its thing classes together reach this probability, under the likeliest of them.
    thing_probability: float = ranged(0.0, 0.0, 1.0)
    # Training: "pred" = clusters from predictions (DyCo3D), "gt" = GT instances (faster start),
    # "both" = the union.
    train_proposals: str = choice("both", ("pred", "gt", "both"))
    max_train_proposals: int = ranged(128, 1, 10_000)


@dataclass
class MaskHeadConfig:
    """DyCo3D's mask branch (generator, decoder, candidate points), except `mask_threshold`,
    which every decoder's post-processing reads. The other decoders keep their settings in
    their own `decoder:` options."""

    mask_channels: int = ranged(16, 1, 128, "D': channels of the mask-feature head")
    hidden: int = ranged(16, 1, 128, "width of the instance decoder's hidden layers")
    layers: int = ranged(3, 1, 8, "1x1 conv layers of the instance decoder (paper Eq. 3: 3)")
    use_relative_position: bool = True
    # "grid" (DyCo3D section 3.3): each cluster on a grid_size^3 grid of mean backbone features,
    # two 3x3x3 sparse convs, global pooling, MLP. "pooled_mlp": pool the cluster's backbone
    # features, then the MLP (faster, our earlier checkpoints).
    generator: str = choice("grid", ("grid", "pooled_mlp"))
    grid_size: int = ranged(14, 2, 64, "g: cells per cluster side (paper: 14)")
    generator_channels: int = ranged(32, 1, 512, "channels of the generator's sparse convs")
    pooling: str = choice("mean", ("mean", "max"))
    controller_hidden: int = ranged(64, 1, 1024, "hidden width of the generator's MLP")
    # Where each cluster's decoder runs: "box", only on points inside the cluster's box grown
    # by box_margin (m; ours, faster); "all", on every point of the scene (the paper, 3.4), so
    # a fragment can still recover its whole object. category_aware narrows either to the
    # points predicted as the cluster's class.
    decode_region: str = choice("box", ("box", "all"))
    # The margin at inference, and in training (kept apart, like category_aware: a wider
    # margin at inference lets a fragment's mask reach the rest of its object).
    box_margin: float = ranged(0.3, 0.0, 100.0)
    box_margin_train: float = ranged(0.3, 0.0, 100.0)
    category_aware: bool = True
    category_aware_train: bool = False
    # Shared by every decoder, not DyCo3D's alone: the probability above which a decoded
    # (point, proposal) pair is in the mask (post-processing; ISBNet binarizes with it too),
    # unless a decoder returns its own per-proposal "mask_threshold" (DKNet's Otsu).
    mask_threshold: float = ranged(0.5, 0.0, 1.0)


@dataclass
class InferenceConfig:
    nms_iou: float = ranged(0.3, 0.0, 1.0)
    min_instance_points: int = ranged(50, 1, 1_000_000)
    score_threshold: float = ranged(0.09, 0.0, 1.0)
    score_mode: str = choice("mask", ("mask", "learned", "mask_x_learned"))
    score_with_class_prob: bool = True
    # An instance's class. "decoder": the decoder's own class decision, i.e. its classifier when
    # it has one (ISBNet's query classifier, DKNet's vote: `proposal_class_probs`), else the class
    # its proposal was grouped under (DyCo3D's and PointGroup's clusters); "mask": the thing class
    # with the highest mean probability over the decoded mask (robust when the clusters'
    # semantics are noisy). "cluster" is this value's earlier name (old YAMLs and cards).
    class_source: str = choice("decoder", ("decoder", "mask"), renamed={"cluster": "decoder"})
    # The instance's class from its size and height above the floor as well (`class_geometry.py`;
    # the card must hold the fitted prior): "off", "alone" (the prior's class) or "combined"
    # (the prior times the class_source's mean class probabilities over the mask).
    class_geometry: str = choice("off", ("off", "alone", "combined"))
    # "combined": the mask's class probabilities enter to this power (1: the plain product;
    # lower: they only tip the balance where the prior is unsure).
    class_geometry_mask_power: float = ranged(1.0, 0.0, 1.0)
    # With the prior on: each instance's score times the probability of its class (instances
    # re-ranked), so a mask whose class the prior is unsure of ranks below a sure one.
    class_geometry_score: bool = False
    # The features a prior is fitted on when a checkpoint is exported (a card's prior lists its
    # own): "size" (extents, bottom, top) or "size_shape" (and how the points spread).
    class_geometry_features: str = choice("size", ("size", "size_shape"))
    # Random parts of each ground-truth instance the prior is also fitted on at export (so it
    # names a fragment as it names its whole object).
    class_geometry_fragments: int = ranged(0, 0, 64)
    # Class weights in that fit, proportional to (the class's instances)^-balance: 0 none, 1 each
    # class weighs as much in all (mean AP counts every class alike, frequent or rare).
    class_geometry_balance: float = ranged(0.0, 0.0, 1.0)
    max_instances: int = ranged(256, 1, 100_000)
    # What the batch norms normalize by at inference. "running": the averages kept in training
    # (torch's eval mode); "input": each block's own mean and variance, as training normalizes
    # each batch (one scene) by its own. Weights are the same either way.
    norm_statistics: str = choice("running", ("running", "input"))
    # Test-time views: the semantic and offset heads averaged over copies of the input turned
    # about z in equal steps (1 = the input alone). Training turns scenes about z at random, so
    # each view is one the heads learned from; each costs one more backbone pass.
    test_time_views: int = ranged(1, 1, 16, "copies turned about z whose heads are averaged")


def _default_decoder() -> dict[str, Any]:
    return {"name": "dyco3d"}


@dataclass
class ModelConfig:
    num_classes: int = ranged(20, 2, 1000)
    # The instance decoder on the shared backbone: `name` (a file of model/decoders/) and that
    # method's own options (its `Options` dataclass, validated like every section here).
    decoder: dict = field(default_factory=_default_decoder)
    voxel: VoxelConfig = field(default_factory=VoxelConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    mask_head: MaskHeadConfig = field(default_factory=MaskHeadConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @property
    def decoder_layer_sizes(self) -> list[tuple[int, int]]:
        """(in, out) of each 1x1 conv of the instance decoder: D'(+3) -> H -> ... -> H -> 1."""
        mh = self.mask_head
        c_in = mh.mask_channels + 3 * int(mh.use_relative_position)
        dims = [c_in] + [mh.hidden] * (mh.layers - 1) + [1]
        return list(itertools.pairwise(dims))

    @property
    def dynamic_head_params(self) -> int:
        """Weights + biases of one generated decoder (Eq. 3: 177 for D'=H=8, 3 layers)."""
        return sum(c_in * c_out + c_out for c_in, c_out in self.decoder_layer_sizes)

    @property
    def decoder_name(self) -> str:
        return str(self.decoder.get("name", "dyco3d"))

    @property
    def decoder_options(self) -> Any:
        """The decoder's own settings as its validated `Options` dataclass (needs the decoder
        registry: import `dyco_perception.model` first)."""
        if _decoder_section is None:
            raise RuntimeError(
                "the decoder registry is not loaded: import dyco_perception.model (or "
                "dyco_perception.model.decoders) before reading decoder options"
            )
        options = {k: v for k, v in self.decoder.items() if k != "name"}
        return _decoder_section(self.decoder_name, options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return build_config(cls, data, "")._check_consistency()

    def validate(self) -> ModelConfig:
        """Re-check every field (after manual edits); returns self."""
        build_config(ModelConfig, self.to_dict(), "")
        return self._check_consistency()

    def _check_consistency(self) -> ModelConfig:
        if not isinstance(self.decoder.get("name", "dyco3d"), str):
            raise ValueError(f"decoder.name: expected a string, got {self.decoder['name']!r}")
        if _decoder_section is not None:  # else the network checks them when it is built
            self.decoder_options  # noqa: B018 (validates the name and the options)
        if self.transformer.enabled:
            top = self.backbone.width * self.backbone.levels
            if top % self.transformer.heads:
                raise ValueError(
                    f"transformer.heads={self.transformer.heads} must divide the bottleneck "
                    f"width backbone.width*backbone.levels={top}"
                )
        return self


def load_model_config(path: str | Path) -> ModelConfig:
    """Load a ModelConfig from YAML (missing keys take defaults)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return ModelConfig.from_dict(data)
