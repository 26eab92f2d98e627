"""`dyco-demo` (`make demo`): segments the shipped demo bag (generated rooms) with the shipped
checkpoint through a real segment_node process, prints the instances and scores, and renders
the labelled clouds to out/demo/.

    dyco-demo                                  # demo/demo_rooms + the shipped checkpoint
    dyco-demo --bag my_bag | --scans DIR       # another scan bag, or a folder of npz scans
    dyco-demo --checkpoint model.safetensors --device cuda
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dyco_perception import pointcloud2 as pc2
from dyco_perception.ros.outputs import instance_colours
from dyco_perception.ros.params import SHIPPED_CHECKPOINT
from dyco_perception.ros.resources import package_file
from dyco_perception.tools import bags, replay
from dyco_perception.tools.client import SegmentationClient
from dyco_perception.tools.process import start_node, stop_node

DEMO_BAG = "demo/demo_rooms"
INPUT_TOPIC = "/dyco_demo/cloud_in"
MAX_PLOTTED_POINTS = 40_000


def choose_checkpoint(requested: str | None, out_dir: Path) -> tuple[Path, bool]:
    """The checkpoint to use and whether it is a trained one. Without the shipped checkpoint,
    falls back to random weights and says so (the pipeline runs; the results mean nothing)."""
    if requested:
        path = Path(requested)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} not found")
        return path.resolve(), True
    shipped = package_file(SHIPPED_CHECKPOINT)
    if shipped.is_file():
        return shipped, True
    print(
        f"dyco-demo: the shipped checkpoint {shipped} is missing (train it with "
        "`make train-shipped`). Falling back to RANDOM weights: the pipeline runs end to end, "
        "but the instances and scores below are meaningless.",
        file=sys.stderr,
    )
    from dyco_perception.checkpoint import write_random_checkpoint

    return write_random_checkpoint(out_dir / "random_weights.safetensors"), False


def _bag_from_scans(scans_dir: str, work: Path) -> Path:
    from dyco_perception.tools.make_bag import _scan_scenes, write_scan_bag

    out = work / "scans_bag"
    write_scan_bag(_scan_scenes([scans_dir], None), out)
    return out


def instance_table(scan: bags.BagScan, result: Any) -> str:
    msg = result.messages["instances"]
    lines = [
        f"{scan.name}: {scan.num_points} points, {len(msg.instances)} instances, "
        f"inference {msg.inference_time:.2f} s",
        f"  {'id':>3}  {'class':<16} {'score':>5} {'points':>7}  box size (m)",
    ]
    for inst in msg.instances:
        size = inst.box_size
        lines.append(
            f"  {inst.id:>3}  {inst.class_name:<16} {inst.score:5.2f} {inst.num_points:>7}  "
            f"{size.x:.2f} x {size.y:.2f} x {size.z:.2f}"
        )
    return "\n".join(lines)


def render(result: Any, title: str, path: Path) -> Path:
    """Top-down and perspective views of the labelled cloud in instance colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cloud = result.messages["cloud"]
    records = pc2.read_structured(pc2.CloudLayout.of(cloud), cloud.data, ("instance",))
    xyz = pc2.read_msg(cloud).xyz
    instance = records["instance"].astype(np.int64)
    keep = np.flatnonzero(np.isfinite(xyz).all(1))
    if keep.size > MAX_PLOTTED_POINTS:
        keep = np.random.default_rng(0).choice(keep, MAX_PLOTTED_POINTS, replace=False)
    xyz, colours = xyz[keep], instance_colours(instance[keep]) / 255.0
    figure = plt.figure(figsize=(14, 6.5))
    top = figure.add_subplot(1, 2, 1)
    order = np.argsort(xyz[:, 2])  # higher points drawn last, as seen from above
    top.scatter(xyz[order, 0], xyz[order, 1], c=colours[order], s=1.5, linewidths=0)
    top.set_aspect("equal")
    top.set_title("top-down")
    top.set_xlabel("x (m)")
    top.set_ylabel("y (m)")
    view = figure.add_subplot(1, 2, 2, projection="3d")
    view.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colours, s=0.8, linewidths=0)
    view.view_init(elev=35, azim=-60)
    view.set_box_aspect(np.ptp(xyz, axis=0) + 1e-6)
    view.set_title("perspective")
    view.set_axis_off()
    for inst in result.messages["instances"].instances:
        c = inst.box_center
        view.text(c.x, c.y, c.z + inst.box_size.z / 2, inst.class_name, fontsize=6)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_demo(args: argparse.Namespace) -> replay.ReplayReport:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dyco_demo_"))
    try:
        bag = Path(args.bag) if args.bag else None
        if args.scans:
            bag = _bag_from_scans(args.scans, work)
        bag = bag or package_file(DEMO_BAG)
        scans = bags.read_scan_bag(bag)
        checkpoint, trained = choose_checkpoint(args.checkpoint, out_dir)
        print(f"bag {bag}: {len(scans)} clouds; checkpoint {checkpoint.name}")
        overrides = {"checkpoint": str(checkpoint), "device": args.device}
        process = start_node(overrides, {"cloud_in": INPUT_TOPIC}, log_path=out_dir / "node.log")
        client = SegmentationClient(INPUT_TOPIC, client_name="dyco_demo", record=True)
        try:
            if not client.wait_for_node(timeout=args.timeout):
                log = (out_dir / "node.log").read_text()[-2000:]
                raise RuntimeError(f"segment_node did not start; its log:\n{log}")
            report = replay.play(client, scans, lockstep=True, timeout=args.timeout)
            report.metrics = replay.evaluate(report)
            outputs_bag = out_dir / "outputs_bag"
            shutil.rmtree(outputs_bag, ignore_errors=True)
            replay.write_output_bag(client, outputs_bag)
        finally:
            client.close()
            stop_node(process)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_and_render(report, out_dir, trained)
    return report


def _print_and_render(report: replay.ReplayReport, out_dir: Path, trained: bool) -> None:
    for scan in report.scans:
        if not report.complete(scan):
            print(f"{scan.name}: no result (timed out)")
            continue
        result = report.results[scan.stamp]
        print(instance_table(scan, result))
        title = f"{scan.name}" + ("" if trained else "  (RANDOM WEIGHTS)")
        image = render(result, title, out_dir / f"{scan.name}.png")
        print(f"  rendering: {image}")
    print(replay.format_report(report))
    (out_dir / "report.json").write_text(json.dumps(report.summary(), indent=2))
    print(f"report: {out_dir / 'report.json'}, node outputs: {out_dir / 'outputs_bag'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bag", help=f"scan bag to replay (default: {DEMO_BAG})")
    source.add_argument("--scans", help="folder of scannet50k-format .npz scans")
    parser.add_argument("--checkpoint", help=f"default: {SHIPPED_CHECKPOINT}")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--out", default="out/demo", help="output folder")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per cloud")
    args = parser.parse_args(argv)
    try:
        run_demo(args)
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError) as exc:
        sys.exit(f"dyco-demo: error: {exc}")


if __name__ == "__main__":
    main()
