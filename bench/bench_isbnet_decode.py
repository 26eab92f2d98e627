"""ISBNet mask decoding, old vs new, on the val scans, with DyCo3D's instance stage beside it.

    python bench/bench_isbnet_decode.py [--repeats 5] [--margins 1.0 1.5] [--scans NAME ...]

One process, one torch thread, every variant run on a scan before the next repeat (drift on
the shared machine hits all alike); seconds are medians over scans x repeats, wall and CPU
time of this thread (CPU time does not count while the core serves another process).
1. `decode_scene` alone on each scan's real inputs (captured from an ISBNet Segmenter run):
   the previous implementation (batched (K, V, C) products, training's `_decode_batched`),
   the new dense one, and box-restricted decoding per margin (`decode_box_margin`); seconds
   per scan (all of its decode calls) and the largest difference from the old logits.
2. The instance stage in the Segmenter (timings "grouping" + "decoding"; ISBNet's grouping lap
   includes its mask decoding): ISBNet with the previous decode_scene ("old decode"; the rest
   of the decoder as now), the new dense decoding (`decode_box_margin: -1`), each margin, and
   DyCo3D's shipped checkpoint.
3. Each margin's output against dense decoding with bench_speed_check's acceptance: labels
   identical, every matched mask IoU >= 0.99, no class change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from bench_speed_check import SCANS, check
from dyco_perception.model.decoders import isbnet
from dyco_perception.scenes import load_npz_scene
from dyco_perception.segmenter import Segmenter
from dyco_training.datasets import list_npz_scans

REPO = Path(__file__).resolve().parents[1]
ISBNET = REPO / "checkpoints" / "isbnet_scannet_m16.safetensors"
DYCO3D = REPO / "checkpoints" / "dyco3d_scannet_m16.safetensors"


# The previous inference decoding: the batched (K, V, C) chunks that training still runs (since
# commit 684b9ea it gathers with index_select, as the new path does, so the baseline is that much
# faster than the code it replaced).
old_decode_scene = isbnet._decode_batched


# --- measurements -------------------------------------------------------------------------------


def capture_inputs(seg: Segmenter, scene) -> list[tuple]:
    """The arguments of every decode_scene call of one segmentation (dense decoding)."""
    calls, real = [], isbnet.decode_scene

    def spy(*args, **kwargs):
        calls.append(args[:7])
        return real(*args, **kwargs)

    isbnet.decode_scene = spy
    try:
        seg.segment(scene.xyz, scene.rgb)
    finally:
        isbnet.decode_scene = real
    return calls


def _timed(fn) -> tuple[float, float, object]:
    start, start_cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - start, time.thread_time() - start_cpu, out


def _decode_all(calls: list[tuple], name: str, margin: float | None) -> list[torch.Tensor]:
    if name == "old":
        return [old_decode_scene(*c) for c in calls]
    return [isbnet.decode_scene(*c, box_margin=margin) for c in calls]


def bench_decode(calls_per_scan: list[list[tuple]], margins: list[float], repeats: int) -> dict:
    variants = {"old": None, "new dense": None} | {f"new, margin {m:g} m": m for m in margins}
    wall = {n: [] for n in variants}
    cpu = {n: [] for n in variants}
    diff = 0.0
    with torch.no_grad():
        for calls in calls_per_scan:
            old = [old_decode_scene(*c) for c in calls]
            new = [isbnet.decode_scene(*c) for c in calls]
            diff = max([diff] + [(a - b).abs().max().item() for a, b in zip(old, new, strict=True)])
            for _ in range(repeats):
                for name, margin in variants.items():
                    w, c, _ = _timed(lambda m=margin, n=name, cs=calls: _decode_all(cs, n, m))
                    wall[name].append(w)
                    cpu[name].append(c)
    return {"wall": wall, "cpu": cpu, "max_diff": diff}


def _segment(name: str, seg: Segmenter, scene):
    """One segmentation; "old decode" runs the previous decode_scene in place of the new."""
    if "old decode" not in name:
        return seg.segment(scene.xyz, scene.rgb)
    real = isbnet.decode_scene
    isbnet.decode_scene = lambda *args, **kwargs: old_decode_scene(*args[:7])
    try:
        return seg.segment(scene.xyz, scene.rgb)
    finally:
        isbnet.decode_scene = real


def bench_stage(segmenters: dict[str, Segmenter], scenes, repeats: int) -> dict:
    stage = {n: [] for n in segmenters}
    total = {n: [] for n in segmenters}
    results = {n: [] for n in segmenters}
    for scene in scenes:
        for name, seg in segmenters.items():  # warm-up per scan, and the outputs to check
            results[name].append(_segment(name, seg, scene))
        for _ in range(repeats):
            for name, seg in segmenters.items():
                t = _segment(name, seg, scene).timings
                stage[name].append(t["grouping"] + t["decoding"])
                total[name].append(t["total"])
    return {"stage": stage, "total": total, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--margins", nargs="*", type=float, default=[1.0, 1.5])
    parser.add_argument("--scans", nargs="*", help="scan names (default: the val split)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = list_npz_scans(SCANS, split=None if args.scans else "val", names=args.scans)
    scenes = [load_npz_scene(p) for p in paths]
    segmenters = {}
    for name, margin in [("isbnet old decode", -1.0), ("isbnet dense", -1.0)] + [
        (f"isbnet margin {m:g} m", m) for m in args.margins
    ]:
        segmenters[name] = Segmenter.from_checkpoint(ISBNET, device="cpu")
        segmenters[name].model.decoder.options.decode_box_margin = margin
    segmenters["dyco3d"] = Segmenter.from_checkpoint(DYCO3D, device="cpu")
    load = os.getloadavg()[0]
    calls = [capture_inputs(segmenters["isbnet dense"], s) for s in scenes]
    decode = bench_decode(calls, args.margins, args.repeats)
    stage = bench_stage(segmenters, scenes, args.repeats)
    print(
        f"{len(scenes)} scans ({', '.join(p.stem for p in paths)}), {args.repeats} timed runs "
        f"each, torch threads 1, load average {load:.1f} -> {os.getloadavg()[0]:.1f} (the "
        "other core was busy: times are noisy)\n"
    )
    print(f"decode_scene per scan (new dense vs old: max |logit diff| {decode['max_diff']:.1e})")
    print("| decoding | s per scan (wall, median) | (min) | CPU s | vs old (CPU) |")
    print("|---|---|---|---|---|")
    base = statistics.median(decode["cpu"]["old"])
    for name in decode["wall"]:
        w, c = decode["wall"][name], statistics.median(decode["cpu"][name])
        row = [name, f"{statistics.median(w):.3f}", f"{min(w):.3f}", f"{c:.3f}"]
        print("| " + " | ".join([*row, f"{base / c:.2f}x"]) + " |")
    print("\ninstance stage in the Segmenter (grouping + decoding laps), and end to end")
    print("| model | instance stage s (median) | (min) | end to end s (median) |")
    print("|---|---|---|---|")
    for name in segmenters:
        s, t = stage["stage"][name], stage["total"][name]
        row = [name, f"{statistics.median(s):.3f}", f"{min(s):.3f}", f"{statistics.median(t):.3f}"]
        print("| " + " | ".join(row) + " |")
    print("\noutput against dense decoding (accepted: labels identical, matched IoU >= 0.99)")
    print("| margin | same label | mask IoU min | class changes | instances | accepted |")
    print("|---|---|---|---|---|---|")
    results = {"old": stage["results"]["isbnet dense"]}
    for m in args.margins:
        name = f"isbnet margin {m:g} m"
        results[name] = stage["results"][name]
        c = check(name, results, scenes)
        ok = c["labels"] == 1.0 and c["iou_min"] >= 0.99 and c["class_changes"] == 0
        row = [f"{m:g} m", f"{c['labels']:.5f}", f"{c['iou_min']:.4f}", str(c["class_changes"])]
        print("| " + " | ".join([*row, str(c["instances"]), "yes" if ok else "no"]) + " |")


if __name__ == "__main__":
    main()
