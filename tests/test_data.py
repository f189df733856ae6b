"""Reading SQuAD files (v1.1 / v2.0, .json / .json.gz) and the prepare_examples.py command line."""

from __future__ import annotations

import copy
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qabench.data import EXAMPLE_COLUMNS, examples_to_frame, frame_to_examples, load_squad, parse_squad, read_examples
from qabench.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow_scripts" / "prepare_examples.py"
TRAIN_TINY = REPO / "tests" / "data" / "train-tiny.json"
DEV_TINY = REPO / "tests" / "data" / "dev-tiny.json.gz"


def _raw(path: Path) -> dict:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data.decode("utf-8"))


def _questions(dataset: dict) -> list[dict]:
    return [qa for article in dataset["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def _as_v11(dataset: dict) -> dict:
    """The same file as SQuAD v1.1 writes it: no ``is_impossible`` keys."""
    v11 = copy.deepcopy(dataset)
    v11["version"] = "1.1"
    for qa in _questions(v11):
        qa.pop("is_impossible", None)
    return v11


# ---------------------------------------------------------------- load_squad on good input


def test_load_v2_gz_matches_the_file():
    raw = _raw(DEV_TINY)
    qas = _questions(raw)
    examples = load_squad(DEV_TINY)
    assert len(examples) == len(qas) == 46
    assert [e.id for e in examples] == [qa["id"] for qa in qas]  # file order
    assert [e.is_impossible for e in examples] == [qa["is_impossible"] for qa in qas]
    assert any(e.is_impossible for e in examples) and not all(e.is_impossible for e in examples)
    for e, qa in zip(examples, qas):
        assert e.question == qa["question"]
        assert e.answer_texts == [a["text"] for a in qa["answers"]]
        assert e.answer_starts == [a["answer_start"] for a in qa["answers"]]
        if e.is_impossible:
            assert e.answer_texts == [] and e.answer_starts == []
        for text, start in zip(e.answer_texts, e.answer_starts):
            assert e.context[start:start + len(text)] == text
        assert e.origin == "original"
    # paragraph ids number the paragraphs of the whole file, in order
    n_paragraphs = sum(len(a["paragraphs"]) for a in raw["data"])
    ids = [e.paragraph_id for e in examples]
    assert ids == sorted(ids) and set(ids) == set(range(n_paragraphs))
    assert {e.title for e in examples} == {a["title"] for a in raw["data"]}


def test_plain_and_gzip_v2_give_the_same_examples(tmp_path):
    plain = tmp_path / "dev.json"
    plain.write_bytes(gzip.decompress(DEV_TINY.read_bytes()))
    assert load_squad(plain) == load_squad(DEV_TINY)


def test_gzip_content_under_a_json_name_is_read(tmp_path):
    disguised = tmp_path / "dev.json"
    disguised.write_bytes(DEV_TINY.read_bytes())
    assert load_squad(disguised) == load_squad(DEV_TINY)


@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_v11_infers_is_impossible(tmp_path, suffix):
    v11 = _as_v11(_raw(TRAIN_TINY))
    assert all("is_impossible" not in qa for qa in _questions(v11))
    # one v1.1-style question with no answers: the only one that must come out unanswerable
    _questions(v11)[5]["answers"] = []
    body = json.dumps(v11).encode("utf-8")
    path = tmp_path / f"train{suffix}"
    path.write_bytes(gzip.compress(body) if suffix.endswith(".gz") else body)
    examples = load_squad(path)
    assert len(examples) == 79
    assert [e.is_impossible for e in examples] == [i == 5 for i in range(79)]
    assert all(e.answer_texts for i, e in enumerate(examples) if i != 5)


def test_parquet_round_trip(tmp_path):
    examples = load_squad(DEV_TINY)
    path = tmp_path / "examples.parquet"
    examples_to_frame(examples).to_parquet(path, index=False)
    assert read_examples(path) == examples
    assert frame_to_examples(examples_to_frame(examples)) == examples


def test_parquet_without_example_columns_is_an_input_error(tmp_path):
    path = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(InputError, match="missing columns"):
        read_examples(path)


# ---------------------------------------------------------------- parse_squad on bad structure

CONTEXT = "Marie Curie won the Nobel Prize in 1903. She was born in Warsaw."


def _one(qa: dict, context: str = CONTEXT) -> dict:
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": [qa]}]}]}


def test_is_impossible_with_answers_is_rejected():
    qa = {"id": "a", "question": "q?", "is_impossible": True, "answers": [{"text": "1903", "answer_start": 35}]}
    with pytest.raises(InputError, match="is_impossible is true but it has answers"):
        parse_squad(_one(qa), "x.json")


def test_answerable_without_answers_is_rejected():
    qa = {"id": "a", "question": "q?", "is_impossible": False, "answers": []}
    with pytest.raises(InputError, match="no answers"):
        parse_squad(_one(qa), "x.json")


def test_answer_start_must_be_an_int():
    qa = {"id": "a", "question": "q?", "answers": [{"text": "1903", "answer_start": 35.0}]}
    with pytest.raises(InputError, match="answer_start: expected int"):
        parse_squad(_one(qa), "x.json")


def test_negative_answer_start_is_rejected():
    assert CONTEXT[-7:-1] == "Warsaw"
    qa = {"id": "a", "question": "Where was she born?", "answers": [{"text": "Warsaw", "answer_start": -7}]}
    with pytest.raises(InputError, match="does not match the context"):
        parse_squad(_one(qa), "x.json")


# ---------------------------------------------------------------- the command line


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _mutated(mutate) -> bytes:
    dataset = _raw(TRAIN_TINY)
    mutate(dataset)
    return json.dumps(dataset).encode("utf-8")


def _drop_question(d):
    del d["data"][0]["paragraphs"][0]["qas"][0]["question"]


def _shift_answer(d):
    d["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1


def _duplicate_id(d):
    qas = d["data"][2]["paragraphs"][0]["qas"]
    qas[1]["id"] = d["data"][0]["paragraphs"][0]["qas"][0]["id"]


def _truncated_gzip() -> bytes:
    body = gzip.compress(TRAIN_TINY.read_bytes())
    return body[: len(body) // 2]


def _garbled_gzip() -> bytes:
    body = bytearray(gzip.compress(TRAIN_TINY.read_bytes()))
    body[40:80] = bytes(40)  # keeps the gzip header, breaks the deflate stream
    return bytes(body)


BAD_INPUTS = {
    # name: (file name, content, text the one-line message must hold)
    "malformed_json": ("bad.json", b'{"version": "v2.0", "data": [', "not valid JSON"),
    "non_utf8": ("bad.json", b'{"version": "v2.0", "data": [{"title": "caf\xe9"}]}', "not valid UTF-8"),
    "truncated_gzip": ("bad.json.gz", _truncated_gzip(), "corrupt gzip"),
    "garbled_gzip": ("bad.json.gz", _garbled_gzip(), "corrupt gzip"),
    "gz_name_not_gzip": ("bad.json.gz", TRAIN_TINY.read_bytes(), "not gzip"),
    "missing_question": ("bad.json", _mutated(_drop_question), "missing key 'question'"),
    "answer_offset": ("bad.json", _mutated(_shift_answer), "does not match the context"),
    "duplicate_id": ("bad.json", _mutated(_duplicate_id), "duplicate question id"),
    "empty_data": ("bad.json", b'{"version": "v2.0", "data": []}', "no questions"),
    "no_data_key": ("bad.json", b'{"version": "v2.0"}', "missing key 'data'"),
}


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error:"), line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_cli_bad_input_fails_with_one_line_and_no_output(tmp_path, case):
    name, content, problem = BAD_INPUTS[case]
    bad = tmp_path / "in" / name
    bad.parent.mkdir()
    bad.write_bytes(content)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "examples.parquet"
    proc = _run("--squad", bad, "--out", out)
    _assert_one_line_error(proc, str(bad), problem)
    assert list(out_dir.iterdir()) == []  # no output, no temp file


def test_cli_missing_file(tmp_path):
    out = tmp_path / "examples.parquet"
    proc = _run("--squad", tmp_path / "nope.json", "--out", out)
    _assert_one_line_error(proc, str(tmp_path / "nope.json"), "file not found")
    assert list(tmp_path.iterdir()) == []


def test_cli_too_many_holdout_articles(tmp_path):
    out_dir = tmp_path / "out"
    proc = _run("--squad", TRAIN_TINY, "--out", out_dir / "train.parquet", "--holdout-out",
                out_dir / "holdout.parquet", "--holdout-articles", "3")
    _assert_one_line_error(proc, str(TRAIN_TINY), "cannot hold out 3 of 3 articles")
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_cli_good_run_writes_the_table(tmp_path):
    out_dir = tmp_path / "out"
    out = out_dir / "examples.parquet"
    proc = _run("--squad", DEV_TINY, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["examples.parquet"]  # no temp files left
    frame = pd.read_parquet(out)
    assert list(frame.columns) == EXAMPLE_COLUMNS
    assert len(frame) == 46
    assert frame["id"].tolist() == [e.id for e in load_squad(DEV_TINY)]
    assert frame["is_impossible"].sum() == sum(qa["is_impossible"] for qa in _questions(_raw(DEV_TINY)))


def test_cli_good_run_with_holdout_and_negatives(tmp_path):
    out_dir = tmp_path / "out"
    proc = _run("--squad", TRAIN_TINY, "--out", out_dir / "train.parquet", "--holdout-out",
                out_dir / "holdout.parquet", "--holdout-articles", "1", "--unanswerable-share", "0.3",
                "--negative", "other_paragraph=1", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["holdout.parquet", "train.parquet"]
    train = pd.read_parquet(out_dir / "train.parquet")
    holdout = pd.read_parquet(out_dir / "holdout.parquet")
    assert list(train.columns) == EXAMPLE_COLUMNS == list(holdout.columns)
    originals = (train["origin"] == "original").sum() + (holdout["origin"] == "original").sum()
    assert originals == 79
    assert not set(train["title"]) & set(holdout["title"])
    assert (train["origin"] == "neg_other_paragraph").sum() > 0
    assert train.loc[train["origin"] != "original", "is_impossible"].all()


def test_cli_holdout_is_written_as_it_is_and_gets_its_own_negatives_from_a_second_run(tmp_path):
    """The held-out articles' questions come out without synthetic ones; the prepare_holdout rule then
    runs the script on that table with its own recipe, and the training table never depends on it."""
    proc = _run("--squad", TRAIN_TINY, "--holdout-articles", "1", "--unanswerable-share", "0.3",
                "--negative", "other_paragraph=1", "--seed", "3", "--out", tmp_path / "train.parquet",
                "--holdout-out", tmp_path / "held.parquet", "--record-out", tmp_path / "record.json")
    assert proc.returncode == 0, proc.stderr
    held = pd.read_parquet(tmp_path / "held.parquet")
    assert set(held["origin"]) == {"original"}
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["held_out"] == {"articles": 1, "questions": len(held)}
    proc = _run("--squad", tmp_path / "held.parquet", "--out", tmp_path / "holdout.parquet", "--seed", "3",
                "--unanswerable-share", "0.5", "--negative", "negation=1", "--negative", "antonym=1",
                "--record-out", tmp_path / "holdout.json")
    assert proc.returncode == 0, proc.stderr
    holdout = pd.read_parquet(tmp_path / "holdout.parquet")
    assert set(holdout["origin"]) == {"original", "neg_negation", "neg_antonym"}
    assert holdout[holdout["origin"] == "original"].reset_index(drop=True).equals(held)
    negatives = json.loads((tmp_path / "holdout.json").read_text())["negatives"]
    assert negatives["answerable"] == (~held["is_impossible"]).sum()
    assert negatives["real_unanswerable"] + sum(negatives["synthetic"].values()) == holdout["is_impossible"].sum()


def test_cli_kinds_without_a_share_are_refused(tmp_path):
    proc = _run("--squad", TRAIN_TINY, "--out", tmp_path / "x.parquet", "--negative", "negation=1")
    _assert_one_line_error(proc, "--negative", "without --unanswerable-share")
    assert list(tmp_path.iterdir()) == []


def test_cli_negative_without_a_weight(tmp_path):
    proc = _run("--squad", TRAIN_TINY, "--out", tmp_path / "x.parquet", "--unanswerable-share", "0.3",
                "--negative", "negation")
    _assert_one_line_error(proc, "--negative", "'negation' is not KIND=WEIGHT")
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_negative_kind(tmp_path):
    proc = _run("--squad", TRAIN_TINY, "--out", tmp_path / "x.parquet", "--negative", "shuffle=0.5")
    _assert_one_line_error(proc, "--negative", "unknown kind 'shuffle'")
    assert list(tmp_path.iterdir()) == []


def test_empty_answer_text_is_rejected():
    qa = {"id": "a", "question": "q?", "answers": [{"text": "", "answer_start": 0}]}
    with pytest.raises(InputError, match="empty text"):
        parse_squad(_one(qa), "x.json")


def test_an_empty_question_is_refused_with_its_id():
    from qabench.data import parse_squad

    dataset = {"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [
        {"id": "q1", "question": "  ", "answers": [{"text": "a", "answer_start": 0}]}]}]}]}
    with pytest.raises(InputError, match=r"question 'q1' is empty \(data\[0\]"):
        parse_squad(dataset, "x.json")
