"""Console-script entry points: dyco-eval-vectors, dyco-generate-rooms, dyco-baseline."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _max_deviation(expected: dict, got: dict) -> float:
    """Largest absolute difference between two official-format dicts (inf on NaN mismatch)."""
    worst = 0.0
    for key, values in expected.items():
        for want, have in zip(values, got.get(key, [math.inf] * 3), strict=False):
            if want is None or have is None:
                worst = worst if want is have else math.inf
            else:
                worst = max(worst, abs(want - have))
    return worst


def eval_vectors_main(argv: list[str] | None = None) -> int:
    from dyco_perception.evaluation import evaluate_case

    parser = argparse.ArgumentParser(
        prog="dyco-eval-vectors",
        description="Score eval-vector cases (npz) with the ScanNet instance benchmark; print the "
        "official result layout as JSON (null where the benchmark gives NaN).",
    )
    parser.add_argument("cases", nargs="+", type=Path, help="case_*.npz files")
    parser.add_argument("--expected", type=Path, help="expected.json: compare, exit 1 on > --tol")
    parser.add_argument("--tol", type=float, default=1e-9)
    args = parser.parse_args(argv)

    results = {path.stem: evaluate_case(str(path)).official_dict() for path in args.cases}
    print(json.dumps(results[args.cases[0].stem] if len(results) == 1 else results, indent=1))
    if args.expected is None:
        return 0
    expected = json.loads(args.expected.read_text())
    failed = False
    for name, got in results.items():
        if name not in expected:
            print(f"{name}: not in {args.expected}", file=sys.stderr)
            failed = True
            continue
        deviation = _max_deviation(expected[name]["official"], got)
        failed |= deviation > args.tol
        print(f"{name}: max deviation {deviation:.3g}", file=sys.stderr)
    return 1 if failed else 0


def generate_rooms_main(argv: list[str] | None = None) -> int:
    from dyco_perception.data.room_generator import generate_room
    from dyco_perception.scenes import save_scene_npz
    from tqdm import tqdm

    parser = argparse.ArgumentParser(
        prog="dyco-generate-rooms",
        description="Write procedurally furnished rooms in the scannet50k npz format.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--count", type=int, required=True, help="number of rooms")
    parser.add_argument("--seed", type=int, default=0, help="room k uses seed + k")
    parser.add_argument("--points", type=int, default=50000, help="points per room")
    args = parser.parse_args(argv)
    if args.count < 1 or args.points < 1000:
        parser.error("--count must be >= 1 and --points >= 1000")
    args.out.mkdir(parents=True, exist_ok=True)
    for k in tqdm(range(args.count), desc="rooms", unit="room"):
        scene = generate_room(args.seed + k, num_points=args.points)
        save_scene_npz(scene, args.out / f"{scene.name}.npz")
    return 0


def baseline_main(argv: list[str] | None = None) -> int:
    from dyco_training.baseline import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(eval_vectors_main())
