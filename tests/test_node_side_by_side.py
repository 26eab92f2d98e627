"""Two segment_nodes side by side (DyCo3D and ISBNet), each in its own namespace as the launch
file puts it with `namespace:=NAME`, both reading one map topic: nothing of one node (topics,
services, parameters, diagnostics status) may collide with the other's."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from diagnostic_msgs.msg import DiagnosticArray
from dyco_perception.tools.client import SegmentationClient
from dyco_perception.tools.process import start_node, stop_node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from test_node import make_cloud

REPO_ROOT = Path(__file__).resolve().parents[1]
MAP_TOPIC = "/side_by_side/map"  # absolute: shared by both nodes
DECODERS = ("dyco3d", "isbnet")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("side_by_side")
    running = {}
    try:
        for decoder in DECODERS:
            process = start_node(
                overrides={
                    "checkpoint": f"checkpoints/{decoder}_scannet_m16.safetensors",
                    "device": "cpu",
                },
                remaps={"cloud_in": MAP_TOPIC},
                namespace=decoder,
                log_path=tmp / f"{decoder}.log",
                threads=1,
            )
            client = SegmentationClient(
                input_topic=MAP_TOPIC, namespace=f"/{decoder}", client_name=f"side_{decoder}"
            )
            running[decoder] = (process, client, tmp / f"{decoder}.log")
        for decoder, (_, client, log) in running.items():
            if not client.wait_for_node(timeout=120):
                pytest.fail(f"{decoder} node did not come up: {log.read_text()}")
        yield running
    finally:
        for process, client, _ in running.values():
            client.close()
            stop_node(process)


def test_two_nodes_in_their_namespaces_share_one_map_without_colliding(nodes, scan_sample) -> None:
    clients = {decoder: client for decoder, (_, client, _) in nodes.items()}
    statuses: dict[str, str] = {}
    lock = threading.Lock()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        with lock:
            statuses.update({s.name: s.hardware_id for s in msg.status})

    listener = clients["dyco3d"].node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        on_diagnostics,
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
    )
    xyz, rgb = scan_sample("scene0009_00", 8_000)
    msg = make_cloud(xyz, rgb)
    # One publish on the shared topic: each node answers on its own namespaced topics. The
    # publisher must first have matched both nodes' subscriptions: wait_for_node is satisfied
    # by either, and a message sent before discovery completes is lost to the other.
    publisher = clients["dyco3d"].publisher
    assert clients["dyco3d"].wait_until(
        lambda: publisher.get_subscription_count() >= len(DECODERS), 60
    ), f"the shared map publisher matched {publisher.get_subscription_count()} subscriptions"
    key = clients["dyco3d"].publish(msg)
    for decoder, client in clients.items():
        result = client.wait_for_result(key, timeout=180)
        assert result is not None, f"{decoder}: no result on {client.topics['cloud']}"
        assert client.topics["cloud"] == f"/{decoder}/segmentation/cloud"
        assert client.get_parameter("decoder") == decoder  # /<ns>/segment_node/get_parameters
        assert client.query_objects().success  # /<ns>/segmentation/query_objects
    # Each node's result arrived only on its own topics.
    assert {d: len(c.results[key].messages) for d, c in clients.items()} == {
        "dyco3d": 3,
        "isbnet": 3,
    }
    assert clients["dyco3d"].wait_until(lambda: len(statuses) >= 2, 10)
    with lock:
        names = {name for name in statuses if name.startswith("dyco_perception")}
    assert names == {f"dyco_perception: {d}/segment_node" for d in DECODERS}, names
    for decoder, client in clients.items():  # each client reads its own node's status only
        assert client.status_name == f"dyco_perception: {decoder}/segment_node"
        for _ in range(3):  # several diagnostics rounds of both nodes
            client.diagnostics = {}
            assert client.wait_until(lambda c=client: c.diagnostics, 10)
            assert client.diagnostics["decoder"] == decoder
    clients["dyco3d"].node.destroy_subscription(listener)
    for process, _, log in nodes.values():
        assert process.poll() is None, log.read_text()
        text = log.read_text()
        assert "already exist" not in text and "duplicate" not in text.lower(), text
