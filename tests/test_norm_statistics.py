"""Batch-norm statistics at inference (`inference.norm_statistics`): the running averages
kept in training, or each input's own mean and variance, as training with one scene per batch
normalizes; same weights either way."""

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from dyco_perception.checkpoint import build_model, load_checkpoint, write_random_checkpoint
from dyco_perception.model.unet import BatchNorm1d, ResidualBlock
from dyco_perception.segmenter import Segmenter

from dyco_perception.config import load_model_config


def test_input_statistics_normalize_by_the_input_and_leave_the_averages_alone() -> None:
    torch.manual_seed(0)
    norm = BatchNorm1d(3, eps=1e-4)
    norm.weight.data = torch.tensor([1.0, 2.0, 0.5])
    norm.bias.data = torch.tensor([0.0, -1.0, 3.0])
    norm.running_mean.fill_(4.0)
    norm.running_var.fill_(9.0)
    x = torch.randn(500, 3) * torch.tensor([1.0, 5.0, 0.2]) + torch.tensor([2.0, -3.0, 7.0])
    norm.eval()
    running = norm(x)
    torch.testing.assert_close(running, (x - 4.0) / (9.0 + 1e-4) ** 0.5 * norm.weight + norm.bias)
    norm.input_statistics = True
    own = norm(x)
    torch.testing.assert_close(own.mean(0), norm.bias.data, atol=1e-4, rtol=0)
    torch.testing.assert_close(own.std(0, unbiased=False), norm.weight.data, atol=1e-3, rtol=0)
    assert torch.all(norm.running_mean == 4.0) and torch.all(norm.running_var == 9.0)
    one_row = x[:1]  # no statistics in one row: the running averages again
    torch.testing.assert_close(norm(one_row), running[:1])
    norm.train()  # training is unchanged by the flag: batch statistics, averages updated
    trained = norm(x)
    torch.testing.assert_close(trained, own)
    expected_mean = 0.9 * 4.0 + 0.1 * x.mean(0)
    torch.testing.assert_close(norm.running_mean, expected_mean)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory, one_torch_thread):
    """The tiny test model with random weights and random running averages."""
    path = tmp_path_factory.mktemp("norm") / "model.safetensors"
    write_random_checkpoint(path, load_model_config(REPO_ROOT / "config/model/tiny_test.yaml"))
    state, card = load_checkpoint(path)
    generator = torch.Generator().manual_seed(0)
    for name, value in state.items():
        if name.endswith("running_mean"):
            state[name] = torch.randn(value.shape, generator=generator) * 0.5
        elif name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=generator) * 3.0 + 0.5
    return state, card


def semantic_logits(model: torch.nn.Module, scan_sample) -> torch.Tensor:
    xyz, rgb = scan_sample("scene0001_00", 3000)
    xyz = torch.from_numpy(xyz.astype(np.float32))
    rgb = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0)
    with torch.no_grad():
        return model(xyz, rgb, torch.zeros(len(xyz), dtype=torch.long))["semantic_logits"]


def test_a_model_on_input_statistics_ignores_its_running_averages(
    random_checkpoint, scan_sample
) -> None:
    state, card = random_checkpoint
    outputs = {}
    for mode in ("running", "input"):
        for shift in (0.0, 0.5):
            shifted = {k: v + shift if k.endswith("running_mean") else v for k, v in state.items()}
            model = build_model(shifted, card.with_inference({"norm_statistics": mode}))
            outputs[mode, shift] = semantic_logits(model.fuse_for_inference(), scan_sample)
    torch.testing.assert_close(outputs["input", 0.0], outputs["input", 0.5])
    assert not torch.allclose(outputs["running", 0.0], outputs["running", 0.5], atol=1e-3)
    assert not torch.allclose(outputs["running", 0.0], outputs["input", 0.0], atol=1e-3)


def test_input_statistics_fold_no_norm_and_match_the_unfused_model(
    random_checkpoint, scan_sample
) -> None:
    state, card = random_checkpoint
    card = card.with_inference({"norm_statistics": "input"})
    unfused = build_model(state, card).eval()
    fused = build_model(state, card).fuse_for_inference()
    assert not any(getattr(m, "folded", False) for m in fused.modules())
    torch.testing.assert_close(
        semantic_logits(fused, scan_sample), semantic_logits(unfused, scan_sample)
    )
    assert fused.train().training  # nothing folded, so it can still train
    block = next(m for m in fused.modules() if isinstance(m, ResidualBlock))
    with pytest.raises(RuntimeError, match="cannot fold"):
        block.fold_batch_norm()  # its statistics come from the input: nothing to fold in


def test_the_override_is_a_checked_copy_and_reaches_the_segmenter(
    random_checkpoint, tmp_path
) -> None:
    from dyco_perception.checkpoint import save_checkpoint

    state, card = random_checkpoint
    changed = card.with_inference({"norm_statistics": "input"})
    assert card.config.inference.norm_statistics == "running"  # the original is untouched
    assert changed.config.inference.norm_statistics == "input"
    assert changed.training == card.training
    with pytest.raises(ValueError, match=r"inference\.norm_statistics='batch' not allowed"):
        card.with_inference({"norm_statistics": "batch"})
    with pytest.raises(ValueError, match="norm_statistcs"):
        card.with_inference({"norm_statistcs": "input"})
    model = build_model(state, card)
    path = save_checkpoint(tmp_path / "model.safetensors", model, card)
    segmenter = Segmenter.from_checkpoint(
        path, device="cpu", inference={"norm_statistics": "input"}
    )
    norms = [m for m in segmenter.model.modules() if isinstance(m, BatchNorm1d)]
    assert norms and all(m.input_statistics for m in norms)
    plain = Segmenter.from_checkpoint(path, device="cpu")
    assert not any(m.input_statistics for m in plain.model.modules() if isinstance(m, BatchNorm1d))
