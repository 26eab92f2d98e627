"""dyco-replay against a node in its own process: lockstep and rate playback, recorded output
bag, and the evaluation wiring (perfect predictions score AP 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.ros.outputs import Labelled, instance_array_msg, labelled_cloud_msg
from dyco_perception.tools import bags, replay
from dyco_perception.tools.client import Result, SegmentationClient
from dyco_perception.tools.make_bag import scan_messages, write_scan_bag
from dyco_perception.tools.process import start_node, stop_node

from tests.test_node import write_test_checkpoint

INPUT_TOPIC = "/test_replay/cloud_in"


@pytest.fixture(scope="module")
def scenes(scannet_dir):
    """Two real scans cut to 8000 points each (fast on the test model)."""
    from dyco_perception.scenes import load_npz_scene, make_scene

    out = []
    for name in ("scene0009_00", "scene0010_00"):
        scene = load_npz_scene(scannet_dir / f"{name}.npz")
        pick = np.sort(np.random.default_rng(0).choice(scene.num_points, 8000, replace=False))
        out.append(
            make_scene(
                scene.xyz[pick], scene.rgb[pick], scene.semantic[pick], scene.instance[pick], name
            )
        )
    return out


@pytest.fixture(scope="module")
def scan_bag(scenes, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("replay") / "scans"
    write_scan_bag(scenes, out, period=0.2)
    return out


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay_node")
    checkpoint = write_test_checkpoint(tmp / "tiny.safetensors")
    overrides = {"checkpoint": str(checkpoint), "device": "cpu", "score_threshold": 0.0}
    overrides |= {"min_instance_points": 1, "qos.depth": 10}
    process = start_node(overrides, {"cloud_in": INPUT_TOPIC}, log_path=tmp / "node.log")
    yield process
    stop_node(process)


def _client() -> SegmentationClient:
    client = SegmentationClient(input_topic=INPUT_TOPIC, client_name="replay_test", record=True)
    assert client.wait_for_node(timeout=90), "node did not come up"
    return client


def test_lockstep_replay_records_outputs_and_scores(node, scan_bag: Path, tmp_path: Path) -> None:
    client = _client()
    try:
        scans = bags.read_scan_bag(scan_bag)
        report = replay.play(client, scans, lockstep=True, timeout=120, progress=False)
        report.metrics = replay.evaluate(report)
        recorded = replay.write_output_bag(client, tmp_path / "out")
    finally:
        client.close()
    assert (report.num_clouds, report.num_results, report.dropped) == (2, 2, 0)
    p50, p95 = report.latency_percentiles()
    assert 0 < p50 <= p95
    assert report.metrics["num_scenes"] == 2
    for key in ("AP", "AP50", "AP25"):
        assert report.metrics[key] is None or 0.0 <= report.metrics[key] <= 1.0
    store = bags.typestore()
    counts: dict[str, int] = {}
    for topic, msgtype, _, data in bags.iter_bag(tmp_path / "out"):
        counts[topic] = counts.get(topic, 0) + 1
        if msgtype == "dyco_msgs/msg/InstanceArray":
            msg = store.deserialize_cdr(data, msgtype)  # our types, registered from .msg files
            assert msg.num_points == 8000
    assert recorded == sum(counts.values())
    for topic in ("/segmentation/cloud", "/segmentation/instances", "/segmentation/markers"):
        assert counts.get(topic) == 2, counts
    assert counts.get("/segmentation/class_map") == 1
    assert "clouds 2, results 2, dropped 0" in replay.format_report(report)


def test_fast_rate_replay_counts_dropped_clouds(node, scenes) -> None:
    client = _client()
    try:
        many = [bags.BagScan(0, b"", 0, None, None, "") for _ in range(5)]
        from rclpy.serialization import serialize_message

        for index, scan in enumerate(many):
            stamp = (2_000_000_000 + index) * 10**9
            cloud, _, _ = scan_messages(scenes[0], stamp, "map")
            scan.stamp, scan.cloud_cdr = stamp, serialize_message(cloud)
        report = replay.play(client, many, lockstep=False, rate=1000.0, timeout=120, progress=False)
    finally:
        client.close()
    assert report.complete(many[-1]), "the newest cloud must be processed"
    assert report.dropped >= 1 and report.num_results + report.dropped == 5
    assert int(report.node_counters["dropped"]) >= 1


def test_evaluation_of_perfect_predictions_is_ap_one(scenes) -> None:
    """Feeds the ground truth through the same messages and parsing the replay uses."""
    from builtin_interfaces.msg import Time
    from dyco_perception.segmenter import Instance
    from std_msgs.msg import Header

    report = replay.ReplayReport(num_clouds=len(scenes), results={}, scans=[])
    for k, scene in enumerate(scenes):
        ids = np.unique(scene.instance[scene.instance > 0])
        instances = []
        for new_id, gt_id in enumerate(ids, start=1):
            mask = scene.instance == gt_id
            instances.append(
                Instance(
                    id=new_id,
                    class_id=int(scene.semantic[mask][0]),
                    class_name="x",
                    score=0.9,
                    point_indices=np.flatnonzero(mask),
                    box_center=np.zeros(3),
                    box_size=np.ones(3),
                    centroid=np.zeros(3),
                    num_points=int(mask.sum()),
                )
            )
        lookup = np.zeros(scene.instance.max() + 1, np.uint32)
        lookup[ids] = np.arange(1, len(ids) + 1)
        labelled = Labelled(
            xyz=scene.xyz,
            semantic=scene.semantic.astype(np.int32),
            instance=lookup[scene.instance],
            score=np.zeros(scene.num_points, np.float32),
            instances=instances,
        )
        header = Header(stamp=Time(sec=k + 1), frame_id="map")
        result = Result(published_at=0.0)
        result.messages["cloud"] = labelled_cloud_msg(header, labelled)
        result.messages["instances"] = instance_array_msg(header, labelled, 0.1, False)
        stamp = (k + 1) * 10**9
        report.results[stamp] = result
        report.scans.append(
            bags.BagScan(stamp, b"", scene.num_points, scene.semantic, scene.instance, scene.name)
        )
    metrics = replay.evaluate(report)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP25"] == pytest.approx(1.0)


def test_latency_percentiles_count_only_complete_results() -> None:
    """p50 and p95 of the cloud latency over the clouds with every result kind; a cloud with
    only some of its results counts as dropped."""
    scans = [bags.BagScan(k, b"", 0, None, None, f"s{k}") for k in range(21)]
    results = {}
    for k in range(20):
        results[k] = Result(published_at=0.0)
        results[k].messages = dict.fromkeys(replay.RESULT_KINDS)
        results[k].received_at["cloud"] = float(k + 1)
    results[20] = Result(published_at=0.0, messages={"cloud": None}, received_at={"cloud": 99.0})
    report = replay.ReplayReport(num_clouds=21, results=results, scans=scans)
    assert (report.num_results, report.dropped) == (20, 1)
    p50, p95 = report.latency_percentiles()
    assert (p50, p95) == (pytest.approx(10.5), pytest.approx(19.05))
