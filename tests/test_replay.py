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
    """The node's log file, while its process runs."""
    tmp = tmp_path_factory.mktemp("replay_node")
    checkpoint = write_test_checkpoint(tmp / "tiny.safetensors")
    overrides = {"checkpoint": str(checkpoint), "device": "cpu", "score_threshold": 0.0}
    overrides |= {"min_instance_points": 1, "qos.depth": 10}
    process = start_node(overrides, {"cloud_in": INPUT_TOPIC}, log_path=tmp / "node.log")
    yield tmp / "node.log"
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
        written = [(topic, time_ns) for topic, time_ns, _ in client.recorded[:recorded]]
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
    in_bag = [(topic, time_ns) for topic, _, time_ns, _ in bags.iter_bag(tmp_path / "out")]
    assert sorted(in_bag) == sorted(written)  # every message received, from the first on
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
    # A scan with ground truth whose result never came is dropped, not scored.
    report.scans.append(bags.BagScan(99, b"", 1, np.zeros(1, np.int64), np.ones(1, np.int64), "x"))
    metrics = replay.evaluate(report)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP25"] == pytest.approx(1.0)
    assert metrics["num_scenes"] == 2


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


def _report_of_latencies(latencies: list[float]) -> replay.ReplayReport:
    scans = [bags.BagScan(k, b"", 0, None, None, f"s{k}") for k in range(len(latencies) + 1)]
    results = {}
    for k, latency in enumerate(latencies):
        results[k] = Result(published_at=1.0, messages=dict.fromkeys(replay.RESULT_KINDS))
        results[k].received_at["cloud"] = 1.0 + latency
    return replay.ReplayReport(num_clouds=len(scans), results=results, scans=scans)


def test_summary_and_report_give_counts_median_and_p95_latency_in_ms() -> None:
    """p50 is the median (not the mean) of the latencies; the text report shows milliseconds,
    the node's counters by name and AP as percentages."""
    report = _report_of_latencies([0.25, 0.5, 4.0])  # and one cloud without a result
    report.node_counters = {"processed": "3", "dropped": "1", "rejected": "2", "failed": "0"}
    report.node_counters["device"] = "cpu"
    report.metrics = {"AP": 0.25, "AP50": 0.5, "AP25": None, "num_scenes": 3}
    summary = report.summary()
    assert (summary["clouds"], summary["results"], summary["dropped"]) == (4, 3, 1)
    assert summary["latency_p50_s"] == pytest.approx(0.5)
    assert summary["latency_p95_s"] == pytest.approx(0.5 + 0.9 * 3.5)  # linear interpolation
    assert replay.format_report(report).splitlines() == [
        "clouds 4, results 3, dropped 1",
        "latency (publish -> labelled cloud): p50 500 ms, p95 3650 ms",
        "node: processed 3, dropped 1, rejected 2, failed 0, device cpu",
        "AP  25.0  AP50  50.0  AP25   n/a  (3 scans)",
    ]


def test_identity_line_counts_single_ids_among_the_detected_objects() -> None:
    identity = {"gt_objects": 5, "detected": 4, "single_id": 3, "single_id_fraction": 0.75}
    identity |= {"id_switches": 2, "fragmentations": 1}
    assert replay.format_identity(identity) == (
        "identity: 3/4 detected ground-truth objects kept one id (75.0 %; 5 present), "
        "id switches 2, fragmentations 1"
    )


@pytest.mark.timeout(20)
def test_waiting_for_a_result_that_never_comes_ends_at_the_timeout() -> None:
    """wait_watching waits in slices of at most POLL_S, checking in between, and gives up
    once the timeout has passed."""
    import time

    slices, checks = [], []

    def wait(seconds: float) -> None:
        slices.append(seconds)
        time.sleep(seconds)

    start = time.monotonic()
    assert replay.wait_watching(wait, 1.2, lambda: checks.append(1)) is None
    assert 1.1 < time.monotonic() - start < 3.0
    assert max(slices) <= replay.POLL_S and len(checks) == len(slices) - 1 >= 2


def test_replay_refuses_a_rate_that_is_not_positive() -> None:
    for rate in (0.0, -1.0):
        with pytest.raises(ValueError, match="rate must be positive"):
            replay.play(None, [], lockstep=False, rate=rate, progress=False)


def test_command_line_defaults_and_a_bad_bag_exit_with_the_reason(tmp_path: Path) -> None:
    """Bag timing at rate 1 unless --lockstep; the node's own input topic; a missing bag is a
    one-line error before any node is looked for."""
    args = replay.build_parser().parse_args(["--bag", "b"])
    assert (args.rate, args.lockstep, args.timeout) == (1.0, False, 300.0)
    assert (args.input_topic, args.device, args.limit) == ("/cloud_in", "auto", None)
    with pytest.raises(SystemExit, match=r"dyco-replay: error: .* not a rosbag2 directory"):
        replay.main(["--bag", str(tmp_path / "missing")])


def test_a_dead_node_is_reported_with_its_exit_code_and_last_log_lines(tmp_path: Path) -> None:
    import subprocess
    import sys

    log = tmp_path / "node.log"
    log.write_text("".join(f"line {k}\n" for k in range(1, 31)))
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(replay.NodeExited, match="exited with code 3") as caught:
        replay.StartedNode(process, log).check_running()
    tail = str(caught.value).splitlines()[1:]
    assert tail == [f"line {k}" for k in range(31 - replay.LOG_TAIL_LINES, 31)]


def test_rate_playback_keeps_bag_timing_and_waits_for_the_newest_cloud(node, scenes) -> None:
    """Rate 4: clouds 1 s apart in bag time go out 0.25 s apart (never early; late by at most
    a loaded machine's scheduling), the first at once whatever its stamp. The newest cloud is
    empty, so the node rejects it and never answers: the replay still waits its full timeout
    for it, not for an older cloud that was answered."""
    import time

    from dyco_perception.scenes import make_scene
    from rclpy.serialization import serialize_message

    small = scenes[0]
    empty = make_scene(small.xyz[:0], small.rgb[:0], small.semantic[:0], small.instance[:0], "e")
    scans = []
    for k in range(3):
        stamp = 10 * 10**9 + k * 10**9
        cloud, _, _ = scan_messages(small if k < 2 else empty, stamp, "map")
        cdr = serialize_message(cloud)
        scans.append(bags.BagScan(stamp, cdr, small.num_points, None, None, ""))
    client = _client()
    try:
        start = time.perf_counter()
        report = replay.play(client, scans, lockstep=False, rate=4.0, timeout=2.0, progress=False)
        took = time.perf_counter() - start
    finally:
        client.close()
    sent = [report.results[s.stamp].published_at for s in scans]
    assert sent[0] - start < 0.2
    for k, t in enumerate(sent):
        assert 0.25 * k - 0.01 <= t - sent[0] <= 0.25 * k + 0.3, (k, t - sent[0])
    assert took >= 0.5 + 2.0, f"returned after {took:.1f} s without waiting for the newest cloud"
    assert report.complete(scans[0]) and not report.complete(scans[-1])


def test_replay_command_plays_a_growing_bag_resetting_the_map_per_scan(node, tmp_path) -> None:
    """dyco-replay --limit 3 on two scans of two growing maps each: three clouds played and
    answered, the object map reset before each scan's first map (twice), and every output
    recorded into the output bag (one latched class map)."""
    import json

    from dyco_perception.scenes import make_scene

    rng = np.random.default_rng(0)
    maps = []
    for scan in ("roomA", "roomB"):
        for k in range(2):
            n = 400 * (k + 1)
            xyz, rgb = rng.uniform(0, 2, (n, 3)), rng.integers(0, 255, (n, 3))
            labels, ids = np.full(n, 4), np.repeat([1, 2], n // 2)
            maps.append(make_scene(xyz, rgb, labels, ids, bags.growing_name(scan, k)))
    write_scan_bag(maps, tmp_path / "bag", period=0.1)
    resets = node.read_text().count("object map reset on request")
    args = ["--bag", str(tmp_path / "bag"), "--lockstep", "--limit", "3", "--quiet"]
    args += ["--input-topic", INPUT_TOPIC, "--timeout", "60", "--out", str(tmp_path / "out")]
    replay.main([*args, "--json", str(tmp_path / "r.json")])
    summary = json.loads((tmp_path / "r.json").read_text())
    assert (summary["clouds"], summary["results"], summary["dropped"]) == (3, 3, 0)
    assert node.read_text().count("object map reset on request") == resets + 2
    topics = [topic for topic, _, _, _ in bags.iter_bag(tmp_path / "out")]
    assert topics.count("/segmentation/cloud") == topics.count("/segmentation/instances") == 3
    assert topics.count("/segmentation/class_map") == 1


def test_client_sets_and_reads_each_parameter_type_of_the_real_node(node, scenes) -> None:
    """Against the node process: a bool, an int, a float and a string go over with their
    types (the node refuses a wrong type) and read back as such; a client that does not
    record keeps nothing of the results it pairs."""
    client = SegmentationClient(input_topic=INPUT_TOPIC, client_name="replay_params")
    values = {"publish_point_indices": True, "min_instance_points": 2}
    values |= {"score_threshold": 0.25, "input_frame": "map"}
    try:
        assert client.wait_for_node(timeout=90), "node did not come up"
        before = {name: client.get_parameter(name) for name in values}
        assert all(r.successful for r in client.set_parameters(values))
        for name, value in values.items():
            read = client.get_parameter(name)
            assert (read, type(read)) == (value, type(value)), name
        assert client.get_parameter("no_such_parameter") is None
        assert all(r.successful for r in client.set_parameters(before))
        cloud, _, _ = scan_messages(scenes[0], 3 * 10**9, "map")
        key = client.publish(cloud)
        assert client.wait_for_result(key, timeout=60) is not None
        assert client.recorded == []  # recording is for record=True clients only
    finally:
        client.close()


def test_each_diagnostics_report_replaces_the_last() -> None:
    """Two reports of the client's node status, sent on /diagnostics by the test: a key the
    second report lacks is gone, not carried over."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    client = SegmentationClient(input_topic="/test_replay/unused", node_name="no_such_node")
    reliable = QoSProfile(depth=4, reliability=ReliabilityPolicy.RELIABLE)
    diagnostics = client.node.create_publisher(DiagnosticArray, "/diagnostics", reliable)
    try:
        for report in ({"processed": "4", "dropped": "1"}, {"processed": "6"}):
            kvs = [KeyValue(key=k, value=v) for k, v in report.items()]
            status = DiagnosticStatus(name=client.status_name, values=kvs)
            diagnostics.publish(DiagnosticArray(status=[status]))
            assert client.wait_until(lambda r=report: client.diagnostics == r, 10), (
                client.diagnostics
            )
        assert client.counter("processed") == 6 and client.counter("dropped") == 0
    finally:
        client.close()
