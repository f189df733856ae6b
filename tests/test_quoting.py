"""Config values that reach a job's command line arrive verbatim: quotes, spaces and $(...) in a
path are data, never shell syntax."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import yaml

from conftest import REPO

HOSTILE = "it's a \"dir\" $(touch PWNED) `touch PWNED2`; echo x"


def test_hostile_paths_reach_the_jobs_verbatim_and_run_nothing(tmp_path):
    data = tmp_path / HOSTILE
    data.mkdir()
    shutil.copy(REPO / "tests" / "data" / "train-tiny.json", data / "train tiny.json")
    shutil.copy(REPO / "tests" / "data" / "dev-tiny.json.gz", data / "dev tiny.json.gz")
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["data"]["sources"] = {
        "train_tiny": {"path": str(data / "train tiny.json"), "description": "it's \"tiny\" $(touch PWNED3)"},
        "dev_tiny": {"path": str(data / "dev tiny.json.gz")},
    }
    config["data"]["train"]["sources"] = ["train_tiny"]
    config["data"]["eval_sets"] = {"dev": {"source": "dev_tiny"}}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--cores", "1", "--configfile", str(config_path), "--",
         "results/data/train/default/train.parquet", "results/data/examples/dev.parquet"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    for marker in ("PWNED", "PWNED2", "PWNED3"):
        assert not list(tmp_path.rglob(marker)), f"{marker} was created: a value ran as a command"
    source = (work / "results" / "data" / "train" / "default" / "source.json").read_text()
    assert '"origin": ' in source and HOSTILE.replace('"', '\\"') in source  # the path arrived whole
    assert "it's \\\"tiny\\\" $(touch PWNED3)" in source
    assert len(pd.read_parquet(work / "results" / "data" / "examples" / "dev.parquet")) > 0
