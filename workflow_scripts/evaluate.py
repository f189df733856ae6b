"""Score SQuAD predictions with the official SQuAD 2.0 metric (plus strict_exact).

    python workflow_scripts/evaluate.py --data SQUAD.json[.gz] --predictions PREDS.json \
        [--na-probs NA.json [--best-spans BEST.json]] [--na-prob-thresh 1.0 | --decision DECISION.json] \
        --out METRICS.json

--best-spans (each question's best answer, as predict writes it) gives the official best_* keys
their intended meaning: the score at the best threshold, which decided predictions cannot show
where they abstain.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from qabench.errors import InputError, run_cli
from qabench import threshold as abstain_threshold
from qabench.io import check_finite, stop_with_snakemake, write_json
from qabench.metrics import evaluate_files


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SQuAD v1.1/v2.0 file (.json or .json.gz)")
    parser.add_argument("--predictions", required=True, help="JSON object: question id -> answer text")
    parser.add_argument("--na-probs", help="JSON object: question id -> no-answer probability")
    parser.add_argument(
        "--na-prob-thresh", type=float, default=None,
        help="abstain where the no-answer probability exceeds this (default 1.0)",
    )
    parser.add_argument("--best-spans", help="JSON object: question id -> best answer whatever its na_prob "
                                             "(for the best_* keys; needs --na-probs)")
    parser.add_argument("--decision", help='JSON file whose "threshold" is used as --na-prob-thresh')
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    if args.decision is not None and args.na_prob_thresh is not None:
        raise InputError(args.decision, "--decision and --na-prob-thresh were both given; pass only one")
    if args.decision is not None:
        threshold, _ = abstain_threshold.read(args.decision)
    elif args.na_prob_thresh is not None:
        threshold = args.na_prob_thresh
    else:
        threshold = 1.0
    check_finite("--na-prob-thresh", threshold)
    if args.best_spans is not None and args.na_probs is None:
        raise InputError(args.best_spans, "--best-spans needs --na-probs (the best_* keys come from both)")
    metrics = evaluate_files(args.data, args.predictions, args.na_probs, threshold, args.best_spans)
    write_json(args.out, metrics)
    print(f"exact {metrics['exact']:.2f}  f1 {metrics['f1']:.2f}  "
          f"({metrics['total']} questions, na_prob_thresh {threshold:g}) -> {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
