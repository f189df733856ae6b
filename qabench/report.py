"""The summary table: measured rows per (model, variant, eval set), baselines and published anchors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from qabench import metrics
from qabench.data import load_squad

CSV_COLUMNS = [
    "model", "variant", "family", "eval_set", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact",
    "best_f1", "best_f1_thresh", "strict_exact", "params", "trainable_params", "size_mb", "latency_ms_p50",
    "latency_ms_p95", "throughput_qps", "peak_mem_mb", "device", "nonzero_params", "predict_qps",
    "train_peak_mem_mb", "threshold", "threshold_source", "init", "train_questions", "train_wall_s", "total",
]

# SQuAD 2.0 dev, EM / F1, from ../shared/DESIGN.md: reference only, never measured here.
PUBLISHED_ANCHORS = [
    ("BiDAF-No-Answer", "-", 59.8, 62.6, "Rajpurkar et al. 2018, Table 3"),
    ("DocQA + ELMo", "-", 65.1, 67.6, "Rajpurkar et al. 2018"),
    ("DistilBERT-6", "66M", 66.0, 69.5, "TinyBERT paper"),
    ("TinyBERT-4", "14.5M", 68.2, 71.8, "TinyBERT paper"),
    ("MiniLM-L6-H384", "22M", None, 75.6, "microsoft/unilm MiniLM README"),
    ("BERT-base-uncased", "110M", 75.65, 78.62, "deepset/bert-base-uncased-squad2 card"),
    ("MiniLM-L12-H384", "33M", 76.13, 79.50, "deepset/minilm-uncased-squad2 card"),
    ("T5-base (generative)", "220M", 77.64, 81.32, "mrm8488/t5-base-finetuned-squadv2 card"),
    ("RoBERTa-base", "125M", 79.87, 82.91, "deepset/roberta-base-squad2 card"),
    ("BERT-large", "340M", 78.7, 81.9, "Devlin et al., Table 3"),
    ("human", "-", 86.3, 89.0, "Rajpurkar et al. 2018"),
]
OFFICIAL_DEV_QUESTIONS = 11873


def _max_rss_mb(benchmark_tsv: Path) -> float | None:
    """Peak memory of a job from its Snakemake benchmark file."""
    if not benchmark_tsv.is_file():
        return None
    rows = list(csv.DictReader(benchmark_tsv.open(), delimiter="\t"))
    try:
        return round(float(rows[-1]["max_rss"]), 1)
    except (KeyError, ValueError, IndexError):
        return None


def _read(path: str | Path | None) -> dict:
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}


def measured_row(entry: dict) -> dict:
    scores = _read(entry["metrics"])
    decision = _read(entry["decision"])
    cost = _read(entry.get("efficiency"))
    settings = _read(Path(entry["model_dir"]) / "qabench.json")
    training = _read(Path(entry["model_dir"]) / "training.json")
    machine = cost.get("machine", {})
    row = {k: scores.get(k) for k in CSV_COLUMNS if k in scores}
    row.update(
        model=entry["model"], variant=entry["variant"], family=entry["family"], eval_set=entry["eval_set"],
        params=cost.get("params", training.get("params")), nonzero_params=cost.get("nonzero_params"),
        trainable_params=training.get("trainable_params"), size_mb=cost.get("size_mb"),
        latency_ms_p50=cost.get("latency_ms_p50"), latency_ms_p95=cost.get("latency_ms_p95"),
        throughput_qps=cost.get("throughput_qps"), peak_mem_mb=cost.get("peak_mem_mb"),
        predict_qps=round(decision["questions_per_s"], 2),
        train_peak_mem_mb=_max_rss_mb(Path(entry["train_benchmark"])) if entry.get("train_benchmark") else None,
        device=f"{machine.get('device', 'cpu')}: {machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, "
               f"torch {machine.get('torch', '?')}" if machine else None,
        threshold=decision["threshold"], threshold_source=settings.get("threshold_source"),
        init=settings.get("origin"), train_questions=training.get("data", {}).get("questions"),
        train_wall_s=training.get("wall_s_this_run"),
    )
    return row


def abstain_row(eval_set: str, data_path: str) -> dict:
    """Always answering "": measured on the eval set itself (50.07 on the official dev set)."""
    examples = load_squad(data_path)
    scores = metrics.evaluate(examples, {e.id: "" for e in examples})
    row = {k: scores.get(k) for k in CSV_COLUMNS if k in scores}
    row.update(model="always-abstain", variant="base", family="baseline", eval_set=eval_set, params=0,
               trainable_params=0, init="no model")
    return row


def _fmt(value, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and value >= 10000:
        return f"{value / 1e6:.1f}M"
    return str(value)


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def to_markdown(rows: list[dict]) -> str:
    lines = ["# qabench summary", ""]
    for eval_set in dict.fromkeys(r["eval_set"] for r in rows):
        subset = [r for r in rows if r["eval_set"] == eval_set]
        total = subset[0].get("total")
        lines += [f"## {eval_set} ({total} questions)", "",
                  "| model | variant | family | EM | F1 | HasAns F1 | NoAns EM | best F1 (thresh) | strict EM "
                  "| params | size MB | p50 ms | p95 ms | q/s | peak MB | threshold | init |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in subset:
            best = f"{_fmt(r.get('best_f1'))} ({_fmt(r.get('best_f1_thresh'), 3)})" if r.get("best_f1") is not None else ""
            lines.append(
                f"| {r['model']} | {r['variant']} | {r['family']} | {_fmt(r.get('exact'))} | {_fmt(r.get('f1'))} "
                f"| {_fmt(r.get('HasAns_f1'))} | {_fmt(r.get('NoAns_exact'))} | {best} | {_fmt(r.get('strict_exact'))} "
                f"| {_fmt(r.get('params'))} | {_fmt(r.get('size_mb'))} | {_fmt(r.get('latency_ms_p50'), 1)} "
                f"| {_fmt(r.get('latency_ms_p95'), 1)} | {_fmt(r.get('throughput_qps'))} "
                f"| {_fmt(r.get('peak_mem_mb'), 0)} | {_fmt(r.get('threshold'), 3)} | {r.get('init') or ''} |")
        lines.append("")
        if total == OFFICIAL_DEV_QUESTIONS:
            lines += ["Published reference numbers on the official SQuAD 2.0 dev set (**not measured here**; "
                      "from papers and model cards):", "",
                      "| reference system | params | EM | F1 | source |", "|---|---:|---:|---:|---|"]
            lines += [f"| *{n}* | {p} | {_fmt(em) if em is not None else '-'} | {_fmt(f1)} | {s} |"
                      for n, p, em, f1, s in PUBLISHED_ANCHORS]
            lines.append("")
    trained = {r["model"]: r for r in rows if r.get("train_questions")}
    if trained:
        lines += ["Training:", ""]
        for name, r in trained.items():
            minutes = f", {r['train_wall_s'] / 60:.1f} min" if r.get("train_wall_s") else ""
            lines.append(f"- {name}: {r['train_questions']} training questions{minutes}; "
                         f"abstain threshold {_fmt(r.get('threshold'), 3)} ({r.get('threshold_source')})")
        lines.append("")
    lines += [
        "Notes:",
        "- EM/F1 use the threshold chosen at training time on held-out training articles (column *threshold*: "
        "abstain when null score minus best span score exceeds it); *best F1* is the official oracle "
        "threshold searched on the eval set itself, shown for comparison only.",
        "- *strict EM*: exact string equality without SQuAD's normalisation.",
        "- Costs come from the efficiency rule, run alone on the machine named in summary.csv (*device*): "
        "*p50/p95 ms*, latency per question at batch 1 (tokenization, model and span search) over a fixed "
        "sample of eval questions after warm-up; *q/s*, throughput on the same questions at a larger batch; "
        "*peak MB*, the benchmark process's peak resident memory; *size MB*, the whole checkpoint directory.",
        "",
    ]
    return "\n".join(lines)
