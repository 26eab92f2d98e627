"""dyco-train and dyco-evaluate end to end on generated rooms (tiny model, CPU)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dyco_perception.data.room_generator import generate_room
from dyco_perception.scenes import save_scene_npz
from dyco_training.cli_evaluate import main as evaluate_main
from dyco_training.cli_train import main as train_main

REPO = Path(__file__).resolve().parents[1]


def _write_config(tmp_path: Path, **extra) -> Path:
    cfg = {
        "model_config": str(REPO / "config/model/tiny_test.yaml"),
        "data": {
            "real_repeat": 0,
            "generated_rooms": 1,
            "generated_points": 5000,
            "val_split": "none",
        },
        "augment": {"max_points": 4000},
        "train": {"iterations": 2, "threads": 1},
        "log": {"every": 1, "save_every": 1, "progress": False, "tensorboard": False},
        "export": {
            "checkpoint": str(tmp_path / "ckpt" / "tiny.safetensors"),
            "dtype": "float16",
            "curves_png": str(tmp_path / "ckpt" / "curves.png"),
        },
        **extra,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cli")
    config = _write_config(tmp_path)
    run = ["--config", str(config), "--out", str(tmp_path / "run"), "--seed", "11"]
    assert train_main(run) == 0
    return tmp_path


def test_train_writes_fp16_checkpoint_with_model_card(trained):
    from dyco_perception.checkpoint import build_model, load_checkpoint

    state, card = load_checkpoint(trained / "ckpt" / "tiny.safetensors")
    floats = [t for t in state.values() if t.is_floating_point()]
    assert floats and all(t.dtype.itemsize == 2 for t in floats)
    assert card.training["weights_dtype"] == "float16"
    assert card.training["config"]["train"]["iterations"] == 2
    assert card.training["config"]["train"]["seed"] == 11  # --seed overrides the config's
    assert len(card.training["git_commit"]) >= 7
    assert card.config.backbone.width == 8
    model = build_model(state, card)  # loads into the fp32 model
    assert next(model.parameters()).dtype.itemsize == 4
    assert (trained / "ckpt" / "curves.png").is_file()
    assert (trained / "run" / "state.pt").is_file()


def test_resume_from_cli_continues_to_more_iterations(trained, tmp_path):
    config = _write_config(tmp_path, train={"iterations": 3, "threads": 1})
    run = trained / "run"
    assert (
        train_main(["--config", str(config), "--out", str(run), "--resume", str(run / "state.pt")])
        == 0
    )
    rows = (run / "train.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1.0", "2.0", "3.0"]


def test_evaluate_cli_writes_metrics_json(trained, tmp_path, capsys):
    scans = tmp_path / "scans"
    for seed in (11, 12):
        save_scene_npz(generate_room(seed, 5000), scans / f"room{seed}.npz")
    out = tmp_path / "metrics.json"
    code = evaluate_main(
        [
            "--checkpoint",
            str(trained / "ckpt" / "tiny.safetensors"),
            "--scans",
            str(scans),
            "--device",
            "cpu",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    metrics = json.loads(out.read_text())
    assert {"AP", "AP50", "AP25", "per_class", "class_agnostic", "seconds_per_scan"} <= set(metrics)
    assert set(metrics["class_agnostic"]) == {"AP", "AP50", "AP25"}
    assert metrics["scans"] == ["room11", "room12"] and metrics["seconds_per_scan"] > 0
    assert metrics["inference"]["norm_statistics"] == "running"  # the card's
    assert "class-agnostic" in capsys.readouterr().out
    args = ["--checkpoint", str(trained / "ckpt" / "tiny.safetensors"), "--scans", str(scans)]
    args += ["--device", "cpu", "--no-progress", "--json", str(out)]
    assert evaluate_main([*args, "--inference", "norm_statistics=input"]) == 0
    assert json.loads(out.read_text())["inference"]["norm_statistics"] == "input"
    assert evaluate_main([*args, "--inference", "norm_statistics=batch"]) == 2
    assert "inference.norm_statistics='batch' not allowed" in capsys.readouterr().err


def test_export_fits_the_class_geometry_prior_on_the_real_training_scans(tmp_path, scannet_dir):
    from dyco_perception.checkpoint import load_checkpoint
    from dyco_perception.scenes import load_npz_scene, make_scene

    scans = tmp_path / "scans"  # two real training scans and a 4000-point cut of a val scan
    scans.mkdir()
    for name in ("scene0004_00", "scene0007_00"):
        (scans / f"{name}.npz").symlink_to(scannet_dir / f"{name}.npz")
    val = load_npz_scene(scannet_dir / "scene0009_00.npz")
    cut = [a[:4000] for a in (val.xyz, val.rgb, val.semantic, val.instance)]
    save_scene_npz(make_scene(*cut, "scene0009_00"), scans / "scene0009_00.npz")
    geometry = {
        "inference": {
            "class_geometry": "alone",
            "class_geometry_features": "size_shape",
            "class_geometry_fragments": 2,
            "class_geometry_balance": 0.5,
        }
    }
    model = yaml.safe_load((REPO / "config/model/tiny_test.yaml").read_text())
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({**model, **geometry}))
    config = _write_config(tmp_path, model_config=str(tmp_path / "model.yaml"))
    cfg = yaml.safe_load(config.read_text())
    # Validation segments with the prior too.
    cfg["data"].update(real_repeat=1, generated_rooms=0, scans_dir=str(scans), val_split="val")
    config.write_text(yaml.safe_dump(cfg))
    assert train_main(["--config", str(config), "--out", str(tmp_path / "run")]) == 0
    card = load_checkpoint(tmp_path / "ckpt" / "tiny.safetensors")[1]
    assert card.config.inference.class_geometry == "alone"
    assert card.class_geometry["fitted_on"] == ["scene0004_00", "scene0007_00"]
    assert "top_share" in card.class_geometry["features"]  # the config's set and fragments
    assert card.class_geometry["fragments"] == 2
    assert card.class_geometry["balance"] == 0.5
    cfg["data"].update(real_repeat=0, generated_rooms=1)
    config.write_text(yaml.safe_dump(cfg))
    assert train_main(["--config", str(config), "--out", str(tmp_path / "run2")]) == 2


def test_cli_errors_are_clear(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"optim": {"lr": "fast"}}))
    assert train_main(["--config", str(bad)]) == 2
    assert "optim.lr" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate_main(["--checkpoint", "x.safetensors", "--scans", str(empty)]) == 2
    assert "no .npz scans" in capsys.readouterr().err


def test_console_scripts_are_installed():
    bin_dir = Path(sys.executable).parent
    for name in ("dyco-train", "dyco-evaluate"):
        assert (bin_dir / name).is_file(), f"{name} missing: run make setup"
    out = subprocess.run(
        [str(bin_dir / "dyco-evaluate"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "--checkpoint" in out.stdout
