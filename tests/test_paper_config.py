"""config/model/dyco3d_paper.yaml (the paper's DyCo3D) trains, both sparse backends agree on it,
and it runs in the Segmenter and in the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dyco_perception.checkpoint import write_random_checkpoint
from dyco_perception.model import SegmentationNetwork
from dyco_perception.segmenter import Segmenter
from dyco_perception.sparse import spconv_available
from dyco_perception.tools.client import SegmentationClient
from dyco_perception.tools.process import start_node, stop_node
from dyco_training.trainer import Trainer, train_config_from_dict

from dyco_perception.config import load_model_config

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "model" / "dyco3d_paper.yaml"


@pytest.fixture(scope="module")
def scan_part(scannet_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 2 m x 2 m corner of a real scan (the paper model at 2 cm is slow on one CPU core)."""
    with np.load(scannet_dir / "scene0001_00.npz") as data:
        xyz, rgb = data["xyz"], data["rgb"]
    corner = ((xyz[:, :2] - xyz[:, :2].min(0)) < 2.0).all(1)
    return xyz[corner], rgb[corner]


def test_paper_model_trains(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = train_config_from_dict(
        {
            "model_config": str(PAPER),
            "data": {
                "real_repeat": 0,
                "generated_rooms": 1,
                "generated_points": 6000,
                "val_split": "none",
            },
            "augment": {"enabled": False, "max_points": 6000},
            "optim": {"lr": 0.01},
            "schedule": {"name": "constant"},
            "train": {"iterations": 6, "threads": 1, "seed": 0},
            "log": {"every": 1, "save_every": 100, "progress": False, "tensorboard": False},
        }
    )
    trainer = Trainer(cfg, out_dir=tmp_path)
    assert trainer.model.cfg.mask_head.generator == "grid"
    batch = trainer.batch_for(0)
    losses = [trainer.train_step(batch)["loss_total"] for _ in range(6)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


@pytest.mark.skipif(not spconv_available(), reason="spconv not installed")
def test_both_sparse_backends_agree_on_the_paper_model(scan_part) -> None:
    xyz, rgb = scan_part
    torch.manual_seed(0)
    model = SegmentationNetwork(load_model_config(PAPER)).eval()
    points = torch.from_numpy(xyz)
    colours = torch.from_numpy(rgb).float() / 127.5 - 1
    batch = torch.zeros(len(xyz), dtype=torch.long)
    outputs = {}
    for backend in ("torch", "spconv"):
        model.set_backend(backend)
        with torch.no_grad():
            outputs[backend] = model(points, colours, batch)
    a, b = outputs["torch"], outputs["spconv"]
    assert torch.allclose(a["semantic_logits"], b["semantic_logits"], atol=1e-4)
    assert torch.allclose(a["offsets"], b["offsets"], atol=1e-4)
    assert torch.equal(a["masks"].point_index, b["masks"].point_index)
    assert torch.allclose(a["masks"].logits, b["masks"].logits, atol=1e-3)
    assert a["diagnostics"] == b["diagnostics"] == {"transformer": "global"}


def test_paper_model_runs_in_the_segmenter_and_the_node(tmp_path: Path, scan_part) -> None:
    xyz, rgb = scan_part
    cfg = load_model_config(PAPER)
    cfg.inference.score_threshold = 0.0  # random weights: report whatever it finds
    checkpoint = write_random_checkpoint(tmp_path / "paper.safetensors", cfg, seed=0)
    segmenter = Segmenter.from_checkpoint(checkpoint, device="cpu")
    expected = segmenter.segment(xyz, rgb)
    assert expected.voxel_size == 0.02 and expected.transformer == "global"
    process = start_node(
        overrides={"checkpoint": str(checkpoint), "device": "cpu", "score_threshold": 0.0},
        remaps={"cloud_in": "/paper/cloud_in"},
        log_path=tmp_path / "node.log",
    )
    client = SegmentationClient(input_topic="/paper/cloud_in", client_name="paper_client")
    try:
        assert client.wait_for_node(timeout=90), (tmp_path / "node.log").read_text()[-2000:]
        from test_node import make_cloud, segment

        instances = segment(client, make_cloud(xyz, rgb), timeout=120).messages["instances"]
        assert len(instances.instances) == len(expected.instances)
        labels = sorted(i.class_id for i in instances.instances)
        assert labels == sorted(i.class_id for i in expected.instances)
    finally:
        client.close()
        stop_node(process)
