"""dyco-make-bag: real rosbag2 files, readable back by us and by rosbags' own deserializer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.tools import bags
from dyco_perception.tools.make_bag import main as make_bag_main
from dyco_perception.tools.make_bag import write_scan_bag

from dyco_perception import pointcloud2 as pc2


@pytest.fixture(scope="module")
def rooms():
    from dyco_perception.data.room_generator import generate_room

    return [generate_room(seed, num_points=3000) for seed in (1, 2)]


def test_scan_bag_round_trips_clouds_and_ground_truth(tmp_path: Path, rooms) -> None:
    out = tmp_path / "bag"
    assert write_scan_bag(rooms, out, period=0.5, frame="odom") == 2
    scans = bags.read_scan_bag(out)
    assert [s.name for s in scans] == [r.name for r in rooms]
    assert scans[1].stamp - scans[0].stamp == 500_000_000
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    for scan, room in zip(scans, rooms, strict=True):
        cloud = deserialize_message(scan.cloud_cdr, PointCloud2)
        assert cloud.header.frame_id == "odom"
        points = pc2.read_msg(cloud)
        np.testing.assert_array_equal(points.xyz, room.xyz)
        np.testing.assert_array_equal(points.rgb, room.rgb)
        np.testing.assert_array_equal(scan.semantic, room.semantic)
        np.testing.assert_array_equal(scan.instance, room.instance)


def test_bag_is_readable_by_rosbags_own_typestore(tmp_path: Path, rooms) -> None:
    out = tmp_path / "bag"
    write_scan_bag(rooms[:1], out)
    store = bags.typestore()
    seen = {}
    for topic, msgtype, time_ns, data in bags.iter_bag(out):
        msg = store.deserialize_cdr(data, msgtype)
        seen[topic] = (msg, time_ns)
    cloud, time_ns = seen[bags.CLOUD_TOPIC]
    assert cloud.header.stamp.sec * 10**9 + cloud.header.stamp.nanosec == time_ns
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
    assert cloud.width * cloud.height == len(rooms[0].xyz)
    assert seen[bags.NAME_TOPIC][0].data == rooms[0].name


def test_make_bag_cli_on_real_scans(tmp_path: Path, scannet_dir: Path) -> None:
    out = tmp_path / "scans"
    make_bag_main(["--scans", str(scannet_dir), "--limit", "2", "--out", str(out)])
    scans = bags.read_scan_bag(out)
    assert len(scans) == 2 and all(s.num_points == 50_000 for s in scans)
    from dyco_perception.scenes import load_npz_scene

    first = load_npz_scene(sorted(scannet_dir.glob("*.npz"))[0])
    np.testing.assert_array_equal(scans[0].instance, first.instance)


def test_bad_arguments_fail_with_a_reason(tmp_path: Path, rooms) -> None:
    out = tmp_path / "bag"
    write_scan_bag(rooms[:1], out)
    with pytest.raises(ValueError, match="exists already"):
        write_scan_bag(rooms[:1], out)
    with pytest.raises(ValueError, match="no /elsewhere topic"):
        bags.read_scan_bag(out, cloud_topic="/elsewhere")
    with pytest.raises(ValueError, match="not a rosbag2"):
        bags.read_scan_bag(tmp_path)
    with pytest.raises(SystemExit, match=r"no \.npz scans"):
        make_bag_main(["--scans", str(tmp_path), "--out", str(tmp_path / "new")])


def test_scan_bag_topics_are_the_documented_ones(tmp_path: Path, rooms) -> None:
    """/cloud_in, /ground_truth and /scan_name, the names dyco-replay and the node expect."""
    out = tmp_path / "bag"
    write_scan_bag(rooms[:1], out)
    assert {(topic, msgtype) for topic, msgtype, _, _ in bags.iter_bag(out)} == {
        ("/cloud_in", "sensor_msgs/msg/PointCloud2"),
        ("/ground_truth", "sensor_msgs/msg/PointCloud2"),
        ("/scan_name", "std_msgs/msg/String"),
    }


def test_a_recorded_bag_is_keyed_by_header_stamps_not_bag_times(tmp_path: Path) -> None:
    """A bag recorded live (bag time = receive time, after the header stamp) of an organized
    cloud (2 rows) and its ground truth, without scan names: the scan is keyed by the header
    stamp the node echoes, has rows x columns points and is named by its stamp."""
    from builtin_interfaces.msg import Time
    from dyco_perception.ros.outputs import to_cloud_msg
    from std_msgs.msg import Header

    stamp = 7 * 10**9 + 250
    header = Header(stamp=Time(sec=7, nanosec=250), frame_id="cam")
    xyz = np.arange(18, dtype=np.float32).reshape(6, 3)
    columns = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    cloud = to_cloud_msg(header, *pc2.write_cloud(columns, height=2), True)
    columns = {"semantic": np.arange(6, dtype=np.int32), "instance": np.ones(6, np.int32)}
    truth = to_cloud_msg(header, *pc2.write_cloud(columns, height=2), True)
    with bags.BagWriter(tmp_path / "bag") as writer:
        writer.write(bags.CLOUD_TOPIC, cloud, stamp + 3_000_000)
        writer.write(bags.GT_TOPIC, truth, stamp + 4_000_000)
    [scan] = bags.read_scan_bag(tmp_path / "bag")
    assert (scan.stamp, scan.num_points, scan.name) == (stamp, 6, str(stamp))
    assert scan.semantic.tolist() == [0, 1, 2, 3, 4, 5] and scan.instance.tolist() == [1] * 6


def test_bag_writer_stores_the_node_output_types(tmp_path: Path) -> None:
    """dyco_msgs outputs (instances, class map, object map) go into a bag and read back."""
    from std_msgs.msg import Header

    from dyco_msgs.msg import ClassMap, InstanceArray, ObjectArray

    header = Header(frame_id="map")
    with bags.BagWriter(tmp_path / "bag") as writer:
        writer.write("/objects", ObjectArray(header=header), 1)
        writer.write("/instances", InstanceArray(header=header, num_points=5), 2)
        writer.write("/class_map", ClassMap(), 3)
    store = bags.typestore()
    read = [(t, m, n) for t, m, n, _ in bags.iter_bag(tmp_path / "bag")]
    assert read == [
        ("/objects", "dyco_msgs/msg/ObjectArray", 1),
        ("/instances", "dyco_msgs/msg/InstanceArray", 2),
        ("/class_map", "dyco_msgs/msg/ClassMap", 3),
    ]
    data = next(d for t, _, _, d in bags.iter_bag(tmp_path / "bag") if t == "/instances")
    assert store.deserialize_cdr(data, "dyco_msgs/msg/InstanceArray").num_points == 5


def test_scan_messages_stamp_the_first_scan_at_start_and_flag_non_finite_clouds(
    tmp_path: Path, rooms
) -> None:
    """Scan k is stamped START_SEC + k * period; a cloud holding a NaN point is not dense."""
    from dyco_perception.tools.make_bag import START_SEC
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    holed = dataclasses.replace(rooms[1], xyz=rooms[1].xyz.copy())
    holed.xyz[5] = np.nan
    write_scan_bag([rooms[0], holed], tmp_path / "bag", period=2.0)
    scans = bags.read_scan_bag(tmp_path / "bag")
    assert [s.stamp for s in scans] == [START_SEC * 10**9, (START_SEC + 2) * 10**9]
    dense = [deserialize_message(s.cloud_cdr, PointCloud2).is_dense for s in scans]
    assert dense == [True, False]


def test_a_failed_write_leaves_no_bag(tmp_path: Path, rooms) -> None:
    """A bag directory that exists is taken for a finished one: an error half way removes it."""

    def scenes():
        yield rooms[0]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_scan_bag(scenes(), tmp_path / "bag")
    assert not (tmp_path / "bag").exists()


def test_make_bag_cli_generates_numbered_rooms_in_the_frame_asked(tmp_path: Path) -> None:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    out = tmp_path / "rooms"
    make_bag_main(
        ["--rooms", "2", "--seed", "7", "--points", "1000", "--frame", "odom", "--out", str(out)]
    )
    scans = bags.read_scan_bag(out)
    assert [s.name for s in scans] == ["room_000007", "room_000008"]
    assert {deserialize_message(s.cloud_cdr, PointCloud2).header.frame_id for s in scans} == {
        "odom"
    }
    absent = str(tmp_path / "absent.npz")
    for bad, reason in ((["--rooms", "0"], None), (["--scans", absent], "neither a folder")):
        with pytest.raises(SystemExit, match=reason):
            make_bag_main([*bad, "--out", str(tmp_path / "new")])
        assert not (tmp_path / "new").exists()
