"""From per-window scores to one answer (or abstention) per question, for every model family.

Each family scores its windows its own way (span families: start/end logits, decoded here by
``window_candidate``; t5: a generated answer and two sequence log-probabilities), giving one
``Candidate`` per window. From there on all families are alike: a question's answer is its best
candidate over its windows with its least confident no-answer score (``best_answer``), and the
prediction abstains where na_prob exceeds the threshold (``PredictionResult.from_answers``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qabench.errors import InputError
from qabench.models import MASKED_LOGIT
from qabench.windows import NOT_CONTEXT


@dataclass
class Answer:
    text: str  # best non-null span, even when the decision is to abstain
    span_score: float
    null_score: float

    @property
    def na_prob(self) -> float:
        """Null score minus best span score: larger means more likely unanswerable."""
        return float(self.null_score - self.span_score)


@dataclass(frozen=True)
class Candidate:
    """One window's answer to its question."""

    span_score: float | None  # None: the window offers no usable answer
    text: str
    null_score: float  # the window's no-answer score


@dataclass
class PredictionResult:
    predictions: dict[str, str]
    na_probs: dict[str, float]
    answers: dict[str, Answer]
    threshold: float
    stats: dict = field(default_factory=dict)

    @classmethod
    def from_answers(cls, answers: dict[str, Answer], threshold: float, stats: dict | None = None) -> PredictionResult:
        """Each question's prediction (its answer, or "" where na_prob exceeds ``threshold``) and na_prob."""
        return cls({qid: decide(answer, threshold) for qid, answer in answers.items()},
                   {qid: answer.na_prob for qid, answer in answers.items()}, answers, threshold,
                   {} if stats is None else stats)

    def best_answers(self) -> dict[str, str]:
        """Each question's best answer whatever its na_prob (what the official best_* keys score)."""
        return {qid: answer.text for qid, answer in self.answers.items()}

    def check_finite(self, model: str | Path) -> None:
        """Damaged weights show as a non-finite no-answer score: one InputError naming ``model``."""
        broken = next((qid for qid, value in self.na_probs.items() if not math.isfinite(value)), None)
        if broken is not None:
            raise InputError(model, f"gives a non-finite no-answer score ({self.na_probs[broken]}) for question "
                                    f"'{broken}': damaged weights?")


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


def window_candidate(context: str, start_logits: np.ndarray, end_logits: np.ndarray, offset_start: np.ndarray,
                     offset_end: np.ndarray, n_best: int = 20, max_answer_tokens: int = 30) -> Candidate:
    """A span window's best span (its text cut from ``context``) and its no-answer (CLS) score."""
    null_score = float(start_logits[0] + end_logits[0])
    spans = best_spans_in_window(start_logits, end_logits, offset_start, n_best, max_answer_tokens)
    if not spans:
        return Candidate(None, "", null_score)
    score, s, e = spans[0]
    return Candidate(score, context[offset_start[s]:offset_end[e]], null_score)


def best_answer(candidates: Iterable[Candidate]) -> Answer:
    """One question's answer from its windows' candidates: the best-scoring answer (the first on a tie;
    "" scored MASKED_LOGIT when no window has one), and the lowest no-answer score among windows."""
    best_score, best_text = MASKED_LOGIT, ""
    null_score = np.inf
    for candidate in candidates:
        null_score = min(null_score, candidate.null_score)
        if candidate.span_score is not None and candidate.span_score > best_score:
            best_score, best_text = candidate.span_score, candidate.text
    return Answer(best_text, float(best_score), float(null_score))


def answer_question(context: str, windows: list[dict], n_best: int = 20, max_answer_tokens: int = 30) -> Answer:
    """Best span over all windows of one question; null score is the lowest CLS score among windows."""
    return best_answer(window_candidate(context, w["start_logits"], w["end_logits"], w["offset_start"],
                                        w["offset_end"], n_best, max_answer_tokens) for w in windows)


def answer_questions(ids: list[str], candidates: Iterable[tuple[int, Candidate]]) -> dict[str, Answer]:
    """Every question's answer, keyed by id in question order, from the (question index, candidate)
    pairs of all windows (each question has at least one window)."""
    by_question: dict[int, list[Candidate]] = {}
    for index, candidate in candidates:
        by_question.setdefault(index, []).append(candidate)
    return {qid: best_answer(by_question[index]) for index, qid in enumerate(ids)}


def run_stats(questions: int, windows: int, tokens: int, times: tuple[float, float, float, float],
              batch_size: int, precision: str, threads: int) -> dict:
    """What a prediction run reports: its size, the seconds of each stage (``times``: perf_counter
    readings at the start and after tokenizing, the model and deciding) and its speed."""
    t0, t1, t2, t3 = times
    return {
        "questions": questions, "windows": windows, "tokens": tokens,
        "tokenize_s": t1 - t0, "model_s": t2 - t1, "postprocess_s": t3 - t2, "total_s": t3 - t0,
        "questions_per_s": questions / (t3 - t0), "batch_size": batch_size, "precision": precision,
        "threads": threads,
    }


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
