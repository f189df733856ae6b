"""Measure a checkpoint's cost on this machine: size, parameters, latency p50/p95, throughput, memory.

    python -m workflow_scripts.efficiency --model MODEL_DIR --data EVAL.parquet|SQUAD.json[.gz] \
        --out EFFICIENCY.json [--questions 100] [--seed 0] [--batch-size 64] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path
from typing import Sequence

import torch

from qabench import cli, devices, efficiency, machine
from qabench.data import read_examples
from qabench.errors import InputError, run_cli
from qabench.io import check_positive, read_json, stop_with_snakemake, write_json
from qabench.model_dir import load_model
from qabench.report import training_wall_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--questions", type=int, default=100, help="fixed seeded sample of the eval set")
    parser.add_argument("--seed", type=int, default=0)
    cli.add_inference_options(parser, devices.PRECISIONS)
    parser.add_argument("--training", help="training.json of the checkpoint (training time and parameters)")
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    check_positive("--questions", args.questions)
    cli.check_inference_options(args)
    training = None
    if args.training and Path(args.training).is_file():
        training = read_json(args.training)
        if not isinstance(training, dict):
            raise InputError(args.training, f"expected a JSON object, found {type(training).__name__}")
    cli.setup(args.threads)
    examples = read_examples(args.data)
    examples = random.Random(args.seed).sample(examples, min(args.questions, len(examples)))
    model, tokenizer, settings = load_model(args.model, args.device)
    result = {
        "model_dir": args.model, "size_mb": efficiency.disk_size_mb(args.model),
        **efficiency.parameter_counts(model),
        **efficiency.measure(model, tokenizer, examples, settings,
                             batch_size=args.batch_size, precision=args.precision),
        "machine": machine.describe(torch.get_num_threads(), str(devices.model_device(model))),
    }
    implementation = efficiency.implementation(model, settings)
    if implementation:
        result["implementation"] = implementation
    if training is not None:
        result.update(trainable_params=training.get("trainable_params"),
                      train_wall_s=training_wall_s(training))
        if training.get("params") and training["params"] != result["params"]:
            # int8 and 4-bit weights are packed outside model.parameters(); the method that made the
            # variant recorded the count the model's maths uses, and zeros cannot be counted in packed form
            result.update(params=training["params"], nonzero_params=None)
    write_json(args.out, result)
    logging.info("p50 %.1f ms, p95 %.1f ms, %.1f q/s at batch %d", result["latency_ms_p50"],
                 result["latency_ms_p95"], result["throughput_qps"], args.batch_size)
    return 0


if __name__ == "__main__":
    run_cli(main)
