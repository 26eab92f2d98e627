"""The training ledger: a real continued segment (our trainer, warm-started from the tiny
checkpoint) is appended, totalled, written into the card with the weights untouched, drawn and
tabled; a segment that does not continue the ledger's last shipped file is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from dyco_perception.checkpoint import build_model, load_checkpoint, save_checkpoint
from dyco_training import ledger
from dyco_training.trainer import Trainer, read_train_yaml, train_config_from_dict

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "checkpoints" / "tiny_fixture.safetensors"


def _continue(start: Path, out: Path, iterations: int) -> Path:
    """A real segment: tiny_fixture's recipe warm-started from `start` for a few iterations."""
    config = read_train_yaml(REPO / "config" / "train" / "tiny_fixture.yaml")
    config.update(
        {
            "init": {"checkpoint": str(start), "scope": "all"},
            "out_dir": str(out),
            "augment": {"enabled": True, "max_points": 4000},  # a small crop: a fast test
            "train": {"iterations": iterations, "threads": 1, "seed": 1},
            "log": {
                "every": 1,
                "save_every": 100,
                "tensorboard": False,
                "progress": False,
                "train_curve": True,  # the final validation also scores the training scan
            },
            "export": {"checkpoint": str(out / "model.safetensors"), "dtype": "float16"},
        }
    )
    trainer = Trainer(train_config_from_dict(config, base=REPO))
    trainer.logger.log("val", iterations, {"AP50": 0.25, "agnostic_AP50": 0.5})
    return Path(trainer.run()["checkpoint"])


@pytest.fixture(scope="module")
def segment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ledger")
    start = root / "start.safetensors"
    shutil.copy(TINY, start)
    return start, _continue(start, root / "run", 3)


def _seed(tmp_path: Path, start: Path) -> tuple[Path, Path]:
    """A ledger whose one segment shipped `start` (100 iterations, 1 h), and a README block."""
    first = {
        "segment": 1,
        "config": "runs/first",
        "iterations": 100,
        "seconds": 3600.0,
        "val": {"AP50": 0.1, "agnostic_AP50": 0.3},
        "train_scans": None,
        "curve": {"val": [[100, 0.1, 0.3]]},
        "total_iterations": 100,
        "total_hours": 1.0,
        "sha256_16": ledger.file_digest(start),
    }
    book = tmp_path / "ledger.yaml"
    book.write_text(yaml.safe_dump({"segments": [first]}))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{ledger.BEGIN}\nold\n{ledger.END}\nafter\n")
    return book, readme


def test_a_continued_segment_adds_up_and_reaches_card_plot_and_table(segment, tmp_path) -> None:
    start, exported = segment
    checkpoint = tmp_path / "shipped.safetensors"
    shutil.copy(exported, checkpoint)
    before, _ = load_checkpoint(checkpoint)
    book, readme = _seed(tmp_path, start)
    entry = ledger.add(checkpoint, exported.parent, book, readme)
    assert entry["segment"] == 2 and entry["iterations"] == 3
    assert entry["total_iterations"] == 103
    assert entry["total_hours"] == pytest.approx(1.0 + entry["seconds"] / 3600, abs=1e-3)
    assert entry["val"]["AP50"] == pytest.approx(0.25)  # the run's last val row
    assert entry["train_scans"] is not None  # log.train_curve wrote train_eval.csv
    assert entry["curve"]["train"][-1][0] == 3
    assert entry["sha256_16"] == ledger.file_digest(checkpoint)  # the file as shipped
    after, card = load_checkpoint(checkpoint)
    assert [s["total_iterations"] for s in card.training["ledger"]] == [100, 103]
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights untouched
    assert len(ledger.read_ledger(book)) == 2
    table = readme.read_text()
    assert "old" not in table and table.endswith(f"{ledger.END}\nafter\n")
    assert "| 2 |" in table and "| 103 |" in table
    assert checkpoint.with_name("shipped_ledger.png").stat().st_size > 1000


def test_a_segment_that_skips_a_link_is_refused(segment, tmp_path) -> None:
    _, exported = segment
    book, readme = _seed(tmp_path, exported)  # the ledger's last file is not the segment's start
    with pytest.raises(ValueError, match="gap in the chain"):
        ledger.add(exported, exported.parent, book, readme)
    assert len(ledger.read_ledger(book)) == 1


def test_a_checkpoint_trained_from_scratch_is_no_segment(tmp_path) -> None:
    book, readme = _seed(tmp_path, TINY)
    assert ledger.main(["add", "--run", str(tmp_path), "--checkpoint", str(TINY),
                        "--ledger", str(book), "--readme", str(readme)]) == 2  # fmt: skip
    assert ledger.main(["next", "--ledger", str(book)]) == 0


def test_set_inference_changes_the_card_not_the_weights_and_the_chain_goes_on(
    segment, tmp_path
) -> None:
    _, exported = segment
    checkpoint = tmp_path / "shipped.safetensors"
    shutil.copy(exported, checkpoint)
    before, _ = load_checkpoint(checkpoint)
    book, readme = _seed(tmp_path, checkpoint)  # the ledger's last segment shipped this file
    with pytest.raises(ValueError, match="norm_statistics='batch' not allowed"):
        ledger.set_inference(checkpoint, book, {"norm_statistics": "batch"})
    assert ledger.read_ledger(book)[-1]["sha256_16"] == ledger.file_digest(checkpoint)

    entry = ledger.set_inference(checkpoint, book, {"norm_statistics": "input"}, readme)
    after, card = load_checkpoint(checkpoint)
    assert card.config.inference.norm_statistics == "input"
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights untouched
    assert entry["inference"] == {"norm_statistics": "input"}
    assert card.training["ledger"][-1]["inference"] == {"norm_statistics": "input"}
    segments = ledger.read_ledger(book)
    assert segments[-1]["sha256_16"] == ledger.file_digest(checkpoint)
    assert f"`{segments[-1]['sha256_16']}`" in readme.read_text()  # the table's shipped hash
    follower = {"init_sha256_16": ledger.file_digest(checkpoint), "iterations": 1, "seconds": 1.0}
    assert ledger.append_segment(segments, follower)[-1]["segment"] == 2  # the chain continues
    with pytest.raises(ValueError, match="not the last file"):
        ledger.set_inference(exported, book, {"norm_statistics": "running"})
    paths = ["--checkpoint", str(checkpoint), "--ledger", str(book), "--readme", str(readme)]
    assert ledger.main(["set-inference", "norm_statistics=running", *paths]) == 0
    assert load_checkpoint(checkpoint)[1].config.inference.norm_statistics == "running"
    # A second setting joins the first, on the card and in the ledger entry.
    assert ledger.main(["set-inference", "score_with_class_prob=false", *paths]) == 0
    inference = load_checkpoint(checkpoint)[1].config.inference
    assert (inference.norm_statistics, inference.score_with_class_prob) == ("running", False)
    assert ledger.read_ledger(book)[-1]["inference"] == {
        "norm_statistics": "running",
        "score_with_class_prob": False,
    }


def test_set_inference_fits_the_class_prior_on_the_segments_scans(segment, tmp_path) -> None:
    _, exported = segment
    checkpoint = tmp_path / "shipped.safetensors"
    shutil.copy(exported, checkpoint)
    book, readme = _seed(tmp_path, checkpoint)
    scans = load_checkpoint(checkpoint)[1].training["data"]["real_scans"]
    changes = ["class_geometry=alone", "class_geometry_features=size_shape"]
    paths = ["--checkpoint", str(checkpoint), "--ledger", str(book), "--readme", str(readme)]
    assert ledger.main(["set-inference", *changes, *paths]) == 0
    card = load_checkpoint(checkpoint)[1]
    assert card.config.inference.class_geometry == "alone"
    assert card.class_geometry["fitted_on"] == scans
    assert "top_share" in card.class_geometry["features"]  # the requested set, not the card's
    assert ledger.read_ledger(book)[-1]["sha256_16"] == ledger.file_digest(checkpoint)
    assert card.class_geometry["balance"] == 0.0
    assert ledger.main(["set-inference", "class_geometry_balance=0.5", *paths]) == 0
    refitted = load_checkpoint(checkpoint)[1].class_geometry
    assert refitted["balance"] == 0.5
    assert refitted["features"] == card.class_geometry["features"]  # the card's set kept
    assert refitted["bias"] != card.class_geometry["bias"]
    assert ledger.main(["set-inference", "class_geometry_fragments=1", *paths]) == 0
    refitted = load_checkpoint(checkpoint)[1].class_geometry
    assert (refitted["fragments"], refitted["balance"]) == (1, 0.5)  # the card's weights kept


def test_set_inference_records_a_sections_settings_together(segment, tmp_path) -> None:
    _, exported = segment
    checkpoint = tmp_path / "shipped.safetensors"
    shutil.copy(exported, checkpoint)
    book, readme = _seed(tmp_path, checkpoint)
    paths = ["--checkpoint", str(checkpoint), "--ledger", str(book), "--readme", str(readme)]
    assert ledger.main(["set-inference", "grouping.radius=0.08", *paths]) == 0
    assert ledger.main(["set-inference", "grouping.min_points=150", "nms_iou=0.4", *paths]) == 0
    entry = ledger.read_ledger(book)[-1]["inference"]
    assert entry == {"grouping": {"radius": 0.08, "min_points": 150}, "nms_iou": 0.4}
    grouping = load_checkpoint(checkpoint)[1].config.grouping
    assert (grouping.radius, grouping.min_points) == (0.08, 150)


def test_each_segment_must_continue_the_last_one_and_the_totals_add_up() -> None:
    """append_segment checks the new segment's start against the last shipped file (not the
    first) and sums iterations and hours over all segments."""
    segments: list[dict] = []
    for start, shipped in (("s0", "s1"), ("s1", "s2"), ("s2", "s3")):
        segment = {"init_sha256_16": start, "sha256_16": shipped, "iterations": 10}
        segments = ledger.append_segment(segments, {**segment, "seconds": 1800.0})
    assert [s["segment"] for s in segments] == [1, 2, 3]
    assert segments[-1]["total_iterations"] == 30
    assert segments[-1]["total_hours"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="gap in the chain"):
        ledger.append_segment(
            segments, {"init_sha256_16": "s1", "sha256_16": "x", "iterations": 1, "seconds": 1.0}
        )


def test_total_hours_keep_three_decimals() -> None:
    """36 s then 90 s: 0.01 h then 0.035 h in all (rounded to 3 decimals, not 1)."""
    first = ledger.append_segment(
        [], {"init_sha256_16": "s0", "sha256_16": "s1", "iterations": 1, "seconds": 36.0}
    )
    both = ledger.append_segment(
        first, {"init_sha256_16": "s1", "sha256_16": "s2", "iterations": 1, "seconds": 90.0}
    )
    assert [s["total_hours"] for s in both] == [0.01, 0.035]


def _card_checkpoint(path: Path, training: dict) -> Path:
    """tiny_fixture's weights with a model card whose `training` is `training`."""
    state, card = load_checkpoint(TINY)
    card.training = training
    save_checkpoint(path, build_model(state, card), card)
    return path


def test_a_segment_reads_the_last_rows_of_its_runs_curves(tmp_path) -> None:
    """No val_metrics on the card: val and train_scans come from the last rows of val.csv and
    train_eval.csv, agnostic_AP50 from its own column; a backbone-only warm start is refused."""
    init = {"checkpoint": "start.safetensors", "scope": "all", "sha256_16": "0123456789abcdef"}
    training = {"init": init, "iterations": 5, "train_seconds": 7200.0}
    checkpoint = _card_checkpoint(tmp_path / "model.safetensors", training)
    run = tmp_path / "run"
    run.mkdir()
    (run / "val.csv").write_text("step,AP50,agnostic_AP50\n2,0.1,0.2\n5,0.3,0.4\n")
    (run / "train_eval.csv").write_text("step,AP50,agnostic_AP50\n2,0.5,0.7\n5,0.6,0.8\n")
    segment = ledger.segment_from_run(checkpoint, run)
    assert (segment["iterations"], segment["seconds"]) == (5, 7200.0)
    assert segment["init_sha256_16"] == "0123456789abcdef"
    assert segment["val"] == {"AP50": 0.3, "agnostic_AP50": 0.4}
    assert segment["train_scans"] == {"AP50": 0.6, "agnostic_AP50": 0.8}
    assert segment["curve"]["val"] == [[2, 0.1, 0.2], [5, 0.3, 0.4]]
    backbone = _card_checkpoint(
        tmp_path / "backbone.safetensors", {**training, "init": {**init, "scope": "backbone"}}
    )
    with pytest.raises(ValueError, match="not a continued segment"):
        ledger.segment_from_run(backbone, run)


def test_the_card_ledger_leaves_out_curves_and_hashes(tmp_path) -> None:
    checkpoint = tmp_path / "shipped.safetensors"
    shutil.copy(TINY, checkpoint)
    segment = {"segment": 1, "iterations": 4, "curve": {"val": [[4, 0.1, 0.2]]}, "sha256_16": "ab"}
    ledger.write_card_ledger(checkpoint, [segment])
    assert load_checkpoint(checkpoint)[1].training["ledger"] == [{"segment": 1, "iterations": 4}]


def test_set_inference_only_on_the_last_shipped_file(tmp_path) -> None:
    """A file the ledger shipped earlier (not its last segment's) is refused, untouched."""
    checkpoint = tmp_path / "old.safetensors"
    shutil.copy(TINY, checkpoint)
    book, _ = _seed(tmp_path, checkpoint)
    segments = ledger.read_ledger(book)
    segments.append({**segments[0], "segment": 2, "sha256_16": "ffffffffffffffff"})
    book.write_text(yaml.safe_dump({"segments": segments}))
    digest = ledger.file_digest(checkpoint)
    with pytest.raises(ValueError, match="not the last file"):
        ledger.set_inference(checkpoint, book, {"nms_iou": 0.4})
    assert ledger.file_digest(checkpoint) == digest


def test_a_prior_setting_with_the_prior_off_fits_no_prior(tmp_path) -> None:
    """class_geometry stays "off": a class_geometry_balance change is recorded, no prior is
    fitted onto the card."""
    checkpoint = tmp_path / "shipped.safetensors"
    shutil.copy(TINY, checkpoint)
    book, _ = _seed(tmp_path, checkpoint)
    ledger.set_inference(checkpoint, book, {"class_geometry_balance": 0.5})
    card = load_checkpoint(checkpoint)[1]
    assert card.config.inference.class_geometry == "off"
    assert card.config.inference.class_geometry_balance == 0.5
    assert card.class_geometry is None


def test_the_table_shows_hours_and_the_readme_needs_both_marks(tmp_path) -> None:
    segment = {
        "segment": 1,
        "config": "runs/a",
        "iterations": 10,
        "seconds": 5400.0,
        "total_iterations": 10,
        "total_hours": 1.5,
        "val": {"AP50": 0.25, "agnostic_AP50": 0.5},
        "sha256_16": "ab",
    }
    row = ledger.ledger_table([segment]).splitlines()[-1]
    assert row == "| 1 | `runs/a` | 10 | 1.50 | 10 | 1.50 | 0.250 / 0.500 | - | `ab` |"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{ledger.BEGIN}\nno end mark\n")
    with pytest.raises(ValueError, match="block for the ledger table"):
        ledger.render_readme(readme, [segment])
    assert readme.read_text() == f"# x\n{ledger.BEGIN}\nno end mark\n"


def test_next_prints_the_following_number_and_bad_ledgers_are_refused(tmp_path, capsys) -> None:
    book, _ = _seed(tmp_path, TINY)
    assert ledger.main(["next", "--ledger", str(book)]) == 0
    assert capsys.readouterr().out == "2\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments: {first: 1}\n")
    with pytest.raises(ValueError, match="'segments' must be a list"):
        ledger.read_ledger(bad)
    missing = ["--checkpoint", str(tmp_path / "none.safetensors"), "--ledger", str(book)]
    assert ledger.main(["add", "--run", str(tmp_path), *missing]) == 2  # not a traceback
