"""`segment_node`: PointCloud2 in, labelled cloud + instances + markers + diagnostics out.

    segment_node --ros-args --params-file config/segment.yaml -r cloud_in:=/map_cloud

Inference runs on a worker thread on the newest cloud only: a cloud that arrives while another
waits replaces it and is counted as dropped, so the queue never grows. Bad clouds are logged
once each, counted by reason in the diagnostics, and never stop the node.

SIGINT or SIGTERM stops it with exit code 0: the first lets the cloud in progress finish, a
repeated one (Ctrl-C under `ros2 launch` delivers two; launch escalates to SIGTERM) discards it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from dyco_msgs.msg import ClassMap, InstanceArray
from dyco_perception import classes
from dyco_perception import pointcloud2 as pc2
from dyco_perception.ros import outputs
from dyco_perception.ros.object_node import ObjectMapNode
from dyco_perception.ros.params import SPECS, NodeSettings, check_value
from dyco_perception.ros.resources import names_working_directory, user_path_candidates

TOPIC_IN = "cloud_in"
TOPIC_CLOUD = "segmentation/cloud"
TOPIC_INSTANCES = "segmentation/instances"
TOPIC_MARKERS = "segmentation/markers"
TOPIC_CLASS_MAP = "segmentation/class_map"
TOPIC_DIAGNOSTICS = "/diagnostics"
GREY = 128
PUBLISH_WAIT = 10.0  # s that a stop waits for a cloud's results already being published


class StartupError(RuntimeError):
    """A configuration or checkpoint problem that stops the node before it runs."""


def resolve_checkpoint(path: str) -> Path:
    """An existing checkpoint file, found by `resources.user_path_candidates`: absolute paths as
    given, ./ or ../ in the working directory, other relative paths in the package share."""
    candidates = user_path_candidates(path)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        tried = ", ".join(str(c) for c in candidates)
        hint = ""
        if not Path(path).expanduser().is_absolute() and not names_working_directory(path):
            hint = "; relative paths name files in the package share: for one in the working "
            hint += f"directory write ./{path}"
        raise StartupError(f"checkpoint '{path}' not found (tried {tried}){hint}")
    return found


def use_torch_threads(count: int) -> int:
    """Let torch use `count` intra-op threads in the calling thread; returns the count in force.
    Torch keeps the count per thread once it has run there, so the worker sets it itself."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return torch.get_num_threads()


def use_worker_nice(nice: int) -> tuple[int, str | None]:
    """Give the calling thread the scheduling niceness `nice` (Linux keeps it per thread, and
    threads it starts inherit it: torch's intra-op threads of this worker). Returns the niceness
    in force and, when the system refused, why."""
    thread = threading.get_native_id()
    if os.getpriority(os.PRIO_PROCESS, thread) != nice:
        try:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
        except PermissionError:
            reason = (
                f"worker_nice={nice} refused: raising a thread's priority needs CAP_SYS_NICE "
                "or an RLIMIT_NICE allowance (limits.conf `nice`)"
            )
            return os.getpriority(os.PRIO_PROCESS, thread), reason
    return os.getpriority(os.PRIO_PROCESS, thread), None


def _one_interop_thread() -> None:
    """One inter-op thread: the model has no independent ops to overlap, and each extra
    thread is one more to compete for a shared CPU. Torch allows setting it once per process,
    before any inter-op work (a managed node's second configure keeps it)."""
    import torch

    try:
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def _descriptor(spec: Any, read_only: bool) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(
        description=spec.description,
        read_only=read_only,
        additional_constraints=spec.constraints,
    )
    if spec.float_range:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=spec.float_range[0], to_value=spec.float_range[1])
        ]
    if spec.int_range:
        descriptor.integer_range = [
            IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=1)
        ]
    return descriptor


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CloudTiming(NamedTuple):
    start: float  # perf_counter() when the cloud was taken up
    read_time: float  # s
    inference_time: float  # s
    threads: int  # torch threads it ran with


class SegmentationCore(ObjectMapNode):
    """The node's logic, shared by `SegmentNode` (plain: everything in __init__) and
    `ManagedSegmentNode` (lifecycle: the same steps in its transitions). Mixed into an rclpy
    Node, whose methods (create_publisher, get_logger, ...) it uses."""

    # The plain node cannot apply a new model, device, QoS or outputs at run time; the managed
    # node can while unconfigured, so it declares them writable and checks its state instead.
    RESTART_PARAMETERS_READ_ONLY = True

    def _init_state(self) -> None:
        self._lock = threading.Condition()
        self._pending: PointCloud2 | None = None
        self._stopping = False
        self._given_up: set[threading.Thread] = set()  # workers that publish nothing more
        self._publishing: threading.Thread | None = None  # the worker publishing its results
        self.counts: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._warned_no_rgb = False
        self._output_publishers: list[Any] = []
        self._worker: threading.Thread | None = None
        self._worker_nice = os.getpriority(os.PRIO_PROCESS, 0)  # the worker's, once it runs
        # Done when the node has nothing left to do (the managed node after shutdown).
        self.finished = Future()

    def _start_input(self) -> None:
        """Subscribe to clouds and publish diagnostics periodically."""
        self._subscription = self.create_subscription(
            PointCloud2, TOPIC_IN, self._on_cloud, self._input_qos()
        )
        self._diagnostics_timer = self.create_timer(
            self.settings.diagnostics_period, self._publish_diagnostics
        )

    def _start_worker(self) -> None:
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="segmentation", daemon=True)
        self._worker.start()

    def _log_ready(self) -> None:
        self.get_logger().info(
            f"ready: {self._checkpoint.name} on {self.segmenter.device}, test-time views "
            f"{self.segmenter.cfg.inference.test_time_views}, class from geometry "
            f"{self.segmenter.cfg.inference.class_geometry}, input "
            f"'{self._subscription.topic_name}', outputs {list(self.settings.outputs)}"
        )

    # ---- parameters -------------------------------------------------------------------------
    def _declare_parameters(self) -> NodeSettings:
        values = {}
        for spec in SPECS:
            descriptor = _descriptor(spec, spec.read_only and self.RESTART_PARAMETERS_READ_ONLY)
            try:
                parameter = self.declare_parameter(spec.name, spec.default, descriptor)
            except Exception as exc:  # rclpy raises several types; all mean a bad start value
                raise StartupError(f"parameter '{spec.name}': {exc}") from exc
            values[spec.name] = parameter.value
        try:
            return NodeSettings.from_values(values)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc

    def _parameter_values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in SPECS}

    def _on_set_parameters(self, parameters: list[Any]) -> SetParametersResult:
        values = self._parameter_values()
        for parameter in parameters:
            if parameter.name == "decoder" and not getattr(self, "_setting_decoder", False):
                return SetParametersResult(
                    successful=False,
                    reason="parameter 'decoder' follows the loaded checkpoint; choose another "
                    "checkpoint to run another decoder",
                )
            reason = check_value(parameter.name, parameter.value)
            if reason:
                return SetParametersResult(
                    successful=False, reason=f"parameter '{parameter.name}' {reason}"
                )
            values[parameter.name] = parameter.value
        try:
            settings = NodeSettings.from_values(values)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._lock:
            self.settings = settings
        return SetParametersResult(successful=True)

    def _input_qos(self) -> QoSProfile:
        s = self.settings
        return QoSProfile(
            depth=s.depth,
            reliability=ReliabilityPolicy.RELIABLE
            if s.reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL
            if s.durability == "transient_local"
            else DurabilityPolicy.VOLATILE,
        )

    # ---- model and publishers ---------------------------------------------------------------
    def _load_model(self) -> None:
        from dyco_perception.segmenter import Segmenter

        self._checkpoint = resolve_checkpoint(self.settings.checkpoint)
        _one_interop_thread()
        use_torch_threads(self.settings.threads)  # this thread's share of loading the model
        try:
            self.segmenter = Segmenter.from_checkpoint(
                self._checkpoint, device=self.settings.device, inference=self.settings.inference
            )
        except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
            raise StartupError(f"cannot load checkpoint {self._checkpoint}: {exc}") from exc
        loaded, wanted = self.segmenter.card.config.decoder_name, self.settings.decoder
        if wanted and wanted != loaded:
            self.segmenter = None
            raise StartupError(
                f"checkpoint {self._checkpoint} holds the '{loaded}' decoder, parameter "
                f"'decoder' asks for '{wanted}'"
            )
        self._show_decoder(loaded)

    def _show_decoder(self, name: str) -> None:
        """`ros2 param get <node> decoder` answers with the loaded checkpoint's decoder."""
        self._setting_decoder = True
        try:
            self.set_parameters([Parameter("decoder", value=name)])
        finally:
            self._setting_decoder = False

    def _make_publishers(self) -> None:
        wanted = set(self.settings.outputs)
        results = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )

        def make(name: str, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
            if name not in wanted:
                return None
            publisher = self._create_output_publisher(msg_type, topic, qos)
            self._output_publishers.append(publisher)
            return publisher

        self._cloud_pub = make("cloud", PointCloud2, TOPIC_CLOUD, results)
        self._instances_pub = make("instances", InstanceArray, TOPIC_INSTANCES, results)
        self._markers_pub = make("markers", MarkerArray, TOPIC_MARKERS, results)
        self._diagnostics_pub = make("diagnostics", DiagnosticArray, TOPIC_DIAGNOSTICS, results)
        self._class_map_pub = make("class_map", ClassMap, TOPIC_CLASS_MAP, latched)

    def _create_output_publisher(self, msg_type: Any, topic: str, qos: QoSProfile) -> Any:
        return self.create_publisher(msg_type, topic, qos)

    def _publish_class_map(self) -> None:
        if self._class_map_pub is not None:
            self._class_map_pub.publish(
                ClassMap(
                    class_names=list(self.segmenter.card.classes),
                    instance_class_ids=list(classes.INSTANCE_CLASS_IDS),
                    model_name=self._checkpoint.name,
                    model_sha256=_sha256(self._checkpoint),
                )
            )

    # ---- input ------------------------------------------------------------------------------
    def _on_cloud(self, msg: PointCloud2) -> None:
        with self._lock:
            self.counts["received"] += 1
            if self._pending is not None:
                self.counts["dropped"] += 1
            self._pending = msg
            self._lock.notify()

    def _work(self) -> None:
        self._worker_nice, refused = use_worker_nice(self.settings.worker_nice)
        if refused:
            self.get_logger().warning(f"{refused}; inference runs at nice {self._worker_nice}")
        while True:
            with self._lock:
                while self._pending is None and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                msg, self._pending = self._pending, None
                settings = self.settings
            self._process(msg, settings)

    def _reject(self, reason: str, detail: str) -> None:
        with self._lock:
            self.counts["rejected"] += 1
            self.counts[f"rejected_{reason}"] += 1
        self.get_logger().warning(f"rejected cloud ({reason}): {detail}")
        self._publish_diagnostics()

    def _read(self, msg: PointCloud2, settings: NodeSettings) -> pc2.Points | None:
        try:
            points = pc2.read_msg(msg)
        except pc2.CloudError as exc:
            reason = "empty" if "empty" in str(exc) else "malformed"
            self._reject(reason, str(exc))
            return None
        if points.num_points > settings.max_points:
            self._reject(
                "too_large", f"{points.num_points} points exceed max_points={settings.max_points}"
            )
            return None
        if settings.input_frame and msg.header.frame_id != settings.input_frame:
            self._reject(
                "wrong_frame",
                f"frame '{msg.header.frame_id}' is not input_frame '{settings.input_frame}'",
            )
            return None
        if settings.transforms:
            points.xyz = pc2.transform_xyz(points.xyz, settings.translation, settings.rotation)
        return points

    def _colours(self, points: pc2.Points) -> np.ndarray | None:
        if points.rgb is not None or not self.segmenter.card.use_rgb:
            return points.rgb
        if not self._warned_no_rgb:
            self.get_logger().warning("cloud has no colour; the model uses colour: using grey")
            self._warned_no_rgb = True
        return np.full((points.num_points, 3), GREY, dtype=np.uint8)

    def _process(self, msg: PointCloud2, settings: NodeSettings) -> None:
        start = time.perf_counter()
        points = self._read(msg, settings)
        if points is None:
            return
        colours = self._colours(points)
        read_time = time.perf_counter() - start
        threads = use_torch_threads(settings.threads)
        self.segmenter.tiling.workers = threads  # a map of several blocks: blocks side by side
        try:
            result = self.segmenter.segment(points.xyz, colours, roi=settings.roi)
        except (ValueError, RuntimeError) as exc:  # e.g. out of memory: skip this cloud
            with self._lock:
                self.counts["failed"] += 1
            self.get_logger().error(
                f"segmentation failed on a {points.num_points}-point cloud: {exc}"
            )
            return
        # The Segmenter's own time: what the node adds (conversion, publishing) is the rest.
        inference_time = time.perf_counter() - start - read_time
        with self._lock:  # past this point stop() waits for the results instead of dropping them
            if threading.current_thread() in self._given_up:
                return
            self._publishing = threading.current_thread()
        try:
            timing = CloudTiming(start, read_time, inference_time, threads)
            self._publish_result(msg, settings, points, result, timing)
        finally:
            with self._lock:
                self._publishing = None

    def _publish_result(
        self,
        msg: PointCloud2,
        settings: NodeSettings,
        points: pc2.Points,
        result: Any,
        timing: CloudTiming,
    ) -> None:
        start, read_time, inference_time, threads = timing
        labelled = outputs.filter_instances(
            result,
            points.xyz,
            settings.score_threshold,
            settings.min_instance_points,
            points.height,
        )
        header = msg.header
        if settings.target_frame:
            header.frame_id = settings.target_frame
        labelled = self._track_objects(labelled, header, settings)
        self._publish(header, labelled, inference_time, settings)
        self._publish_objects(header)
        self.get_logger().info(
            f"segmented {points.num_points} points: {len(labelled.instances)} instances, "
            f"read {1000 * read_time:.0f} ms, inference {inference_time:.2f} s, "
            f"{time.perf_counter() - start:.2f} s total"
        )
        with self._lock:
            self.counts["processed"] += 1
            self._last = {
                "processing_time": time.perf_counter() - start,
                "inference_time": inference_time,
                "num_points": points.num_points,
                "num_instances": len(labelled.instances),
                "threads": threads,
            }
            self.counts["processing_time_total_ms"] += int(1000 * self._last["processing_time"])
        self._publish_diagnostics()

    def _publish(
        self, header: Any, labelled: outputs.Labelled, inference_time: float, s: NodeSettings
    ) -> None:
        if self._cloud_pub is not None:  # first: the largest and the one latency is measured on
            self._cloud_pub.publish(outputs.labelled_cloud_msg(header, labelled))
        if self._instances_pub is not None:
            msg = outputs.instance_array_msg(
                header, labelled, inference_time, s.publish_point_indices
            )
            self._instances_pub.publish(msg)
        if self._markers_pub is not None:
            self._markers_pub.publish(outputs.markers_msg(header, labelled))

    # ---- diagnostics ------------------------------------------------------------------------
    def diagnostics(self) -> DiagnosticStatus:
        with self._lock:
            counts, last = dict(self.counts), dict(self._last)
        processed = counts.get("processed", 0)
        mean_ms = counts.get("processing_time_total_ms", 0) / processed if processed else 0.0
        values = {
            "device": str(self.segmenter.device),
            "checkpoint": str(self._checkpoint),
            "decoder": self.segmenter.card.config.decoder_name,
            "received": counts.get("received", 0),
            "processed": processed,
            "dropped": counts.get("dropped", 0),
            "rejected": counts.get("rejected", 0),
            "failed": counts.get("failed", 0),
            "mean_processing_time_ms": round(mean_ms, 1),
            "last_processing_time_ms": round(1000 * last.get("processing_time", 0.0), 1),
            "last_num_points": int(last.get("num_points", 0)),
            "last_num_instances": int(last.get("num_instances", 0)),
            # torch threads the last cloud ran with (before one: the parameter)
            "threads": int(last.get("threads", self.settings.threads)),
            "worker_nice": self._worker_nice,
            # blocks of a tiled map run side by side on this many threads (from `threads`)
            "block_workers": self.segmenter.tiling.workers,
        }
        values.update({k: v for k, v in counts.items() if k.startswith("rejected_")})
        values.update(self._object_map_diagnostics(counts))
        level = DiagnosticStatus.OK
        message = "ok" if processed else "waiting for clouds"
        if counts.get("failed") or counts.get("rejected"):
            level, message = DiagnosticStatus.WARN, "some clouds were rejected or failed"
        return DiagnosticStatus(
            level=level,
            # One status per node: "dyco_perception: segment_node" without a namespace,
            # "dyco_perception: dyco3d/segment_node" in /dyco3d.
            name=f"dyco_perception: {self.get_fully_qualified_name().lstrip('/')}",
            message=message,
            hardware_id=str(self.segmenter.device),
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None:
            return
        stamp = self.get_clock().now().to_msg()
        msg = DiagnosticArray(status=[self.diagnostics()])
        msg.header.stamp = stamp
        self._diagnostics_pub.publish(msg)

    def stop(self, timeout: float = 30.0, give_up: Any = None) -> bool:
        """Stop the worker: it finishes the cloud in progress first, unless that takes longer
        than `timeout` or `give_up()` turns true; then the worker publishes nothing more.
        True if the worker ended."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        worker, self._worker = self._worker, None
        ended = _join(worker, timeout, give_up)
        if not ended:
            with self._lock:
                publishing = self._publishing is worker
                if not publishing:
                    self._given_up.add(worker)
            if publishing:  # segmented already: its results are on their way out, let them go
                ended = _join(worker, PUBLISH_WAIT)
        if not ended:
            self.get_logger().warning("not waiting for the cloud in progress: discarded")
        return ended


class SegmentNode(SegmentationCore, Node):
    """The plain node: loads the model, publishes and subscribes as it is constructed."""

    def __init__(self, **node_kwargs: Any) -> None:
        Node.__init__(self, "segment_node", **node_kwargs)
        self._init_state()
        self.settings = self._declare_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._load_model()
        self._make_publishers()
        self._make_object_map()
        self._publish_class_map()
        self._start_input()
        self._start_worker()
        self._log_ready()


class StopSignals:
    """SIGINT and SIGTERM as requests to stop, never as exceptions.

    The first one asks the node to stop cleanly (the cloud in progress is finished); any later
    one, e.g. the second SIGINT a Ctrl-C under `ros2 launch` delivers (terminal and launch both
    send one) or launch's SIGTERM escalation, only shortens the stop: the cloud in progress is
    abandoned. Either way the process exits with code 0 and no traceback. rclpy's own handlers
    are not installed: they turn the second SIGINT into a KeyboardInterrupt wherever the stop
    happens to be."""

    NUMBERS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.repeated = threading.Event()
        self.on_request: Any = None  # called (in the main thread) on the first signal
        self.logger: Any = None
        for number in self.NUMBERS:
            signal.signal(number, self._handle)

    def ignore(self) -> None:
        """From now on ignore them: the interpreter's exit would otherwise restore the default
        action, and a late signal would end the process with -SIGINT."""
        for number in self.NUMBERS:
            signal.signal(number, signal.SIG_IGN)

    def _handle(self, number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        if self.requested.is_set():
            self.repeated.set()
            self._say(f"{name} again: stopping without waiting for the cloud in progress")
            return
        self.requested.set()
        self._say(f"{name}: stopping")
        if self.on_request is not None:
            self.on_request()

    def _say(self, text: str) -> None:
        if self.logger is not None:
            self.logger.info(text)
        else:
            print(f"{Path(sys.argv[0]).name}: {text}", file=sys.stderr, flush=True)


def _spin(executor: SingleThreadedExecutor, finished: Future, stopped: threading.Event) -> None:
    try:
        executor.spin_until_future_complete(finished)
    except ExternalShutdownException:
        pass
    finally:
        stopped.set()


def run(node_class: type[SegmentationCore], args: list[str] | None = None) -> None:
    """Spin a node until SIGINT/SIGTERM or until it is `finished`, then stop it cleanly (exit
    code 0, see `StopSignals`); a StartupError exits with code 2 and the reason."""
    signals = StopSignals()  # before rclpy.init: a Ctrl-C during start-up stops cleanly too
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = node_class()
    except StartupError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown(uninstall_handlers=False)  # none installed: keep ours
        signals.ignore()
        sys.exit(2)
    signals.logger = node.get_logger()
    stopped = threading.Event()

    def request_stop() -> None:
        stopped.set()
        if not node.finished.done():
            node.finished.set_result("signal")  # wakes the executor

    signals.on_request = request_stop
    if signals.requested.is_set():
        request_stop()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    # The executor spins in a thread so that the main thread, which Python runs signal
    # handlers in, waits interruptibly instead of inside rcl_wait.
    spinner = threading.Thread(
        target=_spin, args=(executor, node.finished, stopped), name="spin", daemon=True
    )
    spinner.start()
    while not stopped.wait(1.0):
        pass
    request_stop()
    _join(spinner, 10.0, signals.repeated.is_set)
    abandoned = not node.stop(give_up=signals.repeated.is_set)
    executor.shutdown(timeout_sec=0)
    node.destroy_node()
    rclpy.try_shutdown(uninstall_handlers=False)
    signals.ignore()
    if abandoned or spinner.is_alive():
        # A thread still runs (a cloud in progress): do not let interpreter shutdown meet it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _join(thread: threading.Thread | None, timeout: float, give_up: Any = None) -> bool:
    """Wait for a thread until it ends, `timeout` passes or `give_up()`; True if it ended."""
    deadline = time.monotonic() + timeout
    while thread is not None and thread.is_alive():
        if time.monotonic() > deadline or (give_up is not None and give_up()):
            return False
        thread.join(0.1)
    return True


def main(args: list[str] | None = None) -> None:
    run(SegmentNode, args)


if __name__ == "__main__":
    main()
