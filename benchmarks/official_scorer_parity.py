"""Check qabench.metrics against the official SQuAD 2.0 evaluation script on random predictions.

    python benchmarks/official_scorer_parity.py --official /tmp/official/evaluate-v2.0.py \
        --data dev-v2.0.json.gz [--trials 20] [--seed 0]

Each trial writes a random prediction set (gold answers, perturbed gold answers, partial and
random context spans, abstentions), sometimes with random no-answer probabilities (many tied)
and a random threshold, scores it with both implementations and requires every key the official
script reports to agree to within 1e-9. Exit status 1 if any trial disagrees.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from qabench.data import Example, load_squad
from qabench.errors import run_cli
from qabench.io import read_json
from qabench.metrics import evaluate_files

TOLERANCE = 1e-9


def _words(text: str) -> list[str]:
    return text.split()


def _random_span(rng: random.Random, text: str, max_words: int = 8) -> str:
    words = _words(text)
    if not words:
        return text
    start = rng.randrange(len(words))
    return " ".join(words[start:start + rng.randint(1, max_words)])


def _perturb(rng: random.Random, answer: str) -> str:
    choice = rng.randrange(7)
    if choice == 0:
        return answer.upper()
    if choice == 1:
        return answer.lower()
    if choice == 2:
        return rng.choice(["The ", "the ", "a ", "An "]) + answer
    if choice == 3:
        return answer + rng.choice([".", ",", "!", "'s", ")"])
    if choice == 4:
        return f'"{answer}"'
    if choice == 5:
        return "  ".join(_words(answer)) + " "
    return answer.replace(" the ", " ").replace("-", " ")


def _partial(rng: random.Random, answer: str, context: str, start: int) -> str:
    words = _words(answer)
    if len(words) > 1 and rng.random() < 0.6:
        i = rng.randrange(len(words))
        return " ".join(words[i:rng.randint(i + 1, len(words))])
    tail = _words(context[start + len(answer):])[:rng.randint(1, 3)]
    return " ".join([answer, *tail])


def random_prediction(rng: random.Random, e: Example) -> str:
    kind = rng.choices(
        ["gold", "perturbed", "partial", "random", "empty", "blank"],
        weights=[30, 20, 15, 15, 17, 3],
    )[0]
    if kind == "empty":
        return ""
    if kind == "blank":
        return rng.choice([" ", "the", "."])
    if kind == "random" or not e.answer_texts:
        return _random_span(rng, e.context)
    i = rng.randrange(len(e.answer_texts))
    answer, start = e.answer_texts[i], e.answer_starts[i]
    if kind == "gold":
        return answer
    if kind == "perturbed":
        return _perturb(rng, answer)
    return _partial(rng, answer, e.context, start)


def random_na_probs(rng: random.Random, examples: Sequence[Example], predictions: dict[str, str]) -> dict:
    mode = rng.choice(["uniform", "coarse", "two-level", "informative"])
    probs = {}
    for e in examples:
        if mode == "uniform":
            p = rng.random()
        elif mode == "coarse":
            p = rng.randint(0, 10) / 10
        elif mode == "two-level":
            p = rng.choice([0, 1, 0.5])
        else:
            base = 0.7 if not e.answer_texts or not predictions[e.id] else 0.3
            p = round(min(1.0, max(0.0, base + rng.gauss(0, 0.25))), 2)
        probs[e.id] = p
    order = list(probs)
    rng.shuffle(order)
    shuffled = {qid: probs[qid] for qid in order}
    shuffled[f"extra-na-{rng.randrange(10**6)}"] = rng.random()
    return shuffled


def random_threshold(rng: random.Random, na_probs: dict | None) -> float:
    choices = [1.0, 0.5, rng.random(), 0.0]
    if na_probs:
        choices.append(float(rng.choice(list(na_probs.values()))))
    else:
        choices.append(-0.5)
    return rng.choice(choices)


def run_official(official: Path, data_json: Path, pred: Path, na: Path | None, thresh: float, out: Path) -> dict:
    cmd = [sys.executable, str(official), str(data_json), str(pred), "--na-prob-thresh", repr(thresh), "--out-file", str(out)]
    if na is not None:
        cmd += ["--na-prob-file", str(na)]
    env = {**os.environ, "PYTHONUTF8": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"official script failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(out.read_text(encoding="utf-8"))


def compare(official: dict, ours: dict) -> tuple[list[str], float]:
    """Problems found and the largest absolute difference over the official keys."""
    problems = []
    ours_official_keys = [k for k in ours if k != "strict_exact"]
    if list(official) != ours_official_keys:
        problems.append(f"keys differ: official {list(official)} vs ours {ours_official_keys}")
    max_diff = 0.0
    for key, value in official.items():
        if key not in ours:
            continue
        diff = abs(float(value) - float(ours[key]))
        if math.isnan(diff) or diff > TOLERANCE:
            problems.append(f"{key}: official {value!r} vs ours {ours[key]!r}")
        max_diff = max(max_diff, diff)
    return problems, max_diff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="path to the official evaluate-v2.0.py")
    parser.add_argument("--data", required=True, type=Path, help="SQuAD file (.json or .json.gz)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    examples = load_squad(args.data)
    digest = hashlib.sha256(args.official.read_bytes()).hexdigest()[:16]
    print(f"official script {args.official} (sha256 {digest}...); {len(examples)} questions in {args.data}")

    agree, worst = 0, 0.0
    with tempfile.TemporaryDirectory(prefix="squad-parity-") as tmp:
        tmp = Path(tmp)
        data_json = tmp / "data.json"
        data_json.write_text(json.dumps(read_json(args.data), ensure_ascii=False), encoding="utf-8")
        for trial in range(args.trials):
            rng = random.Random(args.seed * 1_000_003 + trial)
            predictions = {e.id: random_prediction(rng, e) for e in examples}
            predictions[f"extra-pred-{trial}"] = "ignored"
            pred_path = tmp / f"pred-{trial}.json"
            pred_path.write_text(json.dumps(predictions), encoding="utf-8")
            na_path = None
            na_probs = None
            if trial % 4 != 3:
                na_probs = random_na_probs(rng, examples, predictions)
                na_path = tmp / f"na-{trial}.json"
                na_path.write_text(json.dumps(na_probs), encoding="utf-8")
            thresh = random_threshold(rng, na_probs)

            official = run_official(args.official, data_json, pred_path, na_path, thresh, tmp / f"official-{trial}.json")
            ours = evaluate_files(args.data, pred_path, na_path, thresh)
            problems, max_diff = compare(official, ours)
            worst = max(worst, max_diff)
            agree += not problems
            print(
                f"trial {trial:3d}: {'agree' if not problems else 'DISAGREE'}  thresh {thresh:.4g}  "
                f"na_probs {'yes' if na_path else 'no '}  exact {official['exact']:.4f}  f1 {official['f1']:.4f}  "
                + (f"best_f1 {official['best_f1']:.4f}@{official['best_f1_thresh']:.4g}  " if na_path else "")
                + f"strict {ours['strict_exact']:.4f}  max abs diff {max_diff:.3g}"
            )
            for problem in problems:
                print(f"    {problem}")

    print(f"{agree}/{args.trials} trials agree on all keys (max abs diff {worst:.3g})")
    return 0 if agree == args.trials else 1


if __name__ == "__main__":
    run_cli(main)
