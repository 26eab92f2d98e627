"""bench/bench_voxel_size.py runs the pipeline at each requested voxel size and scores it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_voxel_size.py"
TINY = BENCH.parents[1] / "checkpoints" / "tiny_fixture.safetensors"


def test_each_row_runs_at_its_voxel_size_and_is_scored(scannet_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_voxel_size", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--checkpoint", str(TINY), "--scans", str(scannet_dir), "--limit", "1"]
    rows = bench.main([*args, "--sizes", "0.05", "0.1", "--phases", "2"])
    assert [size for size, _ in rows] == [0.05, 0.1]
    for size, row in rows:
        assert row["voxel_size"] == size
        assert 0.0 <= row["AP50"] <= 1.0 and 0.0 <= row["agnostic_AP50"] <= 1.0
        assert row["seconds"] >= row["backbone"] > 0.0
        low, high = row["AP50_range"]
        assert low <= row["AP50"] <= high


def test_the_anchor_moves_the_grid_origin_and_is_not_scored() -> None:
    spec = importlib.util.spec_from_file_location("bench_voxel_size", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    xyz = np.float32([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])
    scene = (xyz, np.zeros((2, 3), np.uint8), np.int64([3, 4]), np.int32([1, 2]))
    shifted, rgb, semantic, instance = bench.with_anchor(scene, np.float64([0.01, 0.02, 0.03]))
    np.testing.assert_allclose(shifted.min(0), [0.99, 1.98, 2.97], rtol=0, atol=1e-6)
    assert semantic[-1] == -100 and instance[-1] == 0 and len(rgb) == 3
