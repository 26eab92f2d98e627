"""`managed_segment_node`: segment_node as a managed (lifecycle) node, for systems that bring
perception up with lifecycle transitions (Nav2-style lifecycle managers, launch_ros LifecycleNode).

    managed_segment_node --ros-args --params-file config/segment.yaml
    ros2 lifecycle set /segment_node configure    # loads the model; on failure stays unconfigured
    ros2 lifecycle set /segment_node activate     # subscribes and publishes
    ros2 lifecycle set /segment_node deactivate   # unsubscribes; a cloud in progress is discarded
    ros2 lifecycle set /segment_node cleanup      # stops the worker, frees the model
    ros2 lifecycle set /segment_node shutdown     # finalized: the process exits (code 0)

Once active it is segment_node: the same parameters, topics, diagnostics and logic
(`SegmentationCore`). The parameters segment_node fixes at start (model, device, QoS, outputs)
can be changed here while unconfigured and apply at the next configure, so a failed configure
(e.g. a missing checkpoint) can be fixed without restarting the process.
"""

from __future__ import annotations

import gc
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle.publisher import LifecyclePublisher
from rclpy.qos import QoSProfile

from dyco_perception.ros.params import SPECS, NodeSettings
from dyco_perception.ros.segment_node import SegmentationCore, StartupError, run

# Parameters that need a new configure (read-only in the plain node).
RECONFIGURE_PARAMETERS = frozenset(spec.name for spec in SPECS if spec.read_only)


class ManagedSegmentNode(SegmentationCore, LifecycleNode):
    RESTART_PARAMETERS_READ_ONLY = False

    def __init__(self, **node_kwargs: Any) -> None:
        LifecycleNode.__init__(self, "segment_node", **node_kwargs)
        self._init_state()
        self._configured = False
        self._configured_entities: set[Any] = set()  # what configure created; cleanup destroys
        self.segmenter = None
        self.settings = self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.get_logger().info("unconfigured: configure loads the model")

    def _create_output_publisher(self, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
        return self.create_lifecycle_publisher(msg_type, topic, qos)

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        fixed = [p.name for p in parameters if p.name in RECONFIGURE_PARAMETERS]
        if self._configured and fixed:
            return SetParametersResult(
                successful=False,
                reason=f"parameter '{fixed[0]}' can only change while unconfigured "
                "(deactivate and clean up first)",
            )
        return super()._on_set_parameters(parameters)

    # ---- transitions ------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.settings = NodeSettings.from_values(self._parameter_values())
            self._load_model()
        except (StartupError, ValueError) as exc:
            self.get_logger().error(f"configure failed, still unconfigured: {exc}")
            return TransitionCallbackReturn.FAILURE
        before = self._entities()
        self._output_publishers = []
        self._make_publishers()
        self._make_object_map()
        self._configured_entities = self._entities() - before
        self._start_worker()
        self._configured = True
        self.get_logger().info(f"configured: {self._checkpoint.name} on {self.segmenter.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._publish_class_map()
        self._start_input()
        self._log_ready()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self.get_logger().info("inactive: input unsubscribed")
        return super().on_deactivate(state)  # disables them: a cloud in progress is discarded

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if state.label == "active":
            self._stop_input()
        self._release()
        self.finished.set_result(True)  # `run` returns and the process exits
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """An unexpected exception in a transition: release everything, back to unconfigured."""
        self.get_logger().error(f"error while leaving '{state.label}': back to unconfigured")
        if getattr(self, "_subscription", None) is not None:
            self._stop_input()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ---- helpers ----------------------------------------------------------------------------
    def _entities(self) -> set[Any]:
        return {*self.publishers, *self.services}

    def _stop_input(self) -> None:
        self.destroy_subscription(self._subscription)
        self.destroy_timer(self._diagnostics_timer)
        self._subscription = None
        with self._lock:
            if self._pending is not None:
                self.counts["dropped"] += 1
                self._pending = None

    def _release(self) -> None:
        """Stop the worker, destroy what configure created and free the model."""
        self.stop()
        for entity in self._configured_entities:
            if isinstance(entity, LifecyclePublisher):
                self.destroy_lifecycle_publisher(entity)
            elif entity in set(self.publishers):
                self.destroy_publisher(entity)
            else:
                self.destroy_service(entity)
        self._configured_entities = set()
        self._output_publishers = []
        self.segmenter = None
        self.object_map = None
        self._configured = False
        gc.collect()  # the model's tensors go now, not at some later collection
        _empty_cuda_cache()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main(args: list[str] | None = None) -> None:
    run(ManagedSegmentNode, args)


if __name__ == "__main__":
    main()
