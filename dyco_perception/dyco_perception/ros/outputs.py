"""Turns a SegmentationResult into the node's messages (labelled cloud, instances, markers).

The numpy parts (filtering, renumbering, palette, box wireframes) are plain functions so that
the bag tools and tests reuse them.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from dyco_msgs.msg import Instance as InstanceMsg
from dyco_msgs.msg import InstanceArray, ObjectArray
from dyco_msgs.msg import Object as ObjectMsg
from dyco_perception import pointcloud2 as pc2

LABELLED_FIELDS = ("x", "y", "z", "rgb", "label", "instance", "score", "object")
OBJECT_POINT_FIELDS = ("x", "y", "z", "object")
NO_INSTANCE_COLOUR = (110, 110, 110)
_GOLDEN = 0.618033988749895


@dataclass
class Labelled:
    """The published segmentation of one cloud: ids renumbered 1..K by descending score."""

    xyz: np.ndarray  # (N, 3) in the output frame
    semantic: np.ndarray  # (N,) int32, -1 for dropped (NaN) points
    instance: np.ndarray  # (N,) uint32, 0 = none
    score: np.ndarray  # (N,) float32
    instances: list[Any]  # segmenter.Instance, ids 1..K in this order
    height: int = 1
    # Persistent object id of each instance (object map), in the order of `instances`; empty
    # when the object map is off. Colours follow them, so an object keeps its colour.
    object_ids: list[int] = field(default_factory=list)

    def instance_object_ids(self) -> np.ndarray:
        """(K,) object id per instance (zeros without an object map)."""
        if not self.object_ids:
            return np.zeros(len(self.instances), np.uint32)
        return np.asarray(self.object_ids, np.uint32)

    def point_object_ids(self) -> np.ndarray:
        """(N,) object id per point, 0 outside instances."""
        ids = [inst.id for inst in self.instances]
        lookup = np.zeros(max([int(self.instance.max(initial=0)), *ids]) + 1, np.uint32)
        lookup[ids] = self.instance_object_ids()
        return lookup[self.instance]

    def colour_ids(self) -> np.ndarray:
        """(K,) the ids the palette colours by: object ids when there are, else instance ids."""
        if self.object_ids:
            return self.instance_object_ids().astype(np.int64)
        return np.array([inst.id for inst in self.instances], np.int64)


def filter_instances(
    result: Any, xyz: np.ndarray, score_threshold: float, min_points: int, height: int = 1
) -> Labelled:
    """Keep instances with score >= threshold and >= min_points points; renumber them 1..K in
    descending score order, in the instances and in the per-point ids alike."""
    kept = [
        inst
        for inst in result.instances
        if inst.score >= score_threshold and inst.num_points >= min_points
    ]
    kept.sort(key=lambda inst: -inst.score)
    old_ids = np.asarray(result.instance, dtype=np.int64)
    lookup = np.zeros(max([int(old_ids.max(initial=0))] + [i.id for i in kept]) + 1, np.uint32)
    for new_id, inst in enumerate(kept, start=1):
        lookup[inst.id] = new_id
    instance = lookup[old_ids]
    renumbered = [replace(inst, id=new_id) for new_id, inst in enumerate(kept, start=1)]
    return Labelled(
        xyz=xyz,
        semantic=np.asarray(result.semantic).astype(np.int32),
        instance=instance,
        score=np.where(instance > 0, result.score, 0.0).astype(np.float32),
        instances=renumbered,
        height=height,
    )


def instance_colours(ids: np.ndarray) -> np.ndarray:
    """Stable palette: id -> (3,) uint8 from a golden-ratio hue walk; id 0 is grey."""
    ids = np.asarray(ids, dtype=np.int64)
    hue = (ids * _GOLDEN) % 1.0
    saturation, value = 0.75, 0.95
    sector = np.floor(hue * 6.0).astype(np.int64) % 6
    f = hue * 6.0 - np.floor(hue * 6.0)
    p = np.full_like(hue, value * (1 - saturation))
    q = value * (1 - f * saturation)
    t = value * (1 - (1 - f) * saturation)
    v = np.full_like(hue, value)
    table = np.stack(
        [
            np.choose(sector, [v, q, p, p, t, v]),
            np.choose(sector, [t, v, v, q, p, p]),
            np.choose(sector, [p, p, t, v, v, q]),
        ],
        axis=-1,
    )
    colours = np.rint(table * 255).astype(np.uint8)
    colours[ids == 0] = NO_INSTANCE_COLOUR
    return colours


def labelled_columns(labelled: Labelled) -> dict[str, np.ndarray]:
    xyz = labelled.xyz.astype(np.float32, copy=False)
    colour_of_instance = np.concatenate([[0], labelled.colour_ids()])
    return {
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "rgb": pc2.pack_rgb(instance_colours(colour_of_instance[labelled.instance])),
        "label": labelled.semantic,
        "instance": labelled.instance,
        "score": labelled.score,
        "object": labelled.point_object_ids(),
    }


def to_cloud_msg(header: Header, layout: pc2.CloudLayout, data: bytes, dense: bool) -> PointCloud2:
    return PointCloud2(
        header=header,
        height=layout.height,
        width=layout.width,
        fields=[
            PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in layout.fields
        ],
        is_bigendian=layout.is_bigendian,
        point_step=layout.point_step,
        row_step=layout.row_step,
        data=array.array("B", data),  # the fast path of the generated setter
        is_dense=dense,
    )


def labelled_cloud_msg(header: Header, labelled: Labelled) -> PointCloud2:
    layout, data = pc2.write_cloud(labelled_columns(labelled), height=labelled.height)
    dense = bool(np.isfinite(labelled.xyz).all())
    return to_cloud_msg(header, layout, data, dense)


def _point(values: np.ndarray) -> Point:
    return Point(x=float(values[0]), y=float(values[1]), z=float(values[2]))


def instance_array_msg(
    header: Header, labelled: Labelled, inference_time: float, with_indices: bool
) -> InstanceArray:
    items = []
    object_ids = labelled.instance_object_ids()
    for inst, object_id in zip(labelled.instances, object_ids, strict=True):
        indices = np.flatnonzero(labelled.instance == inst.id) if with_indices else ()
        items.append(
            InstanceMsg(
                id=inst.id,
                object_id=int(object_id),
                class_id=inst.class_id,
                class_name=inst.class_name,
                score=float(inst.score),
                num_points=int(inst.num_points),
                box_center=_point(inst.box_center),
                box_size=Vector3(
                    x=float(inst.box_size[0]), y=float(inst.box_size[1]), z=float(inst.box_size[2])
                ),
                centroid=_point(inst.centroid),
                point_indices=array.array("I", np.asarray(indices, np.uint32).tobytes()),
            )
        )
    return InstanceArray(
        header=header,
        num_points=len(labelled.instance),
        instances=items,
        inference_time=float(inference_time),
    )


def box_line_points(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(24, 3): the 12 edges of an axis-aligned box as start/end pairs (a LINE_LIST)."""
    corners = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=np.float64)
    corners = np.asarray(center) + (corners - 0.5) * np.asarray(size)
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return corners[np.array(edges).reshape(-1)]


def markers_msg(header: Header, labelled: Labelled) -> MarkerArray:
    """DELETEALL, then a box wireframe and a class/score label per instance (1 + 2K markers)."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    colours = instance_colours(labelled.colour_ids())
    object_ids = labelled.instance_object_ids()
    for inst, colour, object_id in zip(labelled.instances, colours, object_ids, strict=True):
        rgba = ColorRGBA(
            r=float(colour[0]) / 255, g=float(colour[1]) / 255, b=float(colour[2]) / 255, a=1.0
        )
        box = Marker(header=header, ns="boxes", id=int(inst.id), type=Marker.LINE_LIST)
        box.action = Marker.ADD
        box.pose.orientation.w = 1.0
        box.scale.x = 0.02
        box.color = rgba
        box.points = [_point(p) for p in box_line_points(inst.box_center, inst.box_size)]
        label = Marker(header=header, ns="labels", id=int(inst.id), type=Marker.TEXT_VIEW_FACING)
        label.action = Marker.ADD
        label.pose.position = _point(inst.box_center)
        label.pose.position.z = float(inst.box_center[2] + inst.box_size[2] / 2 + 0.1)
        label.pose.orientation.w = 1.0
        label.scale.z = 0.15
        label.color = rgba
        name = f"{inst.class_name} #{object_id}" if object_id else inst.class_name
        label.text = f"{name} {inst.score:.2f}"
        markers += [box, label]
    return MarkerArray(markers=markers)


def _time(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def object_msg(obj: Any, class_names: list[str]) -> ObjectMsg:
    """An objects.MapObject as a dyco_msgs/Object."""
    size = obj.box_size
    return ObjectMsg(
        id=obj.id,
        class_id=obj.class_id,
        class_name=class_names[obj.class_id] if obj.class_id < len(class_names) else "",
        class_probs=array.array("f", obj.class_probs.astype(np.float32).tobytes()),
        confidence=float(obj.confidence),
        score=float(obj.score),
        num_points=obj.num_points,
        box_center=_point(obj.box_center),
        box_size=Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])),
        centroid=_point(obj.centroid),
        first_seen=_time(obj.first_seen),
        last_seen=_time(obj.last_seen),
        num_observations=obj.num_observations,
        num_misses=obj.num_misses,
        instance_id=obj.instance_id,
    )


def objects_msg(header: Header, objects: list[Any], class_names: list[str]) -> ObjectArray:
    return ObjectArray(header=header, objects=[object_msg(o, class_names) for o in objects])


def object_points_msg(header: Header, objects: list[Any]) -> PointCloud2:
    """The objects' points (latest observation) as a cloud with fields x y z object."""
    xyz = np.concatenate([o.points for o in objects] or [np.zeros((0, 3))]).astype(np.float32)
    owner = np.concatenate([np.full(o.num_points, o.id, np.uint32) for o in objects] or [[]])
    columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "object": owner.astype(np.uint32)}
    layout, data = pc2.write_cloud(columns)
    return to_cloud_msg(header, layout, data, True)
