"""Trainer: config validation, schedules, staged mask losses, learning, resume, logs."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from dyco_perception.model.decoders.base import InstanceTargets
from dyco_perception.scenes import make_scene
from dyco_training.augment import AugmentConfig
from dyco_training.datasets import SCANNET50K_DIR
from dyco_training.distributed import DistInfo
from dyco_training.train_config import apply_override, deep_merge
from dyco_training.trainer import (
    ScheduleConfig,
    Trainer,
    augment_spanning,
    load_train_config,
    lr_factor,
    train_config_from_dict,
)

REPO = Path(__file__).resolve().parents[1]
SCANS = SCANNET50K_DIR


def tiny_config(**overrides) -> dict:
    cfg = {
        "model_config": str(REPO / "config/model/tiny_test.yaml"),
        "data": {
            "real_repeat": 0,
            "generated_rooms": 2,
            "generated_points": 6000,
            "val_split": "none",
        },
        "augment": {"max_points": 5000},
        "train": {"iterations": 4, "threads": 1, "seed": 3},
        "log": {"every": 1, "save_every": 2, "progress": False},
    }
    for key, value in overrides.items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.update(
            {key: value}
        )
    return cfg


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"optim": {"name": "sgd"}}, "optim.name"),
        ({"optim": {"lr": -1.0}}, "optim.lr"),
        ({"train": {"iterations": 0}}, "train.iterations"),
        ({"schedule": {"name": "step"}}, "schedule.name"),
        ({"data": {"train_scans": "scene0001_00"}}, "data.train_scans"),
        ({"model": {"backbone": {"width": 0}}}, "backbone.width"),
        ({"augment": {"scale_min": "big"}}, "augment.scale_min"),
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"train": {"epochs": 3}}, "train.epochs"),
    ],
)
def test_bad_config_errors_name_the_key(patch, key):
    cfg = tiny_config()
    for section, value in patch.items():
        if isinstance(value, dict) and isinstance(cfg.get(section), dict):
            cfg[section] = {**cfg[section], **value}
        else:
            cfg[section] = value
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        train_config_from_dict(cfg)


def test_shipped_config_loads_and_is_m16():
    cfg = load_train_config(REPO / "config/train/shipped.yaml")
    assert cfg.model.backbone.width == 16
    assert cfg.export.checkpoint.endswith("dyco3d_scannet_m16.safetensors")
    assert cfg.train.prepare_iters < cfg.train.iterations


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"data": {"train_scans": ["scene0001_00", 3]}}, r"data\.train_scans: expected a list"),
        ({"model": [1]}, "model: expected a mapping"),
        ({"out_dir": 5}, "out_dir: expected a path string"),
        ({"base": "parent.yaml"}, "read the file with load_train_config"),
    ],
)
def test_malformed_sections_are_refused_by_name(patch, message):
    with pytest.raises(ValueError, match=message):
        train_config_from_dict({**tiny_config(), **patch})


def test_an_override_needs_a_key_and_nested_mappings_merge():
    with pytest.raises(ValueError, match=r"key\.path=value"):
        apply_override({}, "=5")
    merged = deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}, "e": 4})
    assert merged == {"a": {"b": 3, "c": 2}, "d": 1, "e": 4}


def test_defaults_validate_on_val_and_warm_start_every_weight():
    cfg = train_config_from_dict({"model_config": tiny_config()["model_config"]})
    assert (cfg.data.train_split, cfg.data.val_split) == ("train", "val")
    assert cfg.init.scope == "all" and cfg.log.val_every == 0


def test_schedules():
    cosine = ScheduleConfig(name="cosine", warmup_iters=10, min_lr_ratio=0.1)
    assert lr_factor(0, 110, cosine) == pytest.approx(0.1)  # warm-up: 1/10
    assert lr_factor(9, 110, cosine) == pytest.approx(1.0)
    assert lr_factor(10, 110, cosine) == pytest.approx(1.0)
    assert lr_factor(60, 110, cosine) == pytest.approx(0.55)  # half-way: mean of 1 and 0.1
    assert lr_factor(110, 110, cosine) == pytest.approx(0.1)
    poly = ScheduleConfig(name="poly", power=2.0)
    assert lr_factor(50, 100, poly) == pytest.approx(0.25)
    assert lr_factor(100, 100, poly) == pytest.approx(0.0)


# --- training ---------------------------------------------------------------------------------


def _mask_branch_grad(trainer: Trainer) -> float:
    return sum(
        float(p.grad.abs().sum())
        for p in trainer.model.decoder.kernel_generator.parameters()
        if p.grad is not None
    )


def test_mask_losses_are_off_during_the_prepare_iterations(tmp_path):
    trainer = Trainer(
        train_config_from_dict(tiny_config(train={"prepare_iters": 1})), out_dir=tmp_path
    )
    batch = trainer.batch_for(0)
    trainer.train_step(batch)
    assert _mask_branch_grad(trainer) == 0.0  # mask branch untouched in the prepare stage
    trainer.train_step(batch)
    assert _mask_branch_grad(trainer) > 0.0


def _assert_eight_steps_reduce_the_loss(cfg: dict, tmp_path) -> None:
    """Eight steps on one fixed batch must cut the loss by more than 8 %."""
    trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path)
    batch = trainer.batch_for(0)
    losses = [trainer.train_step(batch)["loss_total"] for _ in range(8)]
    assert np.mean(losses[-2:]) < 0.92 * np.mean(losses[:2]), losses


def test_a_few_steps_reduce_the_loss_on_one_scene(tmp_path):
    cfg = tiny_config(
        optim={"lr": 0.01},
        schedule={"name": "constant"},
        augment={"enabled": False, "max_points": 6000},
    )
    _assert_eight_steps_reduce_the_loss(cfg, tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_few_amp_steps_on_cuda_reduce_the_loss(tmp_path):
    """The GPU path of training: bfloat16 autocast."""
    cfg = tiny_config(
        optim={"lr": 0.01},
        schedule={"name": "constant"},
        augment={"enabled": False, "max_points": 6000},
        train={"device": "cuda", "amp": True},
    )
    trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path / "probe")
    assert trainer.use_amp and next(trainer.model.parameters()).is_cuda
    trainer.close()
    _assert_eight_steps_reduce_the_loss(cfg, tmp_path)


def _first_step_semantic(trainer: Trainer) -> tuple[dict, torch.Tensor, float]:
    """The first batch, the semantic logits the model gives it before the step (training mode),
    and the semantic CE the step reports."""
    batch = trainer.batch_for(0)
    trainer.model.train()
    with torch.no_grad():
        logits = trainer.model(
            batch["xyz"], batch["rgb"], batch["batch"], batch["semantic"], batch["instance"]
        )["semantic_logits"]
    return batch, logits, trainer.train_step(batch)["loss_semantic_ce"]


def test_class_weighting_weighs_the_trainers_semantic_loss_by_its_pools_classes(tmp_path):
    """With `semantic_class_weighting: inverse_sqrt` the trainer's weights come from its own
    pool and reach the CE it trains on; with "none" the CE is the plain mean."""
    from dyco_training.losses import semantic_class_weights, semantic_losses

    reported = {}
    for rule in ("none", "inverse_sqrt"):
        cfg = tiny_config(loss={"semantic_class_weighting": rule}, augment={"enabled": False})
        trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path / rule)
        batch, logits, reported[rule] = _first_step_semantic(trainer)
        weights = semantic_class_weights(trainer.pool, 20, rule)
        torch.testing.assert_close(trainer.class_weights, weights)
        want = semantic_losses(logits, batch["semantic"], class_weights=weights)["semantic_ce"]
        assert reported[rule] == pytest.approx(float(want), rel=1e-4)
    assert reported["inverse_sqrt"] != pytest.approx(reported["none"], rel=1e-3)


def test_the_trainer_trains_one_gt_proposal_per_thing_instance_of_its_batch(tmp_path):
    """With `train_proposals: gt` the step's proposals are the batch's thing instances: the
    trainer hands the network its semantic and instance targets, each as what it is."""
    cfg = tiny_config(model={"grouping": {"train_proposals": "gt"}}, augment={"enabled": False})
    trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path)
    batch = trainer.batch_for(0)
    num_gt = InstanceTargets.from_targets(batch).num_gt
    assert 0 < num_gt <= trainer.cfg.model.grouping.max_train_proposals
    assert trainer.train_step(batch)["proposals"] == num_gt


def test_resume_continues_exactly(tmp_path):
    cfg = train_config_from_dict(tiny_config(optim={"grad_clip": 5.0}))
    first = Trainer(cfg, out_dir=tmp_path / "a")
    for _ in range(2):
        first.train_step(first.batch_for(first.step))
    state = first.save_state()
    # The state is plain tensors/containers: loadable with weights_only=True.
    assert torch.load(state, weights_only=True)["step"] == 2
    first.train_step(first.batch_for(first.step))

    resumed = Trainer(copy.deepcopy(cfg), out_dir=tmp_path / "b", resume=state)
    assert resumed.step == 2
    assert resumed.scheduler.last_epoch == 2
    resumed.train_step(resumed.batch_for(resumed.step))
    for (name, a), b in zip(
        first.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=f"{name} differs after resume", atol=1e-5, rtol=1e-4)


def test_resume_rejects_a_non_state_file(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a training state"):
        Trainer(train_config_from_dict(tiny_config()), out_dir=tmp_path, resume=bad)


def test_run_writes_logs_curves_state_and_checkpoint(tmp_path):
    from dyco_perception.checkpoint import load_checkpoint

    trainer = Trainer(train_config_from_dict(tiny_config()), out_dir=tmp_path)
    result = trainer.run()
    assert result["steps"] == 4
    rows = (tmp_path / "train.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 5  # header + one row per iteration
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert any((tmp_path / "tensorboard").iterdir())
    assert torch.load(tmp_path / "state.pt", weights_only=True)["step"] == 4
    state, card = load_checkpoint(result["checkpoint"])
    assert card.training["iterations"] == 4
    assert card.training["data"]["generated_rooms"] == 2
    assert card.training["git_commit"]
    assert set(state) == set(trainer.model.state_dict())


def test_validate_reports_benchmark_metrics(tmp_path):
    from dyco_perception.data.room_generator import generate_room

    trainer = Trainer(train_config_from_dict(tiny_config()), out_dir=tmp_path)
    metrics = trainer.validate([generate_room(5, 6000)])
    assert {"AP", "AP50", "AP25", "per_class", "class_agnostic", "seconds_per_scan"} <= set(metrics)
    assert trainer.model.training  # validation hands the model back in training mode


def _crop_only(max_points: int) -> AugmentConfig:
    """No rotation, elastic, jitter or scaling: only the crop to max_points."""
    return AugmentConfig(
        max_points=max_points,
        rotate_z=False,
        elastic_prob=0.0,
        matrix_jitter_std=0.0,
        scale_min=1.0,
        scale_max=1.0,
    )


def test_crops_inside_one_bottleneck_voxel_are_redrawn_or_refused():
    rng = np.random.default_rng(0)
    n = 4000
    xyz = rng.random((n, 3)).astype(np.float32) * np.array([6.0, 1.0, 1.0], np.float32)
    scene = make_scene(xyz, np.zeros((n, 3), np.uint8), np.zeros(n), np.zeros(n), "strip")
    cfg = _crop_only(max_points=1000)
    # A 1000-point crop of a 6 m strip spans metres: fine for a 1 m bottleneck voxel, never
    # for one larger than the whole strip.
    out, _, rows = augment_spanning(scene, cfg, rng, min_extent=1.0)
    assert np.ptp(out, axis=0).max() > 1.0 and len(rows) <= 1000
    with pytest.raises(ValueError, match="bottleneck voxel"):
        augment_spanning(scene, cfg, rng, min_extent=6.5)


def test_a_crop_spanning_exactly_one_bottleneck_voxel_is_refused():
    """A crop must span more than min_extent: two point clusters exactly 0.5 m apart are
    accepted under a 0.49 m bottleneck voxel and refused under a 0.5 m one."""
    xyz = np.zeros((10, 3), np.float32)
    xyz[5:, 0] = 0.5
    scene = make_scene(xyz, np.zeros((10, 3), np.uint8), np.zeros(10), np.zeros(10), "pair")
    cfg = _crop_only(max_points=100)
    rng = np.random.default_rng(0)
    out, _, _ = augment_spanning(scene, cfg, rng, min_extent=0.49)
    assert np.ptp(out, axis=0).tolist() == [0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="bottleneck voxel"):
        augment_spanning(scene, cfg, rng, min_extent=0.5)


def test_the_trainers_crops_must_span_one_bottleneck_voxel(tmp_path):
    """The crops must span more than one bottleneck voxel, voxel_size * 2^(levels - 1): with 4
    levels of 0.5 m voxels that is 4 m, which the first batch's room (4.8 m) exceeds; with 0.7 m
    voxels it is 5.6 m, and the same room is refused."""
    for voxel_size, bottleneck in ((0.5, 4.0), (0.7, 5.6)):
        cfg = tiny_config(
            model={"voxel": {"voxel_size": voxel_size}},
            augment={"enabled": False, "max_points": 6000},
        )
        trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path / str(voxel_size))
        if voxel_size == 0.5:
            assert float(np.ptp(trainer.batch_for(0)["xyz"].numpy(), 0).max()) > bottleneck
        else:
            with pytest.raises(ValueError, match=rf"bottleneck voxel \({bottleneck:.2f} m\)"):
                trainer.batch_for(0)


def test_the_trainer_mixes_each_scene_with_one_from_its_own_pool(tmp_path):
    trainer = Trainer(
        train_config_from_dict(tiny_config(augment={"max_points": 5000, "mix_prob": 1.0})),
        out_dir=tmp_path,
    )
    own = trainer._scenes_for(0)[0]
    batch = trainer.batch_for(0)
    assert len(batch["xyz"]) <= 5000
    # The partner's instances are numbered after the scene's own, so ids exceed the scene's.
    assert int(batch["instance"].max()) > int(own.instance.max())
    trainer.close()


def test_an_epoch_of_batches_draws_every_scene_of_the_pool_once(tmp_path):
    data = {"generated_rooms": 4, "generated_points": 1000}
    cfg = tiny_config(data=data, train={"batch_size": 2})
    trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path)
    drawn = [scene.name for step in (0, 1) for scene in trainer._scenes_for(step)]
    assert sorted(drawn) == sorted(scene.name for scene in trainer.pool)
    assert len(set(drawn)) == 4
    trainer.close()


def test_two_ranks_draw_every_scene_of_an_odd_sized_pool_in_one_epoch(tmp_path):
    """With 2 ranks an epoch of a 5-scene pool is ceil(5 / 2) = 3 steps per rank (the shard is
    padded by wrap-around): together the ranks' first three steps draw all 5 scenes."""
    cfg = tiny_config(data={"generated_rooms": 5, "generated_points": 1000})
    trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path)
    drawn = set()
    for rank in (0, 1):
        trainer.info = DistInfo(rank=rank, world_size=2)
        drawn |= {scene.name for step in (0, 1, 2) for scene in trainer._scenes_for(step)}
    assert drawn == {scene.name for scene in trainer.pool}
    trainer.close()


def test_each_step_augments_its_scene_anew_and_reproducibly(tmp_path):
    """The batch rng is seeded by (seed, rank, step): one scene drawn at two steps gets two
    different crops / augmentations, and the same step always the same one."""
    cfg = tiny_config(data={"generated_rooms": 1, "generated_points": 1000})
    trainer = Trainer(train_config_from_dict(cfg), out_dir=tmp_path)
    first, again, second = trainer.batch_for(0), trainer.batch_for(0), trainer.batch_for(1)
    assert torch.equal(first["xyz"], again["xyz"])
    assert first["xyz"].shape != second["xyz"].shape or not torch.equal(first["xyz"], second["xyz"])
    trainer.close()


@pytest.mark.skipif(not SCANS.is_dir(), reason=f"{SCANS} (real ScanNet scans) is absent")
def test_a_few_steps_reduce_the_loss_on_one_real_scan(tmp_path):
    cfg = tiny_config(
        data={
            "scans_dir": str(SCANS),
            "train_scans": ["scene0001_00"],
            "train_split": "all",
            "real_repeat": 1,
            "generated_rooms": 0,
        },
        optim={"lr": 0.01},
        schedule={"name": "constant"},
        augment={"enabled": False, "max_points": 8000},
    )
    _assert_eight_steps_reduce_the_loss(cfg, tmp_path)


# --- config bases and warm starts -------------------------------------------------------------


def test_a_config_extends_its_base_and_a_cycle_is_refused(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "parent.yaml").write_text(yaml.safe_dump(tiny_config(optim={"lr": 0.01})))
    child = {"base": "parent.yaml", "optim": {"weight_decay": 0.1}, "train": {"seed": 9}}
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    cfg = load_train_config(tmp_path / "child.yaml")
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (0.01, 0.1)  # merged, not replaced
    assert (cfg.train.seed, cfg.train.iterations) == (9, 4)
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"base": "loop.yaml"}))
    with pytest.raises(ValueError, match="includes itself"):
        load_train_config(tmp_path / "loop.yaml")
    with pytest.raises(ValueError, match="base"):
        train_config_from_dict({"base": "parent.yaml"})


def test_warm_start_copies_the_backbone_only_or_everything(tmp_path: Path) -> None:
    from dyco_perception.checkpoint import ModelCard, save_checkpoint
    from dyco_perception.model import SegmentationNetwork
    from dyco_training.trainer import InitConfig, warm_start

    cfg = train_config_from_dict(tiny_config()).model
    torch.manual_seed(0)
    source = SegmentationNetwork(cfg)
    path = save_checkpoint(tmp_path / "src.safetensors", source, ModelCard.for_config(cfg))
    torch.manual_seed(1)
    target = SegmentationNetwork(cfg)
    fresh = copy.deepcopy(target.state_dict())
    info = warm_start(target, InitConfig(checkpoint=str(path), scope="backbone"))
    state, src = target.state_dict(), source.state_dict()
    assert info["scope"] == "backbone" and info["tensors"] > 0
    for name, tensor in state.items():
        expected = (
            src[name]
            if name.startswith(("backbone.", "semantic_head.", "offset_head."))
            else fresh[name]
        )
        assert torch.equal(tensor, expected), name
    warm_start(target, InitConfig(checkpoint=str(path), scope="all"))
    assert all(torch.equal(t, src[n]) for n, t in target.state_dict().items())

    wider = train_config_from_dict(tiny_config(model={"backbone": {"width": 16}})).model
    with pytest.raises(ValueError, match="shape"):
        warm_start(SegmentationNetwork(wider), InitConfig(checkpoint=str(path), scope="backbone"))


def test_label_smoothing_reaches_the_trainers_semantic_loss(tmp_path):
    from dyco_training.losses import semantic_losses

    cfg = tiny_config(loss={"semantic_label_smoothing": 0.3}, augment={"enabled": False})
    batch, logits, reported = _first_step_semantic(
        Trainer(train_config_from_dict(cfg), out_dir=tmp_path)
    )
    smoothed = semantic_losses(logits, batch["semantic"], label_smoothing=0.3)["semantic_ce"]
    hard = semantic_losses(logits, batch["semantic"])["semantic_ce"]
    assert reported == pytest.approx(float(smoothed), rel=1e-4)
    assert reported != pytest.approx(float(hard), rel=1e-3)


def test_mixed_precision_is_cuda_only():
    from dyco_training.trainer import uses_bf16_autocast

    assert not uses_bf16_autocast(True, torch.device("cpu"))
    assert not uses_bf16_autocast(False, torch.device("cuda"))


def test_constant_schedule_and_a_time_budget_past_its_end():
    """The constant schedule keeps the base lr after warm-up; a time budget already spent
    (time progress above 1) holds the schedule at its end, not past it."""
    constant = ScheduleConfig(name="constant", warmup_iters=2)
    assert lr_factor(0, 100, constant) == pytest.approx(0.5)
    assert lr_factor(50, 100, constant) == pytest.approx(1.0)
    cosine = ScheduleConfig(name="cosine", warmup_iters=0, min_lr_ratio=0.1)
    assert lr_factor(5, 100, cosine, time_progress=1.5) == pytest.approx(0.1)
    poly = ScheduleConfig(name="poly", power=1.0)
    assert lr_factor(5, 100, poly, time_progress=1.5) == pytest.approx(0.0)


def test_resume_restores_the_training_clock(tmp_path):
    """The state records the seconds trained so far; a resumed trainer counts on from them and
    its schedule sees the restored clock (time progress = elapsed / time budget) at once."""
    cfg = train_config_from_dict(tiny_config(train={"max_minutes": 10.0}))
    first = Trainer(cfg, out_dir=tmp_path / "a")
    path = first.save_state()
    state = torch.load(path, weights_only=True)
    assert state["elapsed"] > 0.0
    state["elapsed"] = 300.0  # half the 10-minute budget
    torch.save(state, path)
    resumed = Trainer(copy.deepcopy(cfg), out_dir=tmp_path / "b", resume=path)
    assert resumed.elapsed == 300.0
    assert resumed.shared_time_progress == pytest.approx(0.5, abs=0.02)
