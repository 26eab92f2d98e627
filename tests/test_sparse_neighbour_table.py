"""dyco_ops' native neighbour-table builder (`subm_neighbour_table`, used by gemm.subm_table)
against the table scattered from the torch pairs and a brute-force dict; its errors; which maps
the planner charges with and without it."""

from __future__ import annotations

import itertools

import pytest
import torch
from dyco_perception.sparse import SparseVoxels, algorithms, gemm, torch_backend
from dyco_perception.sparse.algorithms import LayerTiming
from dyco_perception.sparse.tensor import MAX_AXIS, MAX_BATCH

from dyco_perception import ops

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OFFSETS = list(itertools.product((-1, 0, 1), repeat=3))  # torch_backend's offset order


@pytest.fixture
def build():
    """The native builder, or a skip that says why it is not loaded."""
    builder = gemm.native_table_builder()
    if builder is None:
        why = ops.cpu_kernel_missing("subm_neighbour_table")
        pytest.skip(f"native subm_neighbour_table not loaded: {why}")
    return builder


def voxels(coords: torch.Tensor, stride: int = 1) -> SparseVoxels:
    batch = int(coords[:, 0].max()) + 1 if len(coords) else 1
    return SparseVoxels(torch.zeros(len(coords), 1), coords, stride, (1, 1, 1), batch)


def brute_force(coords: torch.Tensor) -> torch.Tensor:
    """The table by definition: row of coords[i] + offset k, V where absent."""
    rows = {tuple(c): i for i, c in enumerate(coords.tolist())}
    v = len(coords)
    table = [
        [rows.get((b, x + dx, y + dy, z + dz), v) for dx, dy, dz in OFFSETS]
        for b, x, y, z in coords.tolist()
    ]
    return torch.tensor(table, dtype=torch.long).reshape(v, 27)


def scan_levels(scan_sample) -> list[SparseVoxels]:
    """Levels 0-2 (strides 1, 2, 4) of a real scan, coarser levels as the down conv makes them."""
    xyz, _ = scan_sample("scene0001_00", 30000)
    grid = torch.floor(torch.from_numpy(xyz).double() / 0.02).long()  # 2 cm voxels
    grid -= grid.min(0).values
    coords = torch.unique(torch.cat([torch.zeros_like(grid[:, :1]), grid], 1), dim=0)
    levels = [voxels(coords)]
    for stride in (2, 4):
        _, coarse = torch_backend.down_pairs(levels[-1])
        levels.append(voxels(coarse, stride))
    return levels


def test_native_table_equals_the_pairs_table_on_a_real_scan(build, scan_sample) -> None:
    for level in scan_levels(scan_sample):
        expected = gemm.subm_table_from_pairs(level)
        present = (expected != len(level.coords)).sum(1).float().mean()
        assert present > 3, present  # real neighbourhoods, not isolated voxels
        assert torch.equal(build(level.coords), expected), level.stride
        # Rows in another order: the same table, permuted (nothing relies on sorted coords).
        order = torch.randperm(len(level.coords), generator=torch.Generator().manual_seed(0))
        shuffled = build(level.coords[order])
        v = len(order)
        mapped = torch.where(shuffled == v, v, order[shuffled.clamp(max=v - 1)])
        assert torch.equal(mapped, expected[order]), level.stride


def test_threads_give_the_same_table(build, scan_sample) -> None:
    """Mirrored cells are written by other voxels' threads: any split gives the same table."""
    level = scan_levels(scan_sample)[0]
    single = build(level.coords)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(build(level.coords), single)
    finally:
        torch.set_num_threads(threads)


def test_isolated_voxels_two_batches_and_a_full_block(build) -> None:
    block = torch.cartesian_prod(torch.arange(3), torch.arange(3), torch.arange(3)) + 4
    lone = torch.tensor([[0, 0, 0], [9, 0, 9], [0, 9, 0]])
    xyz = torch.cat([lone, block])
    coords = torch.cat([torch.cat([torch.full((len(xyz), 1), b), xyz], 1) for b in (0, 1)])
    table = build(coords)
    assert torch.equal(table, brute_force(coords))
    assert torch.equal(table, gemm.subm_table_from_pairs(voxels(coords)))
    v = len(coords)
    for i in (0, 1, 2, len(xyz), len(xyz) + 1):  # isolated, in either batch: only the centre
        assert table[i].tolist() == [v] * 13 + [i] + [v] * 13
    centre = len(lone) + 13  # middle of the block: all 27 present, none from the other batch
    assert (table[centre] < len(xyz)).all() and table[centre, 13] == centre


def test_coords_at_the_packing_limits(build) -> None:
    """0 and MAX_AXIS on every axis, the last batch: no neighbour leaks across a field
    boundary of the packed key (z = MAX_AXIS vs the next y's z = 0, x = MAX_AXIS vs batch)."""
    m, last = MAX_AXIS, MAX_BATCH - 1
    coords = torch.tensor(
        [
            [0, 0, 0, 0],
            [0, 0, 0, 1],
            [0, 1, 1, 1],
            [0, 5, 5, m],
            [0, 5, 6, 0],
            [0, 5, 6, m],
            [0, m, 0, 0],
            [1, 0, 0, 0],
            [0, m, m, m],
            [0, m - 1, m, m],
            [last, m, m, m],
            [last, m, m - 1, m - 1],
            [last, 0, 0, 0],
            [last - 1, m, m, m],
        ]
    )
    table = build(coords)
    assert torch.equal(table, brute_force(coords))
    assert torch.equal(table, gemm.subm_table_from_pairs(voxels(coords)))


def test_empty_input(build) -> None:
    assert build(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 27)
    x = voxels(torch.zeros(0, 4, dtype=torch.long))
    assert gemm.subm_table(x).shape == (0, 27)


def test_errors_name_the_wrong_input(build) -> None:
    good = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 4]])
    cases = [
        (good[:, :3], "coords must be \\(V, 4\\) int64"),
        (good.float(), "coords must be \\(V, 4\\) int64"),
        (good.int(), "coords must be \\(V, 4\\) int64"),
        (good[0], "coords must be \\(V, 4\\) int64"),
        (torch.tensor([[0, -1, 0, 0]]), "row 0 = \\(0, -1, 0, 0\\) outside the key packing"),
        (torch.tensor([[0, 0, 0, 0], [0, 0, MAX_AXIS + 1, 0]]), "row 1 = .* outside"),
        (torch.tensor([[0, 0, 0, 0], [0, 0, 0, -1]]), "row 1 = .* outside"),
        (torch.tensor([[MAX_BATCH, 0, 0, 0]]), "outside the key packing's range"),
        (torch.tensor([[-1, 0, 0, 0]]), "outside the key packing's range"),
        (torch.tensor([[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 3]]), "unique; rows 0 and 2"),
    ]
    for coords, message in cases:
        with pytest.raises(RuntimeError, match=message):
            build(coords)
    # A non-contiguous view is fine.
    strided = good.t().contiguous().t()
    assert not strided.is_contiguous()
    assert torch.equal(build(strided), brute_force(good))


def test_subm_table_builds_natively_without_pairs_and_caches(build, scan_sample) -> None:
    level = scan_levels(scan_sample)[1]
    table = gemm.subm_table(level)
    assert ("subm", level.stride) not in level.cache  # the pairs were never built
    assert gemm.subm_table(level) is table
    with torch.enable_grad():  # integer work: the same with autograd on
        assert torch.equal(gemm.subm_table(voxels(level.coords, level.stride)), table)
    assert torch.equal(table, gemm.subm_table_from_pairs(level))


def test_subm_table_falls_back_to_the_pairs_without_the_build(monkeypatch) -> None:
    monkeypatch.setattr(gemm, "native_table_builder", lambda: None)
    block = torch.cartesian_prod(*[torch.arange(3)] * 3)
    coords = torch.cat([torch.zeros(27, 1, dtype=torch.long), block * 2], 1)[::2]
    x = voxels(coords)
    assert torch.equal(gemm.subm_table(x), brute_force(coords))
    assert ("subm", 1) in x.cache  # built from the pairs
    assert algorithms.maps_needed()["native"] == ("pairs", "table")


def test_the_planner_charges_a_native_level_only_the_table(build, monkeypatch) -> None:
    layers = [LayerTiming("subm", 1000, 16, 16, {"torch": 3.0, "native": 2.0}, count=2)]
    maps = {"pairs": 10.0, "table": 1.0}
    assert algorithms.maps_needed()["native"] == ("table",)
    assert algorithms.maps_needed()["torch"] == ("pairs",)
    assert algorithms._plan_cost(layers, {"native"}, maps) == pytest.approx(5.0)
    monkeypatch.setattr(gemm, "native_table_builder", lambda: None)
    assert algorithms._plan_cost(layers, {"native"}, maps) == pytest.approx(15.0)
