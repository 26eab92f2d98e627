"""Ops: the core's pure-PyTorch references vs independent oracles, the native kernels
(dyco_ops) vs those references, nvcc compile check."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
from dyco_perception.ops import reference
from dyco_training.datasets import SCANNET50K_DIR
from native_ops import DEVICES, native_or_skip, seeded
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from dyco_perception import ops

SCANS = SCANNET50K_DIR


# ----------------------------------------------------------------------------- oracles


def _oracle_components(points: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """Brute force: full distance matrix, scipy components, renumbered by first point."""
    result = np.full(len(points), -1, dtype=np.int64)
    valid = np.flatnonzero(labels >= 0)
    if valid.size == 0:
        return result
    pts = points[valid].astype(np.float64)
    diff = pts[:, None, :] - pts[None, :, :]
    dx, dy, dz = diff[..., 0], diff[..., 1], diff[..., 2]
    dist_sq = dx * dx + dy * dy + dz * dz  # same operation order as the kernels
    linked = (dist_sq <= radius * radius) & (labels[valid][:, None] == labels[valid][None, :])
    _, comp = scipy_components(coo_matrix(linked), directed=False)
    first_seen: dict[int, int] = {}
    renumbered = [first_seen.setdefault(c, len(first_seen)) for c in comp]
    result[valid] = renumbered
    return result


def _oracle_nms(masks: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        ious = []
        for j in kept:
            union = np.logical_or(masks[i], masks[j]).sum()
            ious.append(np.logical_and(masks[i], masks[j]).sum() / union if union else 0.0)
        if all(iou <= threshold for iou in ious):
            kept.append(i)
    return kept


def _torch_scatter(values: torch.Tensor, index: torch.Tensor, segments: int, op: str):
    """torch's own scatter_reduce, empty segments set to 0 (-inf start: see reference)."""
    start = 0.0 if op == "mean" else -torch.inf
    out = values.new_full((segments, values.shape[1]), start).scatter_reduce(
        0, index[:, None].expand(-1, values.shape[1]), values, reduce=op, include_self=False
    )
    filled = torch.bincount(index, minlength=segments) > 0
    return torch.where(filled[:, None], out, torch.zeros_like(out))


def _random_cloud(n: int, seed: int, extent: float = 1.0, classes: int = 3):
    g = seeded(seed)
    points = torch.rand((n, 3), generator=g) * extent - extent / 3
    labels = torch.randint(-1, classes, (n,), generator=g)
    return points, labels


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("n", [0, 1, 7, 3000])
def test_reference_voxelize_matches_numpy_unique(n: int) -> None:
    coords = torch.randint(-5, 6, (n, 3), generator=seeded(n))
    voxels, inverse = reference.voxelize(coords)
    rows = coords.numpy().reshape(-1, 3)
    expected, expected_inverse = np.unique(rows, axis=0, return_inverse=True)
    assert np.array_equal(voxels.numpy().reshape(-1, 3), expected)
    assert np.array_equal(inverse.numpy(), expected_inverse.reshape(-1))


def test_reference_voxelize_huge_extent_falls_back_exactly() -> None:
    coords = torch.tensor([[2**40, 0, -(2**40)], [-(2**40), 5, 3], [2**40, 0, -(2**40)]])
    voxels, inverse = reference.voxelize(coords)
    assert voxels.tolist() == sorted(map(list, {tuple(c) for c in coords.tolist()}))
    assert torch.equal(voxels[inverse], coords)


@pytest.mark.parametrize("reduce", ["mean", "amax"])
def test_reference_scatter_matches_torch_scatter_reduce(reduce: str) -> None:
    g = seeded(3)
    values = torch.randn((500, 4), generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 40, (500,), generator=g)
    index[index == 7] = 8  # segment 7 stays empty
    fn = reference.scatter_mean if reduce == "mean" else reference.scatter_max
    out = fn(values, index, 45)
    expected = _torch_scatter(values, index, 45, reduce)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert torch.all(out[7] == 0) and torch.all(out[40:] == 0)
    weights = torch.randn((45, 4), generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * weights).sum(), values)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), values)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "n,extent,radius", [(0, 1.0, 0.1), (1, 1.0, 0.1), (600, 1.0, 0.08), (1500, 3.0, 0.12)]
)
def test_reference_components_match_brute_force(n: int, extent: float, radius: float) -> None:
    points, labels = _random_cloud(n, seed=n, extent=extent)
    got = reference.connected_components(points, labels, radius)
    assert np.array_equal(got.numpy(), _oracle_components(points.numpy(), labels.numpy(), radius))


def test_reference_components_distance_equal_to_radius_links() -> None:
    # Integer grid, radius 1: axis neighbours are exactly at the radius and must be linked.
    axis = torch.arange(4, dtype=torch.float32)
    points = torch.cartesian_prod(axis, axis, torch.zeros(1))
    labels = torch.zeros(len(points), dtype=torch.int64)
    labels[5] = 1  # a different class splits it from its neighbours
    got = reference.connected_components(points, labels, 1.0)
    expected = _oracle_components(points.numpy(), labels.numpy(), 1.0)
    assert np.array_equal(got.numpy(), expected)
    assert got.max().item() == 1


def test_reference_components_long_chain_and_identical_points() -> None:
    # A zig-zag chain crossing many cells (needs many propagation rounds) plus a blob of
    # 20k identical points (would be 4e8 pairs without the same-cell shortcut).
    t = torch.arange(400, dtype=torch.float64)
    chain = torch.stack((t * 0.05, (t % 2) * 0.03, torch.zeros_like(t)), 1)
    blob = torch.full((20000, 3), 50.0, dtype=torch.float64)
    points = torch.cat((blob[:1], chain.flip(0), blob[1:]))
    labels = torch.zeros(len(points), dtype=torch.int64)
    got = reference.connected_components(points, labels, 0.06)
    assert got[0].item() == 0 and torch.all(got[401:] == 0)
    assert torch.all(got[1:401] == 1)


def test_reference_components_all_excluded() -> None:
    points = torch.zeros((5, 3))
    labels = torch.full((5,), -1)
    assert torch.equal(reference.connected_components(points, labels, 0.5), torch.full((5,), -1))


def test_reference_mask_iou_and_nms_match_oracles() -> None:
    g = seeded(11)
    masks = torch.rand((30, 200), generator=g) < torch.rand((30, 1), generator=g)
    masks[3] = False
    masks[4] = False
    masks[9] = masks[2]
    iou = reference.mask_iou(masks)
    m = masks.numpy()
    for i in range(30):
        for j in range(30):
            union = np.logical_or(m[i], m[j]).sum()
            expected = np.logical_and(m[i], m[j]).sum() / union if union else 0.0
            assert abs(iou[i, j].item() - expected) < 1e-6
    scores = torch.randint(0, 5, (30,), generator=g).to(torch.float32)  # many ties
    for threshold in (0.0, 0.3, 0.7):
        kept = reference.mask_nms(masks, scores, threshold)
        assert kept.tolist() == _oracle_nms(m, scores.numpy(), threshold)


# ----------------------------------------------------------------------------- validation


_BOOL_MASKS = torch.zeros((2, 3), dtype=torch.bool)
_NAN_POINT = torch.tensor([[0.0, 0.0, float("nan")]])
_ZERO_LABELS = torch.zeros(2, dtype=torch.int64)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.voxelize(torch.zeros((4, 3))), "integer"),
        (lambda: ops.voxelize(torch.zeros((4, 2), dtype=torch.int64)), r"\(N, 3\)"),
        (lambda: ops.scatter_mean(torch.zeros((3, 2)), torch.tensor([0, 1, 5]), 5), r"\[0, 5"),
        (lambda: ops.scatter_max(torch.zeros((3, 2)), torch.tensor([0, 1]), 5), "shape"),
        (lambda: ops.scatter_mean(torch.zeros(3), torch.tensor([0, 1, 2]), 5), r"\(N, C\)"),
        (lambda: ops.scatter_mean(torch.zeros((1, 2)), torch.tensor([0]), -1), "num_segm"),
        (lambda: ops.connected_components(torch.zeros((2, 3)), torch.zeros(2), 0.1), "integ"),
        (lambda: ops.connected_components(torch.zeros((2, 3)), _ZERO_LABELS, 0.0), "radius"),
        (lambda: ops.connected_components(_NAN_POINT, _ZERO_LABELS[:1], 0.1), "finite"),
        (lambda: ops.mask_iou(torch.zeros((2, 3))), "bool"),
        (lambda: ops.mask_nms(_BOOL_MASKS, torch.zeros(3), 0.5), "scores"),
        (lambda: ops.mask_nms(_BOOL_MASKS, torch.tensor([0.5, torch.nan]), 0.5), "finite"),
        (lambda: ops.mask_nms(_BOOL_MASKS, torch.zeros(2), float("nan")), "iou_threshold"),
        (lambda: ops.mask_iou(_BOOL_MASKS, backend="gpu"), "backend"),
    ],
)
def test_bad_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_connected_components_accept_non_finite_points_that_are_excluded(backend: str) -> None:
    """Only points with a label >= 0 must be finite: a NaN row labelled -1 (dropped by the
    caller) is skipped, gets -1, and leaves the other components alone."""
    nan = float("nan")
    points = torch.tensor([[0.0, 0.0, 0.0], [nan, 0.0, 0.0], [0.05, 0.0, 0.0], [5.0, 0, 0]])
    labels = torch.tensor([2, -1, 2, 2])
    got = ops.connected_components(points, labels, 0.1, backend=backend)
    assert got.tolist() == [0, -1, 0, 1]


def test_backend_info_reports_each_device() -> None:
    info = ops.backend_info()
    for device_type in ("cpu", "cuda"):
        assert isinstance(info[device_type]["native"], bool)
        assert info[device_type]["reason"]
    assert info["cpu"]["native"] == ops.native_available("cpu")


def test_native_backend_errors_clearly_when_missing() -> None:
    if ops.native_available("cpu"):
        pytest.skip("native cpu kernels are built; the missing-build error cannot occur")
    with pytest.raises(RuntimeError, match="native backend unavailable"):
        ops.mask_iou(torch.zeros((2, 3), dtype=torch.bool), backend="native")


def test_core_ops_run_without_dyco_ops_installed() -> None:
    """The core needs only torch: with dyco_ops not importable, every op runs on its PyTorch
    implementation and a request for native kernels names the missing package."""
    probe = """
import sys; sys.modules["dyco_ops"] = None  # as if not installed
import torch
from dyco_perception import ops
info = ops.backend_info()
assert not info["cpu"]["native"] and "dyco_ops not installed" in info["cpu"]["reason"], info
voxels, inverse = ops.voxelize(torch.tensor([[0, 0, 1], [0, 0, 1], [2, 0, 0]]))
assert voxels.tolist() == [[0, 0, 1], [2, 0, 0]] and inverse.tolist() == [0, 0, 1]
try:
    ops.mask_iou(torch.ones((2, 3), dtype=torch.bool), backend="native")
except RuntimeError as err:
    assert "dyco_ops not installed" in str(err), err
else:
    raise AssertionError("backend='native' did not fail")
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def _op_calls() -> dict[str, Callable[[str], object]]:
    """Each public op on a small valid input, by the name of its reference and native function."""
    g = seeded(7)
    xyz = torch.rand(40, 3, generator=g)
    batch = torch.tensor([0] * 20 + [1] * 20)
    values = torch.rand(40, 2, generator=g, dtype=torch.float64)
    index = torch.randint(0, 5, (40,), generator=g)
    masks = torch.rand(4, 30, generator=g) > 0.5
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    boxes = torch.cat((torch.rand(3, 3, generator=g), 1 + torch.rand(3, 3, generator=g)), 1)
    heat = torch.rand(40, generator=g, dtype=torch.float64)
    every = torch.ones(40, dtype=torch.bool)
    return {
        "voxelize": lambda b: ops.voxelize((xyz * 4).long(), backend=b),
        "scatter_mean": lambda b: ops.scatter_mean(values, index, 5, backend=b),
        "scatter_max": lambda b: ops.scatter_max(values, index, 5, backend=b),
        "connected_components": lambda b: ops.connected_components(xyz, batch, 0.3, backend=b),
        "mask_iou": lambda b: ops.mask_iou(masks, backend=b),
        "mask_nms": lambda b: ops.mask_nms(masks, scores, 0.5, backend=b),
        "furthest_point_sample": lambda b: ops.furthest_point_sample(xyz, batch, 4, backend=b),
        "ball_query": lambda b: ops.ball_query(xyz[:5], batch[:5], xyz, batch, 0.3, 4, backend=b),
        "box_iou_3d": lambda b: ops.box_iou_3d(boxes, boxes, backend=b),
        "otsu_threshold": lambda b: ops.otsu_threshold(heat, index, 5, backend=b),
        "ln_nms": lambda b: ops.ln_nms(xyz, batch, heat, every, 0.3, 0.5, 3, backend=b),
    }


def test_each_backend_runs_the_implementation_it_names(monkeypatch) -> None:
    """Backend "torch" runs the reference and never the native kernel; "native" and "auto"
    (native cpu kernels loaded) run the kernel and give the reference's result. Both are the
    real functions, wrapped to count their calls."""
    native_or_skip("cpu")
    from dyco_perception.ops import dispatch

    module = dispatch._native_module(torch.device("cpu"))
    calls: list[tuple[str, str]] = []

    def counted(kind: str, owner: object, name: str) -> None:
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls.append((kind, name))
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    ops_by_name = _op_calls()
    for name in ops_by_name:
        counted("reference", reference, name)
        counted("native", module, name)
    for name, call in ops_by_name.items():
        results = {}
        for backend, kind in (("torch", "reference"), ("native", "native"), ("auto", "native")):
            calls.clear()
            results[backend] = call(backend)
            assert (kind, name) in calls and {k for k, _ in calls} == {kind}, (backend, calls)
        for backend in ("native", "auto"):
            torch.testing.assert_close(results[backend], results["torch"])
    # An int32 index is widened for the kernels.
    values, index = torch.rand(6, 2, generator=seeded(1)), torch.tensor([0, 1, 1, 2, 2, 2])
    for op in (ops.scatter_mean, ops.scatter_max):
        expected = op(values, index, 3, backend="torch")
        torch.testing.assert_close(op(values, index.int(), 3, backend="native"), expected)
    # No segments and no rows is a valid, empty input.
    for op in (ops.scatter_mean, ops.scatter_max):
        assert op(torch.zeros((0, 2)), torch.zeros(0, dtype=torch.int64), 0).shape == (0, 2)
    # Float types the kernels lack (float16) take the reference under "auto"; "native" refuses.
    half = torch.rand(6, 2, generator=seeded(1)).half()
    segment = torch.tensor([0, 1, 1, 2, 2, 2])
    for op in (ops.scatter_mean, ops.scatter_max):
        calls.clear()
        op(half, segment, 3, backend="auto")
        assert ("reference", op.__name__) in calls and ("native", op.__name__) not in calls
        with pytest.raises(RuntimeError, match="dtype not supported by native kernels"):
            op(half, segment, 3, backend="native")


def test_mask_nms_without_the_fused_kernel_keeps_the_tie_rule(monkeypatch) -> None:
    """Builds without a fused mask_nms (native IoU, greedy pass on the host) keep the rule of
    the others: equal scores in index order."""
    native_or_skip("cpu")
    from dyco_perception.ops import dispatch

    monkeypatch.delattr(dispatch._native_module(torch.device("cpu")), "mask_nms")
    g = seeded(5)
    masks = torch.rand(40, 30, generator=g) > 0.3  # heavy overlaps: the order decides
    scores = torch.full((40,), 0.5)
    scores[::7] = 0.9
    kept = ops.mask_nms(masks, scores, 0.3, backend="native")
    assert kept.tolist() == _oracle_nms(masks.numpy(), scores.numpy(), 0.3)


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_connected_components_of_float64_points_link_in_float64(backend: str) -> None:
    """Points 1 km out, gaps of radius -+ 1e-7 m alternately: float64 links the pairs split by
    the shorter gaps; in float32 (spacing 6e-5 m there) every gap would be some other length."""
    if backend == "native":
        native_or_skip("cpu")
    gaps = 0.1 + 1e-7 * np.tile([-1, 1], 10)[:-1]
    x = 1000.0 + np.concatenate([[0.0], np.cumsum(gaps)])
    points = torch.from_numpy(np.column_stack([x, np.zeros_like(x), np.zeros_like(x)]))
    labels = torch.zeros(len(x), dtype=torch.int64)
    got = ops.connected_components(points, labels, 0.1, backend=backend)
    assert got.tolist() == np.repeat(np.arange(10), 2).tolist()


def test_a_cpu_kernel_missing_from_the_build_is_named(monkeypatch) -> None:
    native_or_skip("cpu")
    from dyco_ops import native

    assert ops.cpu_kernel_missing("subm_conv3d") is None
    monkeypatch.delattr(native.load("dyco_ops_cpu").module, "subm_conv3d")
    assert ops.cpu_kernel("subm_conv3d") is None
    assert ops.cpu_kernel_missing("subm_conv3d") == "the build has no subm_conv3d (rebuild)"


# ----------------------------------------------------------------------------- native vs reference

SIZES = [0, 1, 2, 500, 8000]


def _assert_same_ints(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == torch.int64 and got.device == expected.device
    assert torch.equal(got.cpu(), expected.cpu())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
def test_native_voxelize_matches_reference(device: str, n: int) -> None:
    native_or_skip(device)
    g = seeded(n)
    for coords in (
        torch.randint(-50, 50, (n, 3), generator=g),
        torch.randint(-(2**45), 2**45, (n, 3), generator=g) // 7 * 7,  # huge extent
    ):
        coords = coords.to(device)
        got_voxels, got_inverse = ops.voxelize(coords, backend="native")
        voxels, inverse = ops.voxelize(coords, backend="torch")
        _assert_same_ints(got_voxels, voxels)
        _assert_same_ints(got_inverse, inverse)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", ["mean", "amax"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_scatter_matches_torch(device: str, n: int, op: str, dtype: torch.dtype) -> None:
    native_or_skip(device)
    g = seeded(n)
    segments = max(n // 5, 3)
    # Integer-valued floats in half of the columns create ties for the max gradient.
    values = torch.randn((n, 6), generator=g, dtype=dtype)
    values[:, 3:] = values[:, 3:].mul(2).round()  # includes exact zeros
    values = values.to(device).requires_grad_(True)
    index = torch.randint(0, segments, (n,), generator=g).to(device)
    fn = ops.scatter_mean if op == "mean" else ops.scatter_max
    got = fn(values, index, segments + 2, backend="native")
    expected = _torch_scatter(values, index, segments + 2, op)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, fn(values, index, segments + 2, backend="torch"))
    weights = torch.randn(expected.shape, generator=g, dtype=dtype).to(device)
    if n == 0:
        return
    (grad,) = torch.autograd.grad((got * weights).sum(), values)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), values)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)


def _components_cases(n: int) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    points, labels = _random_cloud(n, seed=n, extent=2.0, classes=4)
    same = torch.full((n, 3), -3.25)
    return [
        (points, labels, 0.05),
        (points.double(), labels, 0.2),
        (same, torch.zeros(n, dtype=torch.int64), 0.01),
        (torch.round(points * 10) / 10, labels.abs(), 0.1),  # many exact-radius pairs
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
def test_native_connected_components_matches_reference(device: str, n: int) -> None:
    native_or_skip(device)
    for points, labels, radius in _components_cases(n):
        points, labels = points.to(device), labels.to(device)
        got = ops.connected_components(points, labels, radius, backend="native")
        expected = ops.connected_components(points, labels, radius, backend="torch")
        _assert_same_ints(got, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k,n", [(0, 10), (1, 0), (1, 1), (40, 70), (120, 5000)])
def test_native_mask_iou_and_nms_match_reference(device: str, k: int, n: int) -> None:
    native_or_skip(device)
    g = seeded(k * 1000 + n)
    masks = torch.rand((k, n), generator=g) < torch.rand((k, 1), generator=g)
    if k > 3:
        masks[1] = False
        masks[3] = masks[0]
    scores = torch.randint(0, 6, (k,), generator=g).float()
    masks, scores = masks.to(device), scores.to(device)
    iou = ops.mask_iou(masks, backend="native")
    assert iou.dtype == torch.float32 and iou.device == masks.device
    torch.testing.assert_close(iou, ops.mask_iou(masks, backend="torch"), rtol=0, atol=1e-6)
    for threshold in (0.0, 0.25, 0.5, 1.0):
        got = ops.mask_nms(masks, scores, threshold, backend="native")
        _assert_same_ints(got, ops.mask_nms(masks, scores, threshold, backend="torch"))


@pytest.mark.parametrize("device", DEVICES)
def test_native_ops_on_real_scan(device: str) -> None:
    scans = sorted(SCANS.glob("*.npz"))
    if not scans:
        pytest.skip(f"real scans not found under {SCANS}")
    native_or_skip(device)
    scan = np.load(scans[0])
    xyz = torch.from_numpy(scan["xyz"]).to(device)
    rgb = torch.from_numpy(scan["rgb"].astype(np.float32) / 127.5 - 1).to(device)
    semantic = torch.from_numpy(scan["sem_nyu40"].astype(np.int64)).to(device) - 1  # 0 -> -1
    instance = torch.from_numpy(scan["instance"].astype(np.int64)).to(device)

    coords = torch.floor(xyz / 0.02).long()
    voxels, inverse = ops.voxelize(coords, backend="native")
    ref_voxels, ref_inverse = ops.voxelize(coords, backend="torch")
    _assert_same_ints(voxels, ref_voxels)
    _assert_same_ints(inverse, ref_inverse)
    for fn in (ops.scatter_mean, ops.scatter_max):
        got = fn(rgb, inverse, len(voxels), backend="native")
        torch.testing.assert_close(got, fn(rgb, inverse, len(voxels), backend="torch"))

    components = ops.connected_components(xyz, semantic, 0.03, backend="native")
    _assert_same_ints(components, ops.connected_components(xyz, semantic, 0.03, "torch"))

    masks = instance[None, :] == torch.unique(instance)[:, None]
    scores = torch.rand(len(masks), generator=seeded(5)).to(device)
    iou = ops.mask_iou(masks, backend="native")
    torch.testing.assert_close(iou, ops.mask_iou(masks, backend="torch"), rtol=0, atol=1e-6)
    # Overlapping candidates: instance masks unioned with random other instances.
    merged = masks | masks[torch.randperm(len(masks), generator=seeded(6)).to(device)]
    kept = ops.mask_nms(merged, scores, 0.3, backend="native")
    _assert_same_ints(kept, ops.mask_nms(merged, scores, 0.3, backend="torch"))


# ----------------------------------------------------------------------------- CUDA sources


def test_cuda_sources_compile_with_nvcc() -> None:
    check_cuda = pytest.importorskip("dyco_ops.check_cuda", reason="dyco_ops not installed")

    if check_cuda.find_nvcc() is None:
        pytest.skip("nvcc not found (no CUDA toolkit): the .cu compile check cannot run here")
    check_cuda.check(cu_only=True)  # raises RuntimeError with nvcc's output on failure


def test_native_sources_build_error_messages_without_iostreams() -> None:
    """Kernel errors go through DYCO_CHECK (check.h). TORCH_CHECK formats its message with an
    ostringstream compiled into our library, which crashed the process on the GPU machine
    instead of raising; this keeps it (and any other stream formatting) out of the sources."""
    from pathlib import Path

    csrc = Path(__file__).resolve().parents[1] / "cuda_ops" / "dyco_ops" / "csrc"
    banned = ("TORCH_CHECK", "AT_ERROR", "c10::str(", "stringstream", "<sstream>", "<iostream>")
    sources = sorted(p for p in csrc.iterdir() if p.suffix in (".h", ".cpp", ".cu"))
    assert len(sources) > 5
    found = [
        f"{p.name}: {word}"
        for p in sources
        if p.name != "check.h"
        for word in banned
        if word in p.read_text()
    ]
    assert found == []
