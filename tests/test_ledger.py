"""The training ledger: a real continued segment (our trainer, warm-started from the tiny
checkpoint) is appended, totalled, written into the card with the weights untouched, drawn and
tabled; a segment that does not continue the ledger's last shipped file is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from dyco_perception.checkpoint import load_checkpoint
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
