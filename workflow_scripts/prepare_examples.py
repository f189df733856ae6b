"""Validate a SQuAD file (v1.1 or v2.0) or an examples table and flatten it to a parquet table, one
row per question, with synthetic unanswerable questions where asked.

    python workflow_scripts/prepare_examples.py --squad FILE.json[.gz]|EXAMPLES.parquet --out EXAMPLES.parquet \
        [--holdout-out HOLDOUT.parquet --holdout-articles N [--holdout-questions N]] [--max-questions N] \
        [--unanswerable-share S --negative KIND=WEIGHT ...] \
        [--source-info SOURCE.json --record-out RECORD.json] [--seed S]

Real unanswerable questions count first; synthetic ones of the --negative kinds (split by weight)
top them up to a share S of all questions. Held-out articles (--holdout-out) are written as they
are, without synthetic questions: they get their own recipe by running this script on them.
--record-out writes what the table holds and where the data came from (--source-info: the download
step's record).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections import Counter
from typing import Sequence

from qabench import cli
from qabench.data import examples_to_frame, read_examples
from qabench.errors import InputError, run_cli
from qabench.io import read_json, write_json, write_parquet
from qabench.negatives import KINDS
from qabench.prepare import prepare


def parse_negatives(values: list[str], option: str) -> dict[str, float]:
    weights = {}
    for value in values:
        kind, _, weight = value.partition("=")
        if kind not in KINDS:
            raise InputError(option, f"unknown kind '{kind}' (known: {', '.join(KINDS)})")
        try:
            weights[kind] = float(weight)
        except ValueError:
            raise InputError(option, f"'{value}' is not KIND=WEIGHT") from None
        if not math.isfinite(weights[kind]) or weights[kind] < 0:
            raise InputError(option, f"'{value}': the weight must be a finite number >= 0")
    return weights


def share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share in [0, 1)")
    return value


def describe(source: dict, negatives: dict) -> str:
    """One line for the summary: where the questions came from and what the table holds."""
    synthetic = sum(negatives["synthetic"].values())
    text = f"{source.get('description', source.get('source', 'unknown source'))}: {negatives['answerable']:,} answerable, "
    text += f"{negatives['real_unanswerable']:,} real unanswerable"
    return text + (f" + {synthetic:,} synthetic unanswerable" if synthetic else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--holdout-out")
    parser.add_argument("--holdout-articles", type=int, default=0)
    parser.add_argument("--holdout-questions", type=int)
    parser.add_argument("--max-questions", type=int)
    parser.add_argument("--unanswerable-share", type=share,
                        help="top real unanswerable questions up to this share with synthetic ones (needed with "
                             "--negative; 0: none)")
    parser.add_argument("--negative", action="append", default=[], help="KIND=WEIGHT: synthetic kinds and their weights")
    parser.add_argument("--source-info", help="the download step's record of the source used")
    parser.add_argument("--record-out", help="where to write what the tables hold (JSON)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    cli.setup()
    if args.holdout_articles > 0 and not args.holdout_out:
        raise InputError("--holdout-articles", "held-out articles need --holdout-out to be written to")
    source = read_json(args.source_info) if args.source_info else {"source": args.squad}
    examples = read_examples(args.squad)
    kinds = parse_negatives(args.negative, "--negative")
    if kinds and args.unanswerable_share is None:
        raise InputError("--negative", "synthetic kinds were given without --unanswerable-share, the share of "
                                       "unanswerable questions they should top up to")
    try:
        table, holdout, negatives = prepare(examples, max_questions=args.max_questions,
                                            holdout_articles=args.holdout_articles,
                                            holdout_questions=args.holdout_questions,
                                            negatives={"share": args.unanswerable_share or 0.0, "kinds": kinds},
                                            seed=args.seed)
    except ValueError as err:
        raise InputError(args.squad, str(err)) from None
    record = {"source": source, "summary": describe(source, negatives), "negatives": negatives}
    logging.info("%s: %s", args.out, record["summary"])
    if negatives["shortfall"]:
        logging.warning("%d synthetic negatives short of the %d wanted (the kinds could not rewrite enough "
                        "questions)", negatives["shortfall"], negatives["synthetic_wanted"])
    write_parquet(args.out, examples_to_frame(table))
    logging.info("%s: %d rows %s", args.out, len(table), dict(Counter(e.origin for e in table)))
    if args.holdout_out:
        record["held_out"] = {"articles": args.holdout_articles, "questions": len(holdout)}
        write_parquet(args.holdout_out, examples_to_frame(holdout))
        logging.info("%s: %d rows %s", args.holdout_out, len(holdout), dict(Counter(e.origin for e in holdout)))
    if args.record_out:
        write_json(args.record_out, record)
    return 0


if __name__ == "__main__":
    run_cli(main)
