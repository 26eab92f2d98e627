"""Run logs: CSV files (train.csv, val.csv), TensorBoard events and a PNG of the curves.

Only the main process writes (`enabled=False` on other ranks makes every call a no-op).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class RunLogger:
    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._rows: dict[str, list[dict[str, float]]] = {"train": [], "val": [], "train_eval": []}
        self._writer = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._load_existing()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError as exc:  # tensorboard is optional at run time
                log.warning("TensorBoard logging off: %s", exc)

    def _load_existing(self) -> None:
        """Keep the rows of an earlier run in this folder (resume appends to the curves)."""
        for kind in self._rows:
            path = self.out_dir / f"{kind}.csv"
            if path.is_file():
                with open(path, newline="", encoding="utf-8") as f:
                    self._rows[kind] = [
                        {k: float(v) for k, v in row.items() if v not in ("", None)}
                        for row in csv.DictReader(f)
                    ]

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """Append one row (step + values) to <kind>.csv and TensorBoard."""
        if not self.enabled:
            return
        rows = self._rows.setdefault(kind, [])
        rows[:] = [r for r in rows if r.get("step", -1) < step]  # a resumed run overwrites
        rows.append({"step": float(step), **{k: float(v) for k, v in values.items()}})
        self._write_csv(kind)
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(f"{kind}/{name}", float(value), step)
            self._writer.flush()

    def _write_csv(self, kind: str) -> None:
        rows = self._rows[kind]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(self.out_dir / f"{kind}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def rows(self, kind: str) -> list[dict[str, float]]:
        return list(self._rows.get(kind, []))

    def plot(self, path: str | Path | None = None) -> Path | None:
        """PNG with the training losses (left) and the validation AP curves (right)."""
        if not self.enabled or not self._rows["train"]:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path else self.out_dir / "curves.png"
        fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5))
        train = self._rows["train"]
        for name in [k for k in train[-1] if k.startswith("loss_")]:
            steps = [r["step"] for r in train if name in r]
            ax_loss.plot(steps, [r[name] for r in train if name in r], label=name[5:])
        ax_loss.set(xlabel="iteration", ylabel="loss", title="training losses")
        ax_loss.legend(fontsize=7)
        ax_loss.grid(alpha=0.3)
        for kind, style in (("val", "-"), ("train_eval", "--")):
            rows = self._rows[kind]
            for name in ("AP", "AP50", "AP25", "agnostic_AP50"):
                steps = [r["step"] for r in rows if name in r]
                if steps:
                    values = [r[name] for r in rows if name in r]
                    label = name if kind == "val" else f"{name} (train scans)"
                    ax_val.plot(steps, values, style, marker="o", label=label)
        ax_val.set(xlabel="iteration", ylabel="score", title="AP: val scans (-), train scans (--)")
        if ax_val.lines:  # no validation yet: no legend
            ax_val.legend(fontsize=8)
        ax_val.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
