"""Collect metrics and costs into results/summary.md and results/summary.csv.

    python workflow_scripts/summarize.py --rows ROWS.json --eval-sets EVAL_SETS.json --markdown OUT.md --csv OUT.csv \
        [--plots-dir DIR]

ROWS.json (or inline JSON): [{model, variant, family, eval_set, metrics, decision, model_dir, benchmark}, ...];
EVAL_SETS.json (or inline JSON): {eval_set: squad_file} for the always-abstain baseline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Sequence

from qabench import cli, report
from qabench.errors import InputError, run_cli
from qabench.io import read_json, stop_with_snakemake, write_text


def _json_arg(value: str, name: str):
    if value.lstrip()[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise InputError(name, f"not valid JSON ({err.msg})") from None
    return read_json(value)


ENTRY_KEYS = ("model", "variant", "family", "eval_set", "metrics", "decision", "model_dir")
METRICS_KEYS = ("exact", "f1", "total")
DECISION_KEYS = ("threshold", "questions_per_s")


def _json_object(path: str | Path, keys: tuple[str, ...] = (), numbers: bool = True) -> dict:
    """A JSON file holding an object with ``keys`` (finite numbers where ``numbers``)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise InputError(path, f"expected a JSON object, found {type(value).__name__}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise InputError(path, f"missing key(s) {', '.join(missing)}")
    for key in keys if numbers else ():
        if isinstance(value[key], bool) or not isinstance(value[key], (int, float)) or not math.isfinite(value[key]):
            raise InputError(path, f'"{key}" must be a finite number, found {value[key]!r}')
    return value


def check_inputs(entries, eval_sets, rows_source: str, eval_sets_source: str) -> None:
    """Every file the summary reads, checked before anything is written: one line for the first problem."""
    rows_source = "--rows" if rows_source.lstrip()[:1] in "[{" else rows_source
    eval_source = "--eval-sets" if eval_sets_source.lstrip()[:1] in "[{" else eval_sets_source
    if not isinstance(eval_sets, dict) or not all(isinstance(v, str) for v in eval_sets.values()):
        raise InputError(eval_source, "expected a JSON object {eval_set: squad_file}")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError(rows_source, "expected a JSON list of row objects")
    for n, entry in enumerate(entries):
        missing = [k for k in ENTRY_KEYS if not isinstance(entry.get(k), str)]
        if missing:
            raise InputError(rows_source, f"row {n} lacks {', '.join(missing)}")
        _json_object(entry["metrics"], METRICS_KEYS)
        _json_object(entry["decision"], DECISION_KEYS)
        if entry.get("efficiency") and Path(entry["efficiency"]).is_file():
            _json_object(entry["efficiency"])
        for name in ("qabench.json", "training.json"):
            if (Path(entry["model_dir"]) / name).is_file():
                _json_object(Path(entry["model_dir"]) / name)
        if entry.get("train_record") and Path(entry["train_record"]).is_file():
            _json_object(entry["train_record"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", required=True)
    parser.add_argument("--eval-sets", required=True)
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--plots-dir", help="write F1-vs-cost Pareto plots here (DIR/EVAL_SET-f1-vs-COST.png)")
    parser.add_argument("--curves", default="{}",
                        help="JSON object: model -> learning curve JSON (plotted as DIR/curve-MODEL.png)")
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    cli.setup()
    entries = _json_arg(args.rows, "--rows")
    eval_sets = _json_arg(args.eval_sets, "--eval-sets")
    check_inputs(entries, eval_sets, args.rows, args.eval_sets)
    rows = []
    for eval_set, data in eval_sets.items():
        rows.append(report.abstain_row(eval_set, data))
        rows += [report.measured_row(e) for e in entries if e["eval_set"] == eval_set]
    rows = report.add_comparisons(rows)
    plots: dict[str, list[tuple[str, str]]] = {}
    if args.plots_dir:
        for eval_set in eval_sets:
            for name in report.PLOTS:
                path = Path(args.plots_dir) / f"{eval_set}-f1-vs-{name}.png"
                report.plot_pareto(rows, eval_set, name, path)
                relative = os.path.relpath(path, Path(args.markdown).parent)
                plots.setdefault(eval_set, []).append((f"F1 against {name} on {eval_set}", relative))
    curves = {model: _json_object(path, ("points",), numbers=False)["points"]
              for model, path in _json_arg(args.curves, "--curves").items()}
    curve_plots = {}
    if args.plots_dir:
        for model, points in curves.items():
            path = Path(args.plots_dir) / f"curve-{model}.png"
            report.plot_learning_curve(points, model, path)
            curve_plots[model] = os.path.relpath(path, Path(args.markdown).parent)
    write_text(args.csv, report.to_csv(rows))
    markdown = report.to_markdown(rows, plots)
    write_text(args.markdown, markdown + ("\n" + report.curves_markdown(curves, curve_plots) if curves else ""))
    return 0


if __name__ == "__main__":
    run_cli(main)
