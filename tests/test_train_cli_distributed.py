"""Multi-process training through torchrun on the CPU (gloo): 2 ranks, sharded scenes,
parameters in sync after the steps."""

import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, sys
from pathlib import Path
import torch
from dyco_training.trainer import Trainer, train_config_from_dict

cfg = train_config_from_dict(json.loads(sys.argv[1]))
out = Path(sys.argv[2])
trainer = Trainer(cfg, out_dir=out / "run")
flat = lambda: torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
initial = flat()
seen = []
for _ in range(2):
    seen.append([s.name for s in trainer._scenes_for(trainer.step)])
    trainer.train_step(trainer.batch_for(trainer.step))
torch.save({"rank": trainer.info.rank, "world": trainer.info.world_size,
            "initial": initial, "params": flat(), "seen": seen},
           out / f"rank{trainer.info.rank}.pt")
trainer.close()
"""


def test_torchrun_two_ranks_shard_scenes_and_keep_parameters_in_sync(tmp_path):
    cfg = {
        "model_config": str(REPO / "config/model/tiny_test.yaml"),
        "data": {
            "real_repeat": 0,
            "generated_rooms": 4,
            "generated_points": 4000,
            "val_split": "none",
        },
        "augment": {"max_points": 3000},
        "optim": {"lr": 0.01},
        "train": {"iterations": 2, "threads": 1, "device": "cpu"},
        "log": {"progress": False, "tensorboard": False},
    }
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            json.dumps(cfg),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world"] == 2 for r in ranks)
    # Same start (same seed), moved by training, and identical after the DDP steps.
    torch.testing.assert_close(ranks[0]["initial"], ranks[1]["initial"], rtol=0, atol=0)
    assert not torch.equal(ranks[0]["initial"], ranks[0]["params"])
    torch.testing.assert_close(ranks[0]["params"], ranks[1]["params"], rtol=0, atol=1e-7)
    # Each rank trained on its own shard of the pool.
    for step in range(2):
        assert ranks[0]["seen"][step] != ranks[1]["seen"][step]
