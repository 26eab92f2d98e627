"""segment_node in its own process over real DDS: outputs, bad input, parameters, dropping.

One node (random-weight tiny model, model score threshold 0 so that it finds instances) serves
the whole module; the test talks to it through SegmentationClient.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from dyco_perception.ros import outputs
from dyco_perception.tools.client import SegmentationClient, stamp_key
from dyco_perception.tools.process import node_command, start_node, stop_node
from rcl_interfaces.srv import DescribeParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from dyco_perception import classes
from dyco_perception import pointcloud2 as pc2

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "config" / "model" / "tiny_test.yaml"
TINY_FIXTURE = REPO_ROOT / "checkpoints" / "tiny_fixture.safetensors"
INPUT_TOPIC = "/test_node/cloud_in"
MAX_POINTS = 30_000
_stamp = [1_000]


def write_test_checkpoint(path: Path) -> Path:
    """The trained tiny checkpoint (`make tiny-fixture`: the paper's model parts at toy size,
    fitted to scene0001_00), so node tests on that scan see real instances."""
    return Path(shutil.copyfile(TINY_FIXTURE, path))


def next_header(frame: str = "camera") -> Header:
    _stamp[0] += 1
    return Header(stamp=Time(sec=_stamp[0], nanosec=500), frame_id=frame)


def make_cloud(xyz: np.ndarray, rgb: np.ndarray | None, frame: str = "camera"):
    columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    if rgb is not None:
        columns["rgb"] = pc2.pack_rgb(rgb)
    layout, data = pc2.write_cloud(columns)
    return outputs.to_cloud_msg(next_header(frame), layout, data, True)


@pytest.fixture(scope="module")
def room():
    from dyco_perception.data.room_generator import generate_room

    return generate_room(seed=3, num_points=4000)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node")
    checkpoint = write_test_checkpoint(tmp / "tiny.safetensors")
    process = start_node(
        overrides={
            "checkpoint": str(checkpoint),
            "device": "cpu",
            "score_threshold": 0.0,
            "min_instance_points": 1,
            "max_points": MAX_POINTS,
            "publish_point_indices": True,
            "diagnostics_period": 0.5,
            "qos.depth": 10,  # every burst cloud reaches the node, which must drop all but one
        },
        remaps={"cloud_in": INPUT_TOPIC},
        log_path=tmp / "node.log",
    )
    client = SegmentationClient(input_topic=INPUT_TOPIC, client_name="test_node_client")
    try:
        if not client.wait_for_node(timeout=90):
            pytest.fail(f"node did not come up: {(tmp / 'node.log').read_text()[-2000:]}")
        yield process, client
    finally:
        client.close()
        stop_node(process)


def segment(client: SegmentationClient, msg, timeout: float = 60.0):
    key = client.publish(msg)
    result = client.wait_for_result(key, timeout=timeout)
    assert result is not None, "no result from the node"
    return result


@pytest.fixture(scope="module")
def scan(scan_sample):
    """8000 points of a real scan (enough for the test model to report instances)."""
    return scan_sample("scene0001_00", 8_000)


@contextmanager
def _statuses(client: SegmentationClient) -> Iterator[list[DiagnosticStatus]]:
    """The node's own statuses on /diagnostics (whole DiagnosticStatus), as they come while
    the block runs."""
    statuses: list[DiagnosticStatus] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        statuses.extend(s for s in msg.status if s.name == client.status_name)

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    listener = client.node.create_subscription(
        DiagnosticArray, "/diagnostics", on_diagnostics, reliable
    )
    try:
        yield statuses
    finally:
        client.node.destroy_subscription(listener)


def _value(status: DiagnosticStatus, key: str) -> str:
    return {kv.key: kv.value for kv in status.values}[key]


def test_before_any_cloud_the_node_waits_with_its_qos_and_parameter_ranges(node) -> None:
    """Runs first: the status before any cloud, the QoS the node's endpoints have in the ROS
    graph (input as the qos.* parameters say, the class map latched) and the ranges that
    `ros2 param describe` shows."""
    _, client = node
    with _statuses(client) as statuses:
        assert client.wait_until(lambda: statuses, 10), "no diagnostics"
    status = statuses[0]
    values = {kv.key: kv.value for kv in status.values}
    assert (status.level, status.message) == (DiagnosticStatus.OK, "waiting for clouds")
    assert status.hardware_id == "cpu" and values["device"] == "cpu"
    assert values["processed"] == "0" and values["threads"] == "1"

    [reader] = [
        e
        for e in client.node.get_subscriptions_info_by_topic(INPUT_TOPIC)
        if e.node_name == "segment_node"
    ]
    assert reader.qos_profile.reliability == ReliabilityPolicy.RELIABLE  # qos.reliability
    assert reader.qos_profile.durability == DurabilityPolicy.VOLATILE  # qos.durability
    qos = {}
    for kind in ("cloud", "class_map"):
        [writer] = client.node.get_publishers_info_by_topic(client.topics[kind])
        qos[kind] = (writer.qos_profile.reliability, writer.qos_profile.durability)
    assert qos["cloud"] == (ReliabilityPolicy.RELIABLE, DurabilityPolicy.VOLATILE)
    assert qos["class_map"] == (ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)

    describe = client.node.create_client(DescribeParameters, "/segment_node/describe_parameters")
    request = DescribeParameters.Request(names=["score_threshold", "max_points", "device"])
    score, max_points, device = client._call(describe, request, 10).descriptors
    client.node.destroy_client(describe)
    bounds = score.floating_point_range[0]
    assert (bounds.from_value, bounds.to_value) == (0.0, 1.0)
    assert max_points.integer_range and max_points.integer_range[0].from_value == 1
    assert device.read_only and not score.read_only


def test_real_scan_gives_consistent_cloud_instances_and_markers(node, scan) -> None:
    process, client = node
    xyz, rgb = scan
    msg = make_cloud(xyz, rgb)
    result = segment(client, msg)
    cloud, instances, markers = (result.messages[k] for k in ("cloud", "instances", "markers"))

    assert [f.name for f in cloud.fields] == list(outputs.LABELLED_FIELDS)
    assert cloud.header.frame_id == "camera" and stamp_key(cloud.header) == stamp_key(msg.header)
    records = pc2.read_structured(pc2.CloudLayout.of(cloud), cloud.data)
    np.testing.assert_array_equal(pc2.read_msg(cloud).xyz, xyz)
    ids = [inst.id for inst in instances.instances]
    assert len(ids) >= 3, "the trained tiny checkpoint finds objects of the scan it was fitted to"
    assert ids == list(range(1, len(ids) + 1))
    assert set(np.unique(records["instance"])) - {0} == set(ids)
    scores = [inst.score for inst in instances.instances]
    assert scores == sorted(scores, reverse=True)
    assert instances.num_points == len(xyz)
    colours = pc2.read_msg(cloud).rgb
    for inst in instances.instances:
        mine = np.flatnonzero(records["instance"] == inst.id)
        assert inst.num_points == mine.size
        assert list(inst.point_indices) == mine.tolist()
        lo, hi = xyz[mine].min(0), xyz[mine].max(0)
        box = [inst.box_center.x, inst.box_center.y, inst.box_center.z]
        np.testing.assert_allclose(box, (lo + hi) / 2, atol=1e-5)
        assert np.all(records["label"][mine] >= 0)
        assert len(np.unique(colours[mine], axis=0)) == 1  # one palette colour per instance
        np.testing.assert_allclose(records["score"][mine], inst.score, rtol=1e-6)
    assert len(markers.markers) == 1 + 2 * len(ids)
    assert markers.markers[0].action == Marker.DELETEALL
    boxes = [m for m in markers.markers if m.type == Marker.LINE_LIST]
    assert sorted(m.id for m in boxes) == ids and all(len(m.points) == 24 for m in boxes)
    class_map = client.class_map
    assert class_map is not None and len(class_map.class_names) == 20
    assert list(class_map.instance_class_ids) == list(classes.INSTANCE_CLASS_IDS)
    assert class_map.model_sha256 == hashlib.sha256(TINY_FIXTURE.read_bytes()).hexdigest()
    assert process.poll() is None
    # The diagnostics describe this, the first, cloud.
    assert client.wait_until(lambda: client.counter("processed") == 1, 10), client.diagnostics
    report = dict(client.diagnostics)
    assert report["last_num_points"] == str(len(xyz))
    assert report["last_num_instances"] == str(len(ids))
    assert instances.inference_time > 0
    last = float(report["last_processing_time_ms"])  # reading and publishing come on top
    assert last > 1000 * instances.inference_time + 0.1, (report, instances.inference_time)
    assert abs(float(report["mean_processing_time_ms"]) - last) <= 1.0, report  # one cloud


def _bad_clouds(room):
    empty = make_cloud(room.xyz[:0], room.rgb[:0])
    no_z = make_cloud(room.xyz, room.rgb)
    no_z.fields = [f for f in no_z.fields if f.name != "z"]
    wrong_type = make_cloud(room.xyz, room.rgb)
    wrong_type.fields[0].datatype = pc2.UINT32
    truncated = make_cloud(room.xyz, room.rgb)
    truncated.data = truncated.data[:-5]
    big = np.zeros((MAX_POINTS + 1, 3), np.float32)
    too_large = make_cloud(big, None)
    return {
        "empty": empty,
        "malformed_missing_z": no_z,
        "malformed_wrong_type": wrong_type,
        "malformed_truncated": truncated,
        "too_large": too_large,
    }


@pytest.mark.parametrize(
    "case",
    ["empty", "malformed_missing_z", "malformed_wrong_type", "malformed_truncated", "too_large"],
)
def test_bad_cloud_is_counted_and_the_next_cloud_is_processed(node, room, case: str) -> None:
    process, client = node
    reason = "malformed" if case.startswith("malformed") else case
    before = client.counter("rejected"), client.counter(f"rejected_{reason}")
    rejected = client.publish(_bad_clouds(room)[case])
    assert client.wait_until(lambda: client.counter("rejected") == before[0] + 1, 20), (
        f"rejected counter did not increase for {case}: {client.diagnostics}"
    )
    assert client.counter(f"rejected_{reason}") == before[1] + 1
    assert process.poll() is None, "the node died on bad input"
    result = segment(client, make_cloud(room.xyz, room.rgb))
    assert result.messages["instances"].num_points == len(room.xyz)
    assert not client.results[rejected].messages, f"the rejected {case} cloud was segmented"


def test_a_rejected_cloud_turns_the_diagnostics_status_to_warn(node, room) -> None:
    """Once a cloud was rejected (none failed), the node's status level is WARN."""
    _, client = node
    with _statuses(client) as statuses:
        before = client.counter("rejected")
        client.publish(make_cloud(room.xyz[:0], room.rgb[:0]))  # empty: rejected
        assert client.wait_until(
            lambda: any(int(_value(s, "rejected")) > before for s in statuses), 20
        )
    assert client.counter("failed") == 0
    first = next(s for s in statuses if int(_value(s, "rejected")) > before)
    level, message = first.level, first.message
    assert level == DiagnosticStatus.WARN and "rejected" in message


def test_valid_parameter_change_applies_and_invalid_ones_are_refused(node, scan) -> None:
    _, client = node
    [ok] = client.set_parameters({"score_threshold": 0.99})
    assert ok.successful
    strict = segment(client, make_cloud(*scan)).messages["instances"]
    assert all(inst.score >= 0.99 for inst in strict.instances)
    assert client.set_parameters({"score_threshold": 0.0})[0].successful
    relaxed = segment(client, make_cloud(*scan)).messages["instances"]
    assert len(relaxed.instances) > len(strict.instances)

    assert client.get_parameter("decoder") == "dyco3d"  # read back from the checkpoint's card
    refusals = {
        "decoder": "pointgroup",  # follows the checkpoint
        "score_threshold": 1.5,
        "max_points": 0,
        "device": "cpu",  # read-only: needs a restart
        "static_transform.rotation": [0.0, 0.0, 0.0, 2.0],
        "static_transform.translation": [1.0, 2.0],
    }
    for name, value in refusals.items():
        [result] = client.set_parameters({name: value})
        assert not result.successful, f"{name}={value} was accepted"
        assert result.reason, f"{name}: refused without a reason"
    [result] = client.set_parameters({"static_transform.rotation": [0.0, 0.0, 0.0, 2.0]})
    assert "unit quaternion" in result.reason


def test_static_transform_moves_outputs_into_the_target_frame(node, room) -> None:
    _, client = node
    half = float(np.sqrt(0.5))  # 90 degrees about z
    changes = {
        "target_frame": "map",
        "static_transform.translation": [1.0, 2.0, 3.0],
        "static_transform.rotation": [0.0, 0.0, half, half],
    }
    assert all(r.successful for r in client.set_parameters(changes))
    try:
        cloud = segment(client, make_cloud(room.xyz, room.rgb)).messages["cloud"]
    finally:
        client.set_parameters({"target_frame": "", "static_transform.translation": [0.0] * 3})
    assert cloud.header.frame_id == "map"
    expected = np.stack([-room.xyz[:, 1], room.xyz[:, 0], room.xyz[:, 2]], 1)
    expected += np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(pc2.read_msg(cloud).xyz, expected, atol=1e-4)


def test_clouds_arriving_while_busy_replace_the_pending_one(node, room) -> None:
    _, client = node
    assert client.wait_for_fresh_diagnostics(), "no diagnostics report"
    dropped, received = client.counter("dropped"), client.counter("received")
    burst = [make_cloud(room.xyz, room.rgb) for _ in range(5)]
    keys = [client.publish(msg) for msg in burst]
    assert client.wait_for_result(keys[-1], timeout=90) is not None, "newest cloud not processed"
    assert client.wait_until(lambda: client.counter("dropped") > dropped, 10)
    # qos.depth 10: the input queue holds the whole burst, so every cloud reaches the node.
    assert client.wait_until(lambda: client.counter("received") == received + 5, 10)
    processed = [k for k in keys if client.results[k].messages]
    assert len(processed) < len(keys)
    assert client.counter("failed") == 0  # dropped clouds are not failures


def _start_fails(tmp_path: Path, overrides: dict) -> str:
    command = node_command(REPO_ROOT / "config" / "segment.yaml", overrides)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, f"node started despite {overrides}"
    return done.stdout + done.stderr


def test_bad_checkpoint_or_parameter_stops_the_start_with_a_reason(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.safetensors"
    garbage.write_bytes(b"this is not a checkpoint")
    assert "broken.safetensors" in _start_fails(tmp_path, {"checkpoint": str(garbage)})
    missing = _start_fails(tmp_path, {"checkpoint": str(tmp_path / "absent.safetensors")})
    assert "not found" in missing
    bad_device = _start_fails(tmp_path, {"checkpoint": str(garbage), "device": "tpu"})
    assert "device" in bad_device
    other = _start_fails(tmp_path, {"checkpoint": str(TINY_FIXTURE), "decoder": "isbnet"})
    assert "holds the 'dyco3d' decoder" in other
    unknown = _start_fails(tmp_path, {"checkpoint": str(TINY_FIXTURE), "decoder": "mask3d"})
    assert "decoder" in unknown and "mask3d" in unknown


def test_clouds_in_another_frame_than_input_frame_are_rejected(node, room) -> None:
    """With input_frame set, a cloud in any other frame is counted as rejected_wrong_frame;
    one in input_frame is segmented."""
    _, client = node
    before = client.counter("rejected_wrong_frame")
    assert client.set_parameters({"input_frame": "lidar"})[0].successful
    try:
        rejected = client.publish(make_cloud(room.xyz, room.rgb, frame="camera"))
        assert client.wait_until(lambda: client.counter("rejected_wrong_frame") == before + 1, 20)
        segment(client, make_cloud(room.xyz, room.rgb, frame="lidar"))
    finally:
        client.set_parameters({"input_frame": ""})
    assert client.counter("rejected_wrong_frame") == before + 1
    assert not client.results[rejected].messages, "the cloud in another frame was segmented"


def test_a_cloud_of_exactly_max_points_is_segmented(node, room) -> None:
    _, client = node
    assert client.set_parameters({"max_points": len(room.xyz)})[0].successful
    try:
        result = segment(client, make_cloud(room.xyz, room.rgb))
    finally:
        client.set_parameters({"max_points": MAX_POINTS})
    assert result.messages["instances"].num_points == len(room.xyz)


def test_a_cloud_without_colour_is_segmented_as_if_grey(node, room) -> None:
    """The model uses colour: a cloud without rgb is segmented with every point grey."""
    _, client = node
    grey = np.full((len(room.xyz), 3), 128, np.uint8)
    clouds = [segment(client, make_cloud(room.xyz, rgb)).messages["cloud"] for rgb in (None, grey)]
    labels = [pc2.read_structured(pc2.CloudLayout.of(c), c.data)["label"] for c in clouds]
    np.testing.assert_array_equal(labels[0], labels[1])


def test_a_clouds_colours_reach_the_model(node, scan) -> None:
    """The same scan with its colours and all grey: the model, which uses colour, labels it
    differently."""
    _, client = node
    xyz, rgb = scan
    grey = np.full_like(rgb, 128)
    clouds = [segment(client, make_cloud(xyz, c)).messages["cloud"] for c in (rgb, grey)]
    labels = [pc2.read_structured(pc2.CloudLayout.of(c), c.data)["label"] for c in clouds]
    assert not np.array_equal(labels[0], labels[1])


def test_target_frame_names_the_outputs_and_lockstep_clouds_drop_none(node, room) -> None:
    """target_frame is the outputs' frame even under the identity transform; a cloud that
    arrives with none pending replaces nothing, so it is not counted as dropped."""
    _, client = node
    assert client.wait_for_fresh_diagnostics(), "no diagnostics report"
    processed, dropped = client.counter("processed"), client.counter("dropped")
    assert client.set_parameters({"target_frame": "map"})[0].successful
    try:
        cloud = segment(client, make_cloud(room.xyz, room.rgb)).messages["cloud"]
    finally:
        client.set_parameters({"target_frame": ""})
    assert cloud.header.frame_id == "map"
    assert client.wait_until(lambda: client.counter("processed") > processed, 20)
    assert client.counter("dropped") == dropped


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
