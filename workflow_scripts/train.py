"""Train a QA model of any family (spans with a no-answer score, or t5 text); resumes if interrupted.

    python workflow_scripts/train.py --manifest FEATURES/manifest.json --examples TRAIN.parquet \
        [--family encoder] --checkpoint SPEC [--options JSON] \
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
from typing import Sequence

import torch.distributed as dist

from qabench import cli, devices, models
from qabench.data import read_examples
from qabench.errors import InputError, run_cli
from qabench.windows import WindowSpec
from qabench.features import check_features_match, read_manifest_features, without_synthetic_negatives
from qabench.finetune import run
from qabench.io import check_finite, check_fraction, check_positive, stop_with_snakemake
from qabench.train import TrainSettings, check_settings, join_processes

def check_positions(family: str, checkpoint: str | dict, features, manifest: str) -> None:
    """A model whose position table is shorter than the longest window would fail mid-training (an
    index error deep in torch): refuse first, naming both numbers, where the family can tell the limit
    without building the model."""
    known = models.family(family).checkpoint_position_limit(checkpoint)
    if known is None or not len(features):
        return
    limit, where = known
    longest = int(features["input_ids"].map(len).max())
    if longest > limit:
        raise InputError(where, f"the model takes at most {limit} tokens (max_position_embeddings), but the "
                                f"windows in {manifest} are up to {longest} long: set this model's max_length to "
                                f"{limit} or less")


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="feature manifest written by feature_manifest.py")
    parser.add_argument("--examples", required=True, help="the examples table the features came from")
    parser.add_argument("--family", default=models.DEFAULT_FAMILY, choices=models.FAMILIES)
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
    parser.add_argument("--new-weights-learning-rate", type=float,
                        help="learning rate of the layers a warm start added (default: --learning-rate)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--precision", choices=devices.PRECISIONS, default=defaults.precision)
    parser.add_argument("--save-every-steps", type=int, default=defaults.save_every_steps)
    parser.add_argument("--snapshot-every-steps", type=int,
                        help="keep the weights every N steps in MODEL_DIR/snapshots/ (for learning curves)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-synthetic-negatives", action="store_true",
                        help="train only on the real questions of the examples table")
    parser.add_argument("--threads", type=int, help="CPU threads, shared by the processes torchrun starts")
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    check_fraction("--warmup-ratio", args.warmup_ratio)
    for option in ("epochs", "learning_rate", "new_weights_learning_rate", "batch_size", "save_every_steps",
                   "snapshot_every_steps", "threads",
                   "max_length", "max_question_tokens"):
        check_positive(f"--{option.replace('_', '-')}", getattr(args, option))
    check_finite("--weight-decay", args.weight_decay)
    if args.weight_decay < 0:
        raise InputError("--weight-decay", f"must not be negative, got {args.weight_decay}")
    settings = TrainSettings(
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, precision=args.precision,
        save_every_steps=args.save_every_steps, snapshot_every_steps=args.snapshot_every_steps, seed=args.seed,
        new_weights_learning_rate=args.new_weights_learning_rate,
    )
    check_settings(settings, "train options")
    WindowSpec(args.max_length, args.stride, args.max_question_tokens).validate("--stride")
    checkpoint, options = cli.parse_checkpoint(args.checkpoint), cli.parse_options(args.options)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cli.setup(args.threads and max(1, args.threads // processes))
    features = read_manifest_features(args.manifest)
    missing = [c for c in models.family(args.family).feature_columns if c not in features.columns]
    if missing:
        raise InputError(args.manifest, f"its windows are not {args.family} training windows (missing columns "
                                        f"{missing}: tokenized for another family?)")
    examples = read_examples(args.examples)
    check_features_match(features, examples, args.manifest, args.examples)
    check_positions(args.family, checkpoint, features, args.manifest)
    device = join_processes(args.device)
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 reports for all
    if args.no_synthetic_negatives:
        features = without_synthetic_negatives(features, examples)
        examples = [e for e in examples if not e.origin.startswith("neg_")]
    run(
        family=args.family, checkpoint=checkpoint,
        options=options, features=features,
        window={"max_length": args.max_length, "stride": args.stride, "max_question_tokens": args.max_question_tokens},
        train_settings=settings, out_dir=args.out, state_dir=args.state_dir, device=device,
        data_counts={"questions": len(examples), "by_origin": dict(Counter(e.origin for e in examples)),
                     "windows": len(features)},
    )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_cli(main)
