"""How many labelled-cloud-sized PointCloud2 messages a BEST_EFFORT reader with default Fast DDS
settings receives from a RELIABLE publisher (segment_node's output QoS), per cloud size, with
and without the node's Fast DDS profile. Writer and reader are separate processes on this
machine, as segment_node and RViz are.

    python bench/bench_best_effort.py --points 5000 20000 80000 --clouds 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE = REPO_ROOT / "config" / "fastdds_large_data.xml"
TOPIC = "/bench_best_effort/cloud"
POINT_STEP = 28  # x y z rgb label instance score, 4 bytes each


def publish(points: int, clouds: int, period: float) -> None:
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2, PointField

    rclpy.init()
    node = rclpy.create_node("bench_best_effort_writer")
    qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)  # as segment_node's
    publisher = node.create_publisher(PointCloud2, TOPIC, qos)
    names = ("x", "y", "z", "rgb", "label", "instance", "score")
    fields = [PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate(names)]
    data = np.random.default_rng(0).integers(0, 255, POINT_STEP * points, dtype=np.uint8)
    msg = PointCloud2(
        height=1,
        width=points,
        fields=fields,
        point_step=POINT_STEP,
        row_step=POINT_STEP * points,
        is_dense=True,
        data=data.tobytes(),
    )
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # let discovery settle on both sides
    for i in range(clouds):
        msg.header.stamp.sec = i
        publisher.publish(msg)
        time.sleep(period)
    time.sleep(2.0)
    node.destroy_node()
    rclpy.shutdown()


def read(seconds: float) -> None:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("bench_best_effort_reader")
    received = []
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)  # RViz's usual setting
    node.create_subscription(PointCloud2, TOPIC, lambda m: received.append(m.width), qos)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(len(received))
    node.destroy_node()
    rclpy.shutdown()


def run_pair(points: int, clouds: int, period: float, profile: bool) -> int:
    """One writer and one reader process; how many clouds the reader got."""
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 50))
    writer_env = dict(env, FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE)) if profile else env
    seconds = 6 + clouds * period + 4
    me = [sys.executable, __file__]
    reader = subprocess.Popen(
        [*me, "--role", "read", "--seconds", str(seconds)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    subprocess.run(
        [
            *me,
            "--role",
            "publish",
            "--points",
            str(points),
            "--clouds",
            str(clouds),
            "--period",
            str(period),
        ],
        env=writer_env,
        check=True,
    )
    out, _ = reader.communicate(timeout=seconds + 30)
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[5000, 20000, 80000])
    parser.add_argument("--clouds", type=int, default=5)
    parser.add_argument("--period", type=float, default=0.5, help="seconds between clouds")
    parser.add_argument("--role", choices=["bench", "publish", "read"], default="bench")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.role == "publish":
        return publish(args.points[0], args.clouds, args.period)
    if args.role == "read":
        return read(args.seconds)
    print("| labelled cloud | default | node's profile |\n|---|---|---|")
    for points in args.points:
        counts = [run_pair(points, args.clouds, args.period, p) for p in (False, True)]
        size = points * POINT_STEP / 1e6
        print(
            f"| {points:,} points ({size:.1f} MB) | "
            + " | ".join(f"{c}/{args.clouds}" for c in counts)
            + " |"
        )


if __name__ == "__main__":
    main()
