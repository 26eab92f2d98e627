"""The native DyCo3D mask decoder (dyco_ops `dynamic_mask_decode`, used by `decode_masks` at
inference on the CPU) against the Python loop it replaces: same rows and proposal ids, logits
equal up to float32 summation order; the training path keeps the loop; a real scan through
the shipped checkpoint segments identically."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from dyco_perception.model.decoders import dyco3d
from dyco_perception.model.decoders.common import DecodedMasks
from dyco_perception.model.grouping import Proposals
from dyco_perception.segmenter import Segmenter
from dyco_perception.tiling import TilingConfig
from native_ops import assert_releases_gil

from dyco_perception import ops

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small problems; a shared 2-core box

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "dyco3d_scannet_m16.safetensors"
DECODE_MASKS = dyco3d.decode_masks  # unpatched, for the test that spies on the model's calls
TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32, summed in another order than torch's matmul
# (in, out) per layer, without the 3 position inputs: the shipped decoder (16 -> 16 -> 1), the
# paper's (8 -> 8 -> 8 -> 1), a single layer, widths with a scalar tail, and hidden layers of
# several column blocks (two vectors, one vector and a tail).
LAYERS = {
    "shipped": [16, 16, 1],
    "paper": [8, 8, 8, 1],
    "single": [5, 1],
    "odd": [7, 5, 13, 1],
    "wide": [16, 43, 40, 1],
}


@dataclass
class Problem:
    """`decode_masks` arguments: scenes of random points and proposals grown around some."""

    proposals: Proposals
    params: torch.Tensor
    mask_features: torch.Tensor
    xyz: torch.Tensor
    batch: torch.Tensor
    semantic: torch.Tensor | None
    num_classes: int
    margin: float
    layer_sizes: list[tuple[int, int]]
    use_relative_position: bool

    def args(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__dataclass_fields__)


def random_problem(
    widths: list[int],
    relative: bool = True,
    category_aware: bool = True,
    margin: float = 0.1,
    seed: int = 0,
    n: int = 3000,
    k: int = 14,
) -> Problem:
    """k proposals in 2 scenes of 4 classes; the last one's class is one no point is predicted
    as, so category-aware its candidate range is empty."""
    gen = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=gen) * torch.tensor([3.0, 2.0, 1.0])
    batch = torch.randint(0, 2, (n,), generator=gen)
    semantic = torch.randint(0, 4, (n,), generator=gen)
    members, ids = [], []
    for p in range(k):
        seed_point = int(torch.randint(0, n, (1,), generator=gen))
        near = ((xyz - xyz[seed_point]).norm(dim=1) < 0.2 + 0.1 * (p % 4)) & (
            batch == batch[seed_point]
        )
        rows = near.nonzero().squeeze(1)
        members.append(rows)
        ids.append(torch.full_like(rows, p))
    class_id = torch.randint(0, 4, (k,), generator=gen)
    class_id[-1] = 4
    scene = torch.stack([batch[m[0]] for m in members])
    source = torch.zeros(k, dtype=torch.long)
    proposals = Proposals(torch.cat(members), torch.cat(ids), class_id, scene, source)
    c = widths[0]
    sizes = [(c + 3 * relative, widths[1]), *itertools.pairwise(widths[1:])]
    num_params = sum(i * o + o for i, o in sizes)
    return Problem(
        proposals,
        torch.randn(k, num_params, generator=gen) * 0.3,
        torch.randn(n, c, generator=gen),
        xyz,
        batch,
        semantic if category_aware else None,
        5,
        margin,
        sizes,
        relative,
    )


@pytest.fixture
def native() -> None:
    """Skips (saying why) where the native decoder is not loaded."""
    why = ops.cpu_kernel_missing("dynamic_mask_decode")
    if why is not None:
        pytest.skip(f"native decoder not loaded: {why}")


def decode(problem: Problem, use_native: bool) -> DecodedMasks:
    """`decode_masks` by the native kernel or by the Python loop (DYCO_NATIVE_DECODE=0)."""
    saved = os.environ.pop("DYCO_NATIVE_DECODE", None)
    try:
        if not use_native:
            os.environ["DYCO_NATIVE_DECODE"] = "0"
        with torch.no_grad():
            why = dyco3d.native_decode_unavailable_reason(
                problem.params, problem.mask_features, problem.xyz
            )
            assert (why is None) == use_native, why
            return DECODE_MASKS(*problem.args())
    finally:
        os.environ.pop("DYCO_NATIVE_DECODE", None)
        if saved is not None:
            os.environ["DYCO_NATIVE_DECODE"] = saved


def assert_same(got: DecodedMasks, want: DecodedMasks) -> None:
    assert torch.equal(got.point_index, want.point_index)
    assert torch.equal(got.proposal_id, want.proposal_id)
    assert got.logits.dtype == want.logits.dtype == torch.float32
    torch.testing.assert_close(got.logits, want.logits, **TOL)


# ---- native == Python loop ----------------------------------------------------------------


@pytest.mark.parametrize("layers", sorted(LAYERS))
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("category_aware", [True, False])
def test_native_decoder_equals_the_python_loop(native, layers, relative, category_aware) -> None:
    problem = random_problem(LAYERS[layers], relative, category_aware)
    want = decode(problem, use_native=False)
    assert want.logits.numel() > 200  # proposals of one, several and many decoder tiles
    assert_same(decode(problem, use_native=True), want)


@pytest.mark.parametrize("seed", range(4))
def test_points_on_the_box_faces_are_candidates(native, seed) -> None:
    """margin 0: each box is its members' extent, so the members at its y and z extremes lie
    exactly on its faces, and the test is inclusive."""
    problem = random_problem(LAYERS["shipped"], category_aware=False, margin=0.0, seed=seed)
    want = decode(problem, use_native=False)
    assert_same(decode(problem, use_native=True), want)
    p = problem.proposals
    for k in range(p.num):
        members = p.point_index[p.proposal_id == k]
        decoded = want.point_index[want.proposal_id == k]
        for axis in (1, 2):
            for extreme in (
                problem.xyz[members, axis].argmin(),
                problem.xyz[members, axis].argmax(),
            ):
                assert members[extreme] in decoded


def test_empty_candidate_ranges(native) -> None:
    """Proposals without a candidate: a class no point has (category-aware) and, with a
    negative margin, inverted boxes whose x range ends before it starts."""
    for margin in (0.1, -0.15):
        problem = random_problem(LAYERS["paper"], margin=margin, seed=3)
        want = decode(problem, use_native=False)
        counts = torch.bincount(want.proposal_id, minlength=problem.proposals.num)
        assert counts[-1] == 0 and (counts > 0).any()
        assert_same(decode(problem, use_native=True), want)


def test_all_candidate_ranges_empty(native) -> None:
    problem = random_problem(LAYERS["shipped"], margin=-5.0)
    want = decode(problem, use_native=False)
    assert want.logits.numel() == 0
    assert_same(decode(problem, use_native=True), want)


def test_no_proposals(native) -> None:
    """K = 0: decode_masks returns before the kernel; the kernel itself returns empty."""
    problem = random_problem(LAYERS["shipped"], k=2)
    keep = torch.zeros(2, dtype=torch.bool)
    p = problem.proposals
    problem.proposals = Proposals(
        p.point_index[:0], p.proposal_id[:0], p.class_id[keep], p.batch[keep], p.source[keep]
    )
    problem.params = problem.params[keep]
    assert_same(decode(problem, use_native=True), decode(problem, use_native=False))
    n, none = problem.xyz.shape[0], torch.zeros(0, 3)
    index = torch.zeros(0, dtype=torch.long)
    got = ops.cpu_kernel("dynamic_mask_decode")(
        problem.mask_features,
        problem.xyz,
        torch.arange(n),
        index,
        index,
        none,
        none,
        none,
        problem.params,
        problem.layer_sizes,
        True,
    )
    assert [t.numel() for t in got] == [0, 0, 0]
    assert [t.dtype for t in got] == [torch.float32, torch.int64, torch.int64]


def test_many_candidates_and_proposals_in_one_scene(native) -> None:
    """Long candidate ranges (several decoder tiles each) and a whole-scene box (`all`)."""
    problem = random_problem(LAYERS["shipped"], category_aware=False, n=5000, k=30, seed=5)
    assert_same(decode(problem, use_native=True), decode(problem, use_native=False))
    problem.margin = float("inf")
    assert_same(decode(problem, use_native=True), decode(problem, use_native=False))


# ---- when the native decoder runs ------------------------------------------------------------


def test_training_uses_the_python_loop_and_gives_gradients(native, monkeypatch) -> None:
    problem = random_problem(LAYERS["paper"])
    problem.params.requires_grad_(True)
    problem.mask_features.requires_grad_(True)
    assert "autograd" in dyco3d.native_decode_unavailable_reason(
        problem.params, problem.mask_features, problem.xyz
    )

    def fail(*args: object) -> None:
        raise AssertionError("the native decoder ran in training")

    monkeypatch.setattr(dyco3d, "_decode_native", fail)
    masks = dyco3d.decode_masks(*problem.args())
    masks.logits.square().sum().backward()
    assert problem.params.grad.abs().sum() > 0
    assert problem.mask_features.grad.abs().sum() > 0
    monkeypatch.undo()
    assert_same(decode(problem, use_native=True), masks)


def test_grad_mode_without_trainable_inputs_runs_native(native, monkeypatch) -> None:
    """Grad mode on (tests, scripts) but nothing requires grad: inference, the native path."""
    problem = random_problem(LAYERS["shipped"])
    calls = []
    run = dyco3d._decode_native

    def spy(*args: object) -> DecodedMasks:
        calls.append(1)
        return run(*args)

    monkeypatch.setattr(dyco3d, "_decode_native", spy)
    dyco3d.decode_masks(*problem.args())
    assert calls == [1]


def test_float64_inputs_use_the_python_loop(native) -> None:
    problem = random_problem(LAYERS["shipped"])
    problem.xyz = problem.xyz.double()
    assert "float32" in dyco3d.native_decode_unavailable_reason(
        problem.params, problem.mask_features, problem.xyz
    )


def test_kernel_rejects_bad_inputs(native) -> None:
    problem = random_problem(LAYERS["shipped"], k=3)
    n = problem.xyz.shape[0]
    box = torch.zeros(3, 3)
    starts, stops = torch.tensor([0, 5, 9]), torch.tensor([4, 9, 20])

    def call(order=None, layer_sizes=None, params=None, stops=stops) -> None:
        ops.cpu_kernel("dynamic_mask_decode")(
            problem.mask_features,
            problem.xyz,
            torch.arange(n) if order is None else order,
            starts,
            stops,
            box,
            box,
            box,
            problem.params if params is None else params,
            problem.layer_sizes if layer_sizes is None else layer_sizes,
            True,
        )

    with pytest.raises(RuntimeError, match="parameters"):
        call(params=problem.params[:, 1:])
    with pytest.raises(RuntimeError, match="1 output"):
        call(layer_sizes=[(19, 16), (16, 2)])
    with pytest.raises(RuntimeError, match="order entries"):
        call(order=torch.full((n,), n))
    with pytest.raises(RuntimeError, match="candidate range"):
        call(stops=torch.tensor([4, 9, n + 1]))
    with torch.enable_grad(), pytest.raises(RuntimeError, match="inference only"):
        call(params=problem.params.clone().requires_grad_(True))


def test_the_portable_build_gives_the_same_result(native, tmp_path) -> None:
    """DYCO_OPS_PORTABLE=1 runs the code a CPU without AVX2 gets (a fresh process: the choice
    is made once)."""
    problem = random_problem(LAYERS["wide"], seed=7)
    torch.save(problem, tmp_path / "problem.pt")
    script = (
        "import sys, torch; sys.path.insert(0, {tests!r}); "
        "from test_dynamic_decode_native import decode; "
        "problem = torch.load({inp!r}, weights_only=False); "
        "torch.save(decode(problem, use_native=True), {out!r})"
    ).format(
        tests=str(Path(__file__).parent),
        inp=str(tmp_path / "problem.pt"),
        out=str(tmp_path / "out.pt"),
    )
    env = {**os.environ, "DYCO_OPS_PORTABLE": "1"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    got = torch.load(tmp_path / "out.pt", weights_only=False)
    assert_same(got, decode(problem, use_native=False))


def test_the_kernel_releases_the_gil(native) -> None:
    # ~0.17 s a call on this CPU when idle: 60,000 points took 0.04 s, at the helper's floor.
    problem = random_problem(LAYERS["wide"], category_aware=False, n=240000, k=40, margin=0.5)
    assert_releases_gil(lambda: decode(problem, use_native=True))


# ---- a real scan through the shipped checkpoint ---------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> Segmenter:
    if not CHECKPOINT.is_file():
        pytest.skip(f"shipped checkpoint not found at {CHECKPOINT}")
    return Segmenter.from_checkpoint(CHECKPOINT, device="cpu", tiling=TilingConfig(enabled=False))


@pytest.fixture(scope="module")
def scan(scannet_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(scannet_dir / "scene0001_00.npz") as data:
        return data["xyz"], data["rgb"]


def test_real_scan_decodes_the_same(native, shipped, scan, monkeypatch) -> None:
    """The checkpoint's own proposals, decoder parameters and mask features on a real scan."""
    pairs: list[tuple[DecodedMasks, DecodedMasks]] = []

    def both(*args: object) -> DecodedMasks:
        problem = Problem(*args)
        pairs.append((decode(problem, use_native=True), decode(problem, use_native=False)))
        return pairs[-1][0]

    monkeypatch.setattr(dyco3d, "decode_masks", both)
    shipped.segment(*scan)
    assert len(pairs) == 1 and pairs[0][1].logits.numel() > 10000
    assert pairs[0][1].proposal_id.max() > 10
    assert_same(*pairs[0])


def test_real_scan_segments_identically(native, shipped, scan, monkeypatch) -> None:
    got = shipped.segment(*scan)
    monkeypatch.setenv("DYCO_NATIVE_DECODE", "0")
    want = shipped.segment(*scan)
    assert len(got.instances) == len(want.instances) > 5
    np.testing.assert_array_equal(got.semantic, want.semantic)
    np.testing.assert_array_equal(got.instance, want.instance)
    np.testing.assert_allclose(got.score, want.score, rtol=1e-5, atol=1e-6)
