"""The SQuAD 2.0 metric on hand-computed cases, and the evaluate.py command line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qabench.data import parse_squad
from qabench.errors import InputError, run_cli
from qabench.metrics import OFFICIAL_KEYS, evaluate, evaluate_files, exact_score, f1_score, normalize_answer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow_scripts" / "evaluate.py"

CONTEXT = "The Beatles were formed in Liverpool in 1960. They released Abbey Road in 1969."


def _answer(text: str) -> dict:
    return {"text": text, "answer_start": CONTEXT.index(text)}


def _qa(qid: str, answers: list[str], v2: bool = True) -> dict:
    qa = {"id": qid, "question": f"question {qid}?", "answers": [_answer(a) for a in answers]}
    if v2:
        qa["is_impossible"] = not answers
    return qa


def _dataset(qas: list[dict]) -> dict:
    return {"version": "v2.0", "data": [{"title": "Beatles", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}


V2 = _dataset([
    _qa("q1", ["The Beatles", "Beatles"]),
    _qa("q2", ["1969", "in 1969"]),
    _qa("q3", ["Liverpool"]),
    _qa("q4", []),
    _qa("q5", []),
])
PREDS = {"q1": "the beatles", "q2": "Abbey Road in 1969", "q3": "Liverpool", "q4": "", "q5": "Liverpool"}
NA_PROBS = {"q1": 0.1, "q2": 0.6, "q3": 0.3, "q4": 0.9, "q5": 0.8}


@pytest.fixture
def examples():
    return parse_squad(V2, "v2.json")


# --- normalisation, exact, F1 ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("The  Quick, Brown-Fox!", "quick brownfox"),
    ("Theater an apple", "theater apple"),
    ("A.B.C", "abc"),
    ("a-the", "athe"),
    ("the", ""),
    ("  \t\n ", ""),
    ("THE Beatles' \"Abbey Road\"", "beatles abbey road"),
    ("Ünïcode ÄN Straße", "ünïcode än straße"),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_score():
    assert exact_score("The Beatles", "beatles.") == 1.0
    assert exact_score("Beatles", "The Beatles!") == 1.0
    assert exact_score("1969", "in 1969") == 0.0
    assert exact_score("", "the") == 1.0
    assert exact_score("", "x") == 0.0


def test_f1_partial_overlap():
    # gold tokens [cat, sat, on, mat], pred [cat, on, mat, today]: 3 shared,
    # P = R = 3/4, F1 = 3/4.
    assert f1_score("the cat sat on the mat", "a cat on a mat today") == pytest.approx(0.75)
    # gold [red, red, blue], pred [red, green]: shared = min(2, 1) = 1 red,
    # P = 1/2, R = 1/3, F1 = 2 * 1/6 / (5/6) = 2/5.
    assert f1_score("red red blue", "red green") == pytest.approx(0.4)
    # gold [1969], pred [abbey, road, in, 1969]: P = 1/4, R = 1, F1 = (1/2) / (5/4) = 2/5.
    assert f1_score("1969", "Abbey Road in 1969") == pytest.approx(0.4)
    assert f1_score("Liverpool", "Abbey Road") == 0.0


def test_f1_empty_sides():
    assert f1_score("", "") == 1.0
    assert f1_score("the", "") == 1.0
    assert f1_score("", "Liverpool") == 0.0
    assert f1_score("Liverpool", "") == 0.0


# --- evaluate on a hand-built v2 dataset ----------------------------------------------------

def test_evaluate_v2_by_hand(examples):
    # exact per question: q1 1 ("the beatles" ~ "The Beatles"), q2 0, q3 1, q4 1, q5 0
    # f1: q1 1, q2 max(2/5 vs "1969", 2/3 vs "in 1969") = 2/3, q3 1, q4 1, q5 0
    # strict: q1 0 (case differs), q2 0, q3 1, q4 1, q5 0
    result = evaluate(examples, PREDS)
    assert list(result) == [*OFFICIAL_KEYS[:9], "strict_exact"]
    assert result["exact"] == pytest.approx(60.0)
    assert result["f1"] == pytest.approx(100 * (11 / 3) / 5)
    assert result["total"] == 5
    assert result["HasAns_exact"] == pytest.approx(100 * 2 / 3)
    assert result["HasAns_f1"] == pytest.approx(100 * (8 / 3) / 3)
    assert result["HasAns_total"] == 3
    assert result["NoAns_exact"] == pytest.approx(50.0)
    assert result["NoAns_f1"] == pytest.approx(50.0)
    assert result["NoAns_total"] == 2
    assert result["strict_exact"] == pytest.approx(40.0)


def test_best_thresholds_by_hand(examples):
    # Start from "abstain everywhere": 2 (the NoAns questions). In increasing na_prob:
    # q1 0.1 +1 -> 3, q3 0.3 +1 -> 4, q2 0.6 +0 (exact) / +2/3 (f1), q5 0.8 -1 ("Liverpool"), q4 0.9 +0.
    # best exact 4/5 at 0.3; best f1 (4 + 2/3)/5 at 0.6.
    result = evaluate(examples, PREDS, NA_PROBS)
    assert list(result) == [*OFFICIAL_KEYS, "strict_exact"]
    assert result["exact"] == pytest.approx(60.0)
    assert result["best_exact"] == pytest.approx(80.0)
    assert result["best_exact_thresh"] == 0.3
    assert result["best_f1"] == pytest.approx(100 * (14 / 3) / 5)
    assert result["best_f1_thresh"] == 0.6


def test_best_threshold_nothing_beats_abstaining(examples):
    preds = {qid: "Abbey Road" for qid in PREDS}
    result = evaluate(examples, preds, {qid: 0.5 for qid in PREDS})
    assert result["best_exact"] == pytest.approx(40.0)
    assert result["best_exact_thresh"] == 0.0
    assert result["best_f1_thresh"] == 0.0


def test_best_threshold_ties_follow_na_probs_order(examples):
    # As in the official script: ties are visited in na_probs order and the threshold moves on
    # every strict improvement. q1 first: 2 -> 3 (best, at 0.5), q5 -> 2, q2 -> 2, q3 -> 3, q4 -> 3.
    first = {"q1": 0.5, "q5": 0.5, "q2": 0.9, "q3": 0.9, "q4": 0.9}
    result = evaluate(examples, PREDS, first)
    assert (result["best_exact"], result["best_exact_thresh"]) == (pytest.approx(60.0), 0.5)
    # q5 first: 2 -> 1, q1 -> 2 (no improvement), q2 -> 2, q3 -> 3 (best, at 0.9), q4 -> 3.
    second = {"q5": 0.5, "q1": 0.5, "q2": 0.9, "q3": 0.9, "q4": 0.9}
    result = evaluate(examples, PREDS, second)
    assert (result["best_exact"], result["best_exact_thresh"]) == (pytest.approx(60.0), 0.9)


def test_whitespace_prediction_counts_as_answer_for_best_threshold(examples):
    # " " normalises to "" (exact 1 on q4) but is a non-empty string, so the official threshold
    # search charges -1 for it like any answer given to an unanswerable question.
    preds = {**PREDS, "q4": " ", "q5": ""}
    na = {"q4": 0.1, "q1": 0.2, "q2": 0.3, "q3": 0.4, "q5": 0.5}
    result = evaluate(examples, preds, na)
    assert result["NoAns_exact"] == pytest.approx(100.0)
    # 2 -> q4 1 -> q1 2 -> q2 2 -> q3 3 (best, 0.4) -> q5 3
    assert result["best_exact"] == pytest.approx(60.0)
    assert result["best_exact_thresh"] == 0.4


def test_na_prob_thresh(examples):
    # na_prob > 0.5 abstains on q2 (0.6), q5 (0.8), q4 (0.9):
    # exact/f1: q1 1, q2 0, q3 1, q4 1, q5 1; strict: q1 0, q2 0, q3 1, q4 1, q5 1.
    result = evaluate(examples, PREDS, NA_PROBS, na_prob_thresh=0.5)
    assert result["exact"] == pytest.approx(80.0)
    assert result["f1"] == pytest.approx(80.0)
    assert result["HasAns_exact"] == pytest.approx(100 * 2 / 3)
    assert result["HasAns_f1"] == pytest.approx(100 * 2 / 3)
    assert result["NoAns_exact"] == pytest.approx(100.0)
    assert result["strict_exact"] == pytest.approx(60.0)
    assert result["best_exact"] == pytest.approx(80.0)
    # A threshold equal to a probability does not abstain on that question (strictly greater).
    at_q2 = evaluate(examples, PREDS, NA_PROBS, na_prob_thresh=0.6)
    assert at_q2["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 1 + 1) / 5)


def test_without_na_probs_every_prob_is_zero(examples):
    assert evaluate(examples, PREDS, na_prob_thresh=0.0)["exact"] == pytest.approx(60.0)
    everything_abstains = evaluate(examples, PREDS, na_prob_thresh=-1.0)
    assert everything_abstains["exact"] == pytest.approx(40.0)
    assert everything_abstains["strict_exact"] == pytest.approx(40.0)
    assert "best_exact" not in everything_abstains


def test_strict_exact_differs_from_exact(examples):
    preds = {**PREDS, "q1": "The Beatles", "q3": "liverpool"}
    result = evaluate(examples, preds)
    assert result["exact"] == pytest.approx(60.0)
    assert result["strict_exact"] == pytest.approx(40.0)  # only q1 and q4; q3 matches after normalising
    assert evaluate(examples, {**preds, "q3": "Liverpool"})["strict_exact"] == pytest.approx(60.0)


def test_answer_that_normalises_to_nothing():
    # The only gold answer "The" normalises to "", so it is dropped and [""] is the gold;
    # the question still counts as HasAns (it has an answer in the file).
    data = _dataset([_qa("q1", ["The"]), _qa("q2", ["Liverpool"])])
    examples = parse_squad(data, "x.json")
    result = evaluate(examples, {"q1": "", "q2": "Liverpool"})
    assert result["exact"] == pytest.approx(100.0)
    assert result["HasAns_total"] == 2
    assert "NoAns_total" not in result
    assert result["strict_exact"] == pytest.approx(50.0)


def test_v1_input_has_no_noans_keys():
    data = _dataset([_qa("a", ["The Beatles", "Beatles"], v2=False), _qa("b", ["1960"], v2=False)])
    data["version"] = "1.1"
    examples = parse_squad(data, "v1.json")
    result = evaluate(examples, {"a": "Beatles", "b": "in 1960"})
    # a: exact 1, f1 1; b: exact 0, f1 P 1/2 R 1 -> 2/3
    assert list(result) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "strict_exact"]
    assert result["exact"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert result["strict_exact"] == pytest.approx(50.0)


def test_missing_ids_raise_and_extra_ids_are_ignored(examples):
    with pytest.raises(InputError) as err:
        evaluate(examples, {"q1": "x", "q3": "y"}, predictions_source="p.json")
    assert str(err.value) == "p.json: missing predictions for 3 questions, e.g. 'q2', 'q4', 'q5'"
    with pytest.raises(InputError, match="n.json: missing no-answer probabilities for 1 question, e.g. 'q5'"):
        evaluate(examples, PREDS, {k: v for k, v in NA_PROBS.items() if k != "q5"}, na_probs_source="n.json")
    extra = evaluate(examples, {**PREDS, "zz": "x"}, {**NA_PROBS, "zz": 0.0})
    assert extra == evaluate(examples, PREDS, NA_PROBS)


# --- files and command line -----------------------------------------------------------------

def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _load_cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_load_cli().main, argv)
    return exit_info.value.code


@pytest.fixture
def files(tmp_path):
    return {
        "data": _write(tmp_path / "data.json", V2),
        "preds": _write(tmp_path / "preds.json", PREDS),
        "na": _write(tmp_path / "na.json", NA_PROBS),
        "out": tmp_path / "out" / "metrics.json",
    }


def test_cli_writes_all_keys(files, capsys):
    code = _run(["--data", str(files["data"]), "--predictions", str(files["preds"]),
                 "--na-probs", str(files["na"]), "--na-prob-thresh", "0.5", "--out", str(files["out"])])
    assert code == 0
    metrics = json.loads(files["out"].read_text(encoding="utf-8"))
    assert list(metrics) == [*OFFICIAL_KEYS, "strict_exact"]
    assert metrics["exact"] == pytest.approx(80.0)
    assert metrics == evaluate_files(files["data"], files["preds"], files["na"], 0.5)


def test_cli_decision_threshold(files, tmp_path, capsys):
    decision = _write(tmp_path / "decision.json", {"threshold": 0.5, "metric": "f1"})
    argv = ["--data", str(files["data"]), "--predictions", str(files["preds"]),
            "--na-probs", str(files["na"]), "--decision", str(decision), "--out", str(files["out"])]
    assert _run(argv) == 0
    assert json.loads(files["out"].read_text(encoding="utf-8"))["exact"] == pytest.approx(80.0)
    files["out"].unlink()
    assert _run([*argv, "--na-prob-thresh", "0.5"]) == 2
    assert "both given" in capsys.readouterr().err
    assert not files["out"].exists()
    bad = _write(tmp_path / "bad-decision.json", {"thresh": 0.5})
    assert _run([*argv[:-4], "--decision", str(bad), "--out", str(files["out"])]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: ")
    assert not files["out"].exists()


def test_cli_missing_ids_exit_2_without_output(files, capsys):
    _write(files["preds"], {"q1": "Beatles"})
    code = _run(["--data", str(files["data"]), "--predictions", str(files["preds"]), "--out", str(files["out"])])
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"error: {files['preds']}: missing predictions for 4 questions, e.g. 'q2', 'q3', 'q4'\n"
    assert not files["out"].exists()
    assert not files["out"].parent.exists() or not any(files["out"].parent.iterdir())


@pytest.mark.parametrize("content, problem", [
    (["q1"], "expected a JSON object"),
    ({**PREDS, "q2": 3}, "prediction for 'q2': expected a string, found int"),
])
def test_cli_rejects_malformed_predictions(files, capsys, content, problem):
    _write(files["preds"], content)
    assert _run(["--data", str(files["data"]), "--predictions", str(files["preds"]), "--out", str(files["out"])]) == 2
    assert problem in capsys.readouterr().err
    assert not files["out"].exists()


def test_cli_rejects_non_numeric_na_probs(files, capsys):
    _write(files["na"], {**NA_PROBS, "q3": "high"})
    assert _run(["--data", str(files["data"]), "--predictions", str(files["preds"]),
                 "--na-probs", str(files["na"]), "--out", str(files["out"])]) == 2
    assert f"error: {files['na']}: value for 'q3': expected a number" in capsys.readouterr().err


def test_cli_subprocess_non_utf8_data(files, tmp_path):
    files["data"].write_bytes(b'{"data": "caf\xe9"}')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(files["data"]), "--predictions", str(files["preds"]),
         "--out", str(files["out"])],
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {files['data']}: not valid UTF-8")
    assert not files["out"].exists()
