"""Checkpoints: round trip, card checks, shape checks, and refusal to unpickle code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from dyco_perception.checkpoint import (
    CARD_KEY,
    FORMAT_VERSION,
    RUN_TIME_SETTINGS,
    ModelCard,
    build_model,
    load_checkpoint,
    main,
    save_checkpoint,
)
from dyco_perception.model import SegmentationNetwork
from safetensors.torch import save_file

from dyco_perception import classes
from dyco_perception.config import ModelConfig

TINY = ModelConfig.from_dict({"backbone": {"width": 4, "levels": 3}, "transformer": {"heads": 2}})


def test_round_trip_keeps_weights_and_card(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SegmentationNetwork(TINY)
    card = ModelCard.for_config(TINY, training={"epochs": 3})
    path = save_checkpoint(tmp_path / "m.safetensors", model, card)
    state, loaded = load_checkpoint(path)
    assert loaded.training == {"epochs": 3}
    assert loaded.config == TINY
    assert loaded.classes == list(classes.SEMANTIC_CLASSES)
    rebuilt = build_model(state, loaded)
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name


def test_card_json_carries_the_documented_fields(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = save_checkpoint(
        tmp_path / "m.safetensors", SegmentationNetwork(TINY), ModelCard.for_config(TINY)
    )
    with safe_open(str(path), framework="pt") as f:
        card = json.loads(f.metadata()[CARD_KEY])
    assert card["nyu40_ids"] == list(classes.NYU40_IDS)
    assert card["voxel_size"] == TINY.voxel.voxel_size and card["use_rgb"] is True
    assert card["thresholds"]["nms_iou"] == TINY.inference.nms_iou


def _write_with_card(path: Path, model: torch.nn.Module, card: dict) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={CARD_KEY: json.dumps(card)})


def _card_dict() -> dict:
    return json.loads(ModelCard.for_config(TINY).to_json())


def test_run_time_settings_change_like_inference_settings() -> None:
    card = ModelCard.for_config(TINY)
    changed = card.with_inference(
        {"nms_iou": 0.4, "grouping.radius": 0.05, "mask_head": {"category_aware": False}}
    )
    cfg = changed.config
    assert (cfg.inference.nms_iou, cfg.grouping.radius, cfg.mask_head.category_aware) == (
        0.4,
        0.05,
        False,
    )
    assert card.config == TINY  # a copy; the original card is untouched
    assert changed.config.backbone == TINY.backbone


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"backbone.width": 8}, "'backbone.width' cannot change at inference"),
        ({"grouping": {"max_train_proposals": 4}}, "'grouping.max_train_proposals' cannot"),
        ({"grouping.radius": 5.0}, "grouping.radius=5.0 out of range"),
        ({"mask_head.decode_region": "scene"}, "mask_head.decode_region"),
    ],
)
def test_settings_the_weights_depend_on_cannot_change_at_inference(changes, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        ModelCard.for_config(TINY).with_inference(changes)
    assert "max_train_proposals" not in RUN_TIME_SETTINGS["grouping"]


def test_other_class_list_is_refused(tmp_path: Path) -> None:
    card = _card_dict()
    card["classes"] = list(reversed(card["classes"]))
    _write_with_card(tmp_path / "m.safetensors", SegmentationNetwork(TINY), card)
    with pytest.raises(ValueError, match="classes"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_invalid_config_in_card_is_refused(tmp_path: Path) -> None:
    card = _card_dict()
    card["model_config"]["backbone"]["levels"] = 99
    _write_with_card(tmp_path / "m.safetensors", SegmentationNetwork(TINY), card)
    with pytest.raises(ValueError, match=r"backbone\.levels"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_weight_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    wider = ModelConfig.from_dict(
        {"backbone": {"width": 6, "levels": 3}, "transformer": {"heads": 2}}
    )
    _write_with_card(tmp_path / "m.safetensors", SegmentationNetwork(wider), _card_dict())
    state, card = load_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=r"backbone\.input_conv\.weight has shape"):
        build_model(state, card)


def test_missing_card_and_garbage_file_are_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="model_card"):
        load_checkpoint(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(_Exploit.marker),))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _Exploit.marker = str(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, CARD_KEY: _Exploit()}, f, protocol=2)
    torch.save({"state_dict": {}, CARD_KEY: _Exploit()}, tmp_path / "evil2.pt")
    for candidate in (path, tmp_path / "evil2.pt"):
        with pytest.raises(ValueError, match="refused"):
            load_checkpoint(candidate)
    assert not marker.exists()


def test_pt_checkpoint_with_plain_tensors_loads(tmp_path: Path) -> None:
    model = SegmentationNetwork(TINY)
    torch.save(
        {"state_dict": model.state_dict(), CARD_KEY: ModelCard.for_config(TINY).to_json()},
        tmp_path / "ok.pt",
    )
    state, card = load_checkpoint(tmp_path / "ok.pt")
    build_model(state, card)


def test_random_checkpoint_cli_writes_a_loadable_file(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[1] / "config" / "model" / "tiny_test.yaml"
    out = tmp_path / "random.safetensors"
    main(["--random", str(out), "--config", str(config)])
    state, card = load_checkpoint(out)
    assert card.training["random_weights"] is True
    build_model(state, card)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda card: card.update(nyu40_ids=card["nyu40_ids"][::-1]), "NYU40 ids"),
        (lambda card: card.update(format_version=FORMAT_VERSION + 1), "format_version"),
        (lambda card: card["model_config"].update(num_classes=19), "num_classes=19"),
        (
            lambda card: card["model_config"]["inference"].update(class_geometry="alone"),
            "needs the card's fitted",
        ),
    ],
)
def test_a_card_that_does_not_fit_this_code_is_refused(edit, fragment: str) -> None:
    """Loading checks the card: NYU40 ids, format version, the config's class count against
    the class list, and a class-geometry mode without the fitted prior it needs."""
    card = _card_dict()
    edit(card)
    with pytest.raises(ValueError, match=fragment):
        ModelCard.from_json(json.dumps(card))


def test_a_card_written_before_later_keys_builds_the_network_it_was_trained_as() -> None:
    """A card without transformer.position, mask_head.layers or mask_head.generator is one of
    the checkpoints before those keys: absolute positions, 2 decoder layers, pooled MLP."""
    card = ModelCard.for_config(TINY)
    del card.model_config["transformer"]["position"]
    for key in ("layers", "generator"):
        del card.model_config["mask_head"][key]
    cfg = card.config
    assert cfg.transformer.position == "absolute"
    assert (cfg.mask_head.layers, cfg.mask_head.generator) == (2, "pooled_mlp")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("inference.nms_iou", 0.4),
        ("grouping.radius", 0.05),
        ("grouping.min_points", 7),
        ("grouping.by_class", False),
        ("grouping.thing_probability", 0.6),
        ("mask_head.box_margin", 0.1),
        ("mask_head.decode_region", "all"),
        ("mask_head.category_aware", False),
        ("mask_head.mask_threshold", 0.4),
    ],
)
def test_each_run_time_setting_changes_by_its_section_key(key: str, value) -> None:
    """Every run-time setting, and an inference key spelled `inference.key`, is accepted."""
    section, name = key.split(".")
    changed = ModelCard.for_config(TINY).with_inference({key: value})
    assert getattr(getattr(changed.config, section), name) == value


def test_a_card_of_an_earlier_format_is_refused() -> None:
    """Not only later formats: format_version 0 is not this code's either."""
    card = _card_dict()
    card["format_version"] = FORMAT_VERSION - 1
    with pytest.raises(ValueError, match=f"format_version {FORMAT_VERSION - 1}"):
        ModelCard.from_json(json.dumps(card))


@pytest.mark.parametrize("text", ["{}", '{"classes": []}', "[]", '"model_config"'])
def test_a_card_without_model_config_is_refused(text: str) -> None:
    """A JSON value that is not an object with a model_config entry is a ValueError saying so."""
    with pytest.raises(ValueError, match="JSON object with a 'model_config' entry"):
        ModelCard.from_json(text)


def test_saving_refuses_other_suffixes_and_a_card_that_does_not_fit(tmp_path: Path) -> None:
    """Checkpoints are written only as .safetensors, and only with a card this code reads: a
    refused card writes no file."""
    model = SegmentationNetwork(TINY)
    with pytest.raises(ValueError, match=r"written as \.safetensors, got m\.pt"):
        save_checkpoint(tmp_path / "m.pt", model, ModelCard.for_config(TINY))
    card = ModelCard.for_config(TINY)
    card.classes = list(reversed(card.classes))
    with pytest.raises(ValueError, match="classes"):
        save_checkpoint(tmp_path / "bad.safetensors", model, card)
    assert not list(tmp_path.iterdir())


def test_a_missing_checkpoint_is_file_not_found(tmp_path: Path) -> None:
    """A path that is not a file is FileNotFoundError, not an unreadable checkpoint."""
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_pth_checkpoint_with_a_dict_card_loads(tmp_path: Path) -> None:
    """A legacy .pth file whose card is a dict (not JSON text) loads like a .pt one."""
    model = SegmentationNetwork(TINY)
    card = json.loads(ModelCard.for_config(TINY, training={"epochs": 2}).to_json())
    torch.save({"state_dict": model.state_dict(), CARD_KEY: card}, tmp_path / "ok.pth")
    state, loaded = load_checkpoint(tmp_path / "ok.pth")
    assert loaded.training == {"epochs": 2} and set(state) == set(model.state_dict())


def test_a_pt_checkpoint_without_state_dict_is_refused(tmp_path: Path) -> None:
    """A .pt dict with a card but no state_dict is a ValueError naming both entries."""
    torch.save({CARD_KEY: ModelCard.for_config(TINY).to_json()}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="must be a dict with state_dict and model_card"):
        load_checkpoint(tmp_path / "m.pt")


def test_a_weight_the_model_does_not_have_is_refused_by_name() -> None:
    """An extra weight is named as unexpected (not left to load_state_dict's RuntimeError)."""
    state = dict(SegmentationNetwork(TINY).state_dict())
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected \['extra\.weight'\]"):
        build_model(state, ModelCard.for_config(TINY))


def test_weights_of_the_instance_branch_under_their_old_names_load() -> None:
    """Older checkpoints kept mask_feature_head, kernel_generator and score_head at the top
    level: each loads under decoder."""
    model = SegmentationNetwork(TINY)
    old = {k.removeprefix("decoder."): v for k, v in model.state_dict().items()}
    assert any(k.startswith("score_head.") for k in old)
    rebuilt = build_model(old, ModelCard.for_config(TINY))
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name


def test_card_json_counts_the_input_channels_of_colour_and_position() -> None:
    """in_channels: 3 for rgb plus 3 for xyz."""
    cfg = ModelConfig.from_dict({**TINY.to_dict(), "voxel": {"use_xyz": True}})
    assert json.loads(ModelCard.for_config(cfg).to_json())["in_channels"] == 6
