"""Publishes sample dyco_msgs from its own process until stopped (for the DDS round-trip test)."""

from __future__ import annotations

import sys

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from dyco_msgs.msg import ClassMap, InstanceArray
from tests.ros_helpers.sample_messages import sample_class_map, sample_instance_array


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("sample_message_publisher")
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    instances_pub = node.create_publisher(InstanceArray, "test_instances", qos)
    class_map_pub = node.create_publisher(ClassMap, "test_class_map", qos)

    def publish() -> None:
        instances_pub.publish(sample_instance_array())
        class_map_pub.publish(sample_class_map())

    node.create_timer(0.2, publish)
    print("publishing", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
