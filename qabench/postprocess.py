"""From per-window start/end logits to one answer (or abstention) per question."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qabench.features import NOT_CONTEXT
from qabench.models import MASKED_LOGIT


@dataclass
class Answer:
    text: str  # best non-null span, even when the decision is to abstain
    span_score: float
    null_score: float

    @property
    def na_prob(self) -> float:
        """Null score minus best span score: larger means more likely unanswerable."""
        return float(self.null_score - self.span_score)


def best_spans_in_window(
    start_logits: np.ndarray, end_logits: np.ndarray, offset_start: np.ndarray,
    n_best: int, max_answer_tokens: int,
) -> list[tuple[float, int, int]]:
    """Up to ``n_best`` (score, start_token, end_token) spans inside the context, best first."""
    context = offset_start != NOT_CONTEXT
    n = min(len(start_logits), len(offset_start))
    context = context[:n]
    if not context.any():
        return []
    start = np.where(context, start_logits[:n], -np.inf)
    end = np.where(context, end_logits[:n], -np.inf)
    k = min(n_best, int(context.sum()))
    top_start = np.argpartition(-start, k - 1)[:k]
    top_end = np.argpartition(-end, k - 1)[:k]
    s = top_start[:, None]
    e = top_end[None, :]
    valid = (e >= s) & (e - s + 1 <= max_answer_tokens)
    scores = np.where(valid, start[s] + end[e], -np.inf)
    flat = np.argsort(-scores, axis=None, kind="stable")[:n_best]
    spans = []
    for idx in flat:
        i, j = np.unravel_index(idx, scores.shape)
        if not np.isfinite(scores[i, j]):
            break
        spans.append((float(scores[i, j]), int(top_start[i]), int(top_end[j])))
    return spans


def answer_question(context: str, windows: list[dict], n_best: int = 20, max_answer_tokens: int = 30) -> Answer:
    """Best span over all windows of one question; null score is the lowest CLS score among windows."""
    best_score, best_text = MASKED_LOGIT, ""
    null_score = np.inf
    for w in windows:
        null_score = min(null_score, float(w["start_logits"][0] + w["end_logits"][0]))
        spans = best_spans_in_window(w["start_logits"], w["end_logits"], w["offset_start"], n_best, max_answer_tokens)
        if spans and spans[0][0] > best_score:
            score, s, e = spans[0]
            best_score = score
            best_text = context[w["offset_start"][s]:w["offset_end"][e]]
    return Answer(best_text, best_score, float(null_score))


def decide(answer: Answer, threshold: float) -> str:
    """The prediction: the span, or "" when the no-answer margin exceeds the threshold."""
    return "" if answer.na_prob > threshold else answer.text


def threshold_for_abstain_share(na_probs, share: float) -> float:
    """The threshold that abstains on ``share`` of the questions: those with the highest na_prob.

    For a set whose share of unanswerable questions is known (SQuAD 2.0 dev: 50%) but whose
    labels are not used. Ties at the threshold are all answered, so it may abstain on fewer.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"abstain share must be between 0 and 1, got {share}")
    values = np.sort(np.asarray(list(na_probs), dtype=np.float64))
    if len(values) == 0:
        raise ValueError("no questions to choose an abstain threshold from")
    abstain = int(round(share * len(values)))
    if abstain == len(values):
        return float(np.nextafter(values[0], -np.inf))
    return float(values[len(values) - abstain - 1])
