"""The abstain threshold: chosen on held-out questions from each one's best answer, read back by predict
and evaluate; best_* computed from best answers, not from decided predictions."""

from __future__ import annotations

import json

import pytest

from qabench import threshold
from qabench.data import Example
from qabench.errors import InputError
from qabench.metrics import evaluate_files


def _example(qid: str, answer: str | None, origin: str = "original") -> Example:
    context = "Paris is the capital of France."
    return Example(id=qid, title="t", paragraph_id=0, context=context, question=f"question {qid}?",
                   answer_texts=[answer] if answer else [], answer_starts=[context.index(answer)] if answer else [],
                   is_impossible=answer is None, origin=origin)


# two answerable questions answered right, one wrong, two unanswerable (one real, one synthetic)
HELD_OUT = [_example("a1", "Paris"), _example("a2", "France"), _example("a3", "capital"),
            _example("n1", None), _example("n2", None, origin="neg_negation")]
BEST = {"a1": "Paris", "a2": "France", "a3": "Paris", "n1": "Paris", "n2": "France"}
NA_PROBS = {"a1": -3.0, "a2": 2.0, "a3": 0.5, "n1": 1.0, "n2": 4.0}


def test_the_threshold_with_the_best_f1_by_hand():
    # answering up to na_prob t: t < -3 -> 2/5 right (abstain on all); t = -3 -> 3/5; t = 0.5 -> 2/5 (a3 is wrong);
    # t = 1 -> 1/5 + ... : a1 right, a3 wrong, n1 wrong, n2 abstains -> 2/5; t = 2 -> a1, a2 right, n2 abstains -> 3/5
    # ties go to the first (lowest) threshold the official scorer meets: -3
    chosen = threshold.choose(HELD_OUT, BEST, NA_PROBS)
    assert chosen["threshold"] == -3.0
    assert chosen["holdout_scores"]["best_f1"] == pytest.approx(60.0)
    assert chosen["threshold_rule"] == "best F1 on 5 held-out questions (3 answerable, 1 real + 1 synthetic unanswerable)"


def test_a_threshold_above_zero_is_found_from_best_answers():
    """Decided at threshold 0, a2 would be "" and a threshold of 2 could not be seen to score it."""
    na_probs = {**NA_PROBS, "a1": 1.5, "a3": 3.0}
    assert threshold.choose(HELD_OUT, BEST, na_probs)["threshold"] == 2.0
    decided = {qid: "" if na_probs[qid] > 0 else text for qid, text in BEST.items()}
    assert threshold.choose(HELD_OUT, decided, na_probs)["threshold"] != 2.0


def test_a_model_no_better_than_abstaining_abstains_on_everything():
    """The official best_f1_thresh says 0 when nothing beats abstaining on all; 0 would answer a1 and a3."""
    wrong = {**BEST, "a1": "France", "a2": "Paris"}
    chosen = threshold.choose(HELD_OUT, wrong, NA_PROBS)
    assert chosen["holdout_scores"]["best_f1_thresh"] == 0.0 and chosen["holdout_scores"]["best_f1"] == 40.0
    assert chosen["threshold"] == -4.0 and chosen["threshold_rule"].endswith("abstains below all of them")


def test_no_held_out_questions_keep_the_default():
    assert threshold.choose([], {}, {}) == {"threshold": 0.0,
                                            "threshold_rule": "the default, 0 (no held-out questions)"}


def test_read_gives_the_threshold_and_how_it_was_chosen(tmp_path):
    path = tmp_path / "threshold.json"
    path.write_text(json.dumps(threshold.choose(HELD_OUT, BEST, NA_PROBS)))
    assert threshold.read(path) == (-3.0, threshold.choose(HELD_OUT, BEST, NA_PROBS)["threshold_rule"])
    path.write_text(json.dumps({"threshold": 1}))
    assert threshold.read(path) == (1.0, f"read from {path}")
    for bad, problem in (({}, '"threshold" key'), ({"threshold": True}, "finite number"),
                         ({"threshold": "1"}, "finite number"), ([1], '"threshold" key')):
        path.write_text(json.dumps(bad))
        with pytest.raises(InputError, match=problem) as err:
            threshold.read(path)
        assert str(path) in str(err.value)


def test_best_keys_come_from_best_spans_where_predictions_abstain(tmp_path):
    squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
        "context": HELD_OUT[0].context,
        "qas": [{"id": e.id, "question": e.question, "is_impossible": e.is_impossible,
                 "answers": [{"text": a, "answer_start": s} for a, s in zip(e.answer_texts, e.answer_starts)]}
                for e in HELD_OUT]}]}]}
    files = {"data": squad, "best": BEST, "na": NA_PROBS,
             "decided": {qid: "" if NA_PROBS[qid] > -5 else t for qid, t in BEST.items()}}  # abstains on all
    for name, obj in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(obj))
    scores = evaluate_files(tmp_path / "data.json", tmp_path / "decided.json", tmp_path / "na.json", -5.0)
    assert scores["f1"] == pytest.approx(40.0) and scores["best_f1"] == pytest.approx(40.0)  # understated
    scores = evaluate_files(tmp_path / "data.json", tmp_path / "decided.json", tmp_path / "na.json", -5.0,
                            tmp_path / "best.json")
    assert scores["f1"] == pytest.approx(40.0)  # the decided predictions' own score is unchanged
    assert scores["best_f1"] == pytest.approx(60.0) and scores["best_f1_thresh"] == -3.0
