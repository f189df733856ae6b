"""Has a model learned spans, or nothing? HasAns F1 at its threshold next to HasAns F1 answering all.

    python benchmarks/answer_all.py --data results/data/raw/squad_v2_dev.json.gz \
        results/predictions/MODEL/VARIANT/dev [more predict folders ...] [--out FILE]

A model that abstains on every question scores always-abstain's F1 whether it has learned to find
answers or not. Each predict folder holds ``predictions.json`` (the answers after the abstain
threshold, "" = abstain) and ``best_spans.json`` (each question's best span, whatever its no-answer
score). On the answerable questions this prints, per folder, HasAns F1 at the threshold and HasAns
EM/F1 when the model answers every question with its best span: a high second number with a low
first one means the spans are learned and the abstain score is the weakness.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from qabench.data import Example, load_squad
from qabench.errors import InputError, run_cli
from qabench.io import write_json
from qabench.metrics import evaluate, load_predictions


def answer_all_scores(answerable: list[Example], predict_dir: Path) -> dict:
    """HasAns scores of one predict folder on the ``answerable`` questions."""
    paths = [predict_dir / "predictions.json", predict_dir / "best_spans.json"]
    for path in paths:
        if not path.is_file():
            raise InputError(predict_dir, f"no {path.name} here (expected a predict rule's output folder)")
    at_threshold, answering_all = (evaluate(answerable, load_predictions(path), predictions_source=path)
                                   for path in paths)
    return {
        "predictions": str(predict_dir),
        "HasAns_f1_at_threshold": at_threshold["HasAns_f1"],
        "HasAns_exact_answering_all": answering_all["HasAns_exact"],
        "HasAns_f1_answering_all": answering_all["HasAns_f1"],
        "HasAns_total": answering_all["HasAns_total"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="the SQuAD 2.0 file the predictions answer")
    parser.add_argument("predict_dirs", nargs="+", type=Path, help="predict rule output folders")
    parser.add_argument("--out", type=Path, help="also write the rows here (JSON)")
    args = parser.parse_args(argv)

    answerable = [example for example in load_squad(args.data) if example.answer_texts]
    if not answerable:
        raise InputError(args.data, "has no answerable questions")
    rows = [answer_all_scores(answerable, folder) for folder in args.predict_dirs]
    print("| predictions | HasAns F1 at threshold | HasAns EM answering all | HasAns F1 answering all | answerable |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['predictions']} | {row['HasAns_f1_at_threshold']:.2f} | {row['HasAns_exact_answering_all']:.2f} "
              f"| {row['HasAns_f1_answering_all']:.2f} | {row['HasAns_total']} |")
    if args.out is not None:
        write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    run_cli(main)
