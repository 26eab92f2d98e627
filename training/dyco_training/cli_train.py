"""`dyco-train --config config/train/<name>.yaml [--resume STATE] [--out DIR]`.

Multi-GPU / multi-node: `torchrun --nproc_per_node N -m dyco_training.cli_train --config ...`
(or `torchrun ... $(which dyco-train) ...`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from dyco_training.trainer import Trainer, load_train_config


def _override(cfg, key: str, value: int) -> None:
    """train.<key> = value, in the settings and in the source the model card records."""
    setattr(cfg.train, key, value)
    cfg.source.setdefault("train", {})[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dyco-train", description="Train DyCo3D.")
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument("--resume", help="training state file (state.pt) to continue from")
    parser.add_argument("--out", help="run folder (default: the config's out_dir)")
    parser.add_argument("--iterations", type=int, help="override train.iterations")
    parser.add_argument("--seed", type=int, help="override train.seed (crops, augmentation)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        cfg = load_train_config(args.config)
        if args.iterations is not None:
            if args.iterations < 1:
                raise ValueError("--iterations must be >= 1")
            _override(cfg, "iterations", args.iterations)
        if args.seed is not None:
            _override(cfg, "seed", args.seed)
        trainer = Trainer(cfg, out_dir=args.out, resume=args.resume)
    except ValueError as exc:
        print(f"dyco-train: {exc}", file=sys.stderr)
        return 2
    try:
        result = trainer.run()
    finally:
        trainer.close()
    if trainer.info.is_main:
        print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
