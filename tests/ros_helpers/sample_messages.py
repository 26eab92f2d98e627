"""Sample messages with a distinct value in every field, shared by publisher and test."""

from __future__ import annotations

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import Header

from dyco_msgs.msg import ClassMap, Instance, InstanceArray


def sample_instance_array() -> InstanceArray:
    chair = Instance(
        id=1,
        class_id=4,
        class_name="chair",
        score=0.875,
        num_points=3,
        box_center=Point(x=1.0, y=-2.0, z=0.5),
        box_size=Vector3(x=0.5, y=0.25, z=1.0),
        centroid=Point(x=1.125, y=-2.25, z=0.375),
        point_indices=[7, 8, 4294967295],
    )
    table = Instance(
        id=2,
        class_id=6,
        class_name="table",
        score=0.5,
        num_points=0,
        box_center=Point(x=-3.0, y=4.0, z=0.75),
        box_size=Vector3(x=1.5, y=0.75, z=0.125),
        centroid=Point(x=-3.0, y=4.0, z=0.7),
        point_indices=[],
    )
    return InstanceArray(
        header=Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id="map"),
        num_points=50000,
        instances=[chair, table],
        inference_time=0.4375,
    )


def sample_class_map() -> ClassMap:
    return ClassMap(
        class_names=["wall", "floor", "cabinet"],
        instance_class_ids=[2],
        model_name="dyco3d_m16.safetensors",
        model_sha256="ab" * 32,
    )
