"""rosbag2 files through the pure-Python `rosbags` library (no rosbag2_py here).

Messages are serialized with rclpy (CDR, exactly what rosbag2 stores); rosbags writes and reads
the bag files and supplies the message definitions, with our dyco_msgs types registered from
their .msg files.

Scan bags (dyco-make-bag) hold per scan, all with the scan's stamp as header and bag time:
  /cloud_in      sensor_msgs/PointCloud2  x y z rgb (float32, packed rgb)
  /ground_truth  sensor_msgs/PointCloud2  semantic (int32, 0..19, -100 ignore), instance (int32)
  /scan_name     std_msgs/String
Growing-map bags (dyco-make-bag --grow K) hold K maps per scan, named `<scan>/map_<k>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from dyco_perception import pointcloud2 as pc2
from dyco_perception.ros.resources import package_file

CLOUD_TOPIC = "/cloud_in"
GT_TOPIC = "/ground_truth"
NAME_TOPIC = "/scan_name"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
_DYCO_MSGS = ("Instance", "InstanceArray", "ClassMap", "Object", "ObjectArray")
_GROWING = "/map_"


def growing_name(scan: str, update: int) -> str:
    """The name of map `update` (0-based) of a scan in a growing-map bag."""
    return f"{scan}{_GROWING}{update:02d}"


def split_growing_name(name: str) -> tuple[str, int] | None:
    """(scan, update) of a growing-map name, None for any other name."""
    scan, separator, update = name.rpartition(_GROWING)
    return (scan, int(update)) if separator and update.isdigit() else None


def _msg_dir() -> Path:
    return package_file("msg", package="dyco_msgs")


def typestore() -> Any:
    """ROS 2 Kilted message definitions plus dyco_msgs (from the .msg files)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for name in _DYCO_MSGS:
        text = (_msg_dir() / f"{name}.msg").read_text()
        types.update(get_types_from_msg(text, f"dyco_msgs/msg/{name}"))
    store.register(types)
    return store


def ros_type_name(msg: Any) -> str:
    """'sensor_msgs/msg/PointCloud2' for an rclpy message."""
    module = type(msg).__module__.split(".")[0]
    return f"{module}/msg/{type(msg).__name__}"


class BagWriter:
    """Writes rclpy messages into a new rosbag2 (sqlite3) directory."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.exists():
            raise ValueError(f"{path} exists already; rosbag2 writes a new directory")
        self._store = typestore()
        self._writer = Writer(path, version=8)
        self._writer.open()
        self._connections: dict[str, Any] = {}

    def write(self, topic: str, msg: Any, time_ns: int) -> None:
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(
                topic, ros_type_name(msg), typestore=self._store
            )
            self._connections[topic] = connection
        self._writer.write(connection, time_ns, serialize_message(msg))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class BagScan:
    """One scan of a scan bag: the cloud as published (CDR bytes) and its ground truth."""

    stamp: int  # ns, header stamp == bag time
    cloud_cdr: bytes
    num_points: int
    semantic: np.ndarray | None
    instance: np.ndarray | None
    name: str


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def read_scan_bag(path: str | Path, cloud_topic: str = CLOUD_TOPIC) -> list[BagScan]:
    """Every cloud of the bag in time order, with its ground truth when the bag has it."""
    clouds: list[tuple[int, bytes, int]] = []
    truth: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    names: dict[int, str] = {}
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise ValueError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    with Reader(path) as reader:
        wanted = [c for c in reader.connections if c.topic in (cloud_topic, GT_TOPIC, NAME_TOPIC)]
        if not any(c.topic == cloud_topic for c in wanted):
            topics = sorted({c.topic for c in reader.connections})
            raise ValueError(f"{path}: no {cloud_topic} topic (topics: {topics})")
        for connection, time_ns, data in reader.messages(connections=wanted):
            if connection.topic == NAME_TOPIC:
                names[time_ns] = deserialize_message(bytes(data), String).data
                continue
            msg = deserialize_message(bytes(data), PointCloud2)
            if connection.topic == cloud_topic:
                clouds.append((_stamp_ns(msg.header), bytes(data), msg.width * msg.height))
            else:
                records = pc2.read_structured(pc2.CloudLayout.of(msg), msg.data)
                truth[_stamp_ns(msg.header)] = (
                    records["semantic"].astype(np.int64),
                    records["instance"].astype(np.int64),
                )
    scans = []
    for stamp, cdr, num_points in clouds:
        semantic, instance = truth.get(stamp, (None, None))
        scans.append(
            BagScan(stamp, cdr, num_points, semantic, instance, names.get(stamp, str(stamp)))
        )
    return scans


def iter_bag(path: str | Path) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, time ns, CDR bytes) of every message."""
    with Reader(Path(path)) as reader:
        for connection, time_ns, data in reader.messages():
            yield connection.topic, connection.msgtype, time_ns, bytes(data)
