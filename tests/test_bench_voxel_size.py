"""bench/bench_voxel_size.py runs the pipeline at each requested voxel size and scores it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_voxel_size.py"
TINY = BENCH.parents[1] / "checkpoints" / "tiny_fixture.safetensors"


def test_each_row_runs_at_its_voxel_size_and_is_scored(scannet_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_voxel_size", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--checkpoint", str(TINY), "--scans", str(scannet_dir), "--limit", "1"]
    rows = bench.main([*args, "--sizes", "0.05", "0.1"])
    assert [size for size, _ in rows] == [0.05, 0.1]
    for size, row in rows:
        assert row["voxel_size"] == size
        assert 0.0 <= row["AP50"] <= 1.0 and 0.0 <= row["agnostic_AP50"] <= 1.0
        assert row["seconds"] >= row["backbone"] > 0.0
