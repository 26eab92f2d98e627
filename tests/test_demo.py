"""dyco-demo end to end through its console script (a real node process), and the shipped bag."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.ros.params import SHIPPED_CHECKPOINT
from dyco_perception.ros.resources import package_file
from dyco_perception.tools import bags
from dyco_perception.tools.demo import DEMO_BAG, choose_checkpoint
from dyco_perception.tools.make_bag import write_scan_bag

from tests.test_node import write_test_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_shipped_demo_bag_holds_generated_rooms_with_ground_truth() -> None:
    scans = bags.read_scan_bag(package_file(DEMO_BAG))
    assert len(scans) >= 1
    for scan in scans:
        assert scan.name.startswith("room_"), "the demo bag must hold generated rooms only"
        assert scan.semantic is not None and scan.instance.max() > 0
        assert len(scan.semantic) == scan.num_points


def test_demo_runs_the_node_prints_instances_and_renders(tmp_path: Path) -> None:
    from dyco_perception.data.room_generator import generate_room

    bag = tmp_path / "rooms"
    write_scan_bag([generate_room(seed, num_points=3000) for seed in (5, 6)], bag)
    checkpoint = write_test_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "demo_out"
    command = [shutil.which("dyco-demo") or "dyco-demo", "--bag", str(bag)]
    command += ["--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "room_000005: 3000 points" in done.stdout and "class" in done.stdout
    assert "clouds 2, results 2, dropped 0" in done.stdout
    for name in ("room_000005", "room_000006"):
        image = out / f"{name}.png"
        assert image.read_bytes()[:8] == PNG_MAGIC and image.stat().st_size > 20_000
    report = json.loads((out / "report.json").read_text())
    assert report["results"] == 2 and report["metrics"]["num_scenes"] == 2
    assert (out / "outputs_bag" / "metadata.yaml").is_file()


def test_missing_shipped_checkpoint_falls_back_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    if package_file(SHIPPED_CHECKPOINT).is_file():
        pytest.skip("the shipped checkpoint exists: no fallback to test")
    path, trained = choose_checkpoint(None, tmp_path)
    assert not trained and path.is_file()
    assert "RANDOM weights" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors"):
        choose_checkpoint(str(tmp_path / "absent.safetensors"), tmp_path)


def test_a_requested_or_shipped_checkpoint_counts_as_trained(tmp_path: Path) -> None:
    checkpoint = write_test_checkpoint(tmp_path / "tiny.safetensors")
    relative = Path(os.path.relpath(checkpoint))
    assert choose_checkpoint(str(relative), tmp_path / "out") == (checkpoint.resolve(), True)
    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors"):
        choose_checkpoint(str(tmp_path / "absent.safetensors"), tmp_path)
    if package_file(SHIPPED_CHECKPOINT).is_file():
        assert choose_checkpoint(None, tmp_path) == (package_file(SHIPPED_CHECKPOINT), True)


def test_demo_segments_a_folder_of_scans(tmp_path: Path) -> None:
    """--scans DIR: the folder's npz scans, written to a bag of their own, not the demo bag."""
    from dyco_perception.data.room_generator import generate_room
    from dyco_perception.scenes import save_scene_npz

    scans = tmp_path / "scans"
    scans.mkdir()
    save_scene_npz(
        dataclasses.replace(generate_room(9, num_points=2000), name="mine"), scans / "mine.npz"
    )
    checkpoint = write_test_checkpoint(tmp_path / "tiny.safetensors")
    command = [shutil.which("dyco-demo") or "dyco-demo", "--scans", str(scans)]
    command += ["--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(tmp_path / "o")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mine: 2000 points" in done.stdout and "clouds 1, results 1" in done.stdout
