"""Why labels lag masks: the semantic head per class, and what each instance class rule scores.

    python bench/bench_labels.py --checkpoint checkpoints/dyco3d_scannet_m16.safetensors \
        --split train --split val [--scans ../shared/data/scannet50k] [--threads 1]

Per split it segments every scan once per class rule and prints
- per thing class: GT instances, the semantic head's point recall (GT points of the class
  predicted as it) and the class it is most often mistaken for;
- labelled AP / AP50 under each instance class rule: `decoder` (the decoder's own class: its
  classifier, else the class the cluster was grouped under), `mask` (the thing class of
  highest mean probability over the mask), `vote` (the most frequent predicted thing class
  among the mask's points) and `oracle` (the GT class holding most of the mask's points: the
  AP50 the masks would reach with perfect labels, so `oracle` - `mask` is what labels cost),
  next to the class-agnostic AP50.
Inference rules may be compared on the training scans; the val row is for reporting only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))

RULES = ("decoder", "mask", "vote", "oracle")


def relabel(instances: list, labels: np.ndarray, rule: str, gt_semantic: np.ndarray) -> list:
    """Instances (as the evaluator reads them) with the class `rule` gives each mask."""
    from dyco_perception.classes import STUFF_CLASS_IDS

    out = []
    for inst in instances:
        rows = inst.point_indices
        if rule == "vote":
            votes = np.bincount(labels[rows][labels[rows] >= 0], minlength=20)
        elif rule == "oracle":
            gt = gt_semantic[rows]
            votes = np.bincount(gt[gt >= 0], minlength=20)
        else:
            out.append(inst)
            continue
        votes[list(STUFF_CLASS_IDS)] = 0
        class_id = int(votes.argmax()) if votes.any() else inst.class_id
        out.append({"class_id": class_id, "score": inst.score, "point_indices": rows})
    return out


def measure(checkpoint: Path, scans: list[Path]) -> dict:
    from dyco_perception.evaluation import evaluate_predictions
    from dyco_perception.scenes import load_npz_scene
    from dyco_perception.segmenter import Segmenter
    from tqdm import tqdm

    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    confusion = np.zeros((20, 20), np.int64)
    per_rule: dict[str, list] = {rule: [] for rule in RULES}
    for path in tqdm(scans, desc=f"segment {len(scans)} scans", unit="scan"):
        scene = load_npz_scene(path)
        labelled = scene.semantic >= 0
        for source in ("decoder", "mask"):
            segmenter.cfg.inference.class_source = source
            result = segmenter.segment(scene.xyz, scene.rgb)
            item = (scene.semantic, scene.instance, result.instances)
            per_rule[source].append(item)
        both = labelled & (result.semantic >= 0)
        np.add.at(confusion, (scene.semantic[both], result.semantic[both]), 1)
        for rule in ("vote", "oracle"):
            relabelled = relabel(result.instances, result.semantic, rule, scene.semantic)
            per_rule[rule].append((scene.semantic, scene.instance, relabelled))
    metrics = {rule: evaluate_predictions(items) for rule, items in per_rule.items()}
    return {"confusion": confusion, "metrics": metrics}


def print_split(name: str, found: dict) -> None:
    from dyco_perception.classes import SEMANTIC_CLASSES, STUFF_CLASS_IDS

    confusion, metrics = found["confusion"], found["metrics"]
    counts = metrics["mask"]["num_gt_instances"]
    print(f"\n## {name}: semantic head per thing class (point recall, most confused with)")
    print("| class | GT instances | recall | mistaken for | AP50 mask | AP50 oracle |")
    print("|---|---|---|---|---|---|")
    for c, cls in enumerate(SEMANTIC_CLASSES):
        if c in STUFF_CLASS_IDS or not counts.get(cls):
            continue
        row = confusion[c]
        recall = row[c] / max(row.sum(), 1)
        others = row.copy()
        others[c] = 0
        wrong = SEMANTIC_CLASSES[int(others.argmax())] if others.any() else "-"
        ap50 = [metrics[rule]["per_class"][cls][1] for rule in ("mask", "oracle")]
        share = others.max() / max(row.sum(), 1)
        print(
            f"| {cls} | {counts[cls]} | {recall:.2f} | {wrong} ({share:.2f})"
            f" | {ap50[0]:.3f} | {ap50[1]:.3f} |"
        )
    agnostic = metrics["mask"]["class_agnostic"]["AP50"]
    print(f"\n## {name}: instance class rules (class-agnostic AP50 {agnostic:.3f})")
    print("| rule | AP | AP50 | AP25 |")
    print("|---|---|---|---|")
    for rule in RULES:
        m = metrics[rule]
        print(f"| {rule} | {m['AP']:.3f} | {m['AP50']:.3f} | {m['AP25']:.3f} |")


def main() -> int:
    from dyco_training.datasets import list_npz_scans

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/dyco3d_scannet_m16.safetensors")
    parser.add_argument("--scans", default=str(REPO.parent / "shared/data/scannet50k"))
    parser.add_argument("--split", action="append", choices=("train", "val"))
    parser.add_argument("--names", help="comma-separated scan names instead of --split")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.names:
        groups = {"scans": list_npz_scans(args.scans, None, args.names.split(","))}
    else:
        groups = {s: list_npz_scans(args.scans, s) for s in args.split or ["train", "val"]}
    for name, scans in groups.items():
        print_split(name, measure(Path(args.checkpoint), scans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
