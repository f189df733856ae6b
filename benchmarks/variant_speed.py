"""Batch-1 latency of a base model and its variants, measured side by side in one process.

The efficiency rule measures each checkpoint in its own job, so a busy machine can skew one
against another. This benchmark loads every checkpoint once, then times the same questions in
interleaved rounds (each round asks every model every question, in rotating order) and prints
p50/p95 per model with the speed-up against the first model given.

    python benchmarks/variant_speed.py --data results/data/examples/dev.parquet \
        results/models/minilm/base results/models/minilm/int8 results/models/minilm/pruned \
        [--questions 100] [--rounds 3] [--threads 2] [--compiled-reference] [--out benchmarks/out/variant_speed.json]

``--compiled-reference`` adds the first model run through ``torch.compile`` (Inductor, weights
frozen) as another row, so a compiled variant (int8's inductor backend) can be compared with
compilation alone as well as with the eager base.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from qabench import efficiency, machine
from qabench.data import read_examples
from qabench.errors import run_cli
from qabench.io import write_json
from qabench.model_dir import load_model
from qabench.predict import predict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoint directories; the first is the reference")
    parser.add_argument("--data", required=True, help="eval examples (parquet from prepare_eval, or SQuAD json)")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compiled-reference", action="store_true",
                        help="also time the first model compiled by torch.compile (fp32, Inductor, frozen weights)")
    parser.add_argument("--out", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    examples = read_examples(args.data)
    examples = random.Random(args.seed).sample(examples, min(args.questions, len(examples)))
    loaded = {m: load_model(m) for m in args.models}
    names = list(args.models)
    if args.compiled_reference:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model, tokenizer, settings = loaded[args.models[0]]
        compiled_name = f"{args.models[0]} (torch.compile)"
        loaded[compiled_name] = (torch.compile(model, dynamic=True), tokenizer, settings)
        names.append(compiled_name)
    for model, tokenizer, settings in loaded.values():
        for example in examples[:args.warmup]:
            predict(model, tokenizer, [example], settings, batch_size=1, progress=False)

    latencies: dict[str, list[float]] = {m: [] for m in names}
    order = list(names)
    for round_index in range(args.rounds):
        for example in examples:
            for name in order:
                model, tokenizer, settings = loaded[name]
                t0 = time.perf_counter()
                predict(model, tokenizer, [example], settings, batch_size=1, progress=False)
                latencies[name].append((time.perf_counter() - t0) * 1000)
            order = order[1:] + order[:1]
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    reference = float(np.percentile(latencies[args.models[0]], 50))
    rows = []
    for name in names:
        p50 = float(np.percentile(latencies[name], 50))
        rows.append({"model": name, "latency_ms_p50": round(p50, 2),
                     "latency_ms_p95": round(float(np.percentile(latencies[name], 95)), 2),
                     "speedup_vs_first": round(reference / p50, 3),
                     "size_mb": efficiency.disk_size_mb(name) if Path(name).is_dir() else None})
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  p50 ms  p95 ms  speed-up  size MB")
    for r in rows:
        print(f"{r['model']:<{width}}  {r['latency_ms_p50']:6.1f}  {r['latency_ms_p95']:6.1f}  "
              f"{r['speedup_vs_first']:7.2f}x  {r['size_mb'] or float('nan'):7.1f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, {"questions": len(examples), "rounds": args.rounds, "threads": args.threads,
                              "machine": machine.describe(args.threads), "rows": rows})


if __name__ == "__main__":
    run_cli(main)
