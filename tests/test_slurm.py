"""The smoke workflow through `--profile profiles/slurm` on a real one-node Slurm cluster.

tests/slurm/cluster.sh starts munged, slurmctld and slurmd on this machine (Debian's Slurm 22.05;
needs root) and stops them again afterwards. The run goes through snakemake-executor-plugin-slurm
exactly as on a cluster; every job but the local `download` must show up in Slurm's own job
record as a completed job of this run, and the results must equal those of a local run.

The workflow is a trimmed copy of configs/smoke.yaml: its tinybert model (same settings) with
one variant (int8) on the dev set, which still runs every rule. The full smoke config took
11.5 minutes through Slurm on a 2-core machine (the node's 2 CPUs are the limit, as locally),
too long for CI next to the rest of the suite.
"""

import csv
import json
import os
import re
import shutil
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_pipeline import SNAKEMAKE, path_without_this_venv

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
ACCURACY_COLUMNS = ["exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "best_f1", "best_f1_thresh",
                    "strict_exact", "threshold", "total"]


def why_no_cluster() -> str | None:
    if shutil.which("slurmctld") is None:
        return "Slurm binaries absent (slurmctld not on PATH): apt-get install munge slurmctld slurmd slurm-client"
    if os.geteuid() != 0:
        return "starting slurmd and munged needs root"
    if SLURM_CONF.exists() and "qabench-test-cluster" not in SLURM_CONF.read_text():
        return f"{SLURM_CONF} belongs to a real Slurm installation; the test cluster would replace it"
    return None


pytestmark = pytest.mark.skipif(why_no_cluster() is not None, reason=str(why_no_cluster()))


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm-state")
    try:
        started = subprocess.run([str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield state
    finally:
        subprocess.run([str(CLUSTER), "stop", str(state)], timeout=120)


@pytest.fixture(scope="module")
def trimmed_config(tmp_path_factory) -> Path:
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    smoke["models"] = {"tinybert": {**smoke["models"]["tinybert"], "variants": ["int8"]}}
    smoke["data"]["eval_sets"] = {"dev": smoke["data"]["eval_sets"]["dev"]}
    path = tmp_path_factory.mktemp("config") / "smoke-trimmed.yaml"
    path.write_text(yaml.safe_dump(smoke))
    return path


def run_workflow(workdir: Path, config: Path, *args: str) -> str:
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
               *args, "results/summary.md", "--configfile", str(config)]
    try:
        # cwd: the plugin puts its relative log folder and the jobs' working directory where it starts
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=workdir,
                                env={**os.environ, "PATH": path_without_this_venv()})
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"snakemake {' '.join(args)} did not finish within 900 s:\n{(err.stderr or b'')[-3000:]!r}")
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, trimmed_config):
    workdir = tmp_path_factory.mktemp("local")
    run_workflow(workdir, trimmed_config)
    return workdir


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory, trimmed_config, local_run, slurm_cluster):
    workdir = tmp_path_factory.mktemp("slurm")
    output = run_workflow(workdir, trimmed_config, "--profile", str(REPO / "profiles" / "slurm"))
    return workdir, output, slurm_cluster


def planned_jobs(output: str) -> Counter:
    """Snakemake's 'Job stats' table: jobs per rule of this run."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)})


def finished_slurm_jobs(state: Path, run_id: str) -> dict[str, dict[str, str]]:
    """Slurm's job completion record (jobcomp/filetxt): JobId -> fields, for this run's jobs."""
    jobs = {}
    for line in (state / "jobcomp.log").read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("Name") == run_id:
            jobs[fields["JobId"]] = fields
    return jobs


def test_every_job_but_download_ran_as_a_completed_slurm_job(slurm_run):
    workdir, output, state = slurm_run
    planned = planned_jobs(output)
    assert {"download", "download_train", "prepare_train", "prepare_holdout", "prepare_eval", "tokenize_shard",
            "feature_manifest", "train", "compress", "choose_threshold", "predict", "evaluate", "efficiency",
            "learning_curve", "summarize"} == set(planned)
    # the local rules ran in Snakemake's own process, nothing else did
    local = planned["download"] + planned["download_train"]
    assert output.count("localrule download:") + output.count("localrule download_train:") == local
    assert len(re.findall(r"^localrule ", output, re.M)) == local

    # one Slurm log per submitted job: logs/slurm/rule_RULE/[WILDCARDS/]SLURMJOBID.log
    logs = {log.stem: log for log in (workdir / "logs" / "slurm").rglob("*.log")}
    rule_of = {job_id: next(p for p in log.relative_to(workdir / "logs" / "slurm").parts if p.startswith("rule_"))[5:]
               for job_id, log in logs.items()}
    assert Counter(rule_of.values()) == planned - Counter(download=planned["download"],
                                                          download_train=planned["download_train"])
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    assert submitted == set(logs)
    for job_id, log in logs.items():
        assert f"rule {rule_of[job_id]}:" in log.read_text(), log  # Snakemake inside the job ran that rule

    # ... and Slurm itself ran each of them to completion, on this node, in the run's directory
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    finished = finished_slurm_jobs(state, run_id)
    assert set(finished) == set(logs)
    for job_id, fields in finished.items():
        assert fields["JobState"] == "COMPLETED", (rule_of[job_id], fields)
        assert fields["WorkDir"] == str(workdir)
        assert fields["NodeList"] == socket.gethostname().split(".")[0]


def summary_rows(workdir: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    rows = csv.DictReader((workdir / "results" / "summary.csv").open())
    return {(r["model"], r["variant"], r["eval_set"]): r for r in rows}


def test_slurm_accuracy_and_predictions_equal_the_local_run(slurm_run, local_run):
    workdir = slurm_run[0]
    on_slurm, local = summary_rows(workdir), summary_rows(local_run)
    assert set(on_slurm) == set(local) >= {("tinybert", "base", "dev"), ("tinybert", "int8", "dev")}
    for key, row in local.items():
        assert set(ACCURACY_COLUMNS) <= set(row)
        assert row["f1"] != ""
        assert {c: on_slurm[key][c] for c in ACCURACY_COLUMNS} == {c: row[c] for c in ACCURACY_COLUMNS}, key

    predictions = sorted(p.relative_to(local_run) for p in (local_run / "results" / "predictions").rglob("*.json"))
    assert predictions == sorted(p.relative_to(workdir) for p in (workdir / "results" / "predictions").rglob("*.json"))
    assert len(predictions) == 2 * 4  # base and int8 on dev: predictions, na_probs, best_spans, decision
    for relative in predictions:
        if relative.name == "decision.json":  # it also records how long predicting took
            assert json.loads((workdir / relative).read_text())["threshold"] == \
                json.loads((local_run / relative).read_text())["threshold"]
        else:
            assert (workdir / relative).read_bytes() == (local_run / relative).read_bytes(), relative
