"""dyco-demo end to end through its console script (a real node process), and the shipped bag."""

from __future__ import annotations

import json
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
