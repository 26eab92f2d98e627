"""Which checkpoint the node loads: `decoder` and an empty `checkpoint` (the launch file's
`decoder:=NAME`), an unknown decoder, and where relative checkpoint paths resolve."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.model.decoders import DECODERS
from dyco_perception.ros.resources import REPO_ROOT as PACKAGE_REPO_ROOT
from dyco_perception.ros.resources import package_file, user_path_candidates
from dyco_perception.ros.segment_node import StartupError, resolve_checkpoint
from dyco_perception.tools.process import node_command, start_node, stop_node

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "checkpoints/dyco3d_scannet_m16.safetensors"


def _share() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("dyco_perception"))


def _start_fails(overrides: dict) -> str:
    command = node_command(REPO_ROOT / "config" / "segment.yaml", overrides)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, f"exit {done.returncode} with {overrides}: {done.stderr}"
    return done.stdout + done.stderr


def test_unknown_decoder_is_reported_with_the_known_ones() -> None:
    """As `ros2 launch ... decoder:=foo` starts the node (no checkpoint given): the reason is
    the decoder, not a missing checkpoint."""
    out = _start_fails({"checkpoint": "", "decoder": "foo"})
    assert "unknown decoder 'foo'" in out, out
    assert all(name in out for name in DECODERS), out
    assert "not found" not in out and "foo_scannet" not in out, out


def test_class_geometry_needs_a_card_with_a_prior() -> None:
    """The ISBNet checkpoint's card holds no class prior: asking for one stops the node with
    the reason; an unknown mode is refused as a parameter."""
    out = _start_fails({"checkpoint": "", "decoder": "isbnet", "class_geometry": "alone"})
    assert "class_geometry=alone needs the card's fitted class_geometry" in out, out
    out = _start_fails({"class_geometry": "vote"})
    assert "parameter 'class_geometry' must be one of" in out and "got 'vote'" in out, out


def test_empty_checkpoint_loads_the_decoders_shipped_checkpoint(tmp_path: Path) -> None:
    """... with the test-time views the parameter asks for in place of its card's (1)."""
    log = tmp_path / "node.log"
    overrides = {"checkpoint": "", "decoder": "isbnet", "device": "cpu", "test_time_views": 3}
    process = start_node(
        {**overrides, "objects.enabled": False},
        remaps={"cloud_in": "/test_checkpoint/cloud_in"},
        log_path=log,
        threads=1,
    )
    try:
        start = time.monotonic()
        while "ready" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() - start < 120, log.read_text()
            time.sleep(0.2)
        assert "ready: isbnet_scannet_m16.safetensors" in log.read_text()
        assert "test-time views 3, class from geometry off," in log.read_text()
    finally:
        assert stop_node(process) == 0, log.read_text()


def test_relative_checkpoint_resolves_in_the_package_share_not_the_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    """A same-named file in the working directory does not shadow the shipped checkpoint."""
    decoy = tmp_path / SHIPPED
    decoy.parent.mkdir(parents=True)
    decoy.write_bytes(b"not the shipped checkpoint")
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(SHIPPED) == _share() / SHIPPED
    # ./ (or ../) asks for the working directory explicitly.
    assert resolve_checkpoint(f"./{SHIPPED}") == decoy
    os.chdir(decoy.parent)
    assert resolve_checkpoint(f"../{SHIPPED}") == decoy
    assert resolve_checkpoint(str(decoy)) == decoy  # absolute: as given


def test_missing_relative_checkpoint_names_the_places_and_the_rule(
    tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "mine.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StartupError) as error:
        resolve_checkpoint("mine.safetensors")
    message = str(error.value)
    assert str(_share() / "mine.safetensors") in message
    assert "./mine.safetensors" in message  # the hint for a file in the working directory


def test_checkpoint_paths_from_home_the_checkout_and_never_a_directory(
    tmp_path: Path, monkeypatch
) -> None:
    """`~/` is the home directory; a file of the checkout that is not installed (here the
    README) is found in the checkout; a directory is not a checkpoint; `.` alone names the
    working directory; an unknown package has only the checkout to look in; a package file
    found nowhere is named where the checkout would hold it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.safetensors").write_bytes(b"x")
    assert resolve_checkpoint("~/mine.safetensors") == tmp_path / "mine.safetensors"
    assert resolve_checkpoint("README.md") == PACKAGE_REPO_ROOT / "README.md"
    with pytest.raises(StartupError, match="not found"):
        resolve_checkpoint(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert user_path_candidates(".") == [tmp_path]
    assert user_path_candidates("x.st", package="no_such_package") == [
        PACKAGE_REPO_ROOT / "no_such_package" / "x.st"
    ]
    # A shipped file that exists nowhere is named at its place in the checkout.
    assert package_file("config/absent.yaml") == PACKAGE_REPO_ROOT / "config" / "absent.yaml"
