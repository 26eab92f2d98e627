"""Leave-one-room-out cross-validation: folds hold out whole rooms, never touch val, resume."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dyco_perception.checkpoint import (
    build_model,
    load_checkpoint,
    save_checkpoint,
    write_random_checkpoint,
)
from dyco_perception.evaluation import build_evaluator
from dyco_training.cli_train import main as train_main
from dyco_training.cross_validate import (
    RANK_METRICS,
    Plan,
    backbone_fold_config,
    continued_fold_start,
    fold_config,
    folds_won,
    format_comparison,
    held_out_evaluator,
    held_out_metrics,
    inference_variant,
    main,
    parse_backbones,
    pooled_value,
    resampled_wins,
    run_fold,
    summarise,
    training_rooms,
)
from dyco_training.train_config import apply_override
from dyco_training.trainer import Trainer

from dyco_perception import classes

REPO = Path(__file__).resolve().parents[1]


def test_folds_hold_out_whole_training_rooms_and_never_val(scannet_dir: Path) -> None:
    rooms = training_rooms(scannet_dir)
    assert sorted(rooms) == [f"scene000{i}" for i in range(1, 9)]
    assert rooms["scene0003"] == ["scene0003_00", "scene0003_01", "scene0003_02"]
    base = {"model_config": str(REPO / "config/model/tiny_test.yaml")}
    cfg = fold_config(base, rooms, "scene0003", 5.0, REPO)
    assert cfg.data.val_scans == rooms["scene0003"]
    assert not {s for s in cfg.data.train_scans if s.startswith("scene0003")}
    assert len(cfg.data.train_scans) == 15 - 3
    assert not any(s.startswith(("scene0009", "scene0010")) for s in cfg.data.train_scans)
    assert cfg.train.max_minutes == 5.0 and cfg.export.checkpoint == ""


def test_a_fold_backbone_trains_no_instance_branch_from_weights_that_saw_no_real_scan(
    tmp_path: Path, scannet_dir
) -> None:
    rooms = training_rooms(scannet_dir)
    base = {
        "model_config": str(REPO / "config/model/tiny_test.yaml"),
        "train": {"iterations": 8000, "prepare_iters": 300, "max_minutes": 80},
    }
    cfg = backbone_fold_config(base, rooms, "scene0005", 500, REPO)
    assert cfg.init.checkpoint == ""
    assert (cfg.train.iterations, cfg.train.prepare_iters, cfg.train.max_minutes) == (500, 500, 0)
    assert cfg.data.val_scans == rooms["scene0005"]

    # Pretrained weights: only what a card shows trained on generated rooms alone, no warm start.
    state, card = load_checkpoint(write_random_checkpoint(tmp_path / "random.safetensors"))
    model = build_model(state, card)
    cards = {
        "generated": {"data": {"real_scans": []}, "init": None},
        "real": {"data": {"real_scans": ["scene0001_00"]}, "init": None},
        "warm": {"data": {"real_scans": []}, "init": {"checkpoint": "shipped.safetensors"}},
        "unrecorded": {},
    }
    for name, training in cards.items():
        card.training = training
        save_checkpoint(tmp_path / f"{name}.safetensors", model, card)
    base["init"] = {"checkpoint": str(tmp_path / "generated.safetensors"), "scope": "all"}
    cfg = backbone_fold_config(base, rooms, "scene0005", 500, REPO)
    assert (cfg.init.checkpoint, cfg.init.scope) == (base["init"]["checkpoint"], "backbone")
    for name, reason in (("real", "real scans"), ("warm", "warm start"), ("unrecorded", "no tr")):
        base["init"]["checkpoint"] = str(tmp_path / f"{name}.safetensors")
        with pytest.raises(ValueError, match=f"{reason}.*may have seen the held-out room"):
            backbone_fold_config(base, rooms, "scene0005", 500, REPO)
    assert base["init"]["scope"] == "all"  # the caller's mapping is left as it was


def test_ranking_reads_the_named_metric_and_counts_ties_for_each() -> None:
    pooled = {"AP50": 0.2, "class_agnostic": {"AP50": 0.5, "AP25": None}}
    assert pooled_value(pooled, "AP50") == 0.2
    assert pooled_value(pooled, "agnostic_AP50") == 0.5
    assert pooled_value(pooled, "agnostic_AP25") == 0.0  # nothing predicted
    folds = {
        "a": {"r1": 0.3, "r2": 0.0, "r3": 0.1},
        "b": {"r1": 0.1, "r2": 0.0, "r3": 0.4, "r4": 0.9},  # r4: only b ran it, not counted
    }
    candidates = {
        name: {"held_out": {r: {"AP50": v} for r, v in by_room.items()}}
        for name, by_room in folds.items()
    }
    assert folds_won(candidates, "AP50") == {"a": 2, "b": 2}  # r2 is a tie


def test_overrides_reach_nested_keys_and_bad_ones_are_refused() -> None:
    config: dict = {"model": {"grouping": {"radius": 0.03}}}
    apply_override(config, "model.grouping.radius=0.1")
    apply_override(config, "model.mask_head.category_aware=false")
    assert config["model"] == {
        "grouping": {"radius": 0.1},
        "mask_head": {"category_aware": False},
    }
    with pytest.raises(ValueError, match=r"key\.path=value"):
        apply_override(config, "model.grouping.radius")


def write_tiny_config(path: Path, scannet_dir: Path, decoder: str = "dyco3d") -> Path:
    """A training config of the tiny test model on the real scans, a few quick iterations."""
    config = {
        "model_config": str(REPO / "config/model/tiny_test.yaml"),
        "model": {"decoder": {"name": decoder}},
        "data": {"scans_dir": str(scannet_dir), "real_repeat": 1},
        "augment": {"max_points": 4000},
        "train": {"iterations": 2, "threads": 1},
        "log": {"every": 1, "save_every": 100, "progress": False, "tensorboard": False},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_two_folds_run_pool_their_predictions_and_resume(tmp_path: Path, scannet_dir) -> None:
    torch.set_num_threads(1)
    path = write_tiny_config(tmp_path / "cv.yaml", scannet_dir)
    out = tmp_path / "cv"
    args = ["--config", str(path), "--rooms", "scene0004,scene0007", "--out", str(out)]
    assert main([*args, "--set", "model.grouping.radius=0.05"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary["folds"]) == ["scene0004", "scene0007"]
    assert summary["pooled"]["num_scenes"] == 2  # scene0004_00 + scene0007_00
    card = (out / "fold_scene0004" / "result.json").stat().st_mtime
    # Finished folds are kept, not retrained; a variant scores the same weights again.
    assert main([*args, "--inference-variant", "norm_statistics=input"]) == 0
    assert (out / "fold_scene0004" / "result.json").stat().st_mtime == card
    comparison = json.loads((out / "comparison.json").read_text())
    variant = comparison["candidates"]["cv+norm_statistics=input"]
    assert variant["inference"] == {"norm_statistics": "input"}
    assert variant["folds"] == comparison["candidates"]["cv"]["folds"]  # the same weights
    base = comparison["candidates"]["cv"]
    rooms = training_rooms(scannet_dir)
    for scored, inference in ((base, None), (variant, {"norm_statistics": "input"})):
        assert sorted(scored["held_out"]) == ["scene0004", "scene0007"]
        alone, _ = held_out_evaluator(
            {"scene0007": base["folds"]["scene0007"]}, rooms, scannet_dir, inference
        )
        pooled = alone.compute().to_dict()
        assert scored["held_out"]["scene0007"] == {m: pooled_value(pooled, m) for m in RANK_METRICS}
    assert "inference" not in comparison["candidates"]["cv"]
    bad = [*args, "--inference-variant", "norm_statistics=batch"]
    assert main(bad) == 2  # checked before anything runs
    assert main([*args[:2], "--rooms", "scene0009", "--out", str(out)]) == 2  # a val room


def test_decoders_compare_on_a_backbone_each_fold_trains_without_its_room(
    tmp_path: Path, scannet_dir
) -> None:
    torch.set_num_threads(1)
    paths = {
        name: write_tiny_config(tmp_path / f"{name}.yaml", scannet_dir, decoder)
        for name, decoder in (("backbone", "dyco3d"), ("dyco", "dyco3d"), ("pg", "pointgroup"))
    }
    out = tmp_path / "cv"
    args = ["--config", str(paths["dyco"]), "--config", str(paths["pg"]), "--out", str(out)]
    args += ["--backbone", str(paths["backbone"]), "--backbone-iterations", "3"]
    assert main([*args, "--rooms", "scene0004", "--set", "train.iterations=2"]) == 0

    backbone_path = (out / "backbone" / "fold_scene0004" / "model.safetensors").resolve()
    _, backbone = load_checkpoint(backbone_path)
    assert backbone.training["iterations"] == 3
    assert backbone.training["config"]["train"]["prepare_iters"] == 3  # no instance branch
    assert backbone.training["init"] is None  # from scratch: nothing that saw the room
    for name, decoder in (("dyco", "dyco3d"), ("pg", "pointgroup")):
        _, card = load_checkpoint(out / name / "fold_scene0004" / "model.safetensors")
        assert card.model_config["decoder"]["name"] == decoder
        assert card.training["iterations"] == 2
        assert card.training["init"]["checkpoint"] == str(backbone_path)
        assert card.training["init"]["scope"] == "backbone"
        for trained in (card, backbone):
            assert not any(
                s.startswith("scene0004") for s in trained.training["data"]["real_scans"]
            )
            assert trained.training["data"]["val_scans"] == ["scene0004_00"]

    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["rank_by"] == "agnostic_AP50" and comparison["rooms"] == ["scene0004"]
    pooled = {
        n: c["pooled"]["class_agnostic"]["AP50"] or 0.0 for n, c in comparison["candidates"].items()
    }
    assert pooled[comparison["best"]] == max(pooled.values())
    assert sum(comparison["rooms_won"].values()) >= 1
    # One held-out room: every resample is that room, so the pooled best wins all of them.
    assert comparison["resampled_wins"][comparison["best"]] == 1.0
    assert main([*args, "--config", str(paths["pg"])]) == 2  # two candidates of one name
    bad = tmp_path / "bad_backbone.yaml"
    bad.write_text(
        yaml.safe_dump({"base": str(paths["backbone"]), "model": {"decoder": {"name": "mask3d"}}})
    )
    bad_args = [*args[:4], "--backbone", str(bad), "--out", str(tmp_path / "bad")]
    assert main(bad_args) == 2  # refused before any fold trains
    assert not (tmp_path / "bad").exists()


def test_backbones_compare_each_candidate_on_each_and_pretraining_sees_no_real_scan(
    tmp_path: Path, scannet_dir
) -> None:
    torch.set_num_threads(1)
    scratch = write_tiny_config(tmp_path / "scratch.yaml", scannet_dir)
    pretrain = tmp_path / "pretrain.yaml"
    pretrained = tmp_path / "pretrain" / "model.safetensors"
    pretrain.write_text(
        yaml.safe_dump(
            {
                "base": str(scratch),
                "data": {
                    "real_repeat": 0,
                    "generated_rooms": 2,
                    "generated_points": 4000,
                    "val_split": "none",
                },
                "train": {"prepare_iters": 2},
                "export": {"checkpoint": str(pretrained)},
            }
        )
    )
    assert train_main(["--config", str(pretrain), "--out", str(tmp_path / "pretrain")]) == 0
    generated = tmp_path / "generated.yaml"
    generated.write_text(
        yaml.safe_dump({"base": str(scratch), "init": {"checkpoint": str(pretrained)}})
    )
    candidate = write_tiny_config(tmp_path / "dyco.yaml", scannet_dir)
    out = tmp_path / "cv"
    args = ["--config", str(candidate), "--rooms", "scene0004", "--backbone-iterations", "2"]
    args += ["--backbone", f"scratch={scratch}", "--backbone", f"generated={generated}"]
    assert main([*args, "--set", "train.iterations=1", "--out", str(out)]) == 0

    comparison = json.loads((out / "comparison.json").read_text())
    assert sorted(comparison["candidates"]) == ["dyco@generated", "dyco@scratch"]
    assert comparison["backbones"] == {"scratch": str(scratch), "generated": str(generated)}
    for backbone, config in (("scratch", scratch), ("generated", generated)):
        summary = json.loads((out / f"dyco@{backbone}" / "summary.json").read_text())
        assert (summary["backbone"], summary["config"]) == (str(config), str(candidate))
    for backbone, init in (("scratch", None), ("generated", str(pretrained))):
        trained = (out / "backbone" / backbone / "fold_scene0004" / "model.safetensors").resolve()
        _, card = load_checkpoint(trained)
        assert (card.training["init"] or {}).get("checkpoint") == init
        _, fold = load_checkpoint(out / f"dyco@{backbone}" / "fold_scene0004" / "model.safetensors")
        assert fold.training["init"]["checkpoint"] == str(trained)  # its own backbone
        assert fold.training["iterations"] == 1

    # A backbone may not start from weights that trained on real scans (the held-out room).
    leaky = tmp_path / "leaky.yaml"
    seen_real = out / "dyco@scratch" / "fold_scene0004" / "model.safetensors"
    leaky.write_text(yaml.safe_dump({"base": str(scratch), "init": {"checkpoint": str(seen_real)}}))
    bad = ["--config", str(candidate), "--backbone", str(leaky), "--out", str(tmp_path / "bad")]
    assert main(bad) == 2  # refused before any fold trains
    assert not (tmp_path / "bad").exists()
    named_twice = ["--backbone", f"a={scratch}", "--backbone", f"a={generated}"]
    assert main([*bad[:2], *named_twice, "--out", str(tmp_path / "bad")]) == 2


def test_continued_folds_start_from_the_earlier_fold_that_never_saw_their_room(
    tmp_path: Path, scannet_dir
) -> None:
    torch.set_num_threads(1)
    config = write_tiny_config(tmp_path / "dyco.yaml", scannet_dir)
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--config", str(config), "--rooms", "scene0004,scene0007"]
    args += ["--set", "train.iterations=1"]
    assert main([*args, "--out", str(first)]) == 0
    assert main([*args, "--continue-folds", str(first), "--out", str(second)]) == 0
    for room in ("scene0004", "scene0007"):  # each fold continues its own room's earlier fold
        start = (first / f"fold_{room}" / "model.safetensors").resolve()
        _, card = load_checkpoint(second / f"fold_{room}" / "model.safetensors")
        assert card.training["init"]["checkpoint"] == str(start)
        assert card.training["init"]["scope"] == "all"  # the whole model, decoder included
    earlier = (first / "fold_scene0004" / "model.safetensors").resolve()
    summary = json.loads((second / "summary.json").read_text())
    assert summary["continues"] == str(first)

    rooms = training_rooms(scannet_dir)
    # The earlier fold of scene0004 trained on scene0007: it cannot start scene0007's fold,
    # nor can a model whose warm start did, nor one that records nothing; a missing fold fails.
    leaky = tmp_path / "leaky"
    (leaky / "fold_scene0007").mkdir(parents=True)
    state, trained = load_checkpoint(earlier)
    model = build_model(state, trained)
    for name, training in (
        ("direct", trained.training),
        ("chained", {"data": {"real_scans": []}, "init": {"checkpoint": str(earlier)}}),
        ("unrecorded", {}),
    ):
        trained.training = training
        save_checkpoint(leaky / "fold_scene0007" / "model.safetensors", model, trained)
        reason = "records no training data" if name == "unrecorded" else r"trained on \['scene0007"
        with pytest.raises(ValueError, match=f"{reason}.*may have seen the held-out room"):
            continued_fold_start(leaky, "scene0007", rooms["scene0007"])
    assert continued_fold_start(first, "scene0004", rooms["scene0004"]) == str(earlier)
    refused = ["--config", str(config), "--continue-folds", str(leaky)]
    refused += ["--out", str(tmp_path / "x")]
    assert main([*refused, "--rooms", "scene0007"]) == 2  # before any fold trains
    assert main([*refused, "--rooms", "scene0005"]) == 2  # no such fold
    with_backbone = [*args, "--continue-folds", str(first), "--backbone", str(config)]
    assert main([*with_backbone, "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_backbones_are_named_by_their_file_or_as_given_and_names_must_differ() -> None:
    assert parse_backbones(["config/a.yaml", "pre=config/b.yaml"]) == {
        "a": Path("config/a.yaml"),
        "pre": Path("config/b.yaml"),
    }
    for specs in (["=config/a.yaml"], ["a=x.yaml", "config/a.yaml"]):
        with pytest.raises(ValueError, match="distinct, non-empty names"):
            parse_backbones(specs)


def test_room_resampling_draws_whole_rooms_with_replacement() -> None:
    # One chair per room. "a" finds it in rooms r1 and r2, "b" only in r3: "b" is best exactly
    # when r3 is drawn at least twice of three, P = 7/27.
    chair = classes.SEMANTIC_CLASSES.index("chair")
    semantic, instance = np.full(200, chair), np.ones(200, dtype=np.int64)
    hit = [{"class_id": chair, "score": 0.9, "point_indices": np.arange(200)}]
    finds = {"a": (True, True, False), "b": (False, False, True)}
    evaluators = {
        name: build_evaluator([(semantic, instance, hit if f else []) for f in found])
        for name, found in finds.items()
    }
    wins = resampled_wins(evaluators, ["r1", "r2", "r3"], "agnostic_AP50", resamples=500)
    assert wins["b"] == pytest.approx(7 / 27, abs=0.06)  # 3 standard errors
    assert wins["a"] + wins["b"] == pytest.approx(1.0)


def test_an_inference_variant_may_change_the_run_time_settings() -> None:
    assert inference_variant("grouping.radius=0.05,mask_head.category_aware=true,nms_iou=0.4") == {
        "grouping": {"radius": 0.05},
        "mask_head": {"category_aware": True},
        "nms_iou": 0.4,
    }
    with pytest.raises(ValueError, match=r"'backbone\.width' cannot change at inference"):
        inference_variant("backbone.width=8")


def _chair_evaluator(found: list[bool]):
    """Scans of one 200-point chair each, the chair predicted in those where `found`."""
    chair = classes.SEMANTIC_CLASSES.index("chair")
    semantic, instance = np.full(200, chair), np.ones(200, dtype=np.int64)
    hit = [{"class_id": chair, "score": 0.9, "point_indices": np.arange(200)}]
    return build_evaluator([(semantic, instance, hit if f else []) for f in found])


def test_room_resampling_keeps_a_rooms_scans_together_and_ties_count_for_each() -> None:
    """One room of two scans: "a" finds the first scan's chair, "b" the second's. Every
    resample draws the room with both scans, so they tie (AP50 0.5 each) every time and each
    counts as best every time; drawing scans one by one would let "a" win alone."""
    evaluators = {"a": _chair_evaluator([True, False]), "b": _chair_evaluator([False, True])}
    wins = resampled_wins(evaluators, ["r1", "r1"], "agnostic_AP50", resamples=50)
    assert wins == {"a": 1.0, "b": 1.0}


def test_per_room_metrics_score_each_rooms_own_scans() -> None:
    """Rooms r1 (two scans, chair found in one) and r2 (one scan, chair found): r1's AP50 is
    0.5 and r2's 1.0, each from its own scans, not the pooled 2 of 3."""
    metrics = held_out_metrics(_chair_evaluator([True, False, True]), ["r1", "r1", "r2"])
    assert metrics["r1"]["agnostic_AP50"] == pytest.approx(0.5)
    assert metrics["r2"]["agnostic_AP50"] == pytest.approx(1.0)
    assert sorted(metrics["r1"]) == sorted(RANK_METRICS)


def test_held_out_scans_are_tagged_with_their_room(scannet_dir) -> None:
    """A room of two scans: both are segmented and both count as that room (the unit room
    resampling draws), not as two rooms."""
    rooms = training_rooms(scannet_dir)
    fold = {"checkpoint": str(REPO / "checkpoints" / "tiny_fixture.safetensors")}
    evaluator, scene_rooms = held_out_evaluator({"scene0001": fold}, rooms, scannet_dir)
    assert scene_rooms == ["scene0001", "scene0001"]
    assert evaluator.compute().to_dict()["num_scenes"] == 2


def test_a_fold_never_exports_over_the_shipped_checkpoint(scannet_dir) -> None:
    """A config with an export section: the fold drops it (its model stays in the fold's
    folder) and the caller's mapping keeps it."""
    rooms = training_rooms(scannet_dir)
    base = {
        "model_config": str(REPO / "config/model/tiny_test.yaml"),
        "export": {"checkpoint": "checkpoints/dyco3d_scannet_m16.safetensors"},
    }
    cfg = fold_config(base, rooms, "scene0002", 0.0, REPO)
    assert cfg.export.checkpoint == ""
    assert base["export"] == {"checkpoint": "checkpoints/dyco3d_scannet_m16.safetensors"}


def test_the_comparison_table_lists_the_best_pooled_candidate_first() -> None:
    pooled = {
        name: {"AP": v, "AP50": v, "AP25": v, "class_agnostic": {"AP": v, "AP50": v, "AP25": v}}
        for name, v in (("low", 0.1), ("high", 0.7), ("mid", 0.4))
    }
    comparison = {
        "rank_by": "AP50",
        "rooms": ["r1", "r2"],
        "rooms_won": {"low": 0, "high": 2, "mid": 0},
        "resampled_wins": {"low": 0.0, "high": 0.9, "mid": 0.1},
        "candidates": {name: {"pooled": p} for name, p in pooled.items()},
    }
    rows = format_comparison(comparison).splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| high", "| mid", "| low"]
    assert rows[0].endswith("| 2 of 2 | 90.0% |")


def test_a_plan_is_refused_before_any_fold_trains(tmp_path: Path, scannet_dir) -> None:
    """Two candidates with one file name, no backbone iterations, or a held-out room that is no
    training room (a val room): exit status 2, nothing written."""
    config = write_tiny_config(tmp_path / "cv.yaml", scannet_dir)
    (tmp_path / "other").mkdir()
    twin = write_tiny_config(tmp_path / "other" / "cv.yaml", scannet_dir)
    out = ["--out", str(tmp_path / "x"), "--rooms", "scene0004"]
    assert main(["--config", str(config), "--config", str(twin), *out]) == 2
    assert main(["--config", str(config), "--backbone-iterations", "0", *out]) == 2
    val_room = ["--out", str(tmp_path / "x"), "--rooms", "scene0009"]
    assert main(["--config", str(config), *val_room]) == 2
    assert not (tmp_path / "x").exists()


def test_the_comparison_names_the_best_pooled_candidate(tmp_path: Path, scannet_dir) -> None:
    """Two finished folds on room scene0001: random weights (listed first) and tiny_fixture,
    which trained on scene0001_00 and finds most of its objects. The comparison names
    tiny_fixture best, in the one room and in every resample, and tables it first."""
    random = write_random_checkpoint(tmp_path / "random.safetensors")
    tiny = REPO / "checkpoints" / "tiny_fixture.safetensors"
    rooms = {"scene0001": ["scene0001_00"]}
    names = {"random": random, "tiny": tiny}
    plan = Plan(
        {n: Path(f"{n}.yaml") for n in names},
        {n: {} for n in names},
        {},
        scannet_dir,
        rooms,
        ["scene0001"],
    )
    folds = {n: {"scene0001": {"checkpoint": str(c), "steps": 1}} for n, c in names.items()}
    out = tmp_path / "cv"
    for name in names:
        (out / name).mkdir(parents=True)
    args = argparse.Namespace(
        out=str(out), set=[], rank_by="agnostic_AP50", continue_folds=None, backbone_iterations=1
    )
    summarise(plan, folds, args)
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["best"] == "tiny"
    assert comparison["rooms_won"] == {"random": 0, "tiny": 1}
    assert comparison["resampled_wins"] == {"random": 0.0, "tiny": 1.0}
    assert comparison["candidates"]["random"]["pooled"]["class_agnostic"]["AP50"] == 0.0


def test_an_interrupted_fold_resumes_from_its_training_state(tmp_path: Path, scannet_dir) -> None:
    """A fold folder with a training state but no result.json: run_fold continues from that
    state (here one saved after the last iteration, so nothing is trained again: no training
    row is logged) instead of training the fold from scratch."""
    torch.set_num_threads(1)
    base = yaml.safe_load(write_tiny_config(tmp_path / "cv.yaml", scannet_dir).read_text())
    cfg = fold_config(base, training_rooms(scannet_dir), "scene0004", 0.0, REPO)
    out = tmp_path / "fold_scene0004"
    trainer = Trainer(cfg, out_dir=out)
    trainer.step = cfg.train.iterations  # interrupted after its last step, before its result
    trainer.save_state(out / "state.pt")
    trainer.close()
    result = run_fold(cfg, out)
    assert result["steps"] == cfg.train.iterations == 2
    assert not (out / "train.csv").exists()
    assert json.loads((out / "result.json").read_text())["steps"] == 2
