"""Best-effort subscribers (RViz's usual setting) receive large labelled clouds over real DDS.

The node runs as the launch file starts it (process.start_node: the same parameters and the
Fast DDS profile the launch file sets). The best-effort reader is a plain subscriber with
default Fast DDS settings in its own participant, as an RViz display is. Without the profile
Fast DDS loses most labelled clouds of 20k points or more for such a reader (measured with
this test: 3 and 1 of 5 clouds of 80k points arrived in two runs; all 5 with it).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

import rclpy
from dyco_perception.tools.client import SegmentationClient, stamp_key
from dyco_perception.tools.process import DDS_PROFILE, start_node, stop_node
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from test_node import TINY_CONFIG, make_cloud

from dyco_perception import pointcloud2 as pc2

REPO_ROOT = Path(__file__).resolve().parents[1]
INPUT_TOPIC = "/test_node_qos/cloud_in"
MAP_POINTS = 80_000
CLOUDS = 5


@pytest.fixture(scope="module")
def big_map(scannet_dir) -> tuple[np.ndarray, np.ndarray]:
    """80k real points: scene0001_00 and 30k points of scene0001_01 beside it (+6 m in x)."""
    with (
        np.load(scannet_dir / "scene0001_00.npz") as a,
        np.load(scannet_dir / "scene0001_01.npz") as b,
    ):
        pick = np.random.default_rng(0).choice(len(b["xyz"]), MAP_POINTS - len(a["xyz"]), False)
        xyz = np.concatenate([a["xyz"], b["xyz"][pick] + np.float32([6.0, 0.0, 0.0])])
        return xyz, np.concatenate([a["rgb"], b["rgb"][pick]])


def write_cheap_checkpoint(path: Path) -> Path:
    """The tiny random model on a 5 cm grid, keeping no proposals: an 80k-point map costs
    seconds, and the labelled cloud (what this test is about) still has every point."""
    from dyco_perception.checkpoint import write_random_checkpoint

    from dyco_perception.config import load_model_config

    cfg = load_model_config(TINY_CONFIG)
    cfg.voxel.voxel_size = 0.05
    cfg.grouping.min_points = 1_000_000
    return write_random_checkpoint(path, cfg, seed=0)


class BestEffortCloudReader:
    """A best-effort subscriber with default settings in its own participant, like RViz."""

    def __init__(self, topic: str) -> None:
        self.clouds: dict[int, PointCloud2] = {}
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("best_effort_reader", context=self.context)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(PointCloud2, topic, self._on_cloud, qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_cloud(self, msg: PointCloud2) -> None:
        self.clouds.setdefault(stamp_key(msg), msg)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def node_and_readers(tmp_path_factory):
    """The node (tiny random model), a client (reliable readers) and a best-effort reader."""
    tmp = tmp_path_factory.mktemp("qos")
    overrides = {
        "checkpoint": str(write_cheap_checkpoint(tmp / "cheap.safetensors")),
        "device": "cpu",
        "outputs": ["cloud", "markers", "class_map", "diagnostics"],
        "objects.enabled": False,
        "diagnostics_period": 60.0,  # longer than the module: each report comes from a cloud
    }
    process = start_node(overrides, {"cloud_in": INPUT_TOPIC}, log_path=tmp / "node.log")
    client = SegmentationClient(input_topic=INPUT_TOPIC, client_name="qos_test_client")
    reader = BestEffortCloudReader(client.topics["cloud"])
    try:
        if not client.wait_for_node(timeout=90):
            pytest.fail(f"node did not come up: {(tmp / 'node.log').read_text()[-2000:]}")
        yield process, client, reader.clouds
    finally:
        reader.close()
        client.close()
        stop_node(process)


def test_best_effort_reader_receives_80k_point_labelled_clouds(node_and_readers, big_map) -> None:
    process, client, best_effort = node_and_readers
    xyz, rgb = big_map
    keys = []
    for _ in range(CLOUDS):
        key = client.publish(make_cloud(xyz, rgb))
        result = client.wait_for_result(key, kinds=("cloud",), timeout=120)
        assert result is not None, "no result from the node (reliable reader)"
        keys.append(key)
    deadline = time.monotonic() + 5.0  # the best-effort copy may trail the reliable one
    while time.monotonic() < deadline and len(set(keys) & set(best_effort)) < CLOUDS:
        time.sleep(0.1)
    received = [k for k in keys if k in best_effort]
    assert len(received) == CLOUDS, (
        f"best-effort reader got {len(received)} of {CLOUDS} labelled clouds of {MAP_POINTS} "
        f"points (is {DDS_PROFILE} applied to the node?)"
    )
    for key in received:
        reliable = client.results[key].messages["cloud"]
        assert best_effort[key].width == MAP_POINTS
        assert bytes(best_effort[key].data) == bytes(reliable.data)
    np.testing.assert_array_equal(pc2.read_msg(best_effort[received[0]]).xyz, xyz)
    assert process.poll() is None
    # What `outputs` and `objects.enabled` leave out is not in the graph at all.
    for kind in ("instances", "objects"):
        assert client.node.count_publishers(client.topics[kind]) == 0, kind
    for kind in ("cloud", "markers"):
        assert client.node.count_publishers(client.topics[kind]) == 1, kind
    # The timer's report is a minute away: each cloud, and each rejection, reports at once.
    assert client.wait_until(lambda: client.counter("processed") == CLOUDS, 5), client.diagnostics
    client.publish(make_cloud(xyz[:0], rgb[:0]))  # empty: rejected
    assert client.wait_until(lambda: client.counter("rejected") == 1, 5), client.diagnostics
