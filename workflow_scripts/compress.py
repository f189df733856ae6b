"""Build a compressed variant (pruned, distilled, lora, int8, qlora) of a fine-tuned base model.

    python -m workflow_scripts.compress --method int8 --base MODELS/minilm/base --out MODELS/minilm/int8 \
        [--options JSON] [--manifest FEATURES/manifest.json --examples TRAIN.parquet] \
        [--state-dir STATE_DIR] [--seed 13] [--threads N]

Methods that train (pruned recovery, distilled, lora, qlora) read the base's training windows
(--manifest, --examples); they resume from --state-dir. Every variant's abstain threshold is chosen
afterwards, on held-out questions (workflow_scripts/choose_threshold.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from qabench import cli, compression, model_dir
from qabench.data import read_examples
from qabench.errors import InputError, run_cli
from qabench.features import check_features_match, read_manifest_features
from qabench.io import check_positive, stop_with_snakemake
from qabench.model_dir import read_settings
from qabench.names import NAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, choices=compression.METHODS)
    parser.add_argument("--variant", help="the variant's own name, saved in its qabench.json (default: the method's)")
    parser.add_argument("--base", required=True, help="the fine-tuned base model directory")
    parser.add_argument("--out", required=True)
    parser.add_argument("--options", default="{}", help="the method's options (JSON object)")
    parser.add_argument("--manifest", help="feature manifest of the base's training windows")
    parser.add_argument("--examples", help="the examples table those windows came from")
    parser.add_argument("--state-dir", help="resume checkpoints of a method that trains")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    check_positive("--threads", args.threads)
    if args.variant is not None and (not NAME.fullmatch(args.variant) or args.variant == model_dir.BASE):
        raise InputError("--variant", f"name {args.variant!r} must be ASCII letters, digits, _ and - (not first), "
                                      f"not '{model_dir.BASE}'")
    cli.setup(args.threads)
    if not (Path(args.base) / "qabench.json").is_file():
        raise InputError(args.base, "not a model directory written by the train rule (no qabench.json)")
    read_settings(args.base)  # a damaged or contradictory qabench.json: one line, before any work
    options = cli.parse_options(args.options)
    options.pop("method", None)
    data = None
    if args.manifest and args.examples:
        features = read_manifest_features(args.manifest)
        examples = read_examples(args.examples)
        check_features_match(features, examples, args.manifest, args.examples)
        data = compression.TrainingData(features, examples)
    compression.method(args.method).make(args.base, args.out, options=options, seed=args.seed, data=data,
                                         state_dir=args.state_dir, variant=args.variant)
    logging.info("%s variant %s of %s written to %s", args.method, args.variant or args.method, args.base, args.out)
    return 0


if __name__ == "__main__":
    run_cli(main)
