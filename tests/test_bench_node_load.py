"""bench/bench_node_load.py's parts that the smoke run (`--loads 0`) does not reach: the busy
processes start and end, and the table with each load relative to the quiet machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_node_load.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_node_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_busy_processes_are_started_and_ended() -> None:
    bench = _bench()
    busy = bench.start_busy(2)
    try:
        assert len(busy) == 2 and all(p.poll() is None for p in busy)
    finally:
        bench.stop_busy(busy)
    assert all(p.returncode is not None for p in busy)


def test_table_has_a_row_per_setting_and_each_load_over_quiet() -> None:
    results = {(1, 0, 0): 1.0, (1, -5, 0): 0.5, (1, 0, 2): 3.0, (1, -5, 2): 0.6}
    text = _bench().table(results, [(1, 0), (1, -5)], [0, 2])
    lines = text.splitlines()
    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    assert header == ["threads", "nice", "0 busy", "2 busy", "2 busy / quiet"]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[2:]]
    assert rows == [
        ["1", "0", "1.00 s", "3.00 s", "3.00x"],
        ["1", "-5", "0.50 s", "0.60 s", "1.20x"],
    ]
    without_quiet = _bench().table({(2, 0, 1): 2.0}, [(2, 0)], [1]).splitlines()
    assert "quiet" not in without_quiet[0] and len(without_quiet) == 3


def test_node_mode_times_the_real_node_end_to_end(scannet_dir: Path) -> None:
    """--node starts a segment_node with the cell's `threads` and times publish -> labelled cloud
    over DDS (a node that never answers raises instead of timing nothing)."""
    import sys

    import pytest

    pytest.importorskip("rclpy", reason="ROS 2 not set up: run `make setup`")
    sys.path.insert(0, str(BENCH.parent))  # the bench imports bench_node's client loop
    tiny = BENCH.parents[1] / "checkpoints" / "tiny_fixture.safetensors"
    args = ["--node", "--threads", "1", "--loads", "0", "--repeats", "1", "--nice", "2"]
    results = _bench().main([*args, "--checkpoint", str(tiny), "--scans", str(scannet_dir)])
    assert list(results) == [(1, 2, 0)]
    assert 0.0 < results[1, 2, 0] < 60.0
