"""`dyco-replay`: plays a scan bag's clouds to a running segment_node over DDS, records the
node's outputs into a bag, and reports AP / AP50 / AP25, latency and dropped clouds.

    dyco-replay --bag scans_bag --lockstep --out results_bag
    dyco-replay --bag scans_bag --rate 2.0                  # bag timing, twice as fast
    dyco-replay --bag scans_bag --lockstep --checkpoint ckpt.safetensors   # start a node too

Lockstep publishes a cloud, waits for its result, then the next. Rate mode keeps the bag's
timing (scaled by --rate); clouds the busy node replaced count as dropped.

Growing-map bags (dyco-make-bag --grow K): the node's object map is reset before each scan's
first map, AP is computed on each scan's final map, and the identity stability of the
ground-truth objects over the maps is reported (identity_metric.identity_stability).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dyco_perception import pointcloud2 as pc2
from dyco_perception.tools import bags
from dyco_perception.tools.client import Result, SegmentationClient

RESULT_KINDS = ("cloud", "instances")
POLL_S = 0.5  # how often a wait checks that the node it started is still running
LOG_TAIL_LINES = 20


class NodeExited(RuntimeError):
    """The segment_node that dyco-replay started is no longer running."""


class StartedNode:
    """A segment_node this tool started, with its output in a log file, so that its death
    ends the replay at once (with its exit code and last log lines) instead of at a timeout."""

    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def check_running(self) -> None:
        code = self.process.poll()
        if code is None:
            return
        lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        raise NodeExited(
            f"segment_node exited with code {code}; its last log lines ({self.log_path}):\n"
            + "\n".join(lines)
        )


def wait_watching(
    wait: Callable[[float], Any], timeout: float, check: Callable[[], None] | None
) -> Any:
    """wait(seconds) in short slices until it returns something true or the timeout passes;
    check() runs between slices and raises when waiting has become pointless."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        result = wait(max(0.0, min(POLL_S, remaining)))
        if result or remaining <= POLL_S:
            return result
        if check is not None:
            check()


@dataclass
class ReplayReport:
    num_clouds: int
    results: dict[int, Result]
    scans: list[bags.BagScan]
    node_counters: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None  # growing-map bags only

    def complete(self, scan: bags.BagScan) -> bool:
        result = self.results.get(scan.stamp)
        return result is not None and all(k in result.messages for k in RESULT_KINDS)

    @property
    def num_results(self) -> int:
        return sum(self.complete(scan) for scan in self.scans)

    @property
    def dropped(self) -> int:
        return self.num_clouds - self.num_results

    @property
    def latencies(self) -> list[float]:
        values = [self.results[s.stamp].latency("cloud") for s in self.scans if self.complete(s)]
        return [v for v in values if v is not None]

    def latency_percentiles(self) -> tuple[float, float]:
        values = self.latencies
        if not values:
            return float("nan"), float("nan")
        return float(np.percentile(values, 50)), float(np.percentile(values, 95))

    def summary(self) -> dict[str, Any]:
        p50, p95 = self.latency_percentiles()
        return {
            "clouds": self.num_clouds,
            "results": self.num_results,
            "dropped": self.dropped,
            "latency_p50_s": p50,
            "latency_p95_s": p95,
            "node": self.node_counters,
            "metrics": self.metrics,
            "identity": self.identity,
        }


def predictions_of(result: Result) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-point instance ids (from the labelled cloud) and the evaluator's prediction dict."""
    cloud, instances = result.messages["cloud"], result.messages["instances"]
    records = pc2.read_structured(pc2.CloudLayout.of(cloud), cloud.data, ("instance",))
    point_instance = records["instance"].astype(np.int64)
    items = instances.instances
    return point_instance, {
        "labels": np.array([i.class_id for i in items], np.int64),
        "scores": np.array([i.score for i in items], np.float64),
        "point_indices": [np.flatnonzero(point_instance == i.id) for i in items],
    }


def evaluate(report: ReplayReport) -> dict[str, Any] | None:
    """ScanNet AP over the scans that have ground truth and a result."""
    from dyco_perception.evaluation import evaluate_predictions

    scenes = []
    for scan in final_maps(report.scans):
        if scan.semantic is None or not report.complete(scan):
            continue
        _, predictions = predictions_of(report.results[scan.stamp])
        scenes.append((scan.semantic, scan.instance, predictions))
    return evaluate_predictions(scenes) if scenes else None


def growing_scans(scans: list[bags.BagScan]) -> list[list[bags.BagScan]] | None:
    """A growing-map bag's maps grouped by scan, in order; None for any other bag."""
    groups: dict[str, list[bags.BagScan]] = {}
    for scan in scans:
        parsed = bags.split_growing_name(scan.name)
        if parsed is None:
            return None
        groups.setdefault(parsed[0], []).append(scan)
    return list(groups.values()) or None


def final_maps(scans: list[bags.BagScan]) -> list[bags.BagScan]:
    """Each scan's last map in a growing-map bag; every scan of any other bag."""
    groups = growing_scans(scans)
    return scans if groups is None else [group[-1] for group in groups]


def object_ids_of(result: Result) -> np.ndarray:
    """Per-point object ids from the labelled cloud (0 when the node keeps no object map)."""
    cloud = result.messages["cloud"]
    if "object" not in [f.name for f in cloud.fields]:
        return np.zeros(cloud.width * cloud.height, np.int64)
    records = pc2.read_structured(pc2.CloudLayout.of(cloud), cloud.data, ("object",))
    return records["object"].astype(np.int64)


def identity_metrics(report: ReplayReport) -> dict[str, Any] | None:
    """Identity stability of the ground-truth objects over each scan's maps (growing bags)."""
    from dyco_perception.identity_metric import identity_stability

    groups = growing_scans(report.scans)
    if groups is None:
        return None
    sequences = [
        [
            (scan.instance, object_ids_of(report.results[scan.stamp]))
            for scan in group
            if scan.instance is not None and report.complete(scan)
        ]
        for group in groups
    ]
    return identity_stability(sequences)


def play_growing(
    client: SegmentationClient, scans: list[bags.BagScan], *args: Any, **kwargs: Any
) -> ReplayReport:
    """play() each scan's maps in turn, resetting the node's object map before each scan."""
    groups = growing_scans(scans) or [scans]
    for group in groups:
        client.reset_objects()
        play(client, group, *args, **kwargs)
    return ReplayReport(len(scans), dict(client.results), scans, dict(client.diagnostics))


def _progress(iterable: Any, enabled: bool, desc: str) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="cloud")


def play(
    client: SegmentationClient,
    scans: list[bags.BagScan],
    lockstep: bool = True,
    rate: float = 1.0,
    timeout: float = 300.0,
    progress: bool = True,
    check: Callable[[], None] | None = None,
) -> ReplayReport:
    """Publish the scans' clouds (CDR bytes as recorded) and collect the node's results;
    check() (e.g. StartedNode.check_running) is called while waiting."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")

    def wait_for(scan: bags.BagScan) -> None:
        def wait(seconds: float) -> Result | None:
            return client.wait_for_result(scan.stamp, RESULT_KINDS, seconds)

        wait_watching(wait, timeout, check)

    start_wall = time.monotonic()
    first = scans[0].stamp if scans else 0
    for scan in _progress(scans, progress, "replay"):
        if not lockstep:
            due = start_wall + (scan.stamp - first) / 1e9 / rate
            time.sleep(max(0.0, due - time.monotonic()))
        client.publish(scan.cloud_cdr, key=scan.stamp)
        if lockstep:
            wait_for(scan)
    if scans and not lockstep:  # the newest cloud is always processed; the rest may be dropped
        wait_for(scans[-1])
    time.sleep(0.5)  # the node's diagnostics after its last cloud
    return ReplayReport(len(scans), dict(client.results), scans, dict(client.diagnostics))


def write_output_bag(client: SegmentationClient, out: str | Path) -> int:
    """The node's outputs the client received so far, with their receive times; returns how
    many were written."""
    received = list(client.recorded)  # a snapshot: the client's spin thread keeps appending
    with bags.BagWriter(out) as writer:
        for topic, time_ns, msg in received:
            writer.write(topic, msg, time_ns)
    return len(received)


def format_report(report: ReplayReport) -> str:
    p50, p95 = report.latency_percentiles()
    lines = [
        f"clouds {report.num_clouds}, results {report.num_results}, dropped {report.dropped}",
        f"latency (publish -> labelled cloud): p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms",
    ]
    node = report.node_counters
    if node:
        keys = ("processed", "dropped", "rejected", "failed", "device")
        lines.append("node: " + ", ".join(f"{k} {node.get(k, '?')}" for k in keys))
    metrics = report.metrics
    if metrics:

        def fmt(v: float | None) -> str:
            return "  n/a" if v is None else f"{100 * v:5.1f}"

        lines.append(
            f"AP {fmt(metrics['AP'])}  AP50 {fmt(metrics['AP50'])}  AP25 {fmt(metrics['AP25'])}"
            f"  ({metrics['num_scenes']} scans)"
        )
    if report.identity:
        lines.append(format_identity(report.identity))
    return "\n".join(lines)


def format_identity(identity: dict[str, Any]) -> str:
    fraction = identity["single_id_fraction"]
    share = "n/a" if fraction is None else f"{100 * fraction:.1f} %"
    return (
        f"identity: {identity['single_id']}/{identity['detected']} detected ground-truth objects "
        f"kept one id ({share}; {identity['gt_objects']} present), id switches "
        f"{identity['id_switches']}, fragmentations {identity['fragmentations']}"
    )


def run(args: argparse.Namespace) -> ReplayReport:
    from dyco_perception.tools.process import start_node, stop_node

    scans = bags.read_scan_bag(args.bag)
    if args.limit:
        scans = scans[: args.limit]
    node = None
    if args.checkpoint:
        overrides = {"checkpoint": str(Path(args.checkpoint).resolve()), "device": args.device}
        log_path = Path(args.node_log or Path(tempfile.mkdtemp(prefix="dyco-replay-")) / "node.log")
        process = start_node(overrides, remaps={"cloud_in": args.input_topic}, log_path=log_path)
        node = StartedNode(process, log_path)
        print(f"started segment_node (pid {process.pid}); its log: {log_path}")
    check = node.check_running if node is not None else None
    client = SegmentationClient(input_topic=args.input_topic, record=bool(args.out))
    try:
        if not wait_watching(client.wait_for_node, args.timeout, check):
            raise TimeoutError(f"no segment_node subscribed to {args.input_topic}")
        playback = play_growing if growing_scans(scans) else play
        report = playback(
            client, scans, args.lockstep, args.rate, args.timeout, not args.quiet, check
        )
        report.metrics = evaluate(report)
        report.identity = identity_metrics(report)
        if args.out:
            print(f"recorded {write_output_bag(client, args.out)} messages to {args.out}")
    finally:
        client.close()
        if node is not None:
            stop_node(node.process)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bag", required=True, help="scan bag (dyco-make-bag)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, default=1.0, help="bag-time playback speed factor")
    mode.add_argument("--lockstep", action="store_true", help="wait for each result")
    parser.add_argument("--out", help="bag directory to record the node's outputs into")
    parser.add_argument("--input-topic", default=bags.CLOUD_TOPIC)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per result")
    parser.add_argument("--limit", type=int, help="replay only the first N clouds")
    parser.add_argument("--checkpoint", help="start a segment_node with this checkpoint")
    parser.add_argument("--device", default="auto", help="device of the started node")
    parser.add_argument("--node-log", help="log file of the started node (default: a temp file)")
    parser.add_argument("--json", help="write the report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, TimeoutError, FileNotFoundError, NodeExited) as exc:
        sys.exit(f"dyco-replay: error: {exc}")
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.summary(), indent=2))


if __name__ == "__main__":
    main()
