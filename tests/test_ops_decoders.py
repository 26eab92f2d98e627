"""Decoder ops (FPS, ball query, 3D box IoU / GIoU, Otsu, LN-NMS): the pure-PyTorch references
vs hand-computed cases and plain-loop oracles, the native kernels (dyco_ops) vs the references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dyco_perception.ops import reference
from native_ops import DEVICES, native_or_skip, seeded

from dyco_perception import ops


def _line(xs: list[float]) -> torch.Tensor:
    x = torch.tensor(xs, dtype=torch.float32)
    return torch.stack((x, torch.zeros_like(x), torch.zeros_like(x)), 1)


def _grid_cloud(n: int, seed: int, scenes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on a coarse integer grid (many exact distance ties), unsorted scene ids."""
    g = seeded(seed)
    xyz = torch.randint(0, 6, (n, 3), generator=g).float() * 0.5
    batch = torch.randint(0, scenes, (n,), generator=g) * 3 + 1  # ids 1, 4, 7: not 0..S-1
    return xyz, batch


def _d2(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float64) - b.astype(np.float64)
    return float(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])


# ----------------------------------------------------------------------------- oracles


def _oracle_fps(xyz, batch, num_samples, valid) -> list[int]:
    out: list[int] = []
    for scene in sorted(set(batch.tolist())):
        rows = [i for i in range(len(xyz)) if batch[i] == scene and valid[i]]
        if not rows or num_samples == 0:
            continue
        chosen = [rows[0]]
        while len(chosen) < min(num_samples, len(rows)):
            best, best_d = -1, -1.0
            for r in rows:
                if r in chosen:
                    continue
                d = min(_d2(xyz[r], xyz[c]) for c in chosen)
                if d > best_d:
                    best, best_d = r, d
            chosen.append(best)
        out += chosen
    return out


def _oracle_ball(qxyz, qbatch, xyz, batch, radius, k) -> tuple[list, list]:
    neighbours, counts = [], []
    for q in range(len(qxyz)):
        hits = [
            i
            for i in range(len(xyz))
            if batch[i] == qbatch[q] and _d2(qxyz[q], xyz[i]) <= radius * radius
        ][:k]
        counts.append(len(hits))
        neighbours.append(hits + [-1] * (k - len(hits)))
    return neighbours, counts


def _oracle_otsu(values, segment, num_segments, bins) -> list[float]:
    out = []
    for s in range(num_segments):
        levels = [min(int(np.floor(float(v) * bins)), bins - 1) for v in values[segment == s]]
        best, best_var = None, 0.0
        for split in range(1, bins):
            low = [q for q in levels if q < split]
            high = [q for q in levels if q >= split]
            if not low or not high:
                continue
            w0, w1 = len(low) / len(levels), len(high) / len(levels)
            var = w0 * w1 * (np.mean(low) - np.mean(high)) ** 2
            if var > best_var * (1 + 1e-12):
                best, best_var = split, var
        out.append(0.5 if best is None else best / bins)
    return out


def _oracle_ln_nms(xyz, batch, heat, available, radius, threshold, max_c) -> list[int]:
    out: list[int] = []
    for scene in sorted(set(batch.tolist())):
        rows = [i for i in range(len(xyz)) if batch[i] == scene]
        avail = {i for i in rows if available[i]}
        accepted: list[int] = []
        while len(accepted) < max_c and avail:
            q = min(avail, key=lambda i: (-float(heat[i]), i))
            near = [i for i in rows if _d2(xyz[i], xyz[q]) < radius * radius]
            avail -= set(near)
            top = max(float(heat[i]) for i in near)
            if top > 0 and float(heat[q]) / top >= threshold:
                accepted.append(q)
        out += accepted
    return out


# ----------------------------------------------------------------------------- FPS


def test_fps_on_a_line_picks_the_ends_first_then_ties_lowest_row() -> None:
    xyz = _line([0.0, 1.0, 2.0, 3.0, 10.0])
    batch = torch.zeros(5, dtype=torch.int64)
    # 0 first (lowest row), 10 is farthest, then 3; rows 1 and 2 then tie at 1 -> row 1.
    assert ops.furthest_point_sample(xyz, batch, 5, backend="torch").tolist() == [0, 4, 3, 1, 2]
    assert ops.furthest_point_sample(xyz, batch, 2, backend="torch").tolist() == [0, 4]
    assert ops.furthest_point_sample(xyz, batch, 0, backend="torch").tolist() == []


def test_fps_scenes_valid_and_duplicates() -> None:
    xyz = _line([5.0, 0.0, 0.0, 9.0, 1.0, 0.0, 7.0])
    batch = torch.tensor([3, 3, 1, 3, 1, 3, 1])
    valid = torch.tensor([False, True, True, True, True, True, True])
    got = ops.furthest_point_sample(xyz, batch, 3, valid, backend="torch")
    # Scene 1 (rows 2, 4, 6) first; scene 3 without row 0: 1, then 3, then duplicate row 5.
    assert got.tolist() == [2, 6, 4, 1, 3, 5]
    got = ops.furthest_point_sample(xyz, batch, 10, valid, backend="torch")
    assert got.tolist() == [2, 6, 4, 1, 3, 5]  # capped at each scene's count, no repeats


@pytest.mark.parametrize("n,num_samples", [(1, 3), (40, 7), (90, 200)])
def test_reference_fps_matches_oracle(n: int, num_samples: int) -> None:
    xyz, batch = _grid_cloud(n, seed=n)
    valid = torch.rand(n, generator=seeded(n + 1)) < 0.8
    got = reference.furthest_point_sample(xyz, batch, num_samples, valid)
    assert got.tolist() == _oracle_fps(xyz.numpy(), batch.numpy(), num_samples, valid.numpy())


# ----------------------------------------------------------------------------- ball query


def test_ball_query_radius_boundary_padding_scenes_and_row_order() -> None:
    xyz = _line([0.0, 3.0, 1.0, 2.0, 0.5, 0.0])
    batch = torch.tensor([0, 0, 0, 0, 0, 1])  # row 5 sits on the query but in scene 1
    query = _line([0.0, 0.0])
    query_batch = torch.tensor([0, 1])
    nb, count = ops.ball_query(query, query_batch, xyz, batch, 1.0, 4, backend="torch")
    # d2 == r^2 (row 2, at distance exactly 1) is inside; rows in ascending order.
    assert nb.tolist() == [[0, 2, 4, -1], [5, -1, -1, -1]]
    assert count.tolist() == [3, 1]
    nb, count = ops.ball_query(query, query_batch, xyz, batch, 0.999, 4, backend="torch")
    assert nb[0].tolist() == [0, 4, -1, -1] and count.tolist() == [2, 1]
    nb, count = ops.ball_query(query, query_batch, xyz, batch, 5.0, 2, backend="torch")
    assert nb.tolist() == [[0, 1], [5, -1]] and count.tolist() == [2, 1]  # first k by row
    nb, _ = ops.ball_query(query, torch.tensor([0, 2]), xyz, batch, 5.0, 2, backend="torch")
    assert nb[1].tolist() == [-1, -1]  # a scene without points


def test_reference_ball_query_matches_oracle() -> None:
    xyz, batch = _grid_cloud(120, seed=4)
    qxyz, qbatch = _grid_cloud(30, seed=5, scenes=4)  # scene id 10 has no points
    for radius, k in ((0.5, 5), (1.0, 40), (0.7071068, 3)):
        nb, count = reference.ball_query(qxyz, qbatch, xyz, batch, radius, k)
        exp_nb, exp_count = _oracle_ball(
            qxyz.numpy(), qbatch.numpy(), xyz.numpy(), batch.numpy(), radius, k
        )
        assert nb.tolist() == exp_nb and count.tolist() == exp_count


# ----------------------------------------------------------------------------- box IoU


def test_box_iou_nested_disjoint_touching_partial_and_empty() -> None:
    a = torch.tensor([[0.0, 0, 0, 2, 2, 2]])
    b = torch.tensor(
        [
            [0.5, 0.5, 0.5, 1.5, 1.5, 1.5],  # nested: 1 / 8
            [3.0, 0, 0, 4, 2, 2],  # disjoint
            [2.0, 0, 0, 4, 2, 2],  # touching face
            [1.0, 0, 0, 3, 2, 2],  # half overlap: 4 / 12
            [0.0, 0, 0, 2, 2, 2],  # identical
            [1.0, 1, 1, 1, 1, 1],  # zero volume inside a
        ]
    )
    iou = ops.box_iou_3d(a, b, backend="torch")
    assert iou.shape == (1, 6) and iou.dtype == torch.float32
    torch.testing.assert_close(iou[0], torch.tensor([1 / 8, 0, 0, 1 / 3, 1, 0]))
    torch.testing.assert_close(ops.box_iou_3d(b, a, backend="torch"), iou.T)
    empty = torch.tensor([[1.0, 1, 1, 1, 1, 1]])
    assert ops.box_iou_3d(empty, empty, backend="torch").item() == 0.0  # union 0 -> 0


def test_generalized_box_iou_values_and_gradients() -> None:
    a = torch.tensor(
        [[0.0, 0, 0, 1, 1, 1], [0, 0, 0, 2, 2, 2], [0, 0, 0, 2, 2, 2], [1, 1, 1, 1, 1, 1]],
        dtype=torch.float64,
        requires_grad=True,
    )
    b = torch.tensor(
        [
            [2.0, 0, 0, 3, 1, 1],
            [0.5, 0.5, 0.5, 1.5, 1.5, 1.5],
            [1, 0, 0, 3, 2, 2],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.float64,
    )
    giou = ops.generalized_box_iou_3d(a, b)
    # Disjoint: 0 - (3 - 2) / 3; nested: IoU (hull = union); half overlap: 1/3 - 0; empty: 0.
    torch.testing.assert_close(giou, torch.tensor([-1 / 3, 1 / 8, 1 / 3, 0.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(giou.sum(), a)
    assert torch.isfinite(grad).all() and grad[0].abs().sum() > 0
    boxes = torch.rand((5, 6), generator=seeded(2), dtype=torch.float64)
    lo, hi = boxes[:, :3], boxes[:, :3] + 0.2 + boxes[:, 3:]
    other = torch.cat((lo + 0.1, hi + 0.05), 1)
    assert torch.autograd.gradcheck(
        ops.generalized_box_iou_3d, (torch.cat((lo, hi), 1).requires_grad_(), other)
    )


# ----------------------------------------------------------------------------- Otsu


def test_otsu_bimodal_hand_computed_and_tie_rules() -> None:
    g = seeded(0)
    low = 0.2 + 0.05 * torch.rand(50, generator=g)
    high = 0.75 + 0.05 * torch.rand(30, generator=g)
    values = torch.cat((low, high, torch.tensor([0.2, 0.2, 0.8, 0.8, 0.4, 0.4])))
    segment = torch.tensor([0] * 80 + [1, 1, 1, 1, 3, 3])
    thr = ops.otsu_threshold(values, segment, 5, backend="torch")
    # Every split between the top low level and the bottom high level ties: the smallest wins.
    top_low = torch.floor(low.double() * 100).max().item()
    assert thr[0].item() == pytest.approx((top_low + 1) / 100) and thr[0].item() < 0.75
    # Levels 20 and 80 only: every split 21..80 ties; the smallest wins.
    assert thr[1].item() == pytest.approx(0.21)
    assert thr[2].item() == 0.5 and thr[3].item() == 0.5 and thr[4].item() == 0.5
    # Levels {0, 1, 9, 9} on 10 bins: split 2 (variance 18.06) beats split 1 (7.52).
    values = torch.tensor([0.0, 0.1, 0.95, 1.0], dtype=torch.float64)  # 1.0 -> level 9
    thr = ops.otsu_threshold(values, torch.zeros(4, dtype=torch.int64), 1, bins=10)
    assert thr.dtype == torch.float64 and thr.tolist() == [0.2]


def test_reference_otsu_matches_oracle() -> None:
    g = seeded(6)
    segment = torch.randint(0, 12, (400,), generator=g)
    values = torch.rand(400, generator=g) ** (1 + segment.float() / 3)  # skews differ
    values[segment == 5] = 0.5
    values[:7] = 1.0
    for bins in (2, 17, 100):
        got = reference.otsu_threshold(values, segment, 13, bins)
        expected = _oracle_otsu(values.numpy(), segment.numpy(), 13, bins)
        assert got.tolist() == pytest.approx(expected, abs=1e-7)


# ----------------------------------------------------------------------------- LN-NMS


def test_ln_nms_peaks_shoulder_and_boundary() -> None:
    # Peaks at 0 and 5 (5 is farther than the radius); a shoulder at 1.5 whose
    # neighbourhood holds the higher, already suppressed point at 0.8.
    xyz = _line([0.0, 0.8, 1.5, 5.0, 6.0])
    batch = torch.zeros(5, dtype=torch.int64)
    heat = torch.tensor([1.0, 0.9, 0.5, 0.7, 0.3])
    avail = torch.ones(5, dtype=torch.bool)
    got = ops.ln_nms(xyz, batch, heat, avail, 1.0, 0.6, 10, backend="torch")
    # 0 (suppresses 0.8), 5 (the point at 6.0 is exactly at the radius: still available),
    # 1.5 rejected (0.5 / 0.9 < 0.6), 6.0 accepted (0.3 / 0.3).
    assert got.tolist() == [0, 3, 4]
    got = ops.ln_nms(xyz, batch, heat, avail, 1.0, 0.5, 10, backend="torch")
    assert got.tolist() == [0, 3, 2, 4]  # 0.5 / 0.9 >= 0.5 now
    assert ops.ln_nms(xyz, batch, heat, avail, 1.0, 0.5, 2, backend="torch").tolist() == [0, 3]
    avail[0] = False  # never picked, but its heat still normalises its neighbours
    got = ops.ln_nms(xyz, batch, heat, avail, 1.0, 0.95, 10, backend="torch")
    assert got.tolist() == [3, 4]


def test_ln_nms_scenes_are_independent_and_ordered_by_id() -> None:
    xyz = _line([0.0, 0.0, 0.1, 0.1])
    batch = torch.tensor([5, 2, 5, 2])
    heat = torch.tensor([0.9, 0.2, 0.4, 0.3])
    got = ops.ln_nms(xyz, batch, heat, torch.ones(4, dtype=torch.bool), 1.0, 0.5, 1)
    assert got.tolist() == [3, 0]  # scene 2 first; scene 5's 0.9 does not suppress scene 2
    zero = torch.zeros(4)
    assert ops.ln_nms(xyz, batch, zero, torch.ones(4, dtype=torch.bool), 1.0, 0.0, 3).numel() == 0


def test_reference_ln_nms_matches_oracle() -> None:
    xyz, batch = _grid_cloud(150, seed=8)
    g = seeded(9)
    heat = torch.randint(0, 8, (150,), generator=g).float() / 7  # ties and zeros
    avail = torch.rand(150, generator=g) < 0.85
    for radius, threshold, max_c in ((0.6, 0.5, 100), (1.1, 0.9, 4), (0.3, 1.0, 100)):
        got = reference.ln_nms(xyz, batch, heat, avail, radius, threshold, max_c)
        expected = _oracle_ln_nms(
            xyz.numpy(), batch.numpy(), heat.numpy(), avail.numpy(), radius, threshold, max_c
        )
        assert got.tolist() == expected


# ----------------------------------------------------------------------------- validation

_XYZ = torch.zeros((3, 3))
_B = torch.zeros(3, dtype=torch.int64)
_T = torch.ones(3, dtype=torch.bool)
_BOX = torch.zeros((2, 6))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.furthest_point_sample(torch.zeros((3, 2)), _B, 2), r"\(N, 3\)"),
        (lambda: ops.furthest_point_sample(_XYZ, _B.float(), 2), "batch must be an integer"),
        (lambda: ops.furthest_point_sample(_XYZ, _B, -1), "num_samples"),
        (lambda: ops.furthest_point_sample(_XYZ, _B, 2, _B), "valid must be a bool"),
        (lambda: ops.furthest_point_sample(_XYZ.int(), _B, 2), "floating"),
        (lambda: ops.furthest_point_sample(_XYZ + torch.nan, _B, 2), "xyz must be finite"),
        (lambda: ops.ball_query(_XYZ - torch.inf, _B, _XYZ, _B, 1.0, 2), "query_xyz must be fin"),
        (lambda: ops.ball_query(_XYZ, _B, _XYZ, _B, 0.0, 2), "radius"),
        (lambda: ops.ball_query(_XYZ, _B[:2], _XYZ, _B, 1.0, 2), r"query_batch must have shape"),
        (lambda: ops.ball_query(_XYZ, _B, _XYZ, _B, 1.0, -1), "max_neighbours"),
        (lambda: ops.box_iou_3d(_BOX, torch.zeros((2, 4))), r"\(K, 6\)"),
        (lambda: ops.box_iou_3d(_BOX.long(), _BOX), "floating"),
        (lambda: ops.box_iou_3d(_BOX, torch.full((1, 6), torch.inf)), "b must be finite"),
        (lambda: ops.generalized_box_iou_3d(_BOX, _BOX[:1]), "same shape"),
        (lambda: ops.otsu_threshold(torch.tensor([0.5, 1.5]), _B[:2], 1), r"\[0, 1\]"),
        (lambda: ops.otsu_threshold(torch.tensor([0.5]), _B[:1], 1, bins=1), "bins"),
        (lambda: ops.otsu_threshold(torch.tensor([0.5]), _B[:1] + 1, 1), "segment values"),
        (lambda: ops.ln_nms(_XYZ, _B, torch.ones(3), _B, 1.0, 0.5, 3), "available"),
        (lambda: ops.ln_nms(_XYZ, _B, torch.full((3,), torch.nan), _T, 1.0, 0.5, 3), "finite"),
        (lambda: ops.ln_nms(_XYZ, _B, torch.ones(3), _T, 1.0, float("inf"), 3), "threshold"),
        (lambda: ops.ln_nms(_XYZ, _B, torch.ones(3), _T, 1.0, 0.5, 3, backend="x"), "backend"),
    ],
)
def test_bad_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- native vs reference

SIZES = [1, 2, 300, 3000]


def _assert_same_ints(got: torch.Tensor, expected: torch.Tensor) -> None:
    assert got.dtype == torch.int64 and got.device == expected.device
    assert torch.equal(got.cpu(), expected.cpu())


def _random_case(n: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Half grid points (exact ties), half continuous; unsorted scene ids."""
    xyz, batch = _grid_cloud(n, seed=n)
    noisy = torch.rand((n, 3), generator=seeded(n + 7), dtype=torch.float64) * 3
    xyz = torch.where(torch.arange(n)[:, None] % 2 == 0, xyz.double(), noisy)
    return xyz.to(device), batch.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
def test_native_fps_matches_reference(device: str, n: int) -> None:
    native_or_skip(device)
    xyz, batch = _random_case(n, device)
    valid = (torch.rand(n, generator=seeded(n)) < 0.9).to(device)
    for num_samples, mask in ((1, None), (64, valid), (n, valid)):
        got = ops.furthest_point_sample(xyz, batch, num_samples, mask, backend="native")
        expected = ops.furthest_point_sample(xyz, batch, num_samples, mask, backend="torch")
        _assert_same_ints(got, expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
def test_native_ball_query_matches_reference(device: str, n: int) -> None:
    native_or_skip(device)
    xyz, batch = _random_case(n, device)
    qxyz, qbatch = _random_case(max(n // 3, 1), device)
    qbatch[::5] = 13  # queries of a scene without points
    for radius, k in ((0.5, 8), (1.0, 64)):
        got = ops.ball_query(qxyz, qbatch, xyz, batch, radius, k, backend="native")
        expected = ops.ball_query(qxyz, qbatch, xyz, batch, radius, k, backend="torch")
        _assert_same_ints(got[0], expected[0])
        _assert_same_ints(got[1], expected[1])


@pytest.mark.parametrize("device", DEVICES)
def test_box_iou_of_float32_and_float64_boxes_is_float64_on_every_backend(device: str) -> None:
    """Like torch's arithmetic, mixed-precision boxes give the promoted dtype (the native
    kernel computes in float64 and must not round its answer to the first operand's dtype)."""
    native_or_skip(device)
    a = torch.tensor([[0.0, 0, 0, 3, 1, 1]], dtype=torch.float32, device=device)
    b = torch.tensor([[1.0, 0, 0, 4, 1, 1]], dtype=torch.float64, device=device)
    for backend in ("native", "torch"):
        got = ops.box_iou_3d(a, b, backend=backend)
        assert got.dtype == torch.float64
        assert got.item() == 0.5  # 2 / 4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_box_iou_matches_reference(device: str, dtype: torch.dtype) -> None:
    native_or_skip(device)
    g = seeded(12)
    corners = torch.randint(0, 5, (70, 2, 3), generator=g).to(dtype) * 0.5
    corners[:40] = torch.rand((40, 2, 3), generator=g).to(dtype)
    boxes = torch.cat((corners.amin(1), corners.amax(1)), 1).to(device)
    boxes[3] = boxes[3, [3, 4, 5, 0, 1, 2]]  # inverted: empty
    got = ops.box_iou_3d(boxes, boxes[:50], backend="native")
    expected = ops.box_iou_3d(boxes, boxes[:50], backend="torch")
    assert got.dtype == dtype and got.device == boxes.device
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bins", [2, 100])
def test_native_otsu_matches_reference(device: str, bins: int) -> None:
    native_or_skip(device)
    g = seeded(bins)
    segment = torch.randint(0, 40, (5000,), generator=g)
    values = torch.rand(5000, generator=g) ** (1 + segment.float() / 8)
    values[segment == 3] = 0.25
    values[::11] = torch.randint(0, 3, (values[::11].numel(),), generator=g) / 2  # 0, .5, 1
    values, segment = values.to(device), segment.to(device)
    got = ops.otsu_threshold(values, segment, 42, bins, backend="native")
    expected = ops.otsu_threshold(values, segment, 42, bins, backend="torch")
    assert got.dtype == values.dtype and got.device == values.device
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert got[40:].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
def test_native_ln_nms_matches_reference(device: str, n: int) -> None:
    native_or_skip(device)
    xyz, batch = _random_case(n, device)
    g = seeded(n + 3)
    heat = (torch.randint(0, 10, (n,), generator=g).float() / 9).to(device)
    heat[1::2] = torch.rand(n // 2, generator=g).to(device)
    avail = (torch.rand(n, generator=g) < 0.8).to(device)
    # 2**40: no buffer is sized by max_candidates alone.
    for radius, threshold, max_c in ((0.3, 0.5, 150), (0.8, 0.9, 5), (0.5, 0.0, 2**40)):
        got = ops.ln_nms(xyz, batch, heat, avail, radius, threshold, max_c, backend="native")
        expected = ops.ln_nms(xyz, batch, heat, avail, radius, threshold, max_c, backend="torch")
        _assert_same_ints(got, expected)


def test_a_build_without_an_op_falls_back_or_asks_for_a_rebuild(monkeypatch) -> None:
    """A native build older than an op (the module lacks the function): "auto" runs the
    reference, "native" says to rebuild."""
    native_or_skip("cpu")
    from dyco_perception.ops import dispatch

    monkeypatch.delattr(dispatch._native_module(torch.device("cpu")), "ln_nms")
    g = seeded(3)
    xyz, batch = torch.rand(50, 3, generator=g), torch.randint(0, 2, (50,), generator=g)
    heat, every = torch.rand(50, generator=g), torch.ones(50, dtype=torch.bool)
    expected = ops.ln_nms(xyz, batch, heat, every, 0.3, 0.5, 10, backend="torch")
    assert torch.equal(ops.ln_nms(xyz, batch, heat, every, 0.3, 0.5, 10), expected)
    with pytest.raises(RuntimeError, match="has no ln_nms; rebuild"):
        ops.ln_nms(xyz, batch, heat, every, 0.3, 0.5, 10, backend="native")
