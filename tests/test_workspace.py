"""The built workspace: packages in the ament index, and our messages over real DDS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
from ament_index_python.packages import (  # noqa: E402
    get_package_prefix,
    get_package_share_directory,
    get_packages_with_prefixes,
)
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from dyco_msgs.msg import ClassMap, InstanceArray  # noqa: E402
from tests.ros_helpers.sample_messages import (  # noqa: E402
    sample_class_map,
    sample_instance_array,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_workspace_packages_are_in_the_ament_index() -> None:
    packages = get_packages_with_prefixes()
    for name in ("dyco_msgs", "dyco_perception", "rclpy", "sensor_msgs", "visualization_msgs"):
        assert name in packages, f"{name} missing from the ament index"
    assert Path(get_package_prefix("dyco_perception")).is_relative_to(REPO_ROOT / "ros2_ws")


def test_package_share_holds_its_manifest_and_message_definitions() -> None:
    perception_share = Path(get_package_share_directory("dyco_perception"))
    assert "<name>dyco_perception</name>" in (perception_share / "package.xml").read_text()
    msgs_share = Path(get_package_share_directory("dyco_msgs"))
    for msg in ("Instance", "InstanceArray", "ClassMap"):
        assert (msgs_share / "msg" / f"{msg}.msg").is_file()


def test_node_executable_is_where_ros2_run_looks() -> None:
    lib_dir = Path(get_package_prefix("dyco_perception")) / "lib" / "dyco_perception"
    assert os.access(lib_dir / "segment_node", os.X_OK)


def _message_fields_equal(received, expected) -> None:
    """Recursively compares every field of two ROS messages, naming the first difference."""
    for field in expected.get_fields_and_field_types():
        got, want = getattr(received, field), getattr(expected, field)
        if hasattr(want, "get_fields_and_field_types"):
            _message_fields_equal(got, want)
        elif isinstance(want, list) and want and hasattr(want[0], "get_fields_and_field_types"):
            assert len(got) == len(want), field
            for got_item, want_item in zip(got, want, strict=True):
                _message_fields_equal(got_item, want_item)
        else:
            assert list(got) == list(want) if isinstance(want, list | tuple) else got == want, (
                f"field {field}: received {got!r}, sent {want!r}"
            )


@pytest.fixture()
def publisher_process():
    env = dict(os.environ, PYTHONPATH=f"{REPO_ROOT}:{os.environ.get('PYTHONPATH', '')}")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ros_helpers.publish_sample_messages"],
        cwd=REPO_ROOT,
        env=env,
    )
    yield process
    process.terminate()
    process.wait(timeout=10)


def test_messages_round_trip_between_processes_over_dds(publisher_process) -> None:
    rclpy.init()
    node = rclpy.create_node("sample_message_receiver")
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    received: dict[str, object] = {}
    node.create_subscription(
        InstanceArray, "test_instances", lambda m: received.setdefault("instances", m), qos
    )
    node.create_subscription(
        ClassMap, "test_class_map", lambda m: received.setdefault("class_map", m), qos
    )
    try:
        deadline = time.monotonic() + 30.0
        while len(received) < 2 and time.monotonic() < deadline:
            assert publisher_process.poll() is None, "publisher process died"
            rclpy.spin_once(node, timeout_sec=0.2)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert set(received) == {"instances", "class_map"}, f"received only {sorted(received)}"
    _message_fields_equal(received["instances"], sample_instance_array())
    _message_fields_equal(received["class_map"], sample_class_map())


def _run_setup(**env_overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_ROS_WHEELS")}
    env.update(env_overrides)
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "setup.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_setup_rerun_skips_the_installs_it_already_did() -> None:
    result = _run_setup()
    assert result.returncode == 0, result.stderr[-2000:]
    # torch, requirements.txt and (without a system ROS) the ROS wheels are all left alone.
    assert "(torch 2.13.0 present, skipped)" in result.stdout
    assert result.stdout.count("(unchanged, skipped)") >= (1 if os.environ.get("ROS_DISTRO") else 2)


def test_setup_failure_names_the_step_and_the_remedy() -> None:
    result = _run_setup(PYTHON="/nonexistent/python3.11")
    assert result.returncode != 0
    assert "setup FAILED: /nonexistent/python3.11 not found" in result.stderr
    assert "what to do:" in result.stderr
