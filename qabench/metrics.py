"""SQuAD 2.0 scores with the semantics of the official evaluate-v2.0.py, plus a strict exact match.

The official script is the reference: ``benchmarks/official_scorer_parity.py`` checks that every
key it reports agrees with ``evaluate`` here. Where it has quirks (thresholds inside groups of
tied no-answer probabilities, a whitespace-only prediction counting as an answer when searching
for the best threshold), we keep them so that the numbers stay comparable with published ones.
"""

from __future__ import annotations

import math
import os
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from qabench.data import Example, load_squad
from qabench.errors import InputError
from qabench.io import read_json

OFFICIAL_KEYS = (
    "exact", "f1", "total",
    "HasAns_exact", "HasAns_f1", "HasAns_total",
    "NoAns_exact", "NoAns_f1", "NoAns_total",
    "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh",
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace."""
    text = s.lower().translate(_DROP_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split()


def exact_score(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def f1_score(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = _tokens(gold), _tokens(pred)
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    overlap = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: Example) -> list[str]:
    """Answers that survive normalisation; [""] when none do (always so for unanswerable ones)."""
    return [text for text in example.answer_texts if normalize_answer(text)] or [""]


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _require_ids(examples: Sequence[Example], mapping: Mapping, source: object, what: str) -> None:
    missing = [e.id for e in examples if e.id not in mapping]
    if missing:
        shown = ", ".join(repr(qid) for qid in missing[:3])
        raise InputError(source, f"missing {what} for {_plural(len(missing), 'question')}, e.g. {shown}")


def _percent(values: Iterable[float], total: int) -> float:
    return 100.0 * sum(values) / total


def _best_threshold(
    examples: Sequence[Example],
    predictions: Mapping[str, str],
    raw_scores: Mapping[str, float],
    na_probs: Mapping[str, float],
) -> tuple[float, float]:
    """The official find_best_thresh: abstain on every question whose na_prob exceeds the result.

    Questions are visited in increasing na_prob, ties in the order of ``na_probs``, and the
    threshold moves on every strict improvement, even inside a group of tied probabilities.
    """
    has_answer = {e.id: bool(e.answer_texts) for e in examples}
    score = sum(1 for v in has_answer.values() if not v)
    best_score, best_thresh = score, 0.0
    for qid in sorted((q for q in na_probs if q in has_answer), key=lambda q: na_probs[q]):
        if has_answer[qid]:
            score += raw_scores[qid]
        elif predictions[qid]:
            score -= 1
        if score > best_score:
            best_score, best_thresh = score, na_probs[qid]
    return 100.0 * best_score / len(raw_scores), best_thresh


def evaluate(
    examples: Sequence[Example],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
    *,
    predictions_source: object = "predictions",
    na_probs_source: object = "no-answer probabilities",
) -> dict:
    """Official SQuAD 2.0 metrics (in the official key order) followed by ``strict_exact``.

    A question whose na_prob exceeds ``na_prob_thresh`` counts as an abstention. Without
    ``na_probs`` every na_prob is 0.0 and the best_* keys are left out. Ids in ``predictions`` or
    ``na_probs`` that are not questions are ignored; questions missing from either raise
    InputError naming ``predictions_source`` / ``na_probs_source``.
    """
    if not examples:
        raise ValueError("no questions to evaluate")
    _require_ids(examples, predictions, predictions_source, "predictions")
    if na_probs is not None:
        _require_ids(examples, na_probs, na_probs_source, "no-answer probabilities")

    exact_raw: dict[str, float] = {}
    f1_raw: dict[str, float] = {}
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    strict: dict[str, float] = {}
    for e in examples:
        pred = predictions[e.id]
        golds = gold_answers(e)
        exact_raw[e.id] = max(exact_score(g, pred) for g in golds)
        f1_raw[e.id] = max(f1_score(g, pred) for g in golds)
        abstains = (na_probs[e.id] if na_probs is not None else 0.0) > na_prob_thresh
        if abstains:
            exact[e.id] = f1[e.id] = float(not e.answer_texts)
            pred = ""
        else:
            exact[e.id], f1[e.id] = exact_raw[e.id], f1_raw[e.id]
        strict[e.id] = float(pred in e.answer_texts if e.answer_texts else pred == "")

    result: dict = {}
    for prefix, subset in (
        ("", examples),
        ("HasAns_", [e for e in examples if e.answer_texts]),
        ("NoAns_", [e for e in examples if not e.answer_texts]),
    ):
        if subset:
            result[f"{prefix}exact"] = _percent((exact[e.id] for e in subset), len(subset))
            result[f"{prefix}f1"] = _percent((f1[e.id] for e in subset), len(subset))
            result[f"{prefix}total"] = len(subset)
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = _best_threshold(examples, predictions, exact_raw, na_probs)
        result["best_f1"], result["best_f1_thresh"] = _best_threshold(examples, predictions, f1_raw, na_probs)
    result["strict_exact"] = _percent(strict.values(), len(examples))
    return result


def load_predictions(path: str | os.PathLike) -> dict[str, str]:
    """A JSON object mapping question id to predicted answer text ("" = no answer)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object of question id -> answer text, found {type(obj).__name__}")
    for qid, text in obj.items():
        if not isinstance(text, str):
            raise InputError(path, f"prediction for {qid!r}: expected a string, found {type(text).__name__}")
    return obj


def load_na_probs(path: str | os.PathLike) -> dict[str, float]:
    """A JSON object mapping question id to the model's no-answer probability (any finite number)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object of question id -> number, found {type(obj).__name__}")
    probs = {}
    for qid, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(path, f"value for {qid!r}: expected a number, found {type(value).__name__}")
        if not math.isfinite(value):
            raise InputError(path, f"value for {qid!r}: expected a finite number, found {value}")
        probs[qid] = float(value)
    return probs


def evaluate_files(
    data_path: str | os.PathLike,
    predictions_path: str | os.PathLike,
    na_probs_path: str | os.PathLike | None = None,
    na_prob_thresh: float = 1.0,
    best_spans_path: str | os.PathLike | None = None,
) -> dict:
    """Load and validate the files, then ``evaluate``; every problem is an InputError.

    With ``best_spans_path`` (each question's best answer, whatever its na_prob) the best_* keys
    are computed from those answers: from decided predictions they would be understated wherever the
    predictions abstain, since an abstention has no answer left to score at a higher threshold."""
    examples = load_squad(data_path)
    predictions = load_predictions(predictions_path)
    na_probs = load_na_probs(na_probs_path) if na_probs_path is not None else None
    result = evaluate(
        examples, predictions, na_probs, na_prob_thresh,
        predictions_source=predictions_path, na_probs_source=na_probs_path,
    )
    if best_spans_path is not None and na_probs is not None:
        best = evaluate(examples, load_predictions(best_spans_path), na_probs, na_prob_thresh,
                        predictions_source=best_spans_path, na_probs_source=na_probs_path)
        result.update({key: best[key] for key in ("best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")})
    return result
