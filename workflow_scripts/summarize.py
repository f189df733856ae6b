"""Collect metrics and costs into results/summary.md and results/summary.csv.

    python workflow_scripts/summarize.py --rows ROWS.json --eval-sets EVAL_SETS.json --markdown OUT.md --csv OUT.csv \
        [--plots-dir DIR]

ROWS.json (or inline JSON): [{model, variant, family, eval_set, metrics, decision, model_dir, benchmark}, ...];
EVAL_SETS.json (or inline JSON): {eval_set: squad_file} for the always-abstain baseline.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

from qabench import cli, report
from qabench.errors import InputError, run_cli
from qabench.io import read_json, write_text


def _json_arg(value: str, name: str):
    if value.lstrip()[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise InputError(name, f"not valid JSON ({err.msg})") from None
    return read_json(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", required=True)
    parser.add_argument("--eval-sets", required=True)
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--plots-dir", help="write F1-vs-cost Pareto plots here (DIR/EVAL_SET-f1-vs-COST.png)")
    args = parser.parse_args(argv)
    cli.setup()
    entries = _json_arg(args.rows, "--rows")
    eval_sets = _json_arg(args.eval_sets, "--eval-sets")
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
    write_text(args.csv, report.to_csv(rows))
    write_text(args.markdown, report.to_markdown(rows, plots))
    return 0


if __name__ == "__main__":
    run_cli(main)
