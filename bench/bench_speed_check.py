"""Old vs new inference on the val scans: speed (one process, interleaved) and equal outputs.

    python bench/bench_speed_check.py [--checkpoint CKPT] [--repeats 5] [--threads 1]
                                      [--configs old fused auto bf16]

Configurations (same checkpoint, same process, runs interleaved scan by scan):
  old    the previous default: backend spconv for every layer, batch norms unfused, DyCo3D's
         masks decoded by the per-cluster Python loop (DYCO_NATIVE_DECODE=0)
  fused  spconv, batch norms folded into the convs (`fuse_for_inference`)
  auto   fused, each layer's algorithm from the measured table (sparse/algorithms.yaml), masks
         decoded by the native kernel (dyco_ops dynamic_mask_decode)
  bf16   auto with bfloat16 matmuls (precision="bfloat16")
  input  auto with batch norms on each input's own statistics (inference.norm_statistics:
         input; nothing folds, and its outputs differ from "old" by design)
Output check of each against "old" over the val scans (the split of dyco_training.datasets):
fraction of points with the same semantic label and the same instance-or-none decision,
matched-mask IoU (each old instance -> the new instance of highest IoU; mean and min), class
of the matched instance, and AP50 / class-agnostic AP50 against the ground truth.
Acceptance (issue 20): labels identical and every matched mask IoU >= 0.99. Times: median and
minimum wall seconds over scans x repeats, and the median CPU seconds of this thread (with one
torch thread all the work runs on it; CPU time does not count while the shared core serves
another process, wall time does, so CPU time is the steadier comparison here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from dyco_perception.evaluation import evaluate_predictions
from dyco_perception.scenes import load_npz_scene
from dyco_perception.segmenter import Segmenter
from dyco_training.datasets import list_npz_scans

REPO = Path(__file__).resolve().parents[1]
SCANS = REPO.parent / "shared" / "data" / "scannet50k"
CHECKPOINT = REPO / "checkpoints" / "dyco3d_scannet_m16.safetensors"
CONFIGS = {
    "old": {"backend": "spconv", "fuse": False},
    "fused": {"backend": "spconv"},
    "auto": {"backend": "auto"},
    "bf16": {"backend": "auto", "precision": "bfloat16"},
    "input": {"backend": "auto", "inference": {"norm_statistics": "input"}},
}
PYTHON_DECODE = {"old"}  # configs whose masks the per-cluster Python loop decodes


def segment(name: str, seg: Segmenter, scene):
    os.environ["DYCO_NATIVE_DECODE"] = "0" if name in PYTHON_DECODE else "1"
    return seg.segment(scene.xyz, scene.rgb)


def run_all(segmenters: dict[str, Segmenter], scenes, repeats: int) -> dict[str, dict]:
    """Interleaved: every config on a scan before the next repeat (drift hits all alike)."""
    times = {name: {k: [] for k in KEYS} for name in segmenters}
    results = {name: [] for name in segmenters}
    cpu = {name: _backbone_cpu_clock(seg) for name, seg in segmenters.items()}
    for scene in scenes:
        for name, seg in segmenters.items():  # warm-up per scan (maps, buffers, lazy imports)
            results[name].append(segment(name, seg, scene))
        for _ in range(repeats):
            for name, seg in segmenters.items():
                start, start_cpu = time.perf_counter(), time.thread_time()
                timings = segment(name, seg, scene).timings
                times[name]["total"].append(time.perf_counter() - start)
                times[name]["total_cpu"].append(time.thread_time() - start_cpu)
                times[name]["backbone"].append(timings["backbone"])
                times[name]["backbone_cpu"].append(cpu[name]["last"])
    return {"times": times, "results": results}


KEYS = ("backbone", "backbone_cpu", "total", "total_cpu")


def _backbone_cpu_clock(seg: Segmenter) -> dict[str, float]:
    """This thread's CPU seconds in the backbone (one torch thread: all its work is here);
    unlike wall time it does not count while the shared core serves someone else."""
    clock = {"start": 0.0, "last": 0.0}

    def before(*_: object) -> None:
        clock["start"] = time.thread_time()

    def after(*_: object) -> None:
        clock["last"] = time.thread_time() - clock["start"]

    seg.model.backbone.register_forward_pre_hook(before)
    seg.model.backbone.register_forward_hook(after)
    return clock


def mask_ious(old, new) -> tuple[list[float], int]:
    """Each old instance's best IoU among the new ones, and how many changed class."""
    n = len(old.semantic)
    new_masks = [np.zeros(n, bool) for _ in new.instances]
    for mask, inst in zip(new_masks, new.instances, strict=True):
        mask[inst.point_indices] = True
    ious, class_changes = [], 0
    for inst in old.instances:
        mask = np.zeros(n, bool)
        mask[inst.point_indices] = True
        scores = [(mask & m).sum() / max((mask | m).sum(), 1) for m in new_masks]
        best = int(np.argmax(scores)) if scores else -1
        ious.append(float(scores[best]) if scores else 0.0)
        class_changes += bool(scores) and new.instances[best].class_id != inst.class_id
    return ious, class_changes


def check(name: str, results: dict[str, list], scenes) -> dict:
    same_label, same_thing, ious, changes = [], [], [], 0
    for old, new in zip(results["old"], results[name], strict=True):
        same_label.append(np.mean(old.semantic == new.semantic))
        same_thing.append(np.mean((old.instance > 0) == (new.instance > 0)))
        scan_ious, scan_changes = mask_ious(old, new)
        ious += scan_ious
        changes += scan_changes
    metrics = evaluate_predictions(
        (s.semantic, s.instance, r.instances) for s, r in zip(scenes, results[name], strict=True)
    )
    return {
        "labels": float(np.mean(same_label)),
        "labels_min": float(np.min(same_label)),
        "instance_or_none": float(np.mean(same_thing)),
        "iou_mean": float(np.mean(ious)) if ious else 1.0,
        "iou_min": float(np.min(ious)) if ious else 1.0,
        "class_changes": changes,
        "instances": sum(len(r.instances) for r in results[name]),
        "ap50": metrics["AP50"],
        "agnostic_ap50": metrics["class_agnostic"]["AP50"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--scans", nargs="*", help="scan names (default: the val split)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = ["old", *(c for c in args.configs if c != "old")]
    segmenters = {
        n: Segmenter.from_checkpoint(args.checkpoint, device="cpu", **CONFIGS[n]) for n in names
    }
    paths = list_npz_scans(SCANS, split=None if args.scans else "val", names=args.scans)
    scenes = [load_npz_scene(p) for p in paths]
    load = os.getloadavg()[0]
    out = run_all(segmenters, scenes, args.repeats)
    print(
        f"{len(scenes)} scans ({', '.join(p.stem for p in paths)}), {args.repeats} timed runs "
        f"each, torch threads {torch.get_num_threads()}, load average {load:.1f} -> "
        f"{os.getloadavg()[0]:.1f}: the other core was busy (a training run), so times are noisy\n"
    )
    print_tables(names, out, scenes)


def print_tables(names: list[str], out: dict, scenes) -> None:
    header = "| config | backbone s median | (min) | backbone CPU s | end to end s median | (min) "
    print(header + "| end to end CPU s | CPU vs old |")
    print("|---|---|---|---|---|---|---|---|")
    base = statistics.median(out["times"]["old"]["total_cpu"])
    for n in names:
        t = out["times"][n]
        cells = [n]
        for key in ("backbone", "total"):
            cells += [f"{statistics.median(t[key]):.3f}", f"{min(t[key]):.3f}"]
            cells.append(f"{statistics.median(t[key + '_cpu']):.3f}")
        cells.append(f"{base / statistics.median(t['total_cpu']):.2f}x")
        print("| " + " | ".join(cells) + " |")
    print(
        "\n| config | same label | (min scan) | same instance-or-none | mask IoU mean | min "
        "| class changes | instances | AP50 | class-agnostic AP50 | accepted |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        c = check(n, out["results"], scenes)
        accepted = c["labels"] == 1.0 and c["iou_min"] >= 0.99 and c["class_changes"] == 0
        row = [
            n,
            f"{c['labels']:.5f}",
            f"{c['labels_min']:.5f}",
            f"{c['instance_or_none']:.5f}",
            f"{c['iou_mean']:.4f}",
            f"{c['iou_min']:.4f}",
            str(c["class_changes"]),
            str(c["instances"]),
            f"{c['ap50']:.3f}",
            f"{c['agnostic_ap50']:.3f}",
            "yes" if accepted else "no",
        ]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
