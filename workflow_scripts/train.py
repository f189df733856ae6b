"""Train a QA model of any family (spans with a no-answer score, or t5 text); resumes if interrupted.

    python workflow_scripts/train.py --manifest FEATURES/manifest.json --examples TRAIN.parquet \
        [--holdout HOLDOUT.parquet] [--family encoder] --checkpoint SPEC [--options JSON] \
        --out MODEL_DIR --state-dir STATE_DIR [--device cpu|cuda] \
        [--epochs 2 --learning-rate 5e-5 --batch-size 32 --precision fp32|bf16|auto --seed 13 ...]

One process per GPU (the same result as one process, up to float rounding):

    torchrun --standalone --nproc-per-node N -m workflow_scripts.train --device cuda ...
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch.distributed as dist

from qabench import cli, devices, models
from qabench.data import read_examples
from qabench.errors import run_cli
from qabench.features import read_feature_shards, without_synthetic_negatives
from qabench.finetune import run
from qabench.io import read_json
from qabench.train import TrainSettings, join_processes


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="feature manifest written by feature_manifest.py")
    parser.add_argument("--examples", required=True, help="the examples table the features came from")
    parser.add_argument("--holdout", help="held-out examples for choosing the abstain threshold")
    parser.add_argument("--family", default="encoder", choices=models.FAMILIES)
    parser.add_argument("--checkpoint", required=True, help="hub id, directory, pip:package, or JSON random-init spec")
    parser.add_argument("--options", default="{}", help="the family's options (JSON object)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--state-dir", required=True, help="resume checkpoints live here until training ends")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: this process's GPU (cuda:LOCAL_RANK under torchrun)")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--max-question-tokens", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--precision", choices=devices.PRECISIONS, default=defaults.precision)
    parser.add_argument("--save-every-steps", type=int, default=defaults.save_every_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-synthetic-negatives", action="store_true",
                        help="train only on the real questions of the examples table")
    parser.add_argument("--threads", type=int, help="CPU threads, shared by the processes torchrun starts")
    args = parser.parse_args(argv)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cli.setup(args.threads and max(1, args.threads // processes))
    device = join_processes(args.device)
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports for all
    manifest = read_json(args.manifest)
    features = read_feature_shards([str(Path(args.manifest).parent / s["path"]) for s in manifest["shards"]])
    examples = read_examples(args.examples)
    if args.no_synthetic_negatives:
        features = without_synthetic_negatives(features, examples)
        examples = [e for e in examples if not e.origin.startswith("neg_")]
    holdout = read_examples(args.holdout) if args.holdout else []
    settings = TrainSettings(
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, precision=args.precision,
        save_every_steps=args.save_every_steps, seed=args.seed,
    )
    run(
        family=args.family, checkpoint=cli.parse_checkpoint(args.checkpoint),
        options=cli.parse_options(args.options), features=features, holdout=holdout,
        window={"max_length": args.max_length, "stride": args.stride, "max_question_tokens": args.max_question_tokens},
        train_settings=settings, out_dir=args.out, state_dir=args.state_dir, device=device,
        data_counts={"questions": len(examples), "by_origin": dict(Counter(e.origin for e in examples)),
                     "windows": len(features), "holdout_questions": len(holdout)},
    )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_cli(main)
