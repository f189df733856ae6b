"""benchmarks/answer_all.py: HasAns scores at the threshold and answering all, on hand-computed cases."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("answer_all", REPO / "benchmarks" / "answer_all.py")
answer_all = importlib.util.module_from_spec(spec)
spec.loader.exec_module(answer_all)

CONTEXT = "The red fox jumps over the lazy dog near Paris."


def squad_file(path: Path) -> Path:
    qas = [
        {"id": "fox", "question": "Which fox?", "is_impossible": False,
         "answers": [{"text": "The red fox", "answer_start": 0}]},
        {"id": "city", "question": "Near which city?", "is_impossible": False,
         "answers": [{"text": "Paris", "answer_start": CONTEXT.index("Paris")}]},
        {"id": "cat", "question": "Which cat?", "is_impossible": True, "answers": []},
    ]
    data = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    path.write_text(json.dumps(data))
    return path


def predict_dir(path: Path, predictions: dict, best_spans: dict) -> Path:
    path.mkdir()
    (path / "predictions.json").write_text(json.dumps(predictions))
    (path / "best_spans.json").write_text(json.dumps(best_spans))
    return path


def test_scores_match_hand_computed(tmp_path, capsys):
    data = squad_file(tmp_path / "dev.json")
    # at the threshold it abstains on "fox"; its best span there is "red fox jumps":
    # tokens {red, fox, jumps} vs gold {red, fox} ("the" is dropped): P 2/3, R 1, F1 0.8
    folder = predict_dir(tmp_path / "pred",
                         {"fox": "", "city": "Paris", "cat": ""},
                         {"fox": "red fox jumps", "city": "Paris", "cat": "the lazy dog"})
    out = tmp_path / "rows.json"
    assert answer_all.main(["--data", str(data), str(folder), "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["HasAns_total"] == 2
    assert row["HasAns_f1_at_threshold"] == 50.0
    assert row["HasAns_exact_answering_all"] == 50.0
    assert abs(row["HasAns_f1_answering_all"] - 90.0) < 1e-9
    assert "| 50.00 | 50.00 | 90.00 | 2 |" in capsys.readouterr().out


def test_folder_without_best_spans_is_one_line_error(tmp_path):
    data = squad_file(tmp_path / "dev.json")
    folder = tmp_path / "pred"
    folder.mkdir()
    (folder / "predictions.json").write_text("{}")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "answer_all.py"), "--data", str(data), str(folder)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {folder}: no best_spans.json here (expected a predict rule's output folder)"
