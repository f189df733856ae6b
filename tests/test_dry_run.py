"""Mistakes that can be known before a job runs stop `snakemake -n`, with one line naming the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import REPO

SMOKE = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())


def dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--cores", "1", "-n", "--configfile", str(path), "--", "results/summary.md"],
                          capture_output=True, text=True, timeout=300, env=os.environ)


def _absolute(config: dict) -> dict:
    for spec in config["data"]["sources"].values():
        if "path" in spec:
            spec["path"] = str(REPO / spec["path"])
    return config


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_the_smoke_config_dry_runs(tmp_path):
    result = dry_run(tmp_path, _absolute(yaml.safe_load(yaml.safe_dump(SMOKE))))
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_missing_eval_file_is_refused_before_any_job(tmp_path):
    config = _absolute(yaml.safe_load(yaml.safe_dump(SMOKE)))
    config["data"]["sources"]["dev_tiny"]["path"] = str(tmp_path / "gone.json")
    line = _error_line(dry_run(tmp_path, config))
    assert str(tmp_path / "gone.json") in line and "file not found" in line


def test_a_local_file_with_the_wrong_checksum_is_refused_before_any_job(tmp_path):
    config = _absolute(yaml.safe_load(yaml.safe_dump(SMOKE)))
    config["data"]["sources"]["train_tiny"]["sha256"] = "0" * 64
    line = _error_line(dry_run(tmp_path, config))
    assert "train-tiny.json" in line and "sha256 mismatch" in line


def test_a_training_set_with_no_source_it_can_have_is_refused(tmp_path):
    config = _absolute(yaml.safe_load(yaml.safe_dump(SMOKE)))
    config["data"]["train"]["sources"] = ["train_absent"]
    line = _error_line(dry_run(tmp_path, config))
    assert "data.train" in line and "none of its sources (train_absent)" in line


def test_a_missing_first_source_is_fine_when_a_later_one_is_there(tmp_path):
    config = _absolute(yaml.safe_load(yaml.safe_dump(SMOKE)))
    assert not Path(config["data"]["sources"]["train_absent"]["path"]).exists()
    assert dry_run(tmp_path, config).returncode == 0


def test_a_model_that_trains_further_from_another_waits_for_it(tmp_path):
    """A checkpoint naming another model's output makes that model first (and its change reruns this one)."""
    config = _absolute(yaml.safe_load(yaml.safe_dump(SMOKE)))
    config["models"] = {"tinyt5": config["models"]["tinyt5"],
                        "tinyt5_more": {**config["models"]["tinyt5"], "checkpoint": "results/models/tinyt5/base"}}
    config["models"]["tinyt5"]["variants"] = config["models"]["tinyt5_more"]["variants"] = []
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--cores", "1", "-n", "--configfile", str(path), "--",
                             "results/models/tinyt5_more/base"], capture_output=True, text=True, timeout=300,
                            env=os.environ)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = re.split(r"^rule ", result.stdout + result.stderr, flags=re.MULTILINE)
    continued = [job for job in jobs if "output: results/models/tinyt5_more/base" in job]
    tokenized = [job for job in jobs if "output: results/features/tinyt5_more/train/shard-0.parquet" in job]
    assert any("output: results/models/tinyt5/base" in job for job in jobs)
    assert len(continued) == len(tokenized) == 1
    [continued_input] = [line for line in continued[0].splitlines() if "input:" in line]
    [tokenized_input] = [line for line in tokenized[0].splitlines() if "input:" in line]
    assert "results/models/tinyt5/base" in continued_input
    assert "results/models/" not in tokenized_input  # the tokenizer of its line's first checkpoint
