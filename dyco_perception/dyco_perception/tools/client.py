"""Talking to a running segment_node over DDS: publish clouds, collect its outputs by stamp,
read its diagnostics and set its parameters. Used by dyco-replay, dyco-demo, the bench and tests.

The client owns its own rclpy Context and spins it on a background thread, so it can live
beside other rclpy users in one process.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue, SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from dyco_msgs.msg import ClassMap, InstanceArray, ObjectArray
from dyco_msgs.srv import QueryObjects, ResetObjects
from dyco_perception.ros import object_node
from dyco_perception.ros import segment_node as topics

RESULT_KINDS = ("cloud", "instances", "markers")


def stamp_key(header: Any) -> int:
    """Nanoseconds of a header stamp: the key that pairs a node output with its input."""
    if not hasattr(header, "stamp"):  # a message: its header, or a MarkerArray's first marker's
        header = header.header if hasattr(header, "header") else header.markers[0].header
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class Result:
    """The node's outputs for one input cloud and when they arrived (perf_counter seconds)."""

    published_at: float | None = None
    messages: dict[str, Any] = field(default_factory=dict)
    received_at: dict[str, float] = field(default_factory=dict)

    def latency(self, kind: str = "cloud") -> float | None:
        if self.published_at is None or kind not in self.received_at:
            return None
        return self.received_at[kind] - self.published_at


def _parameter(name: str, value: Any) -> Parameter:
    pv = ParameterValue()
    if isinstance(value, bool):
        pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, int):
        pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
    elif isinstance(value, float):
        pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
    elif isinstance(value, str):
        pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
    elif isinstance(value, list | tuple) and all(isinstance(v, float) for v in value):
        pv.type, pv.double_array_value = ParameterType.PARAMETER_DOUBLE_ARRAY, list(value)
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        pv.type, pv.string_array_value = ParameterType.PARAMETER_STRING_ARRAY, list(value)
    else:
        raise ValueError(f"unsupported parameter value {value!r}")
    return Parameter(name=name, value=pv)


class SegmentationClient:
    def __init__(
        self,
        input_topic: str = "cloud_in",
        node_name: str = "segment_node",
        namespace: str = "",
        client_name: str = "dyco_client",
        record: bool = False,
    ) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(client_name, context=self.context)
        self._lock = threading.Condition()
        self.results: dict[int, Result] = {}
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_stamp_ns = 0  # the latest report's header stamp
        self.class_map: ClassMap | None = None
        self.objects: ObjectArray | None = None  # latest of the latched object map topic
        self.recorded: list[tuple[str, int, Any]] = []  # (topic, receive time ns, msg)
        self._record = record
        prefix = f"{namespace.rstrip('/')}/" if namespace else ""
        # The node's own diagnostics status (segment_node names it by its qualified name), so a
        # client of one of two nodes side by side does not read the other's.
        self.status_name = f"dyco_perception: {(prefix + node_name).lstrip('/')}"
        reliable = QoSProfile(depth=4, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.input_topic = input_topic
        self.publisher = self.node.create_publisher(PointCloud2, input_topic, reliable)
        self.topics = {
            "cloud": prefix + topics.TOPIC_CLOUD,
            "instances": prefix + topics.TOPIC_INSTANCES,
            "markers": prefix + topics.TOPIC_MARKERS,
            "class_map": prefix + topics.TOPIC_CLASS_MAP,
            "objects": prefix + object_node.TOPIC_OBJECTS,
            "diagnostics": topics.TOPIC_DIAGNOSTICS,
        }
        types = {"cloud": PointCloud2, "instances": InstanceArray, "markers": MarkerArray}
        for kind, msg_type in types.items():
            subscription = self.node.create_subscription(
                msg_type, self.topics[kind], self._result_callback(kind), reliable
            )
            self.topics[kind] = subscription.topic_name  # fully qualified, for the output bag
        subscription = self.node.create_subscription(
            ClassMap, self.topics["class_map"], self._on_class_map, latched
        )
        self.topics["class_map"] = subscription.topic_name
        subscription = self.node.create_subscription(
            ObjectArray, self.topics["objects"], self._on_objects, latched
        )
        self.topics["objects"] = subscription.topic_name
        self._query_objects = self.node.create_client(
            QueryObjects, prefix + object_node.SERVICE_QUERY
        )
        self._reset_objects = self.node.create_client(
            ResetObjects, prefix + object_node.SERVICE_RESET
        )
        self.node.create_subscription(
            DiagnosticArray, self.topics["diagnostics"], self._on_diagnostics, reliable
        )
        service = f"{prefix or '/'}{node_name}/set_parameters"
        self._parameters = self.node.create_client(SetParameters, service)
        self._get_parameters = self.node.create_client(
            GetParameters, f"{prefix or '/'}{node_name}/get_parameters"
        )
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, name="client-spin", daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as exc:  # a callback failed: say so instead of going silent
            if self.context.ok():
                print(f"SegmentationClient: spin stopped: {exc!r}", file=sys.stderr)
                raise

    def _record_msg(self, kind: str, msg: Any) -> None:
        if self._record:
            self.recorded.append((self.topics[kind], time.time_ns(), msg))

    def _result_callback(self, kind: str):
        def on_message(msg: Any) -> None:
            now = time.perf_counter()
            with self._lock:
                result = self.results.setdefault(stamp_key(msg), Result())
                result.messages[kind] = msg
                result.received_at[kind] = now
                self._record_msg(kind, msg)
                self._lock.notify_all()

        return on_message

    def _on_class_map(self, msg: ClassMap) -> None:
        with self._lock:
            self.class_map = msg
            self._record_msg("class_map", msg)
            self._lock.notify_all()

    def _on_objects(self, msg: ObjectArray) -> None:
        with self._lock:
            self.objects = msg
            self._record_msg("objects", msg)
            self._lock.notify_all()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.status_name:
                with self._lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_stamp_ns = Time.from_msg(msg.header.stamp).nanoseconds
                    self._record_msg("diagnostics", msg)
                    self._lock.notify_all()

    # ---- waiting ----------------------------------------------------------------------------
    def wait_until(self, predicate: Any, timeout: float) -> bool:
        """Wait (under the lock) until predicate() is true; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.2))
        return True

    def wait_for_fresh_diagnostics(self, timeout: float = 10.0) -> bool:
        """Until a report stamped after this call arrives: its counters include every cloud
        the node finished before now. The node and this client share one clock."""
        now = self.node.get_clock().now().nanoseconds
        return self.wait_until(lambda: self.diagnostics_stamp_ns > now, timeout)

    def wait_for_node(self, timeout: float = 60.0) -> bool:
        """Until the node's input subscription and class map are seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.publisher.get_subscription_count() > 0 and (
                self.class_map is not None or self.diagnostics
            ):
                return True
            time.sleep(0.1)
        return False

    def wait_for_result(
        self, key: int, kinds: Iterable[str] = RESULT_KINDS, timeout: float = 60.0
    ) -> Result | None:
        kinds = tuple(kinds)

        def done() -> bool:
            result = self.results.get(key)
            return result is not None and all(k in result.messages for k in kinds)

        return self.results[key] if self.wait_until(done, timeout) else None

    def counter(self, name: str) -> int:
        with self._lock:
            return int(self.diagnostics.get(name, 0))

    # ---- acting -----------------------------------------------------------------------------
    def publish(self, msg: PointCloud2 | bytes, key: int | None = None) -> int | None:
        """Publish a cloud (message or CDR bytes); returns its stamp key (given for bytes)."""
        key = stamp_key(msg) if isinstance(msg, PointCloud2) else key
        with self._lock:
            if key is not None:
                self.results.setdefault(key, Result()).published_at = time.perf_counter()
        self.publisher.publish(msg)
        return key

    def set_parameters(self, values: dict[str, Any], timeout: float = 10.0) -> list[Any]:
        """SetParameters on the node; one SetParametersResult per parameter."""
        request = SetParameters.Request(parameters=[_parameter(k, v) for k, v in values.items()])
        results: list[SetParametersResult] = self._call(self._parameters, request, timeout).results
        return results

    def get_parameter(self, name: str, timeout: float = 10.0) -> Any:
        """The node's current value of parameter `name` (None when it has none)."""
        request = GetParameters.Request(names=[name])
        values = self._call(self._get_parameters, request, timeout).values
        if not values:  # a node that does not declare `name` answers with no value at all
            return None
        [value] = values
        return {
            ParameterType.PARAMETER_BOOL: value.bool_value,
            ParameterType.PARAMETER_INTEGER: value.integer_value,
            ParameterType.PARAMETER_DOUBLE: value.double_value,
            ParameterType.PARAMETER_STRING: value.string_value,
        }.get(value.type)

    def query_objects(self, timeout: float = 10.0, **fields: Any) -> Any:
        """The node's QueryObjects service; `fields` fill the request (class_names, use_region,
        region_min, region_max, min_confidence, object_id, with_points)."""
        return self._call(self._query_objects, QueryObjects.Request(**fields), timeout)

    def reset_objects(self, timeout: float = 10.0) -> int:
        """Empty the node's object map; returns how many objects it removed."""
        return self._call(self._reset_objects, ResetObjects.Request(), timeout).num_removed

    def _call(self, client: Any, request: Any, timeout: float) -> Any:
        """A service call answered on the spin thread; TimeoutError when no answer comes."""
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client.srv_name} timed out")
            time.sleep(0.02)
        return future.result()

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(timeout=5)
