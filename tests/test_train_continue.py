"""`make train-continue` (scripts/train_continue.sh) trains from a frozen copy of the committed
code, so edits to the working tree cannot reach a segment that runs for hours."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_a_segment_trains_from_a_worktree_of_head_first_on_the_path(tmp_path: Path) -> None:
    commit = git("rev-parse", "HEAD")
    copy = tmp_path / commit
    env = {**os.environ, "DYCO_CODE_ROOT": str(tmp_path), "DRY_RUN": "1"}
    try:
        run = subprocess.run(
            ["bash", "scripts/train_continue.sh"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        perception, training, command = run.stdout.strip().splitlines()[-3:]
        assert Path(perception).is_relative_to(copy / "dyco_perception")
        assert Path(training).is_relative_to(copy / "training")
        trainer = "training/dyco_training/trainer.py"
        assert (copy / trainer).read_text() == git("show", f"HEAD:{trainer}") + "\n"
        n = subprocess.run(
            ["python", "-m", "dyco_training.ledger", "next"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        out = f"runs/continue/segment_{n}"
        assert command.startswith(
            "python -m dyco_training.cli_train --config config/train/continue.yaml "
            f"--out {out} --seed {n}"
        )
        assert ("--resume" in command) == (REPO / out / "state.pt").is_file()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(copy)], cwd=REPO)
