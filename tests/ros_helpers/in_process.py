"""A segmentation node in the test's own process, so that a test can look into it or hold its
worker at a chosen point; it talks to the test over real DDS like any other node."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter


@contextmanager
def node_in_this_process(node_class: type[Node], checkpoint: Path, namespace: str) -> Iterator:
    """`node_class` on the cpu with `checkpoint`, spun by a thread, in a context of its own."""
    context = rclpy.Context()
    rclpy.init(context=context)
    overrides = [Parameter("checkpoint", value=str(checkpoint)), Parameter("device", value="cpu")]
    node = node_class(context=context, namespace=namespace, parameter_overrides=overrides)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5)
