"""Our predict step and tokenization side by side with the usual Hugging Face ways, in one run.

    python benchmarks/predict_speed.py --model results/models/NAME/base \
        --data dev-v2.0.json.gz [--questions 200] [--seed 0] [--threads 2] [--batch-size 64] \
        [--precision fp32|bf16] [--out benchmarks/out/predict_speed.json]

Same checkpoint, same questions (a seeded random sample of --questions, kept in file order),
same thread count on every side:

1. predict: ``qabench.predict.predict`` (threshold 0) against transformers' question-answering
   pipeline called once per question (handle_impossible_answer, max_answer_len 30, window
   settings from the checkpoint's qabench.json). The pipeline is gone from transformers 5.x, so
   it runs in its own virtualenv .venv-hf457 (transformers 4.57.6, created here if missing) via
   benchmarks/hf_pipeline_runner.py. Both sides get a short untimed warm-up. Reports
   questions/s, the speed ratio, EM/F1 of both sides, and the share of this CPU's fp32 matmul
   peak (measured now with a 2048^3 torch.matmul) that our model forward reaches.
   ``--precision bf16`` adds one line for our predict under bf16 autocast.
2. tokenization: ``qabench.models.span.tokenize_examples`` against ``datasets.Dataset.map`` with the
   standard HF QA preprocessing (overflowing windows, offset masking, start/end labels).

Prints a table and writes every number to --out (JSON).
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

import datasets
import numpy as np
import torch
import transformers

from qabench.batching import sorted_batches
from qabench.data import load_squad
from qabench.errors import run_cli
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.io import write_json
from qabench.metrics import evaluate
from qabench.model_dir import load_model
from qabench.predict import predict

ROOT = Path(__file__).resolve().parent.parent
HF_VENV = ROOT / ".venv-hf457"
HF_RUNNER = Path(__file__).resolve().parent / "hf_pipeline_runner.py"
HF_REQUIREMENTS = ["torch==2.13.0", "transformers==4.57.6"]  # exact torch pin: a looser one downloads GBs
WARMUP_QUESTIONS = 3


def ensure_hf_venv(venv: Path) -> Path:
    """Python of the transformers 4.57.6 virtualenv, created and installed on first use."""
    python = venv / "bin" / "python"
    ready = venv / ".qabench-ready"
    if not ready.exists():
        if not python.exists():
            print(f"creating {venv} ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *HF_REQUIREMENTS], check=True)
        ready.write_text(" ".join(HF_REQUIREMENTS) + "\n")
    return python


def sample_questions(examples: list, n: int, seed: int) -> list:
    if n >= len(examples):
        return examples
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), n))]


def matmul_peak_gflops(size: int = 2048, reps: int = 8) -> float:
    """Best-of-reps fp32 torch.matmul throughput at the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def model_flops(model, lengths: np.ndarray) -> float:
    """~2 * non-embedding params * tokens + attention 4 * layers * hidden * n^2 per window."""
    params = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    lengths = np.asarray(lengths, dtype=np.float64)
    return float(2 * params * lengths.sum() + 4 * layers * hidden * (lengths**2).sum())


def run_hf_pipeline(python: Path, model_dir: str, examples: list, settings: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), RAYON_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    with tempfile.TemporaryDirectory() as tmp:
        questions, out = Path(tmp, "questions.json"), Path(tmp, "out.json")
        questions.write_text(json.dumps([{"id": e.id, "question": e.question, "context": e.context}
                                         for e in examples], ensure_ascii=False), encoding="utf-8")
        subprocess.run([str(python), str(HF_RUNNER), "--model", model_dir, "--questions", str(questions),
                        "--out", str(out), "--threads", str(threads),
                        "--max-seq-len", str(settings["max_length"]), "--doc-stride", str(settings["stride"]),
                        "--max-question-len", str(settings["max_question_tokens"]),
                        "--max-answer-len", str(settings["max_answer_tokens"]),
                        "--warmup", str(WARMUP_QUESTIONS)], check=True, env=env)
        return json.loads(out.read_text(encoding="utf-8"))


def hf_style_features(tokenizer, spec: WindowSpec):
    """The standard HF QA preprocessing as a batched ``datasets.map`` function."""
    def prepare(batch: dict) -> dict:
        enc = tokenizer([q.lstrip() for q in batch["question"]], batch["context"],
                        truncation="only_second", max_length=spec.max_length, stride=spec.stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
        sample_map = enc.pop("overflow_to_sample_mapping")
        enc["example_id"], enc["start_positions"], enc["end_positions"] = [], [], []
        for i, offsets in enumerate(enc["offset_mapping"]):
            sequence_ids = enc.sequence_ids(i)
            sample = sample_map[i]
            start = end = 0  # CLS: no answer in this window
            if batch["answer_texts"][sample]:
                char_start = batch["answer_starts"][sample][0]
                char_end = char_start + len(batch["answer_texts"][sample][0])
                first = sequence_ids.index(1)
                last = len(sequence_ids) - 1 - sequence_ids[::-1].index(1)
                if offsets[first][0] <= char_start and offsets[last][1] >= char_end:
                    start, end = first, last
                    while start <= last and offsets[start][0] <= char_start:
                        start += 1
                    while end >= first and offsets[end][1] >= char_end:
                        end -= 1
                    start, end = start - 1, end + 1
            enc["start_positions"].append(start)
            enc["end_positions"].append(end)
            enc["example_id"].append(batch["id"][sample])
            enc["offset_mapping"][i] = [o if s == 1 else None for o, s in zip(offsets, sequence_ids)]
        return enc
    return prepare


def time_tokenization(examples: list, tokenizer, spec: WindowSpec, reps: int = 3) -> dict:
    """Best of ``reps`` for each side (tokenizer already warm from the predict runs)."""
    columns = {"id": [e.id for e in examples], "question": [e.question for e in examples],
               "context": [e.context for e in examples], "answer_texts": [e.answer_texts for e in examples],
               "answer_starts": [e.answer_starts for e in examples]}
    prepare = hf_style_features(tokenizer, spec)
    ours, theirs = float("inf"), float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        features = tokenize_examples(examples, tokenizer, spec)
        t1 = time.perf_counter()
        dataset = datasets.Dataset.from_dict(columns)
        mapped = dataset.map(prepare, batched=True, remove_columns=dataset.column_names)
        t2 = time.perf_counter()
        ours, theirs = min(ours, t1 - t0), min(theirs, t2 - t1)
    return {"qabench": {"seconds": ours, "windows": len(features)},
            "datasets_map": {"seconds": theirs, "windows": len(mapped)},
            "speedup": theirs / ours, "features": features}


def our_predict(model, tokenizer, examples: list, settings: dict, batch_size: int, precision: str) -> tuple:
    predict(model, tokenizer, examples[:WARMUP_QUESTIONS], settings, batch_size, 0.0, precision, progress=False)
    t0 = time.perf_counter()
    result = predict(model, tokenizer, examples, settings, batch_size, threshold=0.0, precision=precision,
                     progress=False)
    return result, time.perf_counter() - t0


def side(predictions: dict, seconds: float, examples: list) -> dict:
    scores = evaluate(examples, predictions)
    return {"seconds": seconds, "questions_per_s": len(examples) / seconds,
            "exact": scores["exact"], "f1": scores["f1"], "answered": sum(bool(p) for p in predictions.values())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory")
    parser.add_argument("--data", required=True, help="SQuAD-format .json or .json.gz")
    parser.add_argument("--questions", type=int, default=200, help="seeded random sample size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16 adds a line for our predict under bf16 autocast (headline stays fp32)")
    parser.add_argument("--out", default="benchmarks/out/predict_speed.json")
    args = parser.parse_args(argv)

    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # fast tokenizers' thread pool, read on first use
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    hf_python = ensure_hf_venv(HF_VENV)
    examples = sample_questions(load_squad(args.data), args.questions, args.seed)
    model, tokenizer, settings = load_model(args.model)
    spec = WindowSpec(settings["max_length"], settings["stride"], settings["max_question_tokens"])

    peak = matmul_peak_gflops()
    hf = run_hf_pipeline(hf_python, args.model, examples, settings, args.threads)
    result, seconds = our_predict(model, tokenizer, examples, settings, args.batch_size, "fp32")
    ours, theirs = side(result.predictions, seconds, examples), side(hf["predictions"], hf["seconds"], examples)
    same = sum(result.predictions[e.id] == hf["predictions"][e.id] for e in examples)
    bf16 = None
    if args.precision == "bf16":
        result16, seconds16 = our_predict(model, tokenizer, examples, settings, args.batch_size, "bf16")
        bf16 = side(result16.predictions, seconds16, examples)
    tokenization = time_tokenization(examples, tokenizer, spec)

    lengths = tokenization.pop("features")["input_ids"].map(len).to_numpy()
    assert int(lengths.sum()) == result.stats["tokens"], "re-tokenized windows differ from predict's"
    flops = model_flops(model, lengths)
    padded = sum(len(b) * model_flops(model, [lengths[b].max()]) for b in sorted_batches(lengths, args.batch_size))
    compute = {
        "matmul_peak_gflops": peak, "matmul_size": 2048, "model_gflop": flops / 1e9,
        "padded_model_gflop": padded / 1e9, "windows": result.stats["windows"], "tokens": result.stats["tokens"],
        "model_s": result.stats["model_s"], "gflops_model": flops / result.stats["model_s"] / 1e9,
        "gflops_end_to_end": flops / seconds / 1e9,
    }
    compute["fraction_of_peak_model"] = compute["gflops_model"] / peak
    compute["fraction_of_peak_end_to_end"] = compute["gflops_end_to_end"] / peak

    report = {
        "setup": {"model": args.model, "data": args.data, "questions": len(examples), "seed": args.seed,
                  "sample": "seeded random sample, file order", "threads": args.threads,
                  "batch_size": args.batch_size, "settings": settings, "warmup_questions": WARMUP_QUESTIONS,
                  "torch": torch.__version__, "transformers": transformers.__version__,
                  "hf_pipeline_transformers": hf["transformers"], "hf_pipeline_torch": hf["torch"]},
        "predict": {"qabench_fp32": {**ours, "stats": result.stats}, "hf_pipeline_fp32": theirs,
                    "speedup": ours["questions_per_s"] / theirs["questions_per_s"],
                    "same_prediction": same, "qabench_bf16": bf16},
        "compute": compute,
        "tokenization": tokenization,
    }
    write_json(args.out, report)

    n = len(examples)
    print(f"\n{n} questions (seed {args.seed}) from {args.data}; model {args.model}; "
          f"threads {args.threads}, batch {args.batch_size}; max_length {settings['max_length']}, "
          f"stride {settings['stride']}")
    print(f"\n{'predict':<36}{'q/s':>9}{'seconds':>9}{'EM':>8}{'F1':>8}{'answered':>10}")
    rows = [("qabench predict, fp32", ours), (f"HF pipeline {hf['transformers']}, fp32", theirs)]
    if bf16:
        rows.append(("qabench predict, bf16 autocast", bf16))
    for name, r in rows:
        print(f"  {name:<34}{r['questions_per_s']:>9.1f}{r['seconds']:>9.2f}"
              f"{r['exact']:>8.2f}{r['f1']:>8.2f}{r['answered']:>10}")
    print(f"  speed ratio qabench/HF (fp32): {report['predict']['speedup']:.2f}x; "
          f"same answer on {same}/{n}; EM diff {ours['exact'] - theirs['exact']:+.2f}")
    if bf16:
        print(f"  bf16/fp32 (qabench): {bf16['questions_per_s'] / ours['questions_per_s']:.2f}x")
    print(f"\ncompute (qabench fp32): {compute['windows']} windows, {compute['tokens']} tokens, "
          f"{compute['model_gflop']:.2f} GFLOP ({compute['padded_model_gflop']:.2f} with batch padding)")
    print(f"  fp32 matmul peak ({compute['matmul_size']}^3): {peak:8.1f} GFLOP/s")
    print(f"  model forward ({compute['model_s']:.2f} s):  {compute['gflops_model']:8.1f} GFLOP/s "
          f"= {100 * compute['fraction_of_peak_model']:.1f}% of peak")
    print(f"  end to end ({seconds:.2f} s):     {compute['gflops_end_to_end']:8.1f} GFLOP/s "
          f"= {100 * compute['fraction_of_peak_end_to_end']:.1f}% of peak")
    print(f"\n{'tokenization':<36}{'windows':>9}{'seconds':>9}")
    for name, key in (("qabench tokenize_examples", "qabench"), ("datasets map, HF QA preprocessing", "datasets_map")):
        print(f"  {name:<34}{tokenization[key]['windows']:>9}{tokenization[key]['seconds']:>9.3f}")
    print(f"  time ratio datasets/qabench: {tokenization['speedup']:.2f}x")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
