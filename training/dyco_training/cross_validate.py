"""Leave-one-room-out cross-validation on the training rooms: how settings are chosen.

    dyco-cross-validate --config config/train/shipped.yaml --minutes-per-fold 10 \\
        --set model.mask_head.category_aware=true --out runs/cv/category_aware

For each training room (scene0001..scene0008; its rescans go together) one model trains on the
other rooms with the config's settings and the overrides, for the time budget, and is evaluated
on the held-out room. The val rooms are never touched. Folds are resumable: a finished fold's
result is kept (`fold_<room>/result.json`), an interrupted one continues from its state. The
summary pools the held-out predictions of all folds into one benchmark (AP / AP50 / AP25,
labelled and class-agnostic) next to the per-fold numbers, in `summary.json` and a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from dyco_perception.evaluation import evaluate_predictions
from dyco_perception.scenes import load_npz_scene
from dyco_perception.segmenter import Segmenter

from dyco_training.datasets import list_npz_scans, room_of
from dyco_training.trainer import REPO_ROOT, Trainer, read_train_yaml, train_config_from_dict


def apply_override(config: dict[str, Any], assignment: str) -> None:
    """'a.b.c=value' (value parsed as YAML) into the nested config mapping."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"--set expects key.path=value, got {assignment!r}")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {part} is not a mapping")
    node[leaf] = yaml.safe_load(text)


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


def pooled_metrics(folds: dict[str, dict], rooms: dict[str, list[str]], scans_dir: Path) -> dict:
    """One benchmark over every held-out scan, each segmented by the model that did not see it."""
    items = []
    for room, fold in folds.items():
        segmenter = Segmenter.from_checkpoint(fold["checkpoint"], device="cpu")
        for name in rooms[room]:
            scene = load_npz_scene(scans_dir / f"{name}.npz")
            result = segmenter.segment(scene.xyz, scene.rgb)
            items.append((scene.semantic, scene.instance, result.instances))
    return evaluate_predictions(items)


def format_summary(folds: dict[str, dict], pooled: dict) -> str:
    lines = ["| held-out room | iterations | AP50 | class-agnostic AP50 |", "|---|---|---|---|"]
    for room, fold in folds.items():
        m = fold["metrics"]
        lines.append(
            f"| {room} | {fold['steps']} | {m.get('AP50', 0.0):.3f} | "
            f"{m.get('agnostic_AP50', 0.0):.3f} |"
        )
    agnostic = pooled["class_agnostic"]
    lines.append(
        f"| **pooled** | | **{pooled['AP50'] or 0:.3f}** (AP {pooled['AP'] or 0:.3f}, "
        f"AP25 {pooled['AP25'] or 0:.3f}) | **{agnostic['AP50'] or 0:.3f}** |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dyco-cross-validate", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--set", action="append", default=[], help="override key.path=value")
    parser.add_argument("--minutes-per-fold", type=float, default=0.0)
    parser.add_argument("--rooms", help="comma-separated held-out rooms (default: all)")
    parser.add_argument("--out", required=True, help="folder for the folds and the summary")
    args = parser.parse_args(argv)
    try:
        base = read_train_yaml(Path(args.config))
        for assignment in args.set:
            apply_override(base, assignment)
        where = Path(args.config).parent  # relative paths in the config, as dyco-train reads them
        probe = train_config_from_dict(copy.deepcopy(base), base=where)
        scans_dir = Path(probe.data.scans_dir)
        scans_dir = scans_dir if scans_dir.is_absolute() else REPO_ROOT / scans_dir
        rooms = training_rooms(scans_dir)
        chosen = args.rooms.split(",") if args.rooms else list(rooms)
        unknown = sorted(set(chosen) - set(rooms))
        if unknown:
            raise ValueError(f"rooms {unknown} are not training rooms {sorted(rooms)}")
        configs = {r: fold_config(base, rooms, r, args.minutes_per_fold, where) for r in chosen}
    except (OSError, ValueError) as exc:
        print(f"dyco-cross-validate: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    folds = {room: run_fold(cfg, out / f"fold_{room}") for room, cfg in configs.items()}
    pooled = pooled_metrics(folds, rooms, scans_dir)
    summary = {"config": args.config, "overrides": args.set, "folds": folds, "pooled": pooled}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(format_summary(folds, pooled))
    return 0


if __name__ == "__main__":
    sys.exit(main())
