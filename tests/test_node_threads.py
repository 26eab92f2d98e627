"""The node's `threads` parameter: torch's intra-op CPU threads for inference (inter-op 1),
default 1 (it holds up when the CPU is shared: bench/bench_node_load.py), validated, applied in
the worker thread that runs the model, and changeable at run time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from dyco_perception.ros.params import SPECS_BY_NAME, NodeSettings, check_value

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_threads_parameter_defaults_to_one_and_is_validated() -> None:
    spec = SPECS_BY_NAME["threads"]
    assert spec.default == 1 and not spec.read_only
    config = yaml.safe_load((REPO_ROOT / "config" / "segment.yaml").read_text())
    assert config["/**"]["ros__parameters"]["threads"] == 1
    assert check_value("threads", 0) and check_value("threads", -2)
    assert check_value("threads", 4) is None
    values = {name: s.default for name, s in SPECS_BY_NAME.items()}
    assert NodeSettings.from_values(values | {"threads": 3}).threads == 3


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from dyco_perception.tools.client import SegmentationClient
    from dyco_perception.tools.process import start_node, stop_node
    from test_node import TINY_FIXTURE

    tmp = tmp_path_factory.mktemp("threads")
    topic = "/test_threads/cloud_in"
    process = start_node(
        {"checkpoint": str(TINY_FIXTURE), "device": "cpu", "threads": 2},
        remaps={"cloud_in": topic},
        log_path=tmp / "node.log",
    )
    client = SegmentationClient(input_topic=topic, client_name="threads_client")
    try:
        if not client.wait_for_node(timeout=90):
            pytest.fail((tmp / "node.log").read_text())
        yield client
    finally:
        client.close()
        stop_node(process)


def test_worker_runs_with_the_threads_parameter_and_follows_changes(node, scan_sample) -> None:
    from test_node import make_cloud, segment

    xyz, rgb = scan_sample("scene0001_00", 3_000)
    segment(node, make_cloud(xyz, rgb))
    assert node.wait_until(lambda: node.diagnostics.get("threads") == "2", 10), node.diagnostics
    [result] = node.set_parameters({"threads": 1})
    assert result.successful
    segment(node, make_cloud(xyz, rgb))
    assert node.wait_until(lambda: node.diagnostics.get("threads") == "1", 10), node.diagnostics
    [refused] = node.set_parameters({"threads": 0})
    assert not refused.successful and "threads" in refused.reason


def test_bad_threads_value_stops_the_start() -> None:
    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from dyco_perception.tools.process import node_command
    from test_node import TINY_FIXTURE

    command = node_command(
        REPO_ROOT / "config" / "segment.yaml",
        {"checkpoint": str(TINY_FIXTURE), "device": "cpu", "threads": 0},
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "threads" in done.stderr, done.stderr
