"""Training throughput at 1 and 2 torch threads: seconds per iteration, split into data
(augment + crop + batch) and the optimisation step.

    python bench/bench_train_speed.py [--config config/train/shipped.yaml] [--iterations 30]
                                      [--threads 1 2] [--device cpu|cuda]

Each thread count runs in its own process (torch's thread pool is fixed per process) on the same
seeds; the first 5 iterations are warm-up. On a busy machine the numbers are not comparable:
run it alone. Without the real scans (e.g. on a GPU machine) the pool is the config's generated
rooms alone. On cuda the step includes mixed precision when the config's `train.amp` is on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARMUP = 5


def child(config: str, threads: int, iterations: int, device: str) -> dict:
    import torch
    from dyco_training.datasets import SCANNET50K_DIR
    from dyco_training.trainer import Trainer, load_train_config

    cfg = load_train_config(config)
    cfg.train.threads, cfg.train.device = threads, device
    if not SCANNET50K_DIR.is_dir():
        cfg.data.scans_dir = tempfile.mkdtemp()  # no real scans: the generated rooms alone
    cfg.log.progress, cfg.log.tensorboard = False, False
    trainer = Trainer(cfg, out_dir=f"/tmp/bench_train_speed_{threads}")
    torch.set_num_threads(threads)
    data = step = 0.0
    for i in range(WARMUP + iterations):
        t0 = time.perf_counter()
        batch = trainer.batch_for(i)
        t1 = time.perf_counter()
        trainer.train_step(batch)
        t2 = time.perf_counter()
        if i >= WARMUP:
            data, step = data + t1 - t0, step + t2 - t1
    trainer.close()
    return {"threads": threads, "data": data / iterations, "step": step / iterations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "config" / "train" / "shipped.yaml"))
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.config, args.child, args.iterations, args.device)))
        return
    print(f"{args.config} on {args.device}, {args.iterations} iterations after {WARMUP} warm-up\n")
    print("| torch threads | data s/it | step s/it | it/s | speed-up |")
    print("|---|---|---|---|---|")
    base = None
    for threads in args.threads:
        command = [sys.executable, __file__, "--config", args.config]
        command += ["--iterations", str(args.iterations), "--child", str(threads)]
        command += ["--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if done.returncode:
            print(f"| {threads} | failed: {done.stderr.strip().splitlines()[-1]} |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rate = 1.0 / (row["data"] + row["step"])
        base = base or rate
        print(
            f"| {threads} | {row['data']:.3f} | {row['step']:.3f} | {rate:.2f} | "
            f"{rate / base:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
