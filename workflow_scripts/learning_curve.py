"""Score a trained model at the weight snapshots its training kept: its learning curve.

    python workflow_scripts/learning_curve.py --model MODEL_DIR --holdout HOLDOUT.parquet \
        [--eval NAME=EXAMPLES.parquet ...] --out CURVE.json \
        [--batch-size 64] [--precision fp32|bf16|auto] [--device cpu] [--threads N]

The snapshots are those of MODEL_DIR/snapshots/ (a model trained with snapshot_every_steps); the
last point is the finished model. Each point chooses its own threshold on the held-out questions.
The summarize rule plots the curves.
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from qabench import cli, devices
from qabench.curves import curve
from qabench.data import read_examples
from qabench.errors import InputError, run_cli
from qabench.io import stop_with_snakemake, write_json


def named_files(values: list[str]) -> dict[str, str]:
    named = {}
    for value in values:
        name, _, path = value.partition("=")
        if not name or not path:
            raise InputError("--eval", f"'{value}' is not NAME=FILE")
        named[name] = path
    return named


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a base model directory written by the train rule")
    parser.add_argument("--holdout", required=True, help="held-out questions (examples table or SQuAD file)")
    parser.add_argument("--eval", action="append", default=[], metavar="NAME=FILE",
                        help="an eval set to score at each point too (costs a prediction of it per point)")
    parser.add_argument("--out", required=True)
    cli.add_inference_options(parser, devices.PRECISIONS)
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    cli.check_inference_options(args)
    cli.setup(args.threads)
    holdout = read_examples(args.holdout)
    if not holdout:
        raise InputError(args.holdout, "no held-out questions: a learning curve needs them to choose thresholds")
    eval_sets = {name: read_examples(path) for name, path in named_files(args.eval).items()}
    points = curve(args.model, holdout, eval_sets, args.batch_size, args.precision, args.device)
    write_json(args.out, {"model": args.model, "points": points})
    for point in points:
        logging.info("step %d (%.0f s): held-out F1 %.2f, HasAns F1 answering all %.2f%s", point["step"],
                     point["trained_s"], point["holdout"]["f1"], point["holdout"]["HasAns_f1_answering_all"],
                     "".join(f", {name} F1 {point[name]['f1']:.2f}" for name in eval_sets))
    return 0


if __name__ == "__main__":
    run_cli(main)
