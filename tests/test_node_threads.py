"""The node's `threads` parameter: torch's intra-op CPU threads for inference (inter-op 1),
default 1 (it holds up when the CPU is shared: bench/bench_node_load.py), validated, applied in
the worker thread that runs the model, and changeable at run time. And `worker_nice`: the
worker thread's scheduling niceness, the rest of the node untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
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
        {"checkpoint": str(TINY_FIXTURE), "device": "cpu", "threads": 2, "worker_nice": 5},
        remaps={"cloud_in": topic},
        log_path=tmp / "node.log",
    )
    client = SegmentationClient(input_topic=topic, client_name="threads_client")
    try:
        if not client.wait_for_node(timeout=90):
            pytest.fail((tmp / "node.log").read_text())
        client.node_pid = process.pid
        yield client
    finally:
        client.close()
        stop_node(process)


def test_reports_name_the_last_clouds_threads_and_the_workers_nice(node, scan_sample) -> None:
    """Runs first. A report of the diagnostics timer (not the worker) after a cloud: `threads`
    is what that cloud ran with, not a value set since, and `worker_nice` the worker's."""
    from test_node import make_cloud, segment

    xyz, rgb = scan_sample("scene0001_00", 3_000)
    segment(node, make_cloud(xyz, rgb))
    assert node.wait_until(lambda: node.counter("processed") == 1, 10), node.diagnostics
    assert node.diagnostics["received"] == "1" and node.diagnostics["last_num_points"] == "3000"
    assert node.set_parameters({"threads": 1})[0].successful
    try:
        assert node.wait_for_fresh_diagnostics(), "no report of the diagnostics timer"
        report = dict(node.diagnostics)
    finally:
        assert node.set_parameters({"threads": 2})[0].successful
    assert report["threads"] == "2" and report["worker_nice"] == "5", report


def test_worker_runs_with_the_threads_parameter_and_follows_changes(node, scan_sample) -> None:
    from test_node import make_cloud, segment

    xyz, rgb = scan_sample("scene0001_00", 3_000)
    segment(node, make_cloud(xyz, rgb))
    assert node.wait_until(lambda: node.diagnostics.get("threads") == "2", 10), node.diagnostics
    assert node.diagnostics.get("block_workers") == "2"  # a tiled map: two blocks at a time
    [result] = node.set_parameters({"threads": 1})
    assert result.successful
    segment(node, make_cloud(xyz, rgb))
    assert node.wait_until(lambda: node.diagnostics.get("threads") == "1", 10), node.diagnostics
    assert node.diagnostics.get("block_workers") == "1"
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


def _thread_nices(pid: int) -> dict[int, int]:
    """{thread id: niceness} of a running process, from /proc (field 19 of each task's stat)."""
    nices = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        nices[int(task.name)] = int(fields[16])
    return nices


def test_worker_thread_alone_runs_at_the_worker_nice(node, scan_sample) -> None:
    from test_node import make_cloud, segment

    xyz, rgb = scan_sample("scene0001_00", 3_000)
    segment(node, make_cloud(xyz, rgb))
    assert node.wait_until(lambda: node.diagnostics.get("worker_nice") == "5", 10)
    nices = _thread_nices(node.node_pid)
    assert 5 in nices.values(), nices  # the worker (and its intra-op threads)
    assert nices[node.node_pid] == os.getpriority(os.PRIO_PROCESS, 0), nices  # main: as started
    assert SPECS_BY_NAME["worker_nice"].default == 0
    assert check_value("worker_nice", -21) and check_value("worker_nice", 20)


def test_use_worker_nice_sets_the_calling_thread_only() -> None:
    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    from dyco_perception.ros.segment_node import use_worker_nice

    before = os.getpriority(os.PRIO_PROCESS, 0)
    answer = []
    thread = threading.Thread(target=lambda: answer.append(use_worker_nice(before + 3)))
    thread.start()
    thread.join()
    assert answer == [(before + 3, None)]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


REFUSED = """
import os
from dyco_perception.ros.segment_node import use_worker_nice
if os.getuid() == 0:
    os.setuid(65534)  # root may raise priority: drop to nobody, as a robot's user runs
nice, reason = use_worker_nice(-5)
print(nice, reason)
"""


def test_refused_worker_nice_says_why_and_keeps_the_inherited_one() -> None:
    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    done = subprocess.run(
        [sys.executable, "-c", REFUSED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert done.stdout.startswith(f"{nice} worker_nice=-5 refused"), done.stdout
    assert "CAP_SYS_NICE" in done.stdout


INTEROP = """
import torch
from dyco_perception.ros.segment_node import _one_interop_thread
_one_interop_thread()
print(torch.get_num_interop_threads())
"""


def test_the_node_runs_one_inter_op_thread() -> None:
    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    done = subprocess.run(
        [sys.executable, "-c", INTEROP], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"], done.stdout
