"""ModelConfig: YAML loading and validation errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dyco_perception.config import ModelConfig, load_model_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config" / "model"


@pytest.mark.parametrize("name", ["dyco3d_m16.yaml", "tiny_test.yaml"])
def test_shipped_model_configs_load(name: str) -> None:
    cfg = load_model_config(CONFIG_DIR / name)
    assert cfg.num_classes == 20


def test_default_dynamic_head_has_337_parameters() -> None:
    # DyCo3D: (16 mask features + 3 relative xyz) -> 16 -> 1 with biases.
    assert ModelConfig().dynamic_head_params == 19 * 16 + 16 + 16 * 1 + 1 == 337


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
    with pytest.raises(ValueError, match="mapping"):
        load_model_config(path)
