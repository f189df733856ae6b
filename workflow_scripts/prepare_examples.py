"""Validate a SQuAD file (v1.1 or v2.0) and flatten it to a parquet table, one row per question.

    python workflow_scripts/prepare_examples.py --squad FILE.json[.gz] --out EXAMPLES.parquet \
        [--holdout-out HOLDOUT.parquet --holdout-articles N [--holdout-questions N]] \
        [--max-questions N] [--negative KIND=FRACTION ...] [--seed S]
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


def parse_negative(value: str) -> tuple[str, float]:
    kind, _, fraction = value.partition("=")
    if kind not in KINDS:
        raise InputError("--negative", f"unknown kind '{kind}' (known: {', '.join(KINDS)})")
    try:
        return kind, float(fraction)
    except ValueError:
        raise InputError("--negative", f"'{value}' is not KIND=FRACTION") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--holdout-out")
    parser.add_argument("--holdout-articles", type=int, default=0)
    parser.add_argument("--holdout-questions", type=int)
    parser.add_argument("--max-questions", type=int)
    parser.add_argument("--negative", action="append", default=[], help="KIND=FRACTION of answerable questions")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    cli.setup()
    if args.holdout_articles > 0 and not args.holdout_out:
        raise InputError("--holdout-articles", "held-out articles need --holdout-out to be written to")
    examples = load_squad(args.squad)
    try:
        train, holdout = prepare(examples, max_questions=args.max_questions, holdout_articles=args.holdout_articles,
                                 holdout_questions=args.holdout_questions,
                                 negatives=dict(parse_negative(n) for n in args.negative), seed=args.seed)
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
