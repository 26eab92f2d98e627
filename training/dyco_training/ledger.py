"""The training ledger: every segment of a shipped checkpoint's training, so the hours add up.

    python -m dyco_training.ledger add --run runs/continue/segment_3 \\
        [--checkpoint checkpoints/dyco3d_scannet_m16.safetensors] [--ledger checkpoints/ledger.yaml]
    python -m dyco_training.ledger next    # the number the next segment gets
    python -m dyco_training.ledger set-inference norm_statistics=input  # the shipped card's

`checkpoints/ledger.yaml` is the ledger's one source of truth: one entry per segment (its config,
iterations, seconds, the checkpoint hash it started from and the one it shipped, its val and
training-scan AP at the end, its learning curve). `add` appends the segment a run just
exported, refusing one that did not start from the ledger's last shipped file (a chain with a
gap would not add up), then writes the whole ledger into the checkpoint's card
(`training.ledger`, the weights untouched), the cumulative learning curve next to the checkpoint
(`<stem>_ledger.png`) and the table in the README beside it (between `<!-- ledger -->` marks).
`set-inference` changes the last shipped file's inference settings (weights untouched); its
ledger entry records them and its new hash, so the chain continues.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from dyco_training.train_config import deep_merge, parse_assignments

DEFAULT_CHECKPOINT = Path("checkpoints/dyco3d_scannet_m16.safetensors")
DEFAULT_LEDGER = Path("checkpoints/ledger.yaml")
BEGIN, END = "<!-- ledger -->", "<!-- /ledger -->"
CURVE_COLUMNS = ("AP50", "agnostic_AP50")
# Settings the class prior is fitted by: changing one (the mode not "off") refits it.
PRIOR_FIT_SETTINGS = {
    "class_geometry",
    "class_geometry_features",
    "class_geometry_fragments",
    "class_geometry_balance",
}


def file_digest(path: Path) -> str:
    """The 16-hex-digit sha256 prefix warm starts record (`init.sha256_16`)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def read_ledger(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    segments = data.get("segments", [])
    if not isinstance(segments, list):
        raise ValueError(f"{path}: 'segments' must be a list")
    return segments


def _csv_rows(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


def _pick(metrics: dict[str, Any]) -> dict[str, float]:
    agnostic = metrics.get("class_agnostic") or {}
    return {
        "AP50": round(float(metrics.get("AP50", 0.0)), 4),
        "agnostic_AP50": round(float(agnostic.get("AP50", metrics.get("agnostic_AP50", 0.0))), 4),
    }


def segment_from_run(checkpoint: Path, run: Path) -> dict[str, Any]:
    """The ledger entry of the segment whose export is `checkpoint` and whose logs are in `run`."""
    from dyco_perception.checkpoint import load_checkpoint

    _, card = load_checkpoint(checkpoint)
    training = card.training
    init = training.get("init") or {}
    if init.get("scope") != "all" or not init.get("sha256_16"):
        raise ValueError(f"{checkpoint}: not a continued segment (no warm start of every weight)")
    val_rows, train_rows = _csv_rows(run / "val.csv"), _csv_rows(run / "train_eval.csv")
    curve = {
        kind: [[int(r["step"]), *(round(r.get(c, 0.0), 4) for c in CURVE_COLUMNS)] for r in rows]
        for kind, rows in (("val", val_rows), ("train", train_rows))
    }
    val = training.get("val_metrics") or (val_rows[-1] if val_rows else None)
    return {
        "config": (training.get("config") or {}).get("out_dir", str(run)),
        "git_commit": training.get("git_commit", "unknown"),
        "iterations": int(training["iterations"]),
        "seconds": float(training["train_seconds"]),
        "init_sha256_16": init["sha256_16"],
        "val": _pick(val) if val else None,
        "train_scans": _pick(train_rows[-1]) if train_rows else None,
        "curve": curve,
    }


def append_segment(segments: list[dict[str, Any]], segment: dict[str, Any]) -> list[dict]:
    """The ledger with `segment` added, numbered and totalled; it must continue the last one."""
    if segments and segment["init_sha256_16"] != segments[-1]["sha256_16"]:
        raise ValueError(
            f"the segment started from {segment['init_sha256_16']}, but the ledger's last "
            f"segment shipped {segments[-1]['sha256_16']}: a gap in the chain"
        )
    previous = segments[-1] if segments else {"total_iterations": 0, "total_hours": 0.0}
    entry = {
        "segment": len(segments) + 1,
        **segment,
        "total_iterations": previous["total_iterations"] + segment["iterations"],
        "total_hours": round(previous["total_hours"] + segment["seconds"] / 3600, 3),
    }
    return [*segments, entry]


def rewrite_card(checkpoint: Path, edit: Callable[[Any], Any]) -> None:
    """Replace the checkpoint's card with `edit(card)`; the weights are written back as read."""
    from dyco_perception.checkpoint import CARD_KEY, ModelCard
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(checkpoint), framework="pt") as f:
        metadata = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not iterable)
    metadata[CARD_KEY] = edit(ModelCard.from_json(metadata[CARD_KEY])).to_json()
    tmp = checkpoint.with_suffix(".tmp.safetensors")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(checkpoint)


def write_card_ledger(checkpoint: Path, segments: list[dict[str, Any]]) -> None:
    """Rewrite the checkpoint's card with the ledger (without the curves); weights untouched."""

    def with_ledger(card):
        card.training["ledger"] = [
            {k: v for k, v in s.items() if k not in ("curve", "sha256_16")} for s in segments
        ]
        return card

    rewrite_card(checkpoint, with_ledger)


def set_inference(
    checkpoint: Path, ledger: Path, changes: dict[str, Any], readme: Path | None = None
) -> dict[str, Any]:
    """Give the last shipped checkpoint other inference settings (its card; the weights and
    their training stay). The ledger's last entry records them and follows the file's new hash,
    so the next segment still continues the chain. A PRIOR_FIT_SETTINGS change (the mode not
    "off") refits the card's prior on its training scans (`class_geometry.py`)."""
    from dyco_training.class_geometry import with_class_geometry

    segments = read_ledger(ledger)
    if not segments or segments[-1]["sha256_16"] != file_digest(checkpoint):
        raise ValueError(f"{checkpoint} is not the last file the ledger {ledger} shipped")

    def edit(card):
        mode = changes.get("class_geometry", card.config.inference.class_geometry)
        if mode != "off" and PRIOR_FIT_SETTINGS & changes.keys():
            card.class_geometry = None  # (re)fitted on the segments' scans, as now asked
            card = with_class_geometry(
                card,
                features=changes.get("class_geometry_features"),
                fragments=changes.get("class_geometry_fragments"),
                balance=changes.get("class_geometry_balance"),
            )
        return card.with_inference(changes)

    rewrite_card(checkpoint, edit)
    last = segments[-1]
    last["inference"] = deep_merge(last.get("inference", {}), changes)
    write_card_ledger(checkpoint, segments)
    last["sha256_16"] = file_digest(checkpoint)
    ledger.write_text(yaml.safe_dump({"segments": segments}, sort_keys=False), encoding="utf-8")
    if readme is not None:
        render_readme(readme, segments)  # the table shows the shipped hash
    return last


def plot_ledger(segments: list[dict[str, Any]], path: Path) -> Path:
    """AP50 and class-agnostic AP50 on val (solid) and the training scans (dashed) against the
    total iterations, segment boundaries dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    offset = 0
    points: dict[tuple[str, str], tuple[list, list]] = {}
    for s in segments:
        for kind, rows in (s.get("curve") or {}).items():
            for row in rows:
                for column, value in zip(CURVE_COLUMNS, row[1:], strict=True):
                    xs, ys = points.setdefault((kind, column), ([], []))
                    xs.append(offset + row[0])
                    ys.append(value)
        offset = s["total_iterations"]
        ax.axvline(offset, color="grey", linestyle=":", linewidth=0.8)
    for (kind, column), (xs, ys) in sorted(points.items()):
        style = "-" if kind == "val" else "--"
        ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{column} ({kind})")
    ax.set(xlabel="total iterations", ylabel="AP50", title="training ledger: every segment")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _ap(values: dict[str, float] | None) -> str:
    return "-" if not values else f"{values['AP50']:.3f} / {values['agnostic_AP50']:.3f}"


def ledger_table(segments: list[dict[str, Any]]) -> str:
    lines = [
        "| segment | run | iterations | hours | total iterations | total hours "
        "| val AP50 / agnostic | train scans AP50 / agnostic | shipped sha256 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in segments:
        lines.append(
            f"| {s['segment']} | `{s['config']}` | {s['iterations']} | {s['seconds'] / 3600:.2f} "
            f"| {s['total_iterations']} | {s['total_hours']:.2f} | {_ap(s['val'])} "
            f"| {_ap(s.get('train_scans'))} | `{s['sha256_16']}` |"
        )
    return "\n".join(lines)


def render_readme(readme: Path, segments: list[dict[str, Any]]) -> None:
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: no {BEGIN} ... {END} block for the ledger table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{ledger_table(segments)}\n{END}{tail}", encoding="utf-8")


def add(checkpoint: Path, run: Path, ledger: Path, readme: Path | None) -> dict[str, Any]:
    segments = append_segment(read_ledger(ledger), segment_from_run(checkpoint, run))
    write_card_ledger(checkpoint, segments)
    segments[-1]["sha256_16"] = file_digest(checkpoint)  # of the file as shipped, card included
    ledger.write_text(yaml.safe_dump({"segments": segments}, sort_keys=False), encoding="utf-8")
    plot_ledger(segments, checkpoint.with_name(f"{checkpoint.stem}_ledger.png"))
    if readme is not None:
        render_readme(readme, segments)
    return segments[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dyco_training.ledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    adding = sub.add_parser("add", help="append the segment a run exported")
    adding.add_argument("--run", required=True, type=Path, help="the segment's run folder")
    adding.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    adding.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER)
    adding.add_argument("--readme", type=Path, help="default: README.md beside the checkpoint")
    nxt = sub.add_parser("next", help="print the next segment's number")
    nxt.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER)
    setting = sub.add_parser(
        "set-inference", help="other inference settings for the last shipped checkpoint"
    )
    setting.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    setting.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    setting.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER)
    setting.add_argument("--readme", type=Path, help="default: README.md beside the checkpoint")
    args = parser.parse_args(argv)
    try:
        if args.command == "next":
            print(len(read_ledger(args.ledger)) + 1)
            return 0
        readme = args.readme or args.checkpoint.with_name("README.md")
        if args.command == "set-inference":
            changes = parse_assignments(args.settings)
            entry = set_inference(args.checkpoint, args.ledger, changes, readme)
            print(f"segment {entry['segment']}: inference {entry['inference']}")
            return 0
        entry = add(args.checkpoint, args.run, args.ledger, readme)
    except (ValueError, FileNotFoundError) as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in entry.items() if k != "curve"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
