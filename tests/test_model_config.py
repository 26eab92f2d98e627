"""ModelConfig: YAML loading and validation errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dyco_perception.model  # noqa: F401 (the decoder registry validates `decoder:`)
import pytest
from dyco_perception.validation import build_config

from dyco_perception.config import ModelConfig, VoxelConfig, load_model_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "model"


@pytest.mark.parametrize("name", ["dyco3d_m16.yaml", "dyco3d_paper.yaml", "tiny_test.yaml"])
def test_shipped_model_configs_load(name: str) -> None:
    cfg = load_model_config(CONFIG_DIR / name)
    assert cfg.num_classes == 20


@pytest.mark.parametrize(
    ("mask_channels", "hidden", "layers", "expected"),
    [
        (8, 8, 3, 177),  # the paper's example, Eq. 3: (8+3)*8+8 + 8*8+8 + 8*1+1
        (16, 16, 2, 337),  # the released code: (16+3)*16+16 + 16*1+1
        (16, 16, 1, 20),  # a single 1x1 conv: 19*1+1
        (8, 4, 4, (11 * 4 + 4) + 2 * (4 * 4 + 4) + (4 + 1)),
    ],
)
def test_decoder_parameter_count_follows_eq3(mask_channels, hidden, layers, expected) -> None:
    cfg = ModelConfig.from_dict(
        {"mask_head": {"mask_channels": mask_channels, "hidden": hidden, "layers": layers}}
    )
    assert cfg.dynamic_head_params == expected


def test_paper_config_is_the_paper() -> None:
    cfg = load_model_config(CONFIG_DIR / "dyco3d_paper.yaml")
    assert cfg.voxel.voxel_size == 0.02
    assert (cfg.backbone.width, cfg.backbone.levels, cfg.backbone.blocks_per_level) == (16, 7, 2)
    assert (cfg.transformer.layers, cfg.transformer.position) == (2, "relative")
    assert (cfg.mask_head.generator, cfg.mask_head.grid_size) == ("grid", 14)
    assert cfg.dynamic_head_params == 177
    assert cfg.mask_head.category_aware and cfg.mask_head.category_aware_train
    assert cfg.grouping.train_proposals == "pred"
    assert (cfg.grouping.radius, cfg.grouping.min_points) == (0.03, 50)
    assert cfg.inference.nms_iou == 0.3


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"backbone": {"widht": 16}}, "backbone.widht"),
        ({"bogus": 1}, "bogus"),
        ({"backbone": {"width": "16"}}, "backbone.width"),
        ({"backbone": {"width": 16.5}}, "backbone.width"),
        ({"backbone": {"levels": 0}}, "backbone.levels"),
        ({"voxel": {"voxel_size": -0.02}}, "voxel.voxel_size"),
        ({"voxel": {"use_rgb": "yes"}}, "voxel.use_rgb"),
        ({"backbone": {"backend": "cuda"}}, "backbone.backend"),
        ({"inference": {"nms_iou": 1.5}}, "inference.nms_iou"),
        ({"transformer": {"heads": 5}}, "transformer.heads"),
        ({"grouping": []}, "grouping"),
    ],
)
def test_bad_config_names_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        ModelConfig.from_dict(data)


def test_out_of_range_message_gives_allowed_range() -> None:
    with pytest.raises(ValueError, match=r"allowed 1\.\.10"):
        ModelConfig.from_dict({"backbone": {"levels": 11}})


def test_yaml_round_trip(tmp_path: Path) -> None:
    import yaml

    cfg = ModelConfig.from_dict(
        {"backbone": {"width": 8, "levels": 3}, "transformer": {"heads": 2}}
    )
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_model_config(path) == cfg


def test_yaml_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="top level must be a mapping, got list"):
        load_model_config(path)


def test_the_decoder_section_names_a_registered_method_and_validates_its_options() -> None:
    assert ModelConfig().decoder_name == "dyco3d"  # cards without the key load as DyCo3D
    cfg = ModelConfig.from_dict({"decoder": {"name": "pointgroup", "score_grid": 10}})
    assert cfg.decoder_name == "pointgroup" and cfg.decoder_options.score_grid == 10
    with pytest.raises(ValueError, match=r"decoder\.name='mask3d' not allowed"):
        ModelConfig.from_dict({"decoder": {"name": "mask3d"}})
    with pytest.raises(ValueError, match=r"decoder\.radius"):
        ModelConfig.from_dict({"decoder": {"name": "dyco3d", "radius": 0.1}})
    with pytest.raises(ValueError, match=r"decoder\.score_grid"):
        ModelConfig.from_dict({"decoder": {"name": "pointgroup", "score_grid": 0}})
    with pytest.raises(ValueError, match="decoder: expected a mapping"):
        ModelConfig.from_dict({"decoder": "isbnet"})


def test_class_source_cluster_is_the_earlier_name_of_decoder() -> None:
    """`inference.class_source: cluster` (old YAMLs, old model cards) loads as `decoder`."""
    from dyco_perception.checkpoint import ModelCard

    assert ModelConfig().inference.class_source == "decoder"
    cfg = ModelConfig.from_dict({"inference": {"class_source": "cluster"}})
    assert cfg.inference.class_source == "decoder"
    old_card = ModelCard.for_config(ModelConfig())
    old_card.model_config["inference"]["class_source"] = "cluster"
    card = ModelCard.from_json(old_card.to_json())
    assert card.config.inference.class_source == "decoder"
    with pytest.raises(ValueError, match=r"inference\.class_source='vote' not allowed"):
        ModelConfig.from_dict({"inference": {"class_source": "vote"}})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"backbone": {"width": True}}, "backbone.width: expected an integer, got True"),
        ({"voxel": {"voxel_size": True}}, "voxel.voxel_size: expected a number, got True"),
        ({"backbone": {"backend": 5}}, "backbone.backend: expected a string, got 5"),
        ({"decoder": {"name": 5}}, "decoder.name: expected a string, got 5"),
        ({"voxel": {"voxel_size": 0.0}}, "voxel.voxel_size=0.0 out of range"),
        ({"num_classes": 1}, "num_classes=1 out of range"),
        ({"mask_head": {"mask_threshold": 1.5}}, "mask_head.mask_threshold=1.5 out of range"),
    ],
)
def test_wrong_types_and_limits_are_refused_with_the_reason(data: dict, fragment: str) -> None:
    """A bool is neither an integer nor a number, a number is not a string, and a voxel size of
    0, one class or a mask threshold above 1 are out of range: each named with its key."""
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        ModelConfig.from_dict(data)


def test_integers_load_as_floats_into_number_fields() -> None:
    """`box_margin: 1` (YAML int) is accepted and stored as the float 1.0; the limits of a range
    are inside it (voxel_size 1e-3, num_classes 2)."""
    cfg = ModelConfig.from_dict(
        {"mask_head": {"box_margin": 1}, "voxel": {"voxel_size": 1e-3}, "num_classes": 2}
    )
    assert cfg.mask_head.box_margin == 1.0 and type(cfg.mask_head.box_margin) is float
    assert (cfg.voxel.voxel_size, cfg.num_classes) == (1e-3, 2)


@dataclass
class _Optional:
    limit: int | None = None


def test_a_union_field_type_is_refused_rather_than_left_unchecked() -> None:
    """build_config checks only plain types: a `int | None` field is an error naming the key."""
    with pytest.raises(ValueError, match=r"opt\.limit: unsupported field type"):
        build_config(_Optional, {"limit": 3}, "opt.")


def test_a_mapping_field_is_copied_from_its_source() -> None:
    """Editing the mapping a config was built from afterwards does not change the config."""
    decoder = {"name": "pointgroup", "score_grid": 10}
    cfg = ModelConfig.from_dict({"decoder": decoder})
    decoder["score_grid"] = 3
    assert cfg.decoder == {"name": "pointgroup", "score_grid": 10}


@pytest.mark.parametrize(
    ("use_rgb", "use_xyz", "channels"), [(True, False, 3), (False, True, 3), (True, True, 6)]
)
def test_input_channels_count_colour_and_position(use_rgb: bool, use_xyz: bool, channels) -> None:
    """3 channels for colour, 3 for position, each only when used."""
    assert VoxelConfig(use_rgb=use_rgb, use_xyz=use_xyz).in_channels == channels


def test_heads_must_divide_the_bottleneck_only_when_the_transformer_is_on() -> None:
    """width 4 * levels 3 = 12 channels take 3 heads (4 does not divide by 3: it is the product
    that counts); with the transformer off, 5 heads are not checked."""
    cfg = ModelConfig.from_dict(
        {"backbone": {"width": 4, "levels": 3}, "transformer": {"heads": 3}}
    )
    assert cfg.transformer.heads == 3
    ModelConfig.from_dict({"transformer": {"enabled": False, "heads": 5}})


def test_an_empty_yaml_gives_the_defaults(tmp_path: Path) -> None:
    """An empty file is an empty mapping: every key takes its default."""
    path = tmp_path / "m.yaml"
    path.write_text("")
    assert load_model_config(path) == ModelConfig()


def test_a_decoder_section_without_name_is_dyco3d() -> None:
    """`decoder: {}` means DyCo3D, as a card written before decoders had names."""
    assert ModelConfig.from_dict({"decoder": {}}).decoder_name == "dyco3d"


def test_validate_rechecks_fields_edited_by_hand() -> None:
    """validate() re-checks every field after manual edits, not only the consistency rules."""
    cfg = ModelConfig()
    cfg.backbone.levels = 99
    with pytest.raises(ValueError, match=r"backbone\.levels=99 out of range"):
        cfg.validate()
