"""The abstain threshold: chosen on held-out questions, stored as JSON, read back by predict and evaluate.

A question is answered "" when its na_prob (no-answer score minus best span score) exceeds the
threshold. A model's threshold is its own: chosen on the held-out training articles of its training
set (never on an eval set), after training, by its own rule, so a new held-out recipe re-chooses it
without retraining.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from qabench import metrics
from qabench.data import Example
from qabench.errors import InputError
from qabench.io import read_json

DEFAULT = 0.0


def choose(examples: Sequence[Example], best_answers: Mapping[str, str], na_probs: Mapping[str, float]) -> dict:
    """The threshold with the best F1 on ``examples`` (the official ``best_f1_thresh``), computed from
    each question's best answer (not from decided predictions, which would hide every threshold above
    the one they were decided with). Returns the threshold, how it was chosen, and the held-out scores."""
    if not examples:
        return {"threshold": DEFAULT, "threshold_rule": f"the default, {DEFAULT:g} (no held-out questions)"}
    scores = metrics.evaluate(examples, best_answers, na_probs, na_prob_thresh=DEFAULT)
    answerable = sum(1 for e in examples if e.answer_texts)
    synthetic = sum(1 for e in examples if e.origin != "original" and not e.answer_texts)
    rule = (f"best F1 on {len(examples)} held-out questions ({answerable} answerable, "
            f"{len(examples) - answerable - synthetic} real + {synthetic} synthetic unanswerable)")
    chosen = float(scores["best_f1_thresh"])
    if scores["best_f1"] <= 100.0 * (len(examples) - answerable) / len(examples):
        # the official scorer reports 0 when no threshold beats abstaining on everything; abstain on everything
        chosen = min(na_probs[e.id] for e in examples) - 1.0
        rule += ": no threshold beats abstaining on every one, so it abstains below all of them"
    return {"threshold": chosen, "threshold_rule": rule, "holdout_scores": scores}


def read(path: str | Path) -> tuple[float, str]:
    """The "threshold" (and "threshold_rule", if any) of a JSON file written by ``choose`` or predict."""
    decision = read_json(path)
    if not isinstance(decision, dict) or "threshold" not in decision:
        raise InputError(path, 'expected a JSON object with a "threshold" key')
    threshold = decision["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise InputError(path, f'"threshold" must be a finite number, found {threshold!r}')
    rule = decision.get("threshold_rule")
    return float(threshold), rule if isinstance(rule, str) else f"read from {path}"
