"""Choose a model's abstain threshold on held-out questions: the one with the best F1 on them.

    python workflow_scripts/choose_threshold.py --model MODEL_DIR --holdout HOLDOUT.parquet|FILE.json[.gz] \
        --out THRESHOLD.json [--batch-size 64] [--precision fp32|bf16|auto] [--device cpu] [--threads N]

Writes {"threshold", "threshold_rule", "holdout_scores"} (the official metrics on the held-out
questions at threshold 0, best_* at the chosen one); predict --threshold-file reads it. The held-out
questions must come from articles the model never trained on, and never from the set it is scored on.
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from qabench import cli, devices
from qabench import threshold as abstain_threshold
from qabench.data import read_examples
from qabench.errors import run_cli
from qabench.io import stop_with_snakemake, write_json
from qabench.model_dir import load_model
from qabench.predict import predict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory, hub id or pip:package")
    parser.add_argument("--holdout", required=True, help="held-out questions (examples table or SQuAD file)")
    parser.add_argument("--out", required=True)
    cli.add_inference_options(parser, devices.PRECISIONS)
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    cli.check_inference_options(args)
    cli.setup(args.threads)
    holdout = read_examples(args.holdout)
    if holdout:
        model, tokenizer, settings = load_model(args.model, args.device)
        result = predict(model, tokenizer, holdout, settings, batch_size=args.batch_size, precision=args.precision)
        result.check_finite(args.model)
        chosen = abstain_threshold.choose(holdout, result.best_answers(), result.na_probs)
    else:
        chosen = abstain_threshold.choose([], {}, {})
    write_json(args.out, chosen)
    scores = chosen.get("holdout_scores", {})
    logging.info("abstain threshold %.3f: %s%s", chosen["threshold"], chosen["threshold_rule"],
                 f" (held-out F1 {scores['f1']:.2f} at 0, {scores['best_f1']:.2f} at the chosen one)" if scores else "")
    return 0


if __name__ == "__main__":
    run_cli(main)
