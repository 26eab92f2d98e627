"""Every decoder's shipped checkpoint runs in segment_node over real DDS on a real scan.

One node per checkpoint, all started at once (each in its own namespace) so their start-up
overlaps; each must report its decoder through `ros2 param get` and find instances.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.model.decoders import DECODERS
from dyco_perception.tools.client import SegmentationClient
from dyco_perception.tools.process import start_node, stop_node
from test_node import make_cloud, segment

REPO_ROOT = Path(__file__).resolve().parents[1]


def shipped_checkpoint(decoder: str) -> Path:
    return REPO_ROOT / "checkpoints" / f"{decoder}_scannet_m16.safetensors"


def test_every_registered_decoder_ships_a_checkpoint() -> None:
    missing = [name for name in DECODERS if not shipped_checkpoint(name).is_file()]
    assert not missing, f"no shipped checkpoint for {missing}"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("decoders")
    running = {}
    try:
        for name in sorted(DECODERS):
            process = start_node(
                overrides={
                    "checkpoint": str(shipped_checkpoint(name)),
                    "decoder": name,  # the node refuses a checkpoint holding another decoder
                    "device": "cpu",
                    "objects.enabled": False,
                },
                remaps={"__ns": f"/{name}", "cloud_in": f"/{name}/cloud_in"},
                log_path=tmp / f"{name}.log",
                threads=1,
            )
            client = SegmentationClient(
                input_topic=f"/{name}/cloud_in", namespace=f"/{name}", client_name=f"c_{name}"
            )
            running[name] = (process, client)
        for name, (_, client) in running.items():
            if not client.wait_for_node(timeout=120):
                pytest.fail(f"{name} node did not come up: {(tmp / f'{name}.log').read_text()}")
        yield running
    finally:
        for process, client in running.values():
            client.close()
            stop_node(process)


@pytest.fixture(scope="module")
def scan(scan_sample):
    """A val scan (none of the checkpoints trained on it), subsampled to 20k points."""
    return scan_sample("scene0009_00", 20_000)


@pytest.mark.parametrize("decoder", sorted(DECODERS))
def test_shipped_checkpoint_segments_a_real_scan_in_the_node(nodes, scan, decoder) -> None:
    process, client = nodes[decoder]
    assert client.get_parameter("decoder") == decoder
    xyz, rgb = scan
    result = segment(client, make_cloud(xyz, rgb), timeout=120)
    instances = result.messages["instances"].instances
    assert len(instances) >= 1, f"{decoder}: no instance on a real scan"
    assert all(0.0 < inst.score <= 1.0 and inst.num_points > 0 for inst in instances)
    assert {inst.class_name for inst in instances} <= set(client.class_map.class_names)
    assert process.poll() is None
