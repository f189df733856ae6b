"""Collect metrics and costs into results/summary.md and results/summary.csv.

    python workflow_scripts/summarize.py --rows ROWS.json --eval-sets EVAL_SETS.json --markdown OUT.md --csv OUT.csv

ROWS.json (or inline JSON): [{model, variant, family, eval_set, metrics, decision, model_dir, benchmark}, ...];
EVAL_SETS.json (or inline JSON): {eval_set: squad_file} for the always-abstain baseline.
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args(argv)
    cli.setup()
    entries = _json_arg(args.rows, "--rows")
    eval_sets = _json_arg(args.eval_sets, "--eval-sets")
    rows = []
    for eval_set, data in eval_sets.items():
        rows.append(report.abstain_row(eval_set, data))
        rows += [report.measured_row(e) for e in entries if e["eval_set"] == eval_set]
    write_text(args.csv, report.to_csv(rows))
    write_text(args.markdown, report.to_markdown(rows))
    return 0


if __name__ == "__main__":
    run_cli(main)
