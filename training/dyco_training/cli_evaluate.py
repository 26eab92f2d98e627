"""`dyco-evaluate --checkpoint CKPT --scans DIR [--device cpu] [--json OUT] [--class-hypotheses K]
[--inference KEY=VALUE]`.

Runs the Segmenter of a checkpoint on every npz scan (scannet50k format) in DIR and scores it
with the ScanNet instance benchmark (AP, AP50, AP25, per class, class-agnostic). With
`--class-hypotheses K` each instance is also submitted under its K-1 runner-up classes (see
`evaluation.class_hypotheses`); the default, 1, scores what the node publishes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dyco_perception.scenes import load_npz_scene

from dyco_training.datasets import list_npz_scans
from dyco_training.train_config import parse_assignments


def evaluate_checkpoint(
    checkpoint: str | Path,
    scans: list[Path],
    device: str = "auto",
    backend: str = "auto",
    progress: bool = True,
    hypotheses: int = 1,
    inference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Benchmark metrics of `checkpoint` over `scans` plus seconds_per_scan (`inference`:
    settings in place of the card's)."""
    from dyco_perception.evaluation import class_hypotheses, evaluate_predictions
    from dyco_perception.segmenter import Segmenter
    from tqdm import tqdm

    if not scans:
        raise ValueError("no scans to evaluate")
    segmenter = Segmenter.from_checkpoint(
        checkpoint, device=device, backend=backend, inference=inference
    )
    items, seconds = [], 0.0
    for path in tqdm(scans, desc="evaluate", unit="scan", disable=not progress):
        scene = load_npz_scene(path)
        start = time.perf_counter()
        result = segmenter.segment(scene.xyz, scene.rgb)
        seconds += time.perf_counter() - start
        items.append((scene.semantic, scene.instance, result.instances))
    metrics = evaluate_predictions(
        (sem, inst, class_hypotheses(instances, hypotheses)) for sem, inst, instances in items
    )
    if hypotheses > 1:  # class-agnostic AP of the masks as published: one copy of each
        metrics["class_agnostic"] = evaluate_predictions(items)["class_agnostic"]
    metrics["class_hypotheses"] = hypotheses
    metrics["inference"] = asdict(segmenter.cfg.inference)
    metrics["seconds_per_scan"] = seconds / len(scans)
    metrics["scans"] = [p.stem for p in scans]
    metrics["checkpoint"] = str(checkpoint)
    metrics["device"] = str(segmenter.device)
    return metrics


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def format_table(metrics: dict[str, Any]) -> str:
    lines = [f"{'class':<24}{'AP':>7}{'AP50':>7}{'AP25':>7}"]
    for name, (ap, ap50, ap25) in metrics["per_class"].items():
        lines.append(f"{name:<24}{_fmt(ap):>7}{_fmt(ap50):>7}{_fmt(ap25):>7}")
    lines.append(
        f"{'average':<24}{_fmt(metrics['AP']):>7}{_fmt(metrics['AP50']):>7}"
        f"{_fmt(metrics['AP25']):>7}"
    )
    agn = metrics["class_agnostic"]
    lines.append(
        f"{'class-agnostic':<24}{_fmt(agn['AP']):>7}{_fmt(agn['AP50']):>7}{_fmt(agn['AP25']):>7}"
    )
    lines.append(
        f"{len(metrics['scans'])} scans, {metrics['seconds_per_scan']:.3f} s/scan "
        f"on {metrics['device']}, {metrics.get('class_hypotheses', 1)} class(es) per instance"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dyco-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help=".safetensors checkpoint")
    parser.add_argument("--scans", required=True, help="folder of npz scans (scannet50k format)")
    parser.add_argument(
        "--split",
        choices=("train", "val"),
        help="only this split of the folder (scannet50k room split)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "spconv"))
    parser.add_argument("--json", help="write the metrics to this JSON file")
    parser.add_argument(
        "--class-hypotheses",
        type=int,
        default=1,
        metavar="K",
        help="submit each instance under its K most probable classes (default 1: as published)",
    )
    parser.add_argument(
        "--inference",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inference setting in place of the card's, e.g. norm_statistics=input; repeat",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        scans = list_npz_scans(args.scans, args.split)
        if not scans:
            raise ValueError(f"no .npz scans in {args.scans}")
        metrics = evaluate_checkpoint(
            args.checkpoint,
            scans,
            args.device,
            args.backend,
            progress=not args.no_progress,
            hypotheses=args.class_hypotheses,
            inference=parse_assignments(args.inference),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"dyco-evaluate: {exc}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
