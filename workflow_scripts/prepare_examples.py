"""Validate a SQuAD file (v1.1 or v2.0) and flatten it to a parquet table, one row per question.

    python workflow_scripts/prepare_examples.py --squad FILE.json[.gz] --out EXAMPLES.parquet \
        [--holdout-out HOLDOUT.parquet --holdout-articles N [--holdout-questions N]] \
        [--max-questions N] [--negative KIND=FRACTION ...] [--holdout-negative KIND=FRACTION ...] [--seed S]

The held-out set gets the --negative recipe unless --holdout-negative gives it its own.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from typing import Sequence

from qabench import cli
from qabench.data import examples_to_frame, load_squad
from qabench.errors import InputError, run_cli
from qabench.io import write_parquet
from qabench.negatives import KINDS
from qabench.prepare import prepare


def parse_negatives(values: list[str], option: str) -> dict[str, float]:
    recipe = {}
    for value in values:
        kind, _, fraction = value.partition("=")
        if kind not in KINDS:
            raise InputError(option, f"unknown kind '{kind}' (known: {', '.join(KINDS)})")
        try:
            recipe[kind] = float(fraction)
        except ValueError:
            raise InputError(option, f"'{value}' is not KIND=FRACTION") from None
    return recipe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--holdout-out")
    parser.add_argument("--holdout-articles", type=int, default=0)
    parser.add_argument("--holdout-questions", type=int)
    parser.add_argument("--max-questions", type=int)
    parser.add_argument("--negative", action="append", default=[], help="KIND=FRACTION of answerable questions")
    parser.add_argument("--holdout-negative", action="append", default=[],
                        help="KIND=FRACTION for the held-out set only (default: the --negative recipe)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    cli.setup()
    if args.holdout_articles > 0 and not args.holdout_out:
        raise InputError("--holdout-articles", "held-out articles need --holdout-out to be written to")
    examples = load_squad(args.squad)
    try:
        train, holdout = prepare(examples, max_questions=args.max_questions, holdout_articles=args.holdout_articles,
                                 holdout_questions=args.holdout_questions,
                                 negatives=parse_negatives(args.negative, "--negative"),
                                 holdout_negatives=parse_negatives(args.holdout_negative, "--holdout-negative")
                                 if args.holdout_negative else None, seed=args.seed)
    except ValueError as err:
        raise InputError(args.squad, str(err)) from None
    write_parquet(args.out, examples_to_frame(train))
    logging.info("%s: %d rows %s", args.out, len(train), dict(Counter(e.origin for e in train)))
    if args.holdout_out:
        write_parquet(args.holdout_out, examples_to_frame(holdout))
        logging.info("%s: %d rows %s", args.holdout_out, len(holdout), dict(Counter(e.origin for e in holdout)))
    return 0


if __name__ == "__main__":
    run_cli(main)
