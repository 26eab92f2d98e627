"""The four decoders side by side on one backbone: val AP, speed, memory, size, training time.

    python bench/bench_decoders.py [--checkpoints CKPT ...] [--threads 2] [--out table.md]

Default checkpoints: every registered decoder's shipped one (checkpoints/<name>_scannet_m16),
plus runs/dyco3d/model.safetensors when present (DyCo3D's decoder under the same 20-minute
budget as the others; the shipped DyCo3D trained 3 h). Each checkpoint runs in its own
processes: one evaluates the val scans (AP / AP50 / AP25, labelled and class-agnostic, with
our ScanNet evaluator), one times a 50k-point val scan and one a 1M-point tiled map (peak RSS
of that process alone). The papers' ScanNet val numbers stand beside ours: full ScanNet (1201
training scans, whole-density meshes, hundreds of GPU epochs, superpoints for DKNet/ISBNet) vs
our 15 scans subsampled to 50k points and minutes on a CPU core.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench_pipeline import SCANS, tiled_cloud

REPO = Path(__file__).resolve().parents[1]
VAL_SCANS = ("scene0009_00", "scene0009_01", "scene0009_02", "scene0010_00", "scene0010_01")
# ScanNet v2 val AP / AP50 / AP25 as published (SEED_METHODS.md section 2; None: not given).
PAPER_VAL = {
    "pointgroup": (34.8, 56.9, 71.3),
    "dyco3d": (35.4, 57.6, None),
    "dknet": (50.8, 66.7, 76.9),
    "isbnet": (54.5, 73.1, 82.5),
}


def default_checkpoints() -> list[Path]:
    from dyco_perception.model.decoders import DECODERS

    paths = [REPO / "checkpoints" / f"{name}_scannet_m16.safetensors" for name in DECODERS]
    budget = REPO / "runs" / "dyco3d" / "model.safetensors"
    return [p for p in paths if p.is_file()] + ([budget] if budget.is_file() else [])


def child_eval(checkpoint: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from dyco_training.cli_evaluate import evaluate_checkpoint

    scans = [SCANS / f"{name}.npz" for name in VAL_SCANS]
    m = evaluate_checkpoint(checkpoint, scans, device="cpu", progress=False)
    agnostic = m["class_agnostic"]
    return {
        "labelled": [m["AP"], m["AP50"], m["AP25"]],
        "agnostic": [agnostic["AP"], agnostic["AP50"], agnostic["AP25"]],
        "per_class": m["per_class"],
    }


def child_speed(checkpoint: str, threads: int, size: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from dyco_perception.scenes import load_npz_scene
    from dyco_perception.segmenter import Segmenter

    seg = Segmenter.from_checkpoint(checkpoint, device="cpu")
    if size <= 50_000:
        scene = load_npz_scene(SCANS / f"{VAL_SCANS[0]}.npz")
        xyz, rgb = scene.xyz[:size], scene.rgb[:size]
    else:
        xyz, rgb = tiled_cloud(size)
    seg.segment(xyz[:20000], rgb[:20000])  # warm-up (allocator, lazy imports)
    start = time.perf_counter()
    seg.segment(xyz, rgb)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def describe(checkpoint: Path) -> dict:
    """Decoder, parameters and training time from the checkpoint and its card."""
    from dyco_perception.checkpoint import load_checkpoint

    state, card = load_checkpoint(checkpoint)
    training = card.training or {}
    init = training.get("init") or {}
    return {
        "decoder": card.config.decoder_name,
        "parameters": sum(t.numel() for t in state.values() if t.is_floating_point()),
        "train_minutes": training.get("train_seconds", 0.0) / 60.0,
        "warm_start": init.get("scope"),
        "megabytes": checkpoint.stat().st_size / 2**20,
    }


def run(mode: str, checkpoint: Path, threads: int, size: int = 0) -> dict | str:
    command = [sys.executable, __file__, "--child", mode, "--threads", str(threads)]
    command += ["--checkpoints", str(checkpoint), "--size", str(size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:80]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _triple(values) -> str:
    return " / ".join("-" if v is None else f"{v:.3f}" for v in values)


def _paper(values) -> str:
    return " / ".join("-" if v is None else f"{v:.1f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="*", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", nargs="*", type=int, default=[50_000, 1_000_000])
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--child", choices=("eval", "speed"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        [checkpoint] = args.checkpoints
        if args.child == "eval":
            row = child_eval(str(checkpoint), args.threads)
        else:
            row = child_speed(str(checkpoint), args.threads, args.size)
        print(json.dumps(row))
        return
    from tqdm import tqdm

    checkpoints = args.checkpoints or default_checkpoints()
    header = ["checkpoint", "decoder", "AP / AP50 / AP25", "class-agnostic AP / AP50 / AP25"]
    header += [f"s @ {s:,} pts (peak GB)" for s in args.sizes]
    header += ["parameters", "MB", "training (min)", "paper ScanNet val AP / AP50 / AP25 (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for checkpoint in tqdm(checkpoints, desc="decoders", unit="checkpoint"):
        info = describe(checkpoint)
        evaluated = run("eval", checkpoint, args.threads)
        cells = [checkpoint.name if "runs" not in checkpoint.parts else str(checkpoint)]
        cells.append(info["decoder"])
        if isinstance(evaluated, str):
            cells += [evaluated, ""]
        else:
            cells += [_triple(evaluated["labelled"]), _triple(evaluated["agnostic"])]
        for size in args.sizes:
            speed = run("speed", checkpoint, args.threads, size)
            cells.append(
                speed
                if isinstance(speed, str)
                else f"{speed['seconds']:.2f} ({speed['peak_rss_gb']:.2f})"
            )
        start = " + shared backbone" if info["warm_start"] == "backbone" else ""
        cells += [f"{info['parameters']:,}", f"{info['megabytes']:.1f}"]
        cells += [f"{info['train_minutes']:.0f}{start}", _paper(PAPER_VAL[info["decoder"]])]
        lines.append("| " + " | ".join(cells) + " |")
        tqdm.write(lines[-1])
    table = "\n".join(lines)
    print(f"\nval scans: {', '.join(VAL_SCANS)}; {args.threads} CPU threads\n\n{table}")
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
