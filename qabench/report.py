"""The summary table: measured rows per (model, variant, eval set), baselines and published anchors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from qabench import metrics
from qabench.data import load_squad
from qabench.io import atomic_path

CSV_COLUMNS = [
    "model", "variant", "family", "eval_set", "exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact",
    "best_f1", "best_f1_thresh", "strict_exact", "params", "trainable_params", "size_mb", "latency_ms_p50",
    "latency_ms_p95", "throughput_qps", "peak_mem_mb", "device", "nonzero_params", "predict_qps",
    "train_peak_mem_mb", "threshold", "threshold_source", "init", "train_questions", "train_wall_s", "total",
    "method", "delta_exact", "delta_f1", "size_ratio", "speedup_p50", "pareto_latency", "pareto_size",
    "threshold_gap_f1", "train_data",
]
PLOTS = {"latency": ("latency_ms_p50", "latency per question at batch 1, p50 (ms)"),
         "size": ("size_mb", "size on disk (MB)")}

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


def training_wall_s(training: dict) -> float | None:
    """Training time across resumes; records written before it was kept have this run's only."""
    return training.get("wall_s", training.get("wall_s_this_run"))


def measured_row(entry: dict) -> dict:
    scores = _read(entry["metrics"])
    decision = _read(entry["decision"])
    cost = _read(entry.get("efficiency"))
    settings = _read(Path(entry["model_dir"]) / "qabench.json")
    training = _read(Path(entry["model_dir"]) / "training.json")
    machine = cost.get("machine", {})
    row = {k: scores.get(k) for k in CSV_COLUMNS if k in scores}
    row.update(
        # the model directory's own family: a distilled student of another family is that family's model
        model=entry["model"], variant=entry["variant"], family=settings.get("family", entry["family"]),
        eval_set=entry["eval_set"],
        method=entry.get("method", entry["variant"]),
        params=cost.get("params", training.get("params")), nonzero_params=cost.get("nonzero_params"),
        trainable_params=training.get("trainable_params"), size_mb=cost.get("size_mb"),
        latency_ms_p50=cost.get("latency_ms_p50"), latency_ms_p95=cost.get("latency_ms_p95"),
        throughput_qps=cost.get("throughput_qps"), peak_mem_mb=cost.get("peak_mem_mb"),
        predict_qps=round(decision["questions_per_s"], 2),
        train_peak_mem_mb=_max_rss_mb(Path(entry["train_benchmark"])) if entry.get("train_benchmark") else None,
        device=f"{machine.get('device', 'cpu')}: {machine.get('gpu') or machine.get('cpu', '?')}, "
               f"{machine.get('threads', '?')} threads, "
               f"torch {machine.get('torch', '?')}" + (f", {cost['implementation']}" if cost.get("implementation") else "")
        if machine else None,
        threshold=decision["threshold"],
        threshold_source=decision.get("threshold_rule"),
        init=settings.get("origin"), train_questions=training.get("data", {}).get("questions"),
        train_wall_s=training_wall_s(training),
        train_data=_read(entry.get("train_record")).get("summary"),
    )
    if row.get("best_f1") is not None and row.get("f1") is not None:
        row["threshold_gap_f1"] = round(row["best_f1"] - row["f1"], 2)
    return row


def add_comparisons(rows: list[dict]) -> list[dict]:
    """Each variant against its own base (same model, same eval set), and the Pareto fronts per eval set."""
    bases = {(r["model"], r["eval_set"]): r for r in rows if r["variant"] == "base"}
    for row in rows:
        base = bases.get((row["model"], row["eval_set"]))
        if row["variant"] == "base" or base is None or row["family"] == "baseline":
            continue
        if row.get("exact") is not None and base.get("exact") is not None:
            row["delta_exact"] = round(row["exact"] - base["exact"], 2)
            row["delta_f1"] = round(row["f1"] - base["f1"], 2)
        if row.get("size_mb") and base.get("size_mb"):
            row["size_ratio"] = round(row["size_mb"] / base["size_mb"], 3)
        if row.get("latency_ms_p50") and base.get("latency_ms_p50"):
            row["speedup_p50"] = round(base["latency_ms_p50"] / row["latency_ms_p50"], 2)
    for eval_set in {r["eval_set"] for r in rows}:
        subset = [r for r in rows if r["eval_set"] == eval_set and r["family"] != "baseline"]
        floor = abstain_f1(rows, eval_set)
        for name, (cost, _) in PLOTS.items():
            front = pareto_front(subset, cost, above_f1=floor)
            for r in subset:
                if r.get(cost) is not None and r.get("f1") is not None:
                    r[f"pareto_{name}"] = r in front
    return rows


def abstain_f1(rows: list[dict], eval_set: str) -> float | None:
    """F1 of always answering "" on ``eval_set``, where the rows have that baseline."""
    return next((r["f1"] for r in rows if r["eval_set"] == eval_set and r["family"] == "baseline"), None)


def pareto_front(rows: list[dict], cost: str, above_f1: float | None = None) -> list[dict]:
    """Rows no other row beats on both F1 (higher) and ``cost`` (lower).

    ``above_f1``: always-abstain's F1. Abstaining needs no model (no size, no latency), so a model
    that scores no better is dominated by it and never on the front.
    """
    points = [r for r in rows if r.get(cost) is not None and r.get("f1") is not None
              and (above_f1 is None or r["f1"] > above_f1)]
    return [r for r in points
            if not any(o is not r and o["f1"] >= r["f1"] and o[cost] <= r[cost]
                       and (o["f1"] > r["f1"] or o[cost] < r[cost]) for o in points)]


def plot_pareto(rows: list[dict], eval_set: str, name: str, out_path: str | Path) -> None:
    """F1 against a cost for every measured (model, variant), the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost, label = PLOTS[name]
    points = [r for r in rows if r["eval_set"] == eval_set and r["family"] != "baseline"
              and r.get(cost) is not None and r.get("f1") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r in points:
        ax.scatter(r[cost], r["f1"], color="tab:blue" if r["variant"] == "base" else "tab:orange", zorder=3)
        ax.annotate(f"{r['model']}/{r['variant']}", (r[cost], r["f1"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    front = sorted(pareto_front(points, cost, above_f1=abstain_f1(rows, eval_set)), key=lambda r: r[cost])
    if len(front) > 1:
        ax.plot([r[cost] for r in front], [r["f1"] for r in front], color="tab:green", lw=1, label="Pareto front")
        ax.legend(fontsize=8)
    abstain = next((r for r in rows if r["eval_set"] == eval_set and r["model"] == "always-abstain"), None)
    if abstain:
        ax.axhline(abstain["f1"], color="grey", ls="--", lw=0.8)
        ax.text(ax.get_xlim()[0], abstain["f1"], " always abstain", fontsize=7, va="bottom", color="grey")
    ax.set_xlabel(label)
    ax.set_ylabel(f"F1 on {eval_set}")
    ax.grid(alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no measured costs", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_learning_curve(points: list[dict], model: str, out_path: str | Path) -> None:
    """Held-out F1 (at each point's own threshold), held-out HasAns F1 answering every question, and each
    eval set's F1 at the held-out threshold, against training hours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [p["trained_s"] / 3600 for p in points]
    eval_sets = [key for key in (points[0] if points else {}) if key not in ("step", "trained_s", "threshold",
                                                                             "holdout")]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(hours, [p["holdout"]["f1"] for p in points], marker="o", label="held-out F1")
    ax.plot(hours, [p["holdout"]["HasAns_f1_answering_all"] for p in points], marker="o", ls=":",
            label="held-out HasAns F1 (answering all)")
    for name in eval_sets:
        ax.plot(hours, [p[name]["f1"] for p in points], marker="s", label=f"{name} F1 (held-out threshold)")
    ax.set_xlabel("training time (hours)")
    ax.set_ylabel("F1")
    ax.set_title(f"learning curve: {model}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


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
    if isinstance(value, int) and value >= 1_000_000:
        return f"{value / 1e6:.1f}M"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e3:.1f}k"
    return str(value)


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buffer.getvalue()


def _signed(value) -> str:
    return "" if value is None else f"{value:+.2f}"


def _ratio(value, suffix: str = "x") -> str:
    return "" if value is None else f"{value:.2f}{suffix}"


def to_markdown(rows: list[dict], plots: dict[str, list[tuple[str, str]]] | None = None) -> str:
    """``plots``: per eval set, (title, path relative to the markdown file) of each figure to show."""
    lines = ["# qabench summary", ""]
    for eval_set in dict.fromkeys(r["eval_set"] for r in rows):
        lines += _eval_set_section(eval_set, [r for r in rows if r["eval_set"] == eval_set],
                                   (plots or {}).get(eval_set, []))
    lines += _training_section(rows)
    lines += _NOTES
    return "\n".join(lines)


_TABLE_HEADER = [
    "| model | variant | family | EM | F1 | ΔEM | ΔF1 | HasAns F1 | NoAns EM | best F1 (thresh) "
    "| gap to best | strict EM | params | trainable | size MB | size vs base | p50 ms | p95 ms | speed-up | q/s "
    "| peak MB | threshold | init |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
    "|---:|---:|---|",
]

_NOTES = [
    "Notes:",
    "- EM/F1 use each model's own threshold, chosen after training on held-out training articles "
    "(column *threshold*: abstain when null score minus best span score exceeds it); *best F1* is the "
    "official oracle threshold searched on the eval set itself, shown for comparison only; *gap to best* "
    "is best F1 minus F1, what choosing the threshold without the eval set cost.",
    "- *strict EM*: exact string equality without SQuAD's normalisation.",
    "- Costs come from the efficiency rule, run alone on the machine named in summary.csv (*device*): "
    "*p50/p95 ms*, latency per question at batch 1 (tokenization, model and span search) over a fixed "
    "sample of eval questions after warm-up; *q/s*, throughput on the same questions at a larger batch; "
    "*peak MB*, the benchmark process's peak resident memory; *size MB*, the whole checkpoint directory.",
    "",
]


def _eval_set_section(eval_set: str, subset: list[dict], plots: list[tuple[str, str]]) -> list[str]:
    """One eval set's table, its figures and (on the official dev set) the published reference numbers."""
    total = subset[0].get("total")
    on_front = any(r.get("pareto_latency") for r in subset)
    lines = [f"## {eval_set} ({total} questions)", "",
             "Each variant is compared with its own base (Δ columns, size and speed ratios); "
             + ("**bold** rows are on the F1-latency Pareto front (a model must beat always-abstain, "
                "which needs no model at all)." if on_front else
                "no model beats always-abstain's F1 at its own threshold, so none is on the F1-latency "
                "Pareto front."), "",
             *_TABLE_HEADER]
    lines += [_table_row(r) for r in subset]
    lines.append("")
    for title, path in plots:
        lines += [f"![{title}]({path})", ""]
    if total == OFFICIAL_DEV_QUESTIONS:
        lines += _references_section()
    return lines


def _table_row(r: dict) -> str:
    best = f"{_fmt(r.get('best_f1'))} ({_fmt(r.get('best_f1_thresh'), 3)})" if r.get("best_f1") is not None else ""
    name = f"**{r['model']}**" if r.get("pareto_latency") else r["model"]
    return (f"| {name} | {r['variant']} | {r['family']} | {_fmt(r.get('exact'))} | {_fmt(r.get('f1'))} "
            f"| {_signed(r.get('delta_exact'))} | {_signed(r.get('delta_f1'))} "
            f"| {_fmt(r.get('HasAns_f1'))} | {_fmt(r.get('NoAns_exact'))} | {best} | {_fmt(r.get('threshold_gap_f1'))} "
            f"| {_fmt(r.get('strict_exact'))} "
            f"| {_fmt(r.get('params'))} | {_fmt(r.get('trainable_params'))} | {_fmt(r.get('size_mb'))} "
            f"| {_ratio(r.get('size_ratio'))} | {_fmt(r.get('latency_ms_p50'), 1)} "
            f"| {_fmt(r.get('latency_ms_p95'), 1)} | {_ratio(r.get('speedup_p50'))} | {_fmt(r.get('throughput_qps'))} "
            f"| {_fmt(r.get('peak_mem_mb'), 0)} | {_fmt(r.get('threshold'), 3)} | {r.get('init') or ''} |")


def _references_section() -> list[str]:
    lines = ["Published reference numbers on the official SQuAD 2.0 dev set (**not measured here**; "
             "from papers and model cards):", "",
             "| reference system | params | EM | F1 | source |", "|---|---:|---:|---:|---|"]
    lines += [f"| *{n}* | {p} | {_fmt(em) if em is not None else '-'} | {_fmt(f1)} | {s} |"
              for n, p, em, f1, s in PUBLISHED_ANCHORS]
    lines.append("")
    return lines


def _training_section(rows: list[dict]) -> list[str]:
    """How each trained model was trained and where its abstain threshold came from (nothing if none trained)."""
    trained = {f"{r['model']}/{r['variant']}": r for r in rows if r.get("train_questions") or r.get("train_wall_s")}
    if not trained:
        return []
    lines = ["Training:", ""]
    for name, r in trained.items():
        minutes = f", {r['train_wall_s'] / 60:.1f} min" if r.get("train_wall_s") else ""
        questions = f"{r['train_questions']} training questions" if r.get("train_questions") else "no training"
        data = f" (trained on {r['train_data']})" if r.get("train_data") else ""
        lines.append(f"- {name}: {questions}{data}{minutes}; "
                     f"abstain threshold {_fmt(r.get('threshold'), 3)} ({r.get('threshold_source')})")
    lines.append("")
    return lines


def curves_markdown(curves: dict[str, list[dict]], plots: dict[str, str]) -> str:
    """A learning-curve section: per model, F1 against training time (``plots``: model -> relative path)."""
    lines = ["## Learning curves", "",
             "Each point is the model at a weight snapshot of its training (the last: the finished model), with "
             "its own threshold chosen on the held-out questions. *HasAns F1 (all)*: held-out answerable questions "
             "answered without abstaining, how well spans are learned.", ""]
    for model, points in curves.items():
        eval_sets = [k for k in points[0] if k not in ("step", "trained_s", "threshold", "holdout")] if points else []
        lines += [f"### {model}", "",
                  "| step | training h | threshold | held-out F1 | HasAns F1 (all) | "
                  + " | ".join(f"{e} F1 | {e} best F1" for e in eval_sets) + (" |" if eval_sets else ""),
                  "|---:|---:|---:|---:|---:|" + "---:|---:|" * len(eval_sets)]
        for p in points:
            cells = [str(p["step"]), _fmt(p["trained_s"] / 3600), _fmt(p["threshold"], 3), _fmt(p["holdout"]["f1"]),
                     _fmt(p["holdout"]["HasAns_f1_answering_all"])]
            cells += [v for e in eval_sets for v in (_fmt(p[e]["f1"]), _fmt(p[e]["best_f1"]))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if model in plots:
            lines += [f"![learning curve of {model}]({plots[model]})", ""]
    return "\n".join(lines)
