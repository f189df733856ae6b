"""Tokenize one shard of an examples table into training windows with labels (parquet), for one model.

    python workflow_scripts/tokenize_shard.py --examples EXAMPLES.parquet --family encoder|t5|lstm|mamba \
        --checkpoint SPEC [--options JSON] --max-length 384 --stride 128 --max-question-tokens 64 \
        --shard I --shards N --out SHARD.parquet
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from qabench import cli, models
from qabench.data import read_examples
from qabench.errors import InputError, run_cli
from qabench.windows import WindowSpec
from qabench.features import shard_bounds
from qabench.io import check_positive, stop_with_snakemake, write_parquet


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", required=True)
    parser.add_argument("--family", required=True, choices=models.FAMILIES)
    parser.add_argument("--checkpoint", required=True, help="the model's checkpoint spec (its tokenizer is used)")
    parser.add_argument("--options", default="{}", help="the model's family options (JSON)")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--max-question-tokens", type=int, default=64)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    for option in ("max_length", "max_question_tokens", "shards"):
        check_positive(f"--{option.replace('_', '-')}", getattr(args, option))
    if not 0 <= args.shard < args.shards:
        raise InputError("--shard", f"must be in 0..{args.shards - 1} (--shards {args.shards}), got {args.shard}")
    cli.setup()
    spec = WindowSpec(args.max_length, args.stride, args.max_question_tokens)
    spec.validate("--stride")
    options = cli.parse_options(args.options)
    examples = read_examples(args.examples)
    lo, hi = shard_bounds(len(examples), args.shard, args.shards)
    family = models.family(args.family)
    tokenizer = family.load_tokenizer(cli.parse_checkpoint(args.checkpoint), options)
    features = family.make_features(examples[lo:hi], tokenizer, spec, options, example_offset=lo)
    write_parquet(args.out, features)
    logging.info("shard %d/%d: examples %d..%d -> %d windows", args.shard, args.shards, lo, hi, len(features))
    return 0


if __name__ == "__main__":
    run_cli(main)
