"""What each job of a run cost: wall time, CPU time and peak memory, per rule, model and variant.

    python benchmarks/rule_costs.py [--results results] [--out FILE]

Reads every Snakemake ``benchmark:`` file under RESULTS/benchmarks and prints one Markdown row per
job. Where the job's own output says how many examples it handled, the row also gives CPU seconds per
example: windows trained (train and compress, from the model's ``training.json``), held-out questions
(choose_threshold), dev questions (predict, evaluate) and timed questions (efficiency). Start-up
(imports, loading and saving the model) is included, so short jobs look dear per example.

CPU seconds are the job's own user + system time (Snakemake's ``cpu_time``), which other work on the
machine does not inflate the way it inflates wall time, except through threads that spin waiting for a
descheduled sibling: jobs of one thread give the cleanest numbers. ``NA`` in a benchmark file (a job
that ended before Snakemake's first sample) is an empty cell.

Snakemake samples a running job every 0.5 s for its first 15 s, then every 30 s, and writes what its
last sample saw: the CPU time after that sample is not counted, and a memory peak between two samples
is missed. A job of 40 s wall is sampled last at 15 s and its ``cpu_time`` can be a third of the truth.
"CPU s est." scales the sampled CPU seconds by wall / last sample (the job's CPU rate taken as even),
and CPU s per example uses it; peak RSS stays as sampled (a lower bound).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import Sequence

from snakemake.benchmark import BENCHMARK_INTERVAL, BENCHMARK_INTERVAL_SHORT

from qabench.errors import InputError, run_cli
from qabench.io import read_json, write_json

# benchmark folder -> the rule that writes it (compress shares train's folder: variant "base" is train)
RULE_OF_FOLDER = {"threshold": "choose_threshold", "tokenize": "tokenize_shard", "curves": "learning_curve"}
MODEL_FOLDERS = {"train", "threshold", "predict", "evaluate", "efficiency", "tokenize", "feature_manifest", "curves"}
VARIANT_FOLDERS = {"train", "threshold", "predict", "evaluate", "efficiency"}
COLUMNS = ("s", "cpu_time", "max_rss")
# Snakemake's sampler takes BENCHMARK_INTERVAL samples BENCHMARK_INTERVAL_SHORT apart, then one every
# BENCHMARK_INTERVAL seconds (snakemake/benchmark.py, ScheduledPeriodicTimer)
DENSE_SAMPLING_S = BENCHMARK_INTERVAL * BENCHMARK_INTERVAL_SHORT


def last_sample_s(wall_s: float) -> float:
    """When Snakemake last sampled a job that ran ``wall_s`` seconds (dense sampling: the wall time itself)."""
    if wall_s <= DENSE_SAMPLING_S:
        return wall_s
    return DENSE_SAMPLING_S + BENCHMARK_INTERVAL * math.floor((wall_s - DENSE_SAMPLING_S) / BENCHMARK_INTERVAL)


def read_benchmark(path: Path) -> dict[str, float | None]:
    """The last row's wall seconds, CPU seconds and peak RSS (MB) of one benchmark file."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or any(column not in rows[-1] for column in COLUMNS):
        raise InputError(path, f"not a Snakemake benchmark file (needs a header with {', '.join(COLUMNS)} and a row)")
    values: dict[str, float | None] = {}
    for column in COLUMNS:
        text = (rows[-1][column] or "").strip()
        if text in ("", "NA"):
            values[column] = None
            continue
        try:
            values[column] = float(text)
        except ValueError:
            raise InputError(path, f"column {column} holds {text!r}, not a number") from None
    return values


def windows_trained(training_json: Path) -> int | None:
    """Windows the job trained on; None for a method that trains nothing (int8 records no steps)."""
    record = read_json(training_json)
    if "steps" not in record:
        return None
    try:
        steps, batch = int(record["steps"]), int(record["settings"]["batch_size"])
        windows, epochs = int(record["windows"]), float(record["epochs"])
    except (KeyError, TypeError, ValueError):
        raise InputError(training_json, "needs steps, windows, epochs and settings.batch_size") from None
    return min(steps * batch, math.ceil(windows * epochs))


def _json_int(path: Path, *keys: str) -> int | None:
    """The integer at ``keys`` in a JSON file; None where it has none."""
    value = read_json(path)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int) else None


def examples_of(results: Path, folder: str, model: str, variant: str, job: str) -> tuple[int | None, str]:
    """(how many examples the job handled, what they are), read from the job's output; (None, "") if unknown."""
    outputs = {  # folder -> (the job's output that counts them, how, what they are)
        "train": (results / "models" / model / variant / "training.json", windows_trained, "windows trained"),
        "threshold": (results / "thresholds" / model / f"{variant}.json",
                      lambda path: _json_int(path, "holdout_scores", "total"), "held-out questions"),
        "predict": (results / "predictions" / model / variant / job / "predictions.json",
                    lambda path: len(read_json(path)), "questions"),
        "evaluate": (results / "metrics" / model / variant / f"{job}.json",
                     lambda path: _json_int(path, "total"), "questions"),
        "efficiency": (results / "efficiency" / model / f"{variant}.json",
                       lambda path: _json_int(path, "questions"), "questions timed"),
    }
    if folder not in outputs or not (model and variant):
        return None, ""
    path, count, unit = outputs[folder]
    examples = count(path) if path.is_file() else None  # int8 and other methods that train nothing: None
    return (examples, unit) if examples is not None else (None, "")


def job_row(results: Path, benchmark: Path) -> dict:
    relative = benchmark.relative_to(results / "benchmarks").with_suffix("")
    folder, rest = relative.parts[0], relative.parts[1:]
    model = rest[0] if folder in MODEL_FOLDERS and rest else ""
    rest = rest[1:] if model else rest
    variant = rest[0] if folder in VARIANT_FOLDERS and rest else ""
    rest = rest[1:] if variant else rest
    rule = "compress" if folder == "train" and variant not in ("", "base") else RULE_OF_FOLDER.get(folder, folder)
    job = "/".join(rest)
    costs = read_benchmark(benchmark)
    examples, unit = examples_of(results, folder, model, variant, job)
    wall, cpu = costs["s"], costs["cpu_time"]
    last = last_sample_s(wall) if wall is not None else None
    cpu_est = cpu * wall / last if cpu is not None and last else None
    per_example = cpu_est / examples if examples and cpu_est is not None else None
    return {"rule": rule, "model": model, "variant": variant, "job": job, "wall_s": wall, "last_sample_s": last,
            "cpu_s": cpu, "cpu_s_est": cpu_est, "peak_rss_mb": costs["max_rss"], "examples": examples,
            "examples_are": unit, "cpu_s_per_example": per_example, "benchmark": str(benchmark)}


def _cell(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="a run's results folder")
    parser.add_argument("--out", type=Path, help="also write the rows here (JSON)")
    args = parser.parse_args(argv)

    folder = args.results / "benchmarks"
    if not folder.is_dir():
        raise InputError(folder, "no such folder (expected the benchmarks a Snakemake run wrote)")
    benchmarks = sorted(folder.rglob("*.tsv"))
    if not benchmarks:
        raise InputError(folder, "holds no benchmark files (*.tsv)")
    rows = sorted((job_row(args.results, path) for path in benchmarks),
                  key=lambda row: (row["rule"], row["model"], row["variant"], row["job"]))
    print("| rule | model | variant | job | wall s | last sample s | CPU s sampled | CPU s est. | peak RSS MB sampled "
          "| examples | CPU s per example |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        examples = f"{row['examples']:,} {row['examples_are']}" if row["examples"] else ""
        print(f"| {row['rule']} | {row['model']} | {row['variant']} | {row['job']} | {_cell(row['wall_s'], 1)} "
              f"| {_cell(row['last_sample_s'], 1)} | {_cell(row['cpu_s'], 1)} | {_cell(row['cpu_s_est'], 1)} "
              f"| {_cell(row['peak_rss_mb'], 0)} | {examples} "
              f"| {_cell(row['cpu_s_per_example'], 3)} |")
    if args.out is not None:
        write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    run_cli(main)
