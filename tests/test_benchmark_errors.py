"""Every benchmark that reads the project's files answers a missing input with one line and exit 2."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CASES = {
    "answer_all": ["--data", "{missing}.json", "{missing}"],
    "isa_speed": ["--manifest", "{missing}.json"],
    "negatives_ablation": ["--train", "{missing}.json", "--dev", "{missing}.json"],
    "official_scorer_parity": ["--official", "{missing}.py", "--data", "{missing}.json"],
    "predict_speed": ["--model", "{missing}", "--data", "{missing}.json"],
    "rule_costs": ["--results", "{missing}"],
    "threshold_sources": ["--model", "{missing}", "--train", "{missing}.json", "--dev", "{missing}.json",
                          "--config", "{missing}.yaml"],
    "variant_speed": ["{missing}", "--data", "{missing}.parquet"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_missing_input_is_one_line_and_exit_2(name, tmp_path):
    missing = str(tmp_path / "absent")
    args = [a.format(missing=missing) for a in CASES[name]]
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and missing in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_every_benchmark_that_imports_qabench_is_covered():
    def imports_qabench(path: Path) -> bool:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        return any(isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "qabench"
                   for node in ast.walk(tree))

    uses_qabench = {path.stem for path in (REPO / "benchmarks").glob("*.py") if imports_qabench(path)}
    assert uses_qabench == set(CASES)


def test_isa_speed_passes_a_workers_bad_input_on_in_one_line(tmp_path):
    """isa_speed reads its inputs in worker processes; a worker's one-line error comes back as one."""
    (tmp_path / "model").mkdir()
    (tmp_path / "dev.parquet").write_text("not parquet")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "isa_speed.py"), "--model-dir", "model",
                           "--data", "dev.parquet", "--arms", "native:fp32", "--rounds", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: the native:fp32 predict arm: dev.parquet: not a readable examples table")


def test_threshold_sources_refuses_a_dev_sample_with_whole_dev_predictions(tmp_path):
    """The two options contradict each other: refused in one line before any model is loaded."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "threshold_sources.py"), "--model", "m",
                           "--train", "t.json", "--dev", "d.json", "--config", "c.yaml",
                           "--dev-predictions", "p", "--dev-questions", "100"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].endswith("--dev-predictions covers all of dev; drop --dev-questions")
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
