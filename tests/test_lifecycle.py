"""managed_segment_node over real DDS: every lifecycle transition through the lifecycle_msgs
services, including a configure that fails (missing checkpoint) and leaves the node
unconfigured and alive. The tests run in order on one node process, started as the launch file
starts it (`managed:=true`)."""

from __future__ import annotations

import gc
import shutil
import threading
import time
import weakref
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")

from dyco_perception.ros.managed_node import ManagedSegmentNode
from dyco_perception.tools.client import SegmentationClient
from dyco_perception.tools.process import MANAGED_NODE, start_node, stop_node
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from ros_helpers.in_process import node_in_this_process
from test_node import make_cloud, write_test_checkpoint

INPUT_TOPIC = "/test_lifecycle/cloud_in"


class Lifecycle:
    """A node's lifecycle_msgs services, called on a SegmentationClient's node."""

    def __init__(self, client: SegmentationClient, node: str = "/segment_node") -> None:
        self._client = client
        create = client.node.create_client
        self._change = create(ChangeState, f"{node}/change_state")
        self._get = create(GetState, f"{node}/get_state")
        self._transitions = create(GetAvailableTransitions, f"{node}/get_available_transitions")

    def state(self) -> str:
        return self._client._call(self._get, GetState.Request(), 20).current_state.label

    def change(self, transition: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        return self._client._call(self._change, request, 120).success

    def available(self) -> set[str]:
        response = self._client._call(self._transitions, GetAvailableTransitions.Request(), 20)
        return {t.transition.label for t in response.available_transitions}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_test_checkpoint(tmp_path_factory.mktemp("lifecycle_ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def managed(tmp_path_factory):
    """The managed node, started with a checkpoint that does not exist, and a client."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    log = tmp / "node.log"
    overrides = {"checkpoint": str(tmp / "absent.safetensors"), "device": "cpu"}
    overrides |= {"score_threshold": 0.0, "min_instance_points": 1}
    process = start_node(
        overrides, {"cloud_in": INPUT_TOPIC}, log_path=log, executable=MANAGED_NODE
    )
    client = SegmentationClient(input_topic=INPUT_TOPIC, client_name="lifecycle_test_client")
    try:
        yield process, client, Lifecycle(client), log
    finally:
        client.close()
        stop_node(process)


@pytest.fixture(scope="module")
def scan(scan_sample):
    return scan_sample("scene0001_00", 6_000)


def _input_subscribed(client: SegmentationClient, expected: bool, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while (client.publisher.get_subscription_count() > 0) != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _graph_has(client: SegmentationClient, expected: bool, timeout: float = 10) -> bool:
    """Whether the node's outputs (labelled cloud publisher, object query service) are in the
    ROS graph, waited for until `expected` (discovery takes a moment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        has = (
            client.node.count_publishers("/segmentation/cloud") > 0,
            client.node.count_services("/segmentation/query_objects") > 0,
        )
        if all(h == expected for h in has):
            return True
        time.sleep(0.1)
    return False


def _segments(client: SegmentationClient, scan, timeout: float = 60) -> bool:
    key = client.publish(make_cloud(*scan))
    return client.wait_for_result(key, timeout=timeout) is not None


def test_failed_configure_leaves_the_node_unconfigured_and_alive(managed) -> None:
    process, client, lifecycle, log = managed
    assert lifecycle.state() == "unconfigured"
    assert not lifecycle.change(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == "unconfigured"
    assert "configure" in lifecycle.available()
    assert process.poll() is None, log.read_text()
    assert "absent.safetensors' not found" in log.read_text()
    assert client.publisher.get_subscription_count() == 0


def test_configure_with_a_broken_checkpoint_fails_the_same_way(managed, tmp_path) -> None:
    process, client, lifecycle, log = managed
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    assert client.set_parameters({"checkpoint": str(broken)})[0].successful
    assert not lifecycle.change(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.state() == "unconfigured"
    assert process.poll() is None
    assert f"cannot load checkpoint {broken}" in log.read_text()


def test_configure_after_fixing_the_checkpoint_loads_the_model(managed, checkpoint) -> None:
    _, client, lifecycle, log = managed
    [result] = client.set_parameters({"checkpoint": str(checkpoint)})
    assert result.successful, result.reason  # model parameters may change while unconfigured
    assert lifecycle.change(Transition.TRANSITION_CONFIGURE), log.read_text()[-2000:]
    assert lifecycle.state() == "inactive"
    assert client.publisher.get_subscription_count() == 0  # inactive: not subscribed yet
    [refused] = client.set_parameters({"checkpoint": str(checkpoint.with_name("other.st"))})
    assert not refused.successful and "unconfigured" in refused.reason
    assert client.set_parameters({"score_threshold": 0.0})[0].successful  # run-time ones may


def test_activate_subscribes_and_publishes(managed, checkpoint, scan) -> None:
    _, client, lifecycle, _ = managed
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
    assert lifecycle.state() == "active"
    assert _input_subscribed(client, True)
    assert client.wait_until(lambda: client.class_map is not None, 10)
    assert client.class_map.model_name == checkpoint.name
    assert _segments(client, scan), "no outputs from the active node"


def test_deactivate_unsubscribes_and_activate_resumes(managed, scan) -> None:
    _, client, lifecycle, _ = managed
    assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.state() == "inactive"
    assert _input_subscribed(client, False)
    assert not _segments(client, scan, timeout=3)
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
    assert _input_subscribed(client, True)
    assert _segments(client, scan)


def test_cleanup_then_reconfigure_with_another_model(managed, checkpoint, scan) -> None:
    _, client, lifecycle, _ = managed
    assert not lifecycle.change(Transition.TRANSITION_CLEANUP)  # not from active
    assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.change(Transition.TRANSITION_CLEANUP)
    assert lifecycle.state() == "unconfigured"
    assert _graph_has(client, False), "cleanup left publishers or services behind"
    other = shutil.copy(checkpoint, checkpoint.with_name("tiny_b.safetensors"))
    assert client.set_parameters({"checkpoint": str(other)})[0].successful
    assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
    assert client.wait_until(lambda: client.class_map.model_name == "tiny_b.safetensors", 10)
    assert _graph_has(client, True)
    assert _segments(client, scan)


def test_shutdown_finalizes_and_the_process_exits(managed) -> None:
    process, _, lifecycle, log = managed
    assert lifecycle.change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert process.wait(timeout=30) == 0, log.read_text()[-2000:]


def test_cleanup_frees_the_model(checkpoint) -> None:
    """In this process, so that the model can be watched: after cleanup nothing holds it."""
    with node_in_this_process(ManagedSegmentNode, checkpoint, "/inproc") as node:
        client = SegmentationClient(namespace="/inproc", client_name="lifecycle_free_client")
        try:
            lifecycle = Lifecycle(client, "/inproc/segment_node")
            assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
            model = weakref.ref(node.segmenter.model)
            assert lifecycle.change(Transition.TRANSITION_CLEANUP)
            gc.collect()
            assert node.segmenter is None and model() is None, "the model outlived cleanup"
            assert lifecycle.change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
            assert node.finished.done()
        finally:
            client.close()


def test_transitions_stop_the_input_the_pending_cloud_and_the_worker(checkpoint, scan) -> None:
    """In this process, so that the node can be looked into: deactivate drops (and counts) the
    cloud waiting behind the one in progress and stops the diagnostics timer; cleanup ends the
    worker thread and frees the object map; shutdown from active unsubscribes."""
    with node_in_this_process(ManagedSegmentNode, checkpoint, "/inproc2") as node:
        client = SegmentationClient(
            input_topic="/inproc2/cloud_in", namespace="/inproc2", client_name="lifecycle_inproc2"
        )
        reached, release = threading.Event(), threading.Event()
        try:
            _drop_the_waiting_cloud_then_cycle(node, client, scan, reached, release)
        finally:
            release.set()
            client.close()


def _drop_the_waiting_cloud_then_cycle(node, client, scan, reached, release) -> None:
    """The transitions' part of the test above, with the worker held on its first cloud."""
    from test_node_signals import _held

    def workers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "segmentation"]

    def subscribed() -> bool:
        return any(s.topic_name == "/inproc2/cloud_in" for s in node.subscriptions)

    lifecycle = Lifecycle(client, "/inproc2/segment_node")
    assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
    assert _input_subscribed(client, True)
    node.segmenter.segment = _held(node.segmenter.segment, reached, release)
    in_progress = client.publish(make_cloud(*scan))
    assert reached.wait(30), "the worker never took the cloud up"
    client.publish(make_cloud(*scan))  # waits behind it
    assert client.wait_until(lambda: node.counts["received"] >= 2, 10), "no 2nd cloud"
    assert lifecycle.change(Transition.TRANSITION_DEACTIVATE)
    assert node.counts["dropped"] == 1 and not subscribed() and not list(node.timers)
    release.set()
    assert client.wait_until(lambda: node.counts["processed"] >= 1, 30), "never finished"
    time.sleep(1.0)  # the dropped cloud would have been taken up by now
    assert node.counts["processed"] == 1 and not client.results[in_progress].messages
    assert lifecycle.change(Transition.TRANSITION_CLEANUP)
    assert workers() == [] and node.object_map is None
    assert lifecycle.change(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.change(Transition.TRANSITION_ACTIVATE)
    assert len(workers()) == 1 and subscribed()
    assert lifecycle.change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert node.finished.done() and not subscribed() and workers() == []
