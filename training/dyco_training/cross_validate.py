"""Leave-one-room-out cross-validation on the training rooms: how settings are chosen.

    dyco-cross-validate --config config/train/shipped.yaml --minutes-per-fold 10 \\
        --set model.mask_head.category_aware=true --out runs/cv/category_aware

For each training room (scene0001..scene0008; its rescans go together) one model trains on the
other rooms with the config's settings and the overrides, for the time budget, and is evaluated
on the held-out room. The val rooms are never touched. Folds are resumable: a finished fold's
result is kept (`fold_<room>/result.json`), an interrupted one continues from its state. The
summary pools the held-out predictions of all folds into one benchmark (AP / AP50 / AP25,
labelled and class-agnostic) next to the per-fold numbers, in `summary.json` and a table.

Several `--config`s are candidates compared fold by fold (`<out>/<config stem>/fold_<room>`),
ranked by one pooled metric (`--rank-by`), with how often each ranks first when the held-out
rooms are drawn again with replacement (`comparison.json`). With `--backbone CONFIG`, each fold
first trains a backbone on that fold's rooms only (the semantic and offset heads, no instance
branch, for `--backbone-iterations`), and every candidate starts from it (`init.scope:
backbone`): how the decoders are compared without a backbone that has seen the held-out room.
A backbone starts from scratch, or from its config's `init` when those weights were trained on
generated rooms alone (pretraining). With several `--backbone NAME=CONFIG`, every candidate
runs on each (`<candidate>@<backbone>`): how backbones, e.g. with and without pretraining, are
compared. With `--continue-folds DIR`, each fold instead continues the whole model an earlier run
trained for it (`DIR/fold_<room>`, which never saw the held-out room): how settings for training
that keeps going (the continued segments) are compared.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from dyco_perception.checkpoint import inference_sections, load_checkpoint
from dyco_perception.evaluation import InstanceEvaluator, build_evaluator
from dyco_perception.scenes import load_npz_scene
from dyco_perception.segmenter import Segmenter

from dyco_perception.config import ModelConfig
from dyco_training.datasets import list_npz_scans, room_of
from dyco_training.train_config import apply_override, parse_assignments
from dyco_training.trainer import (
    REPO_ROOT,
    Trainer,
    read_train_yaml,
    resolve_init_path,
    train_config_from_dict,
)


def training_rooms(scans_dir: Path) -> dict[str, list[str]]:
    """Room -> its scan names, for the train split only."""
    rooms: dict[str, list[str]] = {}
    for path in list_npz_scans(scans_dir, "train"):
        rooms.setdefault(room_of(path.stem), []).append(path.stem)
    return rooms


def fold_config(
    base: dict[str, Any], rooms: dict[str, list[str]], held_out: str, minutes: float, where: Path
):
    config = copy.deepcopy(base)
    data = config.setdefault("data", {})
    data.update(
        {
            "train_split": "train",
            "train_scans": [s for room, scans in rooms.items() if room != held_out for s in scans],
            "val_split": "train",
            "val_scans": rooms[held_out],
        }
    )
    if minutes:
        config.setdefault("train", {})["max_minutes"] = minutes
    config.setdefault("log", {})["val_every"] = 0  # the held-out room is scored once, at the end
    config.pop("export", None)  # a fold never writes over the shipped checkpoint
    return train_config_from_dict(config, base=where)


def backbone_fold_config(
    base: dict[str, Any], rooms: dict[str, list[str]], held_out: str, iterations: int, where: Path
):
    """The fold's backbone stage: semantic and offset losses only (the instance branch is never
    trained, so no decoder shapes the features the candidates share). It starts from scratch or
    from weights trained on generated rooms alone: any that saw a real scan may have seen the
    held-out room."""
    config = copy.deepcopy(base)
    start = (config.pop("init", None) or {}).get("checkpoint")
    if start:
        require_generated_only(start)
        config["init"] = {"checkpoint": start, "scope": "backbone"}
    config.setdefault("train", {}).update(
        {"iterations": iterations, "prepare_iters": iterations, "max_minutes": 0}
    )
    return fold_config(config, rooms, held_out, 0.0, where)


def require_generated_only(checkpoint: str) -> None:
    """Refuse pretrained weights whose model card shows a real scan or a warm start of its own
    (what that one saw is not recorded here)."""
    path = resolve_init_path(checkpoint)
    _, card = load_checkpoint(path)
    training = card.training or {}
    real = training.get("data", {}).get("real_scans")
    if real is None:
        seen = "records no training data"
    elif real:
        seen = f"shows real scans {real[:3]}"
    elif training.get("init"):
        seen = f"shows a warm start from {training['init'].get('checkpoint')}"
    else:
        return
    raise ValueError(
        f"backbone init {path}: its model card {seen}, so it may have seen the held-out room; "
        "a fold's backbone starts from scratch or from weights trained on generated rooms "
        "alone (data.real_repeat: 0, no init)"
    )


def continued_fold_start(folds: Path, room: str, scans: list[str]) -> str:
    """The model an earlier cross-validation trained for `room`'s fold (`<folds>/fold_<room>`),
    which a continued fold starts from. Refused when it, or any start it chains from, trained on
    one of the room's scans or records no training data."""
    start = str((folds / f"fold_{room}" / "model.safetensors").resolve())
    checkpoint: str | None = start
    while checkpoint:
        path = resolve_init_path(checkpoint)
        _, card = load_checkpoint(path)
        training = card.training or {}
        real = training.get("data", {}).get("real_scans")
        seen = sorted(set(scans).intersection(real or []))
        if real is None or seen:
            shown = f"trained on {seen}" if seen else "records no training data"
            raise ValueError(
                f"fold start {start}: {path} {shown}, so it may have seen the held-out room {room}"
            )
        checkpoint = (training.get("init") or {}).get("checkpoint")
    return start


def starting_from(base: dict[str, Any], checkpoint: str, scope: str) -> dict[str, Any]:
    """A candidate's config warm-started from `checkpoint` (a fold's backbone or earlier model)."""
    config = copy.deepcopy(base)
    config["init"] = {"checkpoint": checkpoint, "scope": scope}
    return config


def run_fold(cfg, out: Path) -> dict[str, Any]:
    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    state = out / "state.pt"
    trainer = Trainer(cfg, out_dir=out, resume=state if state.is_file() else None)
    try:
        result = trainer.run()
    finally:
        trainer.close()
    summary = {
        "checkpoint": result["checkpoint"],
        "steps": result["steps"],
        "metrics": Trainer.flat_metrics(result["val"]),
    }
    done.write_text(json.dumps(summary, indent=1))
    return summary


def held_out_evaluator(
    folds: dict[str, dict],
    rooms: dict[str, list[str]],
    scans_dir: Path,
    inference: dict[str, Any] | None = None,
) -> tuple[InstanceEvaluator, list[str]]:
    """Every held-out scan, each segmented by the model that did not see it (with `inference`
    settings in place of its card's, if given), in one evaluator; and the room of each of its
    scenes (what room resampling draws)."""
    items, scene_rooms = [], []
    for room, fold in folds.items():
        segmenter = Segmenter.from_checkpoint(fold["checkpoint"], device="cpu", inference=inference)
        for name in rooms[room]:
            scene = load_npz_scene(scans_dir / f"{name}.npz")
            result = segmenter.segment(scene.xyz, scene.rgb)
            items.append((scene.semantic, scene.instance, result.instances))
            scene_rooms.append(room)
    return build_evaluator(items), scene_rooms


def resampled_wins(
    evaluators: dict[str, InstanceEvaluator],
    scene_rooms: list[str],
    metric: str,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """How often each candidate has the best pooled `metric` when the held-out rooms are drawn
    again with replacement (ties count for each tied one): how settled the ranking is."""
    rng = np.random.default_rng(seed)
    by_room: dict[str, list[int]] = {}
    for index, room in enumerate(scene_rooms):
        by_room.setdefault(room, []).append(index)
    names = sorted(by_room)
    wins = dict.fromkeys(evaluators, 0)
    for _ in range(resamples):
        drawn = [i for r in rng.choice(len(names), len(names)) for i in by_room[names[r]]]
        scores = {
            n: pooled_value(e.compute(drawn).to_dict(), metric) for n, e in evaluators.items()
        }
        for name, score in scores.items():
            wins[name] += score == max(scores.values())
    return {name: count / resamples for name, count in wins.items()}


RANK_METRICS = ("AP", "AP50", "AP25", "agnostic_AP", "agnostic_AP50", "agnostic_AP25")


def pooled_value(pooled: dict, metric: str) -> float:
    """A RANK_METRICS entry of a pooled benchmark (0 where nothing was predicted)."""
    if metric.startswith("agnostic_"):
        return float(pooled["class_agnostic"][metric.removeprefix("agnostic_")] or 0.0)
    return float(pooled[metric] or 0.0)


def held_out_metrics(
    evaluator: InstanceEvaluator, scene_rooms: list[str]
) -> dict[str, dict[str, float]]:
    """Held-out room -> its RANK_METRICS, from the same predictions the pooled benchmark
    scores (so a run scored with other inference settings has its own per-room numbers)."""
    by_room: dict[str, list[int]] = {}
    for index, room in enumerate(scene_rooms):
        by_room.setdefault(room, []).append(index)
    return {
        room: {m: pooled_value(evaluator.compute(rows).to_dict(), m) for m in RANK_METRICS}
        for room, rows in by_room.items()
    }


def format_summary(folds: dict[str, dict], held_out: dict[str, dict], pooled: dict) -> str:
    lines = ["| held-out room | iterations | AP50 | class-agnostic AP50 |", "|---|---|---|---|"]
    for room, fold in folds.items():
        m = held_out[room]
        lines.append(f"| {room} | {fold['steps']} | {m['AP50']:.3f} | {m['agnostic_AP50']:.3f} |")
    agnostic = pooled["class_agnostic"]
    lines.append(
        f"| **pooled** | | **{pooled['AP50'] or 0:.3f}** (AP {pooled['AP'] or 0:.3f}, "
        f"AP25 {pooled['AP25'] or 0:.3f}) | **{agnostic['AP50'] or 0:.3f}** |"
    )
    return "\n".join(lines)


def folds_won(candidates: dict[str, dict], metric: str) -> dict[str, int]:
    """How many held-out rooms each candidate scores best on (ties go to every tied one)."""
    won = dict.fromkeys(candidates, 0)
    for room in pooled_rooms(candidates):
        scores = {n: c["held_out"][room][metric] for n, c in candidates.items()}
        for name, score in scores.items():
            won[name] += score == max(scores.values())
    return won


def format_comparison(comparison: dict[str, Any]) -> str:
    """The candidates, best pooled metric first, with how settled each place is."""
    metric, candidates = comparison["rank_by"], comparison["candidates"]
    lines = [
        f"| candidate | AP / AP50 / AP25 | class-agnostic AP / AP50 / AP25 | best held-out rooms "
        f"({metric}) | best in room resamples |",
        "|---|---|---|---|---|",
    ]
    ranked = sorted(candidates, key=lambda n: -pooled_value(candidates[n]["pooled"], metric))
    for name in ranked:
        pooled = candidates[name]["pooled"]
        labelled = " / ".join(f"{pooled_value(pooled, k):.3f}" for k in RANK_METRICS[:3])
        agnostic = " / ".join(f"{pooled_value(pooled, k):.3f}" for k in RANK_METRICS[3:])
        won = f"{comparison['rooms_won'][name]} of {len(comparison['rooms'])}"
        lines.append(
            f"| {name} | {labelled} | {agnostic} | {won} | "
            f"{comparison['resampled_wins'][name]:.1%} |"
        )
    return "\n".join(lines)


def pooled_rooms(candidates: dict[str, dict]) -> list[str]:
    return sorted(set.intersection(*(set(c["held_out"]) for c in candidates.values())))


def read_candidate(path: Path, overrides: list[str]) -> dict[str, Any]:
    config = read_train_yaml(path)
    for assignment in overrides:
        apply_override(config, assignment)
    return config


def candidate_dir(out: Path, name: str, count: int) -> Path:
    return out if count == 1 else out / name


@dataclass
class Backbone:
    """A per-fold backbone stage: its config file and mapping."""

    path: Path
    config: dict[str, Any]


@dataclass
class Plan:
    """What a run will do, checked before any training starts."""

    paths: dict[str, Path]  # candidate name (its config's file stem) -> config file
    candidates: dict[str, dict[str, Any]]  # name -> config mapping, overrides applied
    backbones: dict[str, Backbone]  # name -> the per-fold backbone stage; {} = none
    scans_dir: Path
    rooms: dict[str, list[str]]  # every training room -> its scans
    chosen: list[str]  # the held-out rooms of this run

    # Inference settings every run's folds are also scored with, as runs of their own named
    # `<run>+<spec>` (same weights, no training): spec -> the settings.
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Folds of an earlier run each candidate continues (room -> that fold's model); {} = none.
    continued: dict[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> dict[str, tuple[str, str | None]]:
        """Run name -> (candidate, backbone): each candidate on each backbone, named
        `<candidate>@<backbone>` when there are several backbones."""
        if len(self.backbones) < 2:
            only = next(iter(self.backbones), None)
            return {name: (name, only) for name in self.candidates}
        return {f"{c}@{b}": (c, b) for b in self.backbones for c in self.candidates}

    def backbone_dir(self, out: Path, name: str) -> Path:
        return out / "backbone" if len(self.backbones) == 1 else out / "backbone" / name


def parse_backbones(specs: list[str]) -> dict[str, Path]:
    """`--backbone [NAME=]CONFIG` entries -> name (default: the file stem) -> config file."""
    named = {}
    for spec in specs:
        name, sep, path = spec.rpartition("=")
        path = Path(path)
        named.setdefault(name if sep else path.stem, []).append(path)
    repeated = sorted(name for name, found in named.items() if len(found) > 1)
    if repeated or not all(named):
        raise ValueError(f"backbones need distinct, non-empty names, got {specs}")
    return {name: found[0] for name, found in named.items()}


def make_plan(args: argparse.Namespace) -> Plan:
    """Read and check every config (a wrong value fails here, not hours into a run)."""
    paths = {Path(c).stem: Path(c) for c in args.config}
    if len(paths) != len(args.config):
        raise ValueError(f"candidates need distinct file names, got {args.config}")
    if args.backbone_iterations < 1:
        raise ValueError("--backbone-iterations must be at least 1")
    candidates = {name: read_candidate(path, args.set) for name, path in paths.items()}
    probes = [
        train_config_from_dict(copy.deepcopy(config), base=paths[name].parent)
        for name, config in candidates.items()
    ]
    scans_dir = Path(probes[0].data.scans_dir)
    scans_dir = scans_dir if scans_dir.is_absolute() else REPO_ROOT / scans_dir
    rooms = training_rooms(scans_dir)
    chosen = args.rooms.split(",") if args.rooms else list(rooms)
    unknown = sorted(set(chosen) - set(rooms))
    if unknown:
        raise ValueError(f"rooms {unknown} are not training rooms {sorted(rooms)}")
    backbones = {
        name: Backbone(path, read_train_yaml(path))
        for name, path in parse_backbones(args.backbone).items()
    }
    for backbone in backbones.values():
        backbone_fold_config(
            backbone.config, rooms, chosen[0], args.backbone_iterations, backbone.path.parent
        )
    variants = {spec: inference_variant(spec) for spec in args.inference_variant}
    continued = {}
    if args.continue_folds:
        if backbones:
            raise ValueError("--continue-folds starts each fold from a whole model: no --backbone")
        folds = Path(args.continue_folds)
        continued = {room: continued_fold_start(folds, room, rooms[room]) for room in chosen}
    return Plan(paths, candidates, backbones, scans_dir, rooms, chosen, variants, continued)


def inference_variant(spec: str) -> dict[str, Any]:
    """'key=value[,key=value]' -> the inference settings (a key of `inference:` or a card's
    run-time "section.key", e.g. grouping.radius), checked against the model config."""
    settings = parse_assignments(spec.split(","))
    ModelConfig.from_dict(inference_sections(settings))  # an unknown key or value fails here
    return settings


def train_backbone(plan: Plan, name: str, room: str, args: argparse.Namespace, out: Path) -> str:
    """The fold's backbone (trained, or kept from an earlier run): its checkpoint's path."""
    backbone = plan.backbones[name]
    cfg = backbone_fold_config(
        backbone.config, plan.rooms, room, args.backbone_iterations, backbone.path.parent
    )
    trained = run_fold(cfg, plan.backbone_dir(out, name) / f"fold_{room}")
    return str(Path(trained["checkpoint"]).resolve())


def run_folds(plan: Plan, args: argparse.Namespace, out: Path) -> dict[str, dict[str, dict]]:
    """Run -> held-out room -> fold result; per room, its backbones first if asked for."""
    runs = plan.runs
    folds: dict[str, dict[str, dict]] = {name: {} for name in runs}
    for room in plan.chosen:
        starts = {name: train_backbone(plan, name, room, args, out) for name in plan.backbones}
        for name, (candidate, backbone) in runs.items():
            config = plan.candidates[candidate]
            if backbone:
                config = starting_from(config, starts[backbone], "backbone")
            elif plan.continued:
                config = starting_from(config, plan.continued[room], "all")
            cfg = fold_config(
                config, plan.rooms, room, args.minutes_per_fold, plan.paths[candidate].parent
            )
            fold_out = candidate_dir(out, name, len(runs)) / f"fold_{room}"
            folds[name][room] = run_fold(cfg, fold_out)
    return folds


def summarise(plan: Plan, folds: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    """Each candidate's summary.json and table; with several, comparison.json and its table."""
    out, runs = Path(args.out), plan.runs
    summaries, evaluators, scene_rooms = {}, {}, []
    for name, (candidate, backbone) in runs.items():
        config = str(plan.paths[candidate])
        for spec, inference in {"": None, **plan.variants}.items():
            scored = f"{name}+{spec}" if spec else name
            evaluators[scored], scene_rooms = held_out_evaluator(
                folds[name], plan.rooms, plan.scans_dir, inference
            )
            pooled = evaluators[scored].compute().to_dict()
            held_out = held_out_metrics(evaluators[scored], scene_rooms)
            summaries[scored] = {
                "config": config,
                "folds": folds[name],
                "held_out": held_out,
                "pooled": pooled,
            }
            if inference:
                summaries[scored]["inference"] = inference
            print(f"{scored}:\n{format_summary(folds[name], held_out, pooled)}\n")
        backbone = str(plan.backbones[backbone].path) if backbone else None
        summary = {**summaries[name], "overrides": args.set, "backbone": backbone}
        summary["continues"] = args.continue_folds
        (candidate_dir(out, name, len(runs)) / "summary.json").write_text(
            json.dumps(summary, indent=1, default=str)
        )
    if len(summaries) == 1:
        return
    comparison = {
        "rank_by": args.rank_by,
        "best": max(summaries, key=lambda n: pooled_value(summaries[n]["pooled"], args.rank_by)),
        "rooms": plan.chosen,
        "backbones": {name: str(b.path) for name, b in plan.backbones.items()},
        "backbone_iterations": args.backbone_iterations if plan.backbones else None,
        "overrides": args.set,
        "continues": args.continue_folds,
        "rooms_won": folds_won(summaries, args.rank_by),
        "resampled_wins": resampled_wins(evaluators, scene_rooms, args.rank_by),
        "candidates": summaries,
    }
    (out / "comparison.json").write_text(json.dumps(comparison, indent=1, default=str))
    print(format_comparison(comparison))
    print(f"best by pooled {args.rank_by}: {comparison['best']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dyco-cross-validate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", action="append", required=True, help="training config YAML; repeat to compare"
    )
    parser.add_argument("--set", action="append", default=[], help="override key.path=value")
    parser.add_argument("--minutes-per-fold", type=float, default=0.0)
    parser.add_argument("--rooms", help="comma-separated held-out rooms (default: all)")
    parser.add_argument(
        "--backbone",
        action="append",
        default=[],
        help="[NAME=]config of a per-fold backbone the candidates start from; repeat to compare",
    )
    parser.add_argument("--backbone-iterations", type=int, default=500)
    parser.add_argument(
        "--continue-folds",
        metavar="DIR",
        help="each fold continues DIR/fold_<room>/model.safetensors (an earlier run's fold)",
    )
    parser.add_argument(
        "--inference-variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="also score every run's folds with these inference settings (same weights, "
        "compared as a run of its own); repeat for more",
    )
    parser.add_argument("--rank-by", choices=RANK_METRICS, default="agnostic_AP50")
    parser.add_argument("--out", required=True, help="folder for the folds and the summary")
    args = parser.parse_args(argv)
    try:
        plan = make_plan(args)
    except (OSError, ValueError) as exc:
        print(f"dyco-cross-validate: {exc}", file=sys.stderr)
        return 2
    summarise(plan, run_folds(plan, args, Path(args.out)), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
