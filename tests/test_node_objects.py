"""segment_node's object map over real DDS: a short growing-map bag of a real scan replayed into
a node running the shipped checkpoint; object ids on instances and in the labelled cloud, the
latched objects topic, the query and reset services, and the identity metric of dyco-replay."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.ros import outputs
from dyco_perception.tools import bags, replay
from dyco_perception.tools.client import SegmentationClient
from dyco_perception.tools.make_bag import GrowthConfig, growing_maps, write_scan_bag
from dyco_perception.tools.process import start_node, stop_node
from geometry_msgs.msg import Point

from dyco_msgs.srv import ResetObjects
from dyco_perception import pointcloud2 as pc2

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "checkpoints" / "dyco3d_scannet_m16.safetensors"
INPUT_TOPIC = "/test_node_objects/cloud_in"
MAPS = 3


@pytest.fixture(scope="module")
def growing_bag(scannet_dir, tmp_path_factory) -> Path:
    """The first 3 of 6 growing maps of a real val scan (13k-25k points: quick on a CPU)."""
    from dyco_perception.scenes import load_npz_scene

    scene = load_npz_scene(scannet_dir / "scene0010_00.npz")
    maps = list(growing_maps(scene, GrowthConfig(updates=6, seed=1)))[:MAPS]
    out = tmp_path_factory.mktemp("objects") / "growing"
    write_scan_bag(maps, out, period=0.5)
    return out


@pytest.fixture(scope="module")
def replayed(growing_bag, tmp_path_factory):
    """The node (shipped checkpoint), a client, and the replay report of the bag."""
    if not SHIPPED.is_file():
        pytest.skip(f"shipped checkpoint {SHIPPED} absent")
    tmp = tmp_path_factory.mktemp("objects_node")
    overrides = {"checkpoint": str(SHIPPED), "device": "cpu", "publish_point_indices": True}
    overrides |= {"objects.confirm_after": 2, "objects.retire_after": 3}
    process = start_node(overrides, {"cloud_in": INPUT_TOPIC}, log_path=tmp / "node.log")
    client = SegmentationClient(input_topic=INPUT_TOPIC, client_name="objects_test")
    try:
        if not client.wait_for_node(timeout=120):
            pytest.fail(f"node did not come up: {(tmp / 'node.log').read_text()[-2000:]}")
        scans = bags.read_scan_bag(growing_bag)
        report = replay.play_growing(client, scans, lockstep=True, timeout=180, progress=False)
        report.identity = replay.identity_metrics(report)
        yield process, client, report
    finally:
        client.close()
        stop_node(process)


def _instances(report, index: int):
    return report.results[report.scans[index].stamp].messages["instances"].instances


def test_object_ids_label_instances_and_cloud_points_and_persist(replayed) -> None:
    _, _, report = replayed
    assert report.num_results == MAPS
    ids_per_map = []
    for scan in report.scans:
        result = report.results[scan.stamp]
        instances = result.messages["instances"].instances
        cloud = result.messages["cloud"]
        records = pc2.read_structured(pc2.CloudLayout.of(cloud), cloud.data)
        assert instances, f"the shipped checkpoint found nothing in {scan.name}"
        object_ids = [inst.object_id for inst in instances]
        assert all(object_ids) and len(set(object_ids)) == len(object_ids)
        for inst in instances:  # the cloud's `object` field is the instance's object id
            points = np.asarray(inst.point_indices)
            assert set(records["object"][points].tolist()) == {inst.object_id}
            assert set(records["instance"][points].tolist()) == {inst.id}  # per-map ids stay
        assert set(np.unique(records["object"]).tolist()) - {0} == set(object_ids)
        ids_per_map.append(set(object_ids))
        # Colours follow the object, so an object keeps its colour across maps.
        colours = pc2.read_msg(cloud).rgb
        palette = outputs.instance_colours(np.array(object_ids))
        for inst, colour in zip(instances, palette, strict=True):
            np.testing.assert_array_equal(colours[np.asarray(inst.point_indices)[0]], colour)
    # The map grows: most objects of one map keep their id in the next.
    for before, after in itertools.pairwise(ids_per_map):
        assert len(before & after) >= 0.5 * len(before), (before, after)
    identity = report.identity
    assert identity["detected"] >= 3, identity
    assert identity["single_id_fraction"] >= 0.8, identity


def test_latched_objects_topic_lists_the_confirmed_objects(replayed) -> None:
    _, client, report = replayed
    assert client.wait_until(
        lambda: (
            client.objects is not None
            and client.objects.header.stamp.sec == report.scans[-1].stamp // 10**9
        ),
        10,
    )
    objects = client.objects.objects
    assert objects, "objects seen in 3 maps must be confirmed (confirm_after 2)"
    assert client.wait_until(lambda: client.counter("objects_confirmed") == len(objects), 10)
    assert client.counter("objects") >= len(objects) and client.counter("objects_reset") == 0
    assert float(client.diagnostics["objects_last_association_ms"]) > 0
    seen = [set(inst.object_id for inst in _instances(report, k)) for k in range(MAPS)]
    last = {inst.object_id: inst for inst in _instances(report, MAPS - 1)}
    for obj in objects:
        assert obj.num_observations >= 2
        assert sum(obj.id in ids for ids in seen) == obj.num_observations
        assert 0.0 < obj.confidence <= obj.score <= 1.0
        assert abs(sum(obj.class_probs) - 1.0) < 1e-4 and obj.class_id == np.argmax(obj.class_probs)
        if obj.id in last:  # seen in the newest map: its instance id is that view's, its box
            inst = last[obj.id]  # (the voxels seen often enough) overlaps that view's
            assert obj.instance_id == inst.id and obj.num_points > 0
            for axis in "xyz":
                gap = abs(getattr(obj.box_center, axis) - getattr(inst.box_center, axis))
                assert gap <= (getattr(obj.box_size, axis) + getattr(inst.box_size, axis)) / 2
        else:
            assert obj.instance_id == 0


def test_query_service_filters_and_returns_points(replayed) -> None:
    _, client, _ = replayed
    everything = client.query_objects()
    assert everything.success and everything.objects
    assert everything.header.frame_id == "map"
    first = everything.objects[0]
    same_class = client.query_objects(class_names=[first.class_name])
    assert same_class.success and first.id in [o.id for o in same_class.objects]
    assert {o.class_name for o in same_class.objects} == {first.class_name}
    c = first.centroid
    box = client.query_objects(
        use_region=True,
        region_min=Point(x=c.x - 0.01, y=c.y - 0.01, z=c.z - 0.01),
        region_max=Point(x=c.x + 0.01, y=c.y + 0.01, z=c.z + 0.01),
    )
    assert [o.id for o in box.objects] == [first.id]
    threshold = float(np.median([o.confidence for o in everything.objects]))
    confident = client.query_objects(min_confidence=threshold).objects
    assert all(o.confidence >= threshold for o in confident)
    assert 0 < len(confident) <= len(everything.objects)
    one = client.query_objects(object_id=first.id, with_points=True)
    assert [o.id for o in one.objects] == [first.id]
    points = pc2.read_structured(pc2.CloudLayout.of(one.points), one.points.data)
    assert len(points) == first.num_points and set(points["object"].tolist()) == {first.id}
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1)
    centre = [first.box_center.x, first.box_center.y, first.box_center.z]
    size = [first.box_size.x, first.box_size.y, first.box_size.z]
    assert np.all(np.abs(xyz - centre) <= np.asarray(size) / 2 + 1e-4)


def test_bad_queries_fail_with_a_reason(replayed) -> None:
    process, client, _ = replayed
    unknown_class = client.query_objects(class_names=["spaceship"])
    assert not unknown_class.success and "spaceship" in unknown_class.message
    unknown_id = client.query_objects(object_id=999_999)
    assert not unknown_id.success and "999999" in unknown_id.message
    inverted = client.query_objects(
        use_region=True, region_min=Point(x=1.0), region_max=Point(x=0.0)
    )
    assert not inverted.success and "region_min" in inverted.message
    negative = client.query_objects(min_confidence=-0.1)
    assert not negative.success and "min_confidence" in negative.message
    # The bounds themselves are fine: full confidence, a region of one point.
    assert client.query_objects(min_confidence=1.0).success
    corner = Point(x=1.0, y=2.0, z=3.0)
    assert client.query_objects(use_region=True, region_min=corner, region_max=corner).success
    assert process.poll() is None


def test_a_new_frame_and_the_reset_service_empty_the_map(replayed, growing_bag) -> None:
    """Runs after the tests that read the replayed map: it changes the map."""
    _, client, report = replayed
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    cloud = deserialize_message(report.scans[-1].cloud_cdr, PointCloud2)
    cloud.header.frame_id = "another_map"
    cloud.header.stamp.sec += 100
    key = client.publish(cloud)
    assert client.wait_for_result(key, timeout=120) is not None
    assert client.wait_until(lambda: client.objects.header.frame_id == "another_map", 10)
    assert client.objects.objects == []  # a new map: nothing is confirmed after one sighting
    assert client.wait_until(lambda: client.counter("objects_reset") == 1, 10)
    # Diagnostics count the tentative objects of that map, none of them confirmed yet.
    assert client.counter("objects") == len(_instances(report, MAPS - 1)), client.diagnostics
    assert client.counter("objects_confirmed") == 0
    assert client.query_objects().header.frame_id == "another_map"
    removed = client.reset_objects()
    assert removed == len(_instances(report, MAPS - 1))  # the tentative objects of that map
    assert client.query_objects().objects == [] and client.reset_objects() == 0


def test_object_parameters_are_validated_and_change_at_run_time(replayed) -> None:
    """Runs after the reset: with confirm_after 1 a map's objects are confirmed at once; the
    query answers with that map's stamp, nanoseconds included."""
    _, client, report = replayed
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    assert client.set_parameters({"objects.confirm_after": 1})[0].successful
    cloud = deserialize_message(report.scans[-1].cloud_cdr, PointCloud2)
    cloud.header.stamp.sec += 200
    cloud.header.stamp.nanosec = 123_456
    key = client.publish(cloud)
    assert client.wait_for_result(key, timeout=120) is not None
    assert client.wait_until(lambda: client.objects.header.stamp.sec == cloud.header.stamp.sec, 10)
    assert client.objects.objects, "confirm_after 1: one sighting confirms"
    stamp = client.query_objects().header.stamp
    assert (stamp.sec, stamp.nanosec) == (cloud.header.stamp.sec, 123_456)
    [ok] = client.set_parameters({"objects.retire_after": 5})
    assert ok.successful
    refusals = {
        "objects.min_overlap": 1.5,  # out of range
        "objects.confirm_after": 0,
        "objects.voxel_size": 0.2,  # read-only: the stored voxels are keyed by it
    }
    for name, value in refusals.items():
        [result] = client.set_parameters({name: value})
        assert not result.successful and result.reason, f"{name}={value} was accepted"
    [result] = client.set_parameters({"objects.min_overlap": 1.5})
    assert "objects.min_overlap" in result.reason


def test_disabled_object_map_gives_no_config() -> None:
    from dyco_perception.ros.params import SPECS, NodeSettings

    values = {spec.name: spec.default for spec in SPECS}
    assert NodeSettings.from_values(values).objects.retire_after == 3
    values["objects.enabled"] = False
    assert NodeSettings.from_values(values).objects is None


ResetObjectsResponse = ResetObjects.Response


# ---- the object-map mixin without DDS: a stand-in node around ObjectMapNode ----------------
class _StandInNode:
    """What ObjectMapNode uses of SegmentationCore: settings, segmenter card, logger, counts,
    a publisher factory (publishers record their messages) and a clock."""

    def __init__(self, settings) -> None:
        import collections
        import threading
        from types import SimpleNamespace

        self.settings = settings
        self.segmenter = SimpleNamespace(card=SimpleNamespace(classes=[f"c{k}" for k in range(20)]))
        self._lock = threading.Lock()
        self.counts = collections.Counter()
        self._output_publishers = []
        self.published = []
        self.logged = []
        self.now_ns = 123 * 10**9

    def _create_output_publisher(self, _type, _topic, _qos):
        from types import SimpleNamespace

        return SimpleNamespace(publish=self.published.append)

    def create_service(self, *_args):
        return None

    def get_logger(self):
        from types import SimpleNamespace

        def log(level):
            return lambda text: self.logged.append((level, text))

        return SimpleNamespace(debug=log("debug"), info=log("info"), warning=log("warning"))

    def get_clock(self):
        from types import SimpleNamespace

        from rclpy.time import Time as RclpyTime

        return SimpleNamespace(now=lambda: RclpyTime(nanoseconds=self.now_ns))


def _object_node(**settings):
    from types import SimpleNamespace

    from dyco_perception.objects import ObjectMapConfig
    from dyco_perception.ros.object_node import ObjectMapNode

    class Node(_StandInNode, ObjectMapNode):
        pass

    objects = ObjectMapConfig(**settings.pop("objects", {}))
    node = Node(SimpleNamespace(objects=objects, roi=settings.pop("roi", None)))
    node._make_object_map()
    return node


def _box(lo, hi, count, seed):
    return np.random.default_rng(seed).uniform(lo, hi, (count, 3)).astype(np.float32)


def _labelled(parts, extra=(), jitter_seed=None):
    """A labelled map: the parts (instances, class 4) plus extra points; jitter_seed moves every
    point by a tiny amount (a fresh scan of the same scene)."""
    from dyco_perception.segmenter import Instance

    xyz = np.concatenate([*parts, *extra])
    if jitter_seed is not None:
        xyz = xyz + np.random.default_rng(jitter_seed).normal(0, 1e-4, xyz.shape).astype(np.float32)
    instances, start = [], 0
    instance = np.zeros(len(xyz), np.uint32)
    for k, part in enumerate(parts, 1):
        rows = np.arange(start, start + len(part))
        instance[rows] = k
        start += len(part)
        instances.append(
            Instance(k, 4, "c4", 0.8, rows, part.mean(0), np.ptp(part, 0), part.mean(0), len(rows))
        )
    score = np.zeros(len(xyz), np.float32)
    return outputs.Labelled(xyz, np.zeros(len(xyz), np.int32), instance, score, instances)


def _header(sec: int, frame: str = "map"):
    from std_msgs.msg import Header

    header = Header(frame_id=frame)
    header.stamp.sec = sec
    return header


def test_node_object_map_does_not_miss_objects_outside_the_region_of_interest() -> None:
    from dyco_perception.tiling import RegionOfInterest

    roi = RegionOfInterest.box([-5, -5, -5], [1.5, 5, 5])
    node = _object_node(objects={"retire_after": 2}, roi=None)
    chair_a, chair_b = (
        _box([0, 0, 0], [0.5, 0.5, 0.9], 500, 1),
        _box([2, 0, 0], [2.5, 0.5, 0.9], 500, 2),
    )
    floor = _box([-1, -1, -0.05], [4, 2, 0], 3000, 3)
    node._track_objects(_labelled([chair_a, chair_b], [floor], 0), _header(1), node.settings)
    node.settings.roi = roi  # from now on only x < 1.5 is segmented: chair B is not detected
    for sec in range(2, 6):
        labelled = _labelled([chair_a], [chair_b, floor], sec)
        node._track_objects(labelled, _header(sec), node.settings)
        assert sorted(node.object_map.objects) == [1, 2], sec


def test_node_reset_keeps_the_frame_and_stamps_the_latched_message_now() -> None:
    node = _object_node()
    chair = _box([0, 0, 0], [0.5, 0.5, 0.9], 500, 1)
    node._track_objects(_labelled([chair], [], 0), _header(5, "odom"), node.settings)
    node._publish_objects(_header(5, "odom"))
    response = node._on_reset_objects(None, ResetObjectsResponse())
    assert response.num_removed == 1
    latched = node.published[-1]
    assert latched.objects == [] and latched.header.frame_id == "odom"
    assert latched.header.stamp.sec == node.now_ns // 10**9  # now, not 0
    assert node._object_map_header().frame_id == "odom"


def test_node_logs_a_changed_object_voxel_size() -> None:
    from dyco_perception.objects import ObjectMapConfig

    node = _object_node()
    chair = _box([0, 0, 0], [0.5, 0.5, 0.9], 500, 1)
    node._track_objects(_labelled([chair], [], 0), _header(1), node.settings)
    node.settings.objects = ObjectMapConfig(voxel_size=0.2)
    node._track_objects(_labelled([chair], [], 1), _header(2), node.settings)
    assert any(level == "warning" and "voxel_size" in text for level, text in node.logged)


def test_node_services_and_the_latched_topic_wait_for_the_map_lock() -> None:
    """The worker updates the map under its lock: a query, a reset and the latched message
    each wait for it rather than read a map half updated."""
    import threading

    from dyco_msgs.srv import QueryObjects

    node = _object_node()
    chair = _box([0, 0, 0], [0.5, 0.5, 0.9], 500, 1)
    node._track_objects(_labelled([chair], [], 0), _header(5), node.settings)
    calls = {
        "query": lambda: node._on_query_objects(QueryObjects.Request(), QueryObjects.Response()),
        "publish": lambda: node._publish_objects(_header(5)),
        "reset": lambda: node._on_reset_objects(None, ResetObjectsResponse()),  # last
    }
    for name, call in calls.items():
        with node._objects_lock:
            caller = threading.Thread(target=call)
            caller.start()
            caller.join(0.2)
            assert caller.is_alive(), f"{name} did not wait for the map lock"
            assert len(node.object_map.objects) == 1, f"{name} changed the map under the lock"
        caller.join(5)
        assert not caller.is_alive()
