"""From hand-built window logits to the answer text and the abstain decision."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qabench.windows import NOT_CONTEXT
from qabench.models import MASKED_LOGIT
from qabench.postprocess import (Answer, answer_question, best_spans_in_window, decide,
                                  threshold_for_abstain_share)

# Non-ASCII letters, a double space, a no-break space, an em dash and CJK characters.
CONTEXT = "Zoë  Saldaña\u00a0lives in Zürich — café 北京."
# Context tokens with their character offsets, written out by hand.
TOKENS = [
    ("Zoë", 0, 3), ("Saldaña", 5, 12), ("lives", 13, 18), ("in", 19, 21), ("Zürich", 22, 28),
    ("—", 29, 30), ("café", 31, 35), ("北", 36, 37), ("京", 37, 38), (".", 38, 39),
]
QUESTION_TOKENS = 2  # [CLS] q q [SEP] context... [SEP]
LEAD = 1 + QUESTION_TOKENS + 1


def test_hand_offsets_are_right():
    for text, start, end in TOKENS:
        assert CONTEXT[start:end] == text


def _window(first: int, last: int, start: dict[int, float] | None = None, end: dict[int, float] | None = None,
            cls: tuple[float, float] = (0.0, 0.0), base: float = -5.0) -> dict:
    """A window holding context tokens ``first..last``; logits given per *context token* number."""
    tokens = TOKENS[first:last + 1]
    n = LEAD + len(tokens) + 1
    offset_start = np.full(n, NOT_CONTEXT, np.int32)
    offset_end = np.full(n, NOT_CONTEXT, np.int32)
    for k, (_, s, e) in enumerate(tokens):
        offset_start[LEAD + k], offset_end[LEAD + k] = s, e
    start_logits = np.full(n, base, np.float32)
    end_logits = np.full(n, base, np.float32)
    start_logits[0], end_logits[0] = cls
    for token, value in (start or {}).items():
        start_logits[LEAD + token - first] = value
    for token, value in (end or {}).items():
        end_logits[LEAD + token - first] = value
    # question / [SEP] positions get the highest logits: they must never be picked
    start_logits[1:LEAD] = 50.0
    end_logits[1:LEAD] = 50.0
    start_logits[-1] = end_logits[-1] = 50.0
    return {"start_logits": start_logits, "end_logits": end_logits,
            "offset_start": offset_start, "offset_end": offset_end}


def test_best_span_across_two_windows_by_score():
    # window A: tokens 0..5, good span "Zoë  Saldaña" (3 + 3); window B: tokens 3..9, better "Zürich — café" (4 + 4)
    a = _window(0, 5, start={0: 3.0}, end={1: 3.0})
    b = _window(3, 9, start={4: 4.0}, end={6: 4.0})
    answer = answer_question(CONTEXT, [a, b])
    assert answer.text == "Zürich — café"
    assert answer.span_score == pytest.approx(8.0)
    # the other way round: window A wins, and the double space survives
    a = _window(0, 5, start={0: 5.0}, end={1: 5.0})
    answer = answer_question(CONTEXT, [a, b])
    assert answer.text == "Zoë  Saldaña"
    assert answer.span_score == pytest.approx(10.0)
    # order of windows does not matter
    assert answer_question(CONTEXT, [b, a]).text == "Zoë  Saldaña"


def test_span_with_no_break_space_and_cjk():
    w = _window(0, 9, start={1: 2.0}, end={2: 2.0})
    assert answer_question(CONTEXT, [w]).text == "Saldaña\u00a0lives"
    w = _window(0, 9, start={7: 2.0}, end={8: 2.0})
    assert answer_question(CONTEXT, [w]).text == "北京"
    w = _window(0, 9, start={6: 2.0}, end={9: 2.0})
    assert answer_question(CONTEXT, [w]).text == "café 北京."


def test_max_answer_tokens_is_respected():
    # the top start (token 0) and top end (token 6) are 7 tokens apart; shorter pairs score less
    w = _window(0, 9, start={0: 10.0, 4: 7.0}, end={6: 10.0, 4: 6.0})
    long = answer_question(CONTEXT, [w], max_answer_tokens=7)
    assert long.text == "Zoë  Saldaña\u00a0lives in Zürich — café" and long.span_score == pytest.approx(20.0)
    # 6 tokens: (4, 6) = 17 beats (0, 4) = 16
    short = answer_question(CONTEXT, [w], max_answer_tokens=6)
    assert short.text == "Zürich — café" and short.span_score == pytest.approx(17.0)
    one = answer_question(CONTEXT, [w], max_answer_tokens=1)
    assert one.text == "Zürich" and one.span_score == pytest.approx(13.0)


def test_end_before_start_is_never_chosen():
    # best start late (token 6), best end early (token 1): the pair (6, 1) = 20 is invalid
    w = _window(0, 9, start={6: 10.0, 0: 2.0}, end={1: 10.0, 8: 1.0})
    answer = answer_question(CONTEXT, [w])
    assert answer.text == "Zoë  Saldaña" and answer.span_score == pytest.approx(12.0)
    spans = best_spans_in_window(w["start_logits"], w["end_logits"], w["offset_start"], 20, 30)
    assert spans and all(e >= s for _, s, e in spans)
    assert spans[1][0] == pytest.approx(11.0)  # (6, 8): café 北京
    assert all(w["offset_start"][s] != NOT_CONTEXT and w["offset_start"][e] != NOT_CONTEXT for _, s, e in spans)


def _brute_force(w: dict, max_answer_tokens: int) -> tuple[float, int, int]:
    context = np.flatnonzero(w["offset_start"] != NOT_CONTEXT)
    best = (-np.inf, -1, -1)
    for s, e in itertools.product(context, context):
        if s <= e < s + max_answer_tokens:
            score = float(w["start_logits"][s] + w["end_logits"][e])
            if score > best[0]:
                best = (score, int(s), int(e))
    return best


def test_matches_brute_force_on_random_logits():
    rng = np.random.default_rng(5)
    for trial in range(200):
        first = int(rng.integers(0, 5))
        last = int(rng.integers(first, len(TOKENS)))
        w = _window(first, last)
        n = len(w["start_logits"])
        w["start_logits"][LEAD:n - 1] = rng.normal(size=n - 1 - LEAD)
        w["end_logits"][LEAD:n - 1] = rng.normal(size=n - 1 - LEAD)
        max_tokens = int(rng.integers(1, 6))
        score, s, e = _brute_force(w, max_tokens)
        spans = best_spans_in_window(w["start_logits"], w["end_logits"], w["offset_start"], 20, max_tokens)
        assert spans[0][0] == pytest.approx(score)
        assert (spans[0][1], spans[0][2]) == (s, e), trial
        assert [x[0] for x in spans] == sorted((x[0] for x in spans), reverse=True)
        assert all(0 <= b - a < max_tokens for _, a, b in spans)
        answer = answer_question(CONTEXT, [w], n_best=20, max_answer_tokens=max_tokens)
        assert answer.text == CONTEXT[w["offset_start"][s]:w["offset_end"][e]]


def test_padded_logits_beyond_the_window_are_ignored():
    w = _window(0, 9, start={4: 3.0}, end={4: 3.0})
    w["start_logits"] = np.concatenate([w["start_logits"], np.full(6, 100.0, np.float32)])
    w["end_logits"] = np.concatenate([w["end_logits"], np.full(6, 100.0, np.float32)])
    assert answer_question(CONTEXT, [w]).text == "Zürich"


def test_null_score_is_the_minimum_cls_score_and_na_prob():
    a = _window(0, 5, start={0: 3.0}, end={1: 3.0}, cls=(2.0, 1.5))   # CLS 3.5
    b = _window(3, 9, start={4: 4.0}, end={6: 4.0}, cls=(0.5, 0.25))  # CLS 0.75
    c = _window(5, 9, cls=(4.0, 4.0))                                  # CLS 8.0, spans only -10
    answer = answer_question(CONTEXT, [a, b, c])
    assert answer.null_score == pytest.approx(0.75)
    assert answer.span_score == pytest.approx(8.0)
    assert answer.na_prob == pytest.approx(0.75 - 8.0)
    assert answer_question(CONTEXT, [c]).null_score == pytest.approx(8.0)
    assert answer_question(CONTEXT, [c, a]).null_score == pytest.approx(3.5)


def test_no_context_tokens_gives_no_span_and_abstains():
    w = _window(0, 9, cls=(1.0, 1.0))
    w["offset_start"][:] = NOT_CONTEXT
    w["offset_end"][:] = NOT_CONTEXT
    answer = answer_question(CONTEXT, [w])
    assert answer.text == "" and answer.span_score == MASKED_LOGIT
    assert decide(answer, 0.0) == ""


def test_decide_threshold_boundary():
    answer = Answer("Zürich", span_score=2.0, null_score=2.5)  # na_prob exactly 0.5
    assert answer.na_prob == 0.5
    assert decide(answer, 0.5) == "Zürich"   # equal: answer
    assert decide(answer, 0.25) == ""        # above the threshold: abstain
    assert decide(answer, 0.75) == "Zürich"
    negative = Answer("café", span_score=3.0, null_score=1.0)  # na_prob -2
    assert decide(negative, -2.0) == "café"
    assert decide(negative, -2.5) == ""
    assert decide(negative, 0.0) == "café"


def _abstentions(na_probs, share):
    threshold = threshold_for_abstain_share(na_probs, share)
    return sorted(v for v in na_probs if decide(Answer("x", 0.0, v), threshold) == "")


def test_abstain_share_abstains_on_the_highest_na_probs():
    na_probs = [3.0, -1.0, 2.0, 5.0, 0.5]
    assert _abstentions(na_probs, 0.4) == [3.0, 5.0]
    assert _abstentions(na_probs, 0.5) == [3.0, 5.0]  # 2.5 questions round to 2
    assert _abstentions(na_probs, 0.0) == []
    assert _abstentions(na_probs, 1.0) == sorted(na_probs)


def test_abstain_share_answers_ties_at_the_threshold():
    assert _abstentions([1.0, 2.0, 2.0, 2.0], 0.5) == []
    assert _abstentions([1.0, 2.0, 2.0, 3.0], 0.5) == [3.0]


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_abstain_share_outside_zero_one_is_refused(share):
    with pytest.raises(ValueError, match="between 0 and 1"):
        threshold_for_abstain_share([0.0, 1.0], share)
