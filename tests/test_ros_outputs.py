"""The node's message construction (ros/outputs.py) on hand-made results, without a node."""

from __future__ import annotations

import colorsys
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from builtin_interfaces.msg import Time
from dyco_perception.objects import MapObject
from dyco_perception.ros import outputs
from dyco_perception.segmenter import Instance, SegmentationResult
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from dyco_perception import pointcloud2 as pc2

HEADER = Header(stamp=Time(sec=7, nanosec=5), frame_id="map")


Triple = tuple[float, float, float]


def _instance(
    inst_id: int,
    score: float,
    rows: list[int],
    center: Triple = (0, 0, 0),
    size: Triple = (1, 1, 1),
) -> Instance:
    return Instance(
        id=inst_id,
        class_id=3,
        class_name="bed",
        score=score,
        point_indices=np.asarray(rows, np.int64),
        box_center=np.asarray(center, np.float32),
        box_size=np.asarray(size, np.float32),
        centroid=np.asarray(center, np.float32),
        num_points=len(rows),
    )


def _labelled(
    instances: list[Instance], num_points: int, object_ids: tuple[int, ...] = ()
) -> outputs.Labelled:
    """A Labelled cloud of `num_points` points on a line, owned as the instances say."""
    instance = np.zeros(num_points, np.uint32)
    for inst in instances:
        instance[inst.point_indices] = inst.id
    return outputs.Labelled(
        xyz=np.stack([np.arange(num_points), np.zeros(num_points), np.zeros(num_points)], 1),
        semantic=np.full(num_points, 3, np.int32),
        instance=instance,
        score=np.zeros(num_points, np.float32),
        instances=instances,
        object_ids=list(object_ids),
    )


def test_filter_keeps_instances_at_both_thresholds_and_renumbers_by_score() -> None:
    """score >= threshold and >= min_points are kept (ties included), renumbered 1..K by
    descending score; the points of dropped instances lose their id and score."""
    instances = [
        _instance(1, 0.5, [0, 1, 2]),  # exactly at both thresholds: kept
        _instance(2, 0.8, [3, 4, 5, 6]),
        _instance(3, 0.45, [7, 8, 9]),  # score too low
        _instance(4, 0.9, [10, 11]),  # too few points
    ]
    point_instance = np.array([1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 4, 0], np.int32)
    point_score = np.array([0.5, 0.8, 0.45, 0.9, 0.0])[[0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4]]
    result = SegmentationResult(
        semantic=np.full(13, 3), instance=point_instance, score=point_score, instances=instances
    )
    labelled = outputs.filter_instances(result, np.zeros((13, 3)), 0.5, 3)
    assert [(inst.id, inst.score) for inst in labelled.instances] == [(1, 0.8), (2, 0.5)]
    assert labelled.instance.tolist() == [2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(labelled.score, [0.5] * 3 + [0.8] * 4 + [0.0] * 6)


def test_points_outside_instances_are_grey_and_instances_are_not() -> None:
    colours = outputs.instance_colours(np.arange(8))
    assert tuple(colours[0]) == outputs.NO_INSTANCE_COLOUR
    assert all(tuple(c) != outputs.NO_INSTANCE_COLOUR for c in colours[1:])
    assert len({tuple(c) for c in colours[1:]}) == 7  # neighbouring ids tell apart


def test_labelled_cloud_is_dense_only_without_non_finite_points() -> None:
    labelled = _labelled([_instance(1, 0.9, [0, 1])], 4)
    assert outputs.labelled_cloud_msg(HEADER, labelled).is_dense
    labelled.xyz[3, 2] = np.nan
    msg = outputs.labelled_cloud_msg(HEADER, labelled)
    assert not msg.is_dense
    rgb = pc2.read_structured(pc2.CloudLayout.of(msg), msg.data)["rgb"]
    assert rgb[2] == pc2.pack_rgb(np.array([outputs.NO_INSTANCE_COLOUR], np.uint8))[0]


def test_box_wireframe_has_the_twelve_edges_of_the_axis_aligned_box() -> None:
    center, size = np.array([1.0, -2.0, 0.5]), np.array([2.0, 4.0, 1.0])
    points = outputs.box_line_points(center, size)
    assert points.shape == (24, 3)
    np.testing.assert_allclose(points.min(0), center - size / 2)
    np.testing.assert_allclose(points.max(0), center + size / 2)
    edges = points[1::2] - points[0::2]
    lengths = sorted(float(np.abs(e).sum()) for e in edges)
    assert lengths == [1.0] * 4 + [2.0] * 4 + [4.0] * 4  # each edge runs along one axis


@pytest.mark.parametrize(
    ("object_ids", "colour_ids", "names"),
    [((), [1, 2], ["bed", "bed"]), ((9, 4), [9, 4], ["bed #9", "bed #4"])],
)
def test_markers_are_box_line_lists_with_labels_above_coloured_by_object(
    object_ids: tuple[int, ...], colour_ids: list[int], names: list[str]
) -> None:
    """DELETEALL, then per instance a LINE_LIST box and a label 0.1 m above the box top; with
    an object map the label names the object and the colour follows the object id."""
    instances = [_instance(1, 0.9, [0], (0, 0, 1), (1, 1, 2)), _instance(2, 0.7, [1])]
    markers = outputs.markers_msg(HEADER, _labelled(instances, 3, object_ids)).markers
    assert [m.action for m in markers] == [Marker.DELETEALL] + [Marker.ADD] * 4
    boxes, labels = markers[1::2], markers[2::2]
    assert all(m.type == Marker.LINE_LIST for m in boxes)
    assert labels[0].pose.position.z == pytest.approx(1 + 2 / 2 + 0.1)
    assert [m.text for m in labels] == [f"{names[0]} 0.90", f"{names[1]} 0.70"]
    expected = outputs.instance_colours(np.array(colour_ids)) / 255
    got = [(m.color.r, m.color.g, m.color.b) for m in boxes]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_instance_message_carries_each_box_axis_and_the_point_rows() -> None:
    instances = [_instance(1, 0.9, [1, 3], (1, 2, 3), (0.5, 1.5, 2.5))]
    msg = outputs.instance_array_msg(HEADER, _labelled(instances, 5), 0.25, True)
    item = msg.instances[0]
    assert (item.box_size.x, item.box_size.y, item.box_size.z) == (0.5, 1.5, 2.5)
    assert (item.box_center.x, item.box_center.y, item.box_center.z) == (1, 2, 3)
    assert list(item.point_indices) == [1, 3]
    assert (msg.num_points, msg.inference_time) == (5, 0.25)


def test_object_message_keeps_nanoseconds_and_names_only_known_classes() -> None:
    def map_object(class_id: int) -> MapObject:
        evidence = np.zeros(4, np.float32)
        evidence[class_id] = 1.0
        return MapObject(
            id=5,
            class_evidence=evidence,
            score_sum=1.6,
            num_observations=2,
            first_seen=3 * 10**9 + 7,
            last_seen=4 * 10**9 + 999_999_999,
            points=np.zeros((2, 3)),
            voxels=np.zeros(1, np.int64),
            box_min=np.array([0.0, 0.0, 0.0]),
            box_max=np.array([1.0, 2.0, 3.0]),
        )

    msg = outputs.object_msg(map_object(2), ["wall", "floor", "cabinet"])
    assert (msg.class_name, msg.score) == ("cabinet", pytest.approx(0.8))
    assert (msg.first_seen.sec, msg.first_seen.nanosec) == (3, 7)
    assert (msg.last_seen.sec, msg.last_seen.nanosec) == (4, 999_999_999)
    assert outputs.object_msg(map_object(3), ["wall", "floor", "cabinet"]).class_name == ""


def test_filter_keeps_dropped_points_semantic_as_minus_one_and_the_rows() -> None:
    """The semantic ids stay int32 (-1 = a dropped NaN point survives), and an organized cloud
    keeps its height."""
    result = SegmentationResult(
        semantic=np.array([-1, 3, 3, 5]),
        instance=np.array([0, 1, 1, 0]),
        score=np.array([0.0, 0.9, 0.9, 0.0]),
        instances=[_instance(1, 0.9, [1, 2])],
    )
    labelled = outputs.filter_instances(result, np.zeros((4, 3)), 0.5, 1, height=2)
    assert labelled.semantic.dtype == np.int32 and labelled.semantic.tolist() == [-1, 3, 3, 5]
    assert labelled.height == 2


def test_labelled_cloud_carries_every_field_of_every_point() -> None:
    """x, y, z, label (-1 kept), instance, score and object read back as written; the object
    id of a point outside instances is 0; the cloud keeps its rows."""
    instances = [_instance(1, 0.9, [0, 1]), _instance(2, 0.7, [3])]
    labelled = _labelled(instances, 4, object_ids=(9, 4))
    labelled.xyz = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]], np.float64)
    labelled.semantic = np.array([3, 3, -1, 5], np.int32)
    labelled.score = np.array([0.9, 0.9, 0.0, 0.7], np.float32)
    labelled.height = 2
    msg = outputs.labelled_cloud_msg(HEADER, labelled)
    assert (msg.height, msg.width) == (2, 2)
    records = pc2.read_structured(pc2.CloudLayout.of(msg), msg.data)
    xyz = np.stack([records["x"], records["y"], records["z"]], 1)
    np.testing.assert_array_equal(xyz, labelled.xyz)
    assert records["label"].tolist() == [3, 3, -1, 5]
    assert records["instance"].tolist() == [1, 1, 0, 2]
    np.testing.assert_allclose(records["score"], [0.9, 0.9, 0.0, 0.7], rtol=1e-6)
    assert records["object"].tolist() == [9, 9, 0, 4]


def test_palette_is_the_golden_ratio_hue_walk_at_fixed_saturation_and_value() -> None:
    """id -> HSV(id * 0.618... mod 1, 0.75, 0.95), rounded to 0..255 (checked against
    colorsys); id 1 is (61, 114, 242)."""
    ids = np.arange(1, 13)
    expected = [
        np.rint(np.array(colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)) * 255)
        for i in ids
    ]
    np.testing.assert_array_equal(outputs.instance_colours(ids), expected)
    assert tuple(outputs.instance_colours(np.array([1]))[0]) == (61, 114, 242)


def test_instance_message_names_the_object_the_centroid_and_indices_only_when_asked() -> None:
    """object_id is the instance's object (not its id), the centroid is its own (not the box
    center), and without with_indices the point rows are left out."""
    inst = replace(_instance(1, 0.9, [1, 3], (1, 2, 3)), centroid=np.array([4, 5, 6], np.float32))
    labelled = _labelled([inst], 5, object_ids=(7,))
    item = outputs.instance_array_msg(HEADER, labelled, 0.25, False).instances[0]
    assert (item.id, item.object_id) == (1, 7)
    assert (item.centroid.x, item.centroid.y, item.centroid.z) == (4, 5, 6)
    assert list(item.point_indices) == []


def test_markers_are_visible_and_each_has_its_own_namespace_and_id() -> None:
    """Boxes 0.02 m lines and labels 0.15 m text, opaque, with an identity orientation; the
    (namespace, id) of every marker is unique (RViz replaces a marker of the same pair)."""
    instances = [_instance(1, 0.9, [0]), _instance(2, 0.7, [1])]
    markers = outputs.markers_msg(HEADER, _labelled(instances, 3)).markers[1:]
    assert [(m.ns, m.id) for m in markers] == [
        ("boxes", 1),
        ("labels", 1),
        ("boxes", 2),
        ("labels", 2),
    ]
    boxes, labels = markers[0::2], markers[1::2]
    assert all(m.scale.x == pytest.approx(0.02) for m in boxes)
    assert all(m.scale.z == pytest.approx(0.15) for m in labels)
    assert all(m.color.a == 1.0 and m.pose.orientation.w == 1.0 for m in markers)


def _map_object(object_id: int, points: np.ndarray, **kwargs) -> MapObject:
    return MapObject(
        id=object_id,
        class_evidence=np.array([0.0, 1.0], np.float32),
        score_sum=1.6,
        num_observations=2,
        first_seen=0,
        last_seen=0,
        points=points,
        voxels=np.zeros(1, np.int64),
        box_min=points.min(0),
        box_max=points.max(0),
        **kwargs,
    )


def test_object_message_carries_confidence_and_the_observation_counts() -> None:
    """confidence = mean score 0.8 * 2 sightings / (2 sightings + 2 misses) = 0.4; the counts
    and the instance id are the object's own."""
    obj = _map_object(5, np.zeros((2, 3)), num_misses=1, total_misses=2, instance_id=6)
    msg = outputs.object_msg(obj, ["wall", "floor"])
    assert (msg.score, msg.confidence) == (pytest.approx(0.8), pytest.approx(0.4))
    assert (msg.num_observations, msg.num_misses, msg.instance_id) == (2, 1, 6)


def test_object_points_cloud_holds_each_object_points_under_its_id() -> None:
    """x, y, z of every object's points and, per point, the object id (not its instance id)."""
    first = np.array([[0, 1, 2], [3, 4, 5]], np.float64)
    second = np.array([[6, 7, 8]], np.float64)
    objects = [_map_object(5, first, instance_id=1), _map_object(8, second, instance_id=2)]
    msg = outputs.object_points_msg(HEADER, objects)
    records = pc2.read_structured(pc2.CloudLayout.of(msg), msg.data)
    xyz = np.stack([records["x"], records["y"], records["z"]], 1)
    np.testing.assert_array_equal(xyz, np.concatenate([first, second]))
    assert records["object"].tolist() == [5, 5, 8]
