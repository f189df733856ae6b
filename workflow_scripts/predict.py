"""Answer every question of a SQuAD-format file (or examples table) with a QA checkpoint.

    python workflow_scripts/predict.py --model MODEL_DIR --data FILE.json[.gz]|EXAMPLES.parquet --out-dir DIR \
        [--batch-size 64] [--threshold-file THRESHOLD.json | --threshold T | --abstain-share S] \
        [--precision fp32|bf16|auto] [--threads N]

Writes DIR/predictions.json ({id: answer}, "" to abstain), DIR/na_probs.json ({id: null score
minus best span score}), DIR/best_spans.json ({id: best answer whatever its na_prob}) and
DIR/decision.json (the threshold used, how it was chosen, and timing). Without a threshold option
the threshold is 0; a THRESHOLD.json is what workflow_scripts/choose_threshold.py writes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from qabench import cli, devices
from qabench import threshold as abstain_threshold
from qabench.data import read_examples
from qabench.errors import run_cli
from qabench.io import check_finite, check_fraction, stop_with_snakemake, write_json
from qabench.model_dir import load_model
from qabench.predict import predict


def decision(args: argparse.Namespace) -> tuple[float, str]:
    """The threshold to decide with, and how it was chosen (an abstain share decides after predicting)."""
    if args.threshold_file is not None:
        return abstain_threshold.read(args.threshold_file)
    if args.abstain_share is not None:
        return abstain_threshold.DEFAULT, f"abstain on a share of {args.abstain_share:g} of these questions " \
                                          "(highest na_prob)"
    if args.threshold is not None:
        return args.threshold, "given on the command line"
    return abstain_threshold.DEFAULT, f"the default, {abstain_threshold.DEFAULT:g}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory, hub id or pip:package")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out-dir", required=True)
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--threshold-file", help="JSON whose \"threshold\" to abstain by (choose_threshold's output)")
    rule.add_argument("--threshold", type=float, help="abstain when na_prob exceeds this (default 0)")
    rule.add_argument("--abstain-share", type=float, metavar="S",
                      help="abstain on this share (0-1) of the questions, those with the highest na_prob "
                           "(for a set whose share of unanswerable questions is known)")
    cli.add_inference_options(parser, devices.PRECISIONS)
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    check_fraction("--abstain-share", args.abstain_share)
    check_finite("--threshold", args.threshold)
    cli.check_inference_options(args)
    threshold, threshold_rule = decision(args)
    cli.setup(args.threads)
    examples = read_examples(args.data)
    model, tokenizer, settings = load_model(args.model, args.device)
    result = predict(model, tokenizer, examples, settings, batch_size=args.batch_size,
                     threshold=threshold, precision=args.precision, abstain_share=args.abstain_share)
    result.check_finite(args.model)
    out = Path(args.out_dir)
    write_json(out / "predictions.json", result.predictions)
    write_json(out / "na_probs.json", result.na_probs)
    write_json(out / "best_spans.json", result.best_answers())
    write_json(out / "decision.json", {"threshold": result.threshold, "threshold_rule": threshold_rule,
                                       "model": args.model, **result.stats})
    logging.info("%d questions, %.1f questions/s, %d abstentions", len(examples), result.stats["questions_per_s"],
                 sum(1 for v in result.predictions.values() if v == ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
