"""End to end: configs/smoke.yaml through the whole DAG offline, in a scratch directory."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from qabench.data import load_squad

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
PINNED_COLUMNS = (
    "model, variant, family, eval_set, exact, f1, HasAns_exact, HasAns_f1, NoAns_exact, best_f1, "
    "best_f1_thresh, strict_exact, params, trainable_params, size_mb, latency_ms_p50, latency_ms_p95, "
    "throughput_qps, peak_mem_mb, device"
).split(", ")
OFFICIAL_KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
                 "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def path_without_this_venv() -> str:
    """PATH as in a shell where the venv is not activated: the README runs `.venv/bin/snakemake` directly."""
    venv_bin = os.path.dirname(sys.executable)
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
            *args, "--configfile", str(REPO / "configs" / "smoke.yaml")]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PATH": path_without_this_venv()})


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    result = snakemake(workdir, "results/summary.md")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_summary_has_pinned_columns_and_measured_rows(smoke_run):
    rows = list(csv.DictReader((smoke_run / "results" / "summary.csv").open()))
    assert set(PINNED_COLUMNS) <= set(rows[0])
    keys = {(r["model"], r["variant"], r["eval_set"]) for r in rows}
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    expected = {("always-abstain", "base")} | {(m, v) for m, spec in smoke["models"].items()
                                               for v in ["base", *spec.get("variants", [])]}
    assert keys == {(m, v, e) for m, v in expected for e in ("dev", "seen")}
    assert {r["family"] for r in rows} == {"baseline", "encoder", "t5", "lstm", "mamba"}
    dev = load_squad(REPO / "tests" / "data" / "dev-tiny.json.gz")
    abstain = next(r for r in rows if r["model"] == "always-abstain" and r["eval_set"] == "dev")
    unanswerable = sum(e.is_impossible for e in dev)
    assert float(abstain["exact"]) == pytest.approx(100 * unanswerable / len(dev))
    model_row = next(r for r in rows if r["model"] == "tinybert" and r["eval_set"] == "dev")
    assert model_row["family"] == "encoder"
    assert int(model_row["params"]) > 0 and float(model_row["size_mb"]) > 0 and float(model_row["throughput_qps"]) > 0
    assert 0 < float(model_row["latency_ms_p50"]) <= float(model_row["latency_ms_p95"])
    assert float(model_row["peak_mem_mb"]) > 0 and model_row["device"].startswith("cpu")
    assert abstain["latency_ms_p50"] == "" and abstain["size_mb"] == ""  # nothing to measure: empty
    dev_rows = {(r["model"], r["variant"]): r for r in rows if r["eval_set"] == "dev"}
    assert dev_rows[("tinymamba", "base")]["device"].endswith("pure pytorch")  # no CUDA kernels on a CPU
    base = dev_rows[("tinybert", "base")]
    # int8 weights are packed outside model.parameters(): the count is still the model's own
    assert int(dev_rows[("tinybert", "int8")]["params"]) == int(base["params"])
    assert float(dev_rows[("tinybert", "int8")]["size_mb"]) < float(base["size_mb"])
    assert int(dev_rows[("tinybert", "int8_inductor")]["params"]) == int(base["params"])
    assert int(dev_rows[("tinybert", "pruned")]["params"]) < int(base["params"])
    assert int(dev_rows[("tinybert", "lora")]["trainable_params"]) < int(base["params"]) // 2
    summary = (smoke_run / "results" / "summary.md").read_text()
    assert "random init" in summary and "always-abstain" in summary


@pytest.mark.parametrize("model", ["tinybert", "tinylstm", "tinymamba"])
def test_predictions_are_exact_context_spans(smoke_run, model):
    out = smoke_run / "results" / "predictions" / model / "base" / "dev"
    predictions = json.loads((out / "predictions.json").read_text())
    na_probs = json.loads((out / "na_probs.json").read_text())
    threshold = json.loads((out / "decision.json").read_text())["threshold"]
    dev = load_squad(REPO / "tests" / "data" / "dev-tiny.json.gz")
    assert set(predictions) == set(na_probs) == {e.id for e in dev}
    for example in dev:
        answer = predictions[example.id]
        if na_probs[example.id] > threshold:
            assert answer == ""
        else:
            assert answer and answer in example.context


def test_metrics_have_the_official_keys(smoke_run):
    metrics = json.loads((smoke_run / "results" / "metrics" / "tinybert" / "base" / "dev.json").read_text())
    assert list(metrics)[: len(OFFICIAL_KEYS)] == OFFICIAL_KEYS
    assert "strict_exact" in metrics


def test_a_model_trains_on_its_own_training_set(smoke_run):
    import pandas as pd

    def trained_questions(model):
        return json.loads((smoke_run / "results" / "models" / model / "base" / "training.json").read_text())["data"]

    def prepared(train_set):
        return pd.read_parquet(smoke_run / "results" / "data" / "train" / train_set / "train.parquet")

    small, default = prepared("lstm_small"), prepared("default")
    assert (small["origin"] == "original").sum() == 30 < (default["origin"] == "original").sum()
    assert set(small["origin"]) == {"original", "neg_other_paragraph"}  # its negatives replace data.train's
    small_holdout = pd.read_parquet(smoke_run / "results" / "data" / "train" / "lstm_small" / "holdout.parquet")
    assert set(small_holdout["origin"]) == {"original", "neg_negation", "neg_antonym"}  # its holdout_negatives
    assert trained_questions("tinylstm")["questions"] == len(small)
    assert trained_questions("tinybert")["questions"] == len(default)


def test_the_training_set_falls_through_to_a_source_it_can_have_and_says_so(smoke_run):
    folder = smoke_run / "results" / "data" / "train" / "default"
    source = json.loads((folder / "source.json").read_text())
    assert source["source"] == "train_tiny" and source["skipped"][0]["source"] == "train_absent"
    assert "file not found" in source["skipped"][0]["why"]
    log = (smoke_run / "logs" / "download" / "train-default.log").read_text()
    assert "source train_absent skipped" in log and "tiny SQuAD slice" in log
    record = json.loads((folder / "record.json").read_text())
    train = record["negatives"]
    assert train["synthetic_wanted"] > 0 and train["share_wanted"] == 0.4
    made = train["real_unanswerable"] + sum(train["synthetic"].values())
    assert made / (train["answerable"] + made) >= 0.4 or train["shortfall"]
    summary = (smoke_run / "results" / "summary.md").read_text()
    assert f"trained on {record['summary']}" in summary and record["summary"].startswith("tiny SQuAD slice: ")


def test_every_rule_logs(smoke_run):
    logs = {p.relative_to(smoke_run / "logs").parts[0] for p in (smoke_run / "logs").rglob("*.log")}
    assert {"download", "prepare", "tokenize", "train", "predict", "evaluate", "efficiency", "summarize.log"} <= logs


def test_second_run_has_nothing_to_do(smoke_run):
    result = snakemake(smoke_run, "results/summary.md", "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_predict_cli_never_abstaining_is_deterministic_and_spans_are_context_text(smoke_run, tmp_path):
    model = smoke_run / "results" / "models" / "tinybert" / "base"
    data = REPO / "tests" / "data" / "dev-tiny.json.gz"
    outputs = []
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-m", "workflow_scripts.predict", "--model", str(model), "--data", str(data),
                        "--out-dir", str(tmp_path / run), "--threads", "1", "--threshold", "1e9"],
                       check=True, capture_output=True, cwd=REPO)
        outputs.append([(tmp_path / run / f).read_bytes() for f in ("predictions.json", "na_probs.json")])
    assert outputs[0] == outputs[1]
    predictions = json.loads(outputs[0][0])
    for example in load_squad(data):
        assert predictions[example.id] and predictions[example.id] in example.context


def test_predict_cli_abstain_share_abstains_on_that_share_and_says_so(smoke_run, tmp_path):
    model = smoke_run / "results" / "models" / "tinybert" / "base"
    data = REPO / "tests" / "data" / "dev-tiny.json.gz"
    subprocess.run([sys.executable, "-m", "workflow_scripts.predict", "--model", str(model), "--data", str(data),
                    "--out-dir", str(tmp_path), "--threads", "1", "--abstain-share", "0.25"],
                   check=True, capture_output=True, cwd=REPO)
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    na_probs = json.loads((tmp_path / "na_probs.json").read_text())
    decision = json.loads((tmp_path / "decision.json").read_text())
    abstained = {q for q, answer in predictions.items() if answer == ""}
    assert len(abstained) == round(0.25 * len(predictions))
    assert min(na_probs[q] for q in abstained) > max(na_probs[q] for q in predictions if q not in abstained)
    assert "share of 0.25" in decision["threshold_rule"]


def test_predict_cli_refuses_an_abstain_share_above_one(tmp_path):
    result = subprocess.run([sys.executable, "-m", "workflow_scripts.predict", "--model", "nowhere", "--data",
                             "nothing.json", "--out-dir", str(tmp_path / "out"), "--abstain-share", "50"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["error: --abstain-share: must be between 0 and 1, got 50.0"]
    assert not (tmp_path / "out").exists()


def test_an_eval_set_abstain_share_reaches_predict(tmp_path):
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    smoke["data"]["eval_sets"]["dev"]["abstain_share"] = 0.5
    overlay = tmp_path / "share.yaml"
    overlay.write_text(yaml.safe_dump({"data": {"eval_sets": smoke["data"]["eval_sets"]}}))
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n", "-p",
               "--configfile", str(REPO / "configs" / "smoke.yaml"), str(overlay), "--",
               "results/predictions/tinybert/base/dev/predictions.json",
               "results/predictions/tinybert/base/seen/predictions.json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PATH": path_without_this_venv()})
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if "workflow_scripts.predict" in line]
    assert len(commands) == 2
    assert sum("--abstain-share 0.5" in line for line in commands) == 1


def test_workflow_lints_clean():
    result = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_training_killed_with_sigkill_resumes_to_the_same_predictions(smoke_run, tmp_path):
    workdir = tmp_path / "killed"
    shutil.copytree(smoke_run, workdir, ignore=shutil.ignore_patterns("locks"))
    shutil.rmtree(workdir / "results" / "models" / "tinybert" / "base")
    target = "results/predictions/tinybert/base/dev/predictions.json"
    (workdir / target).unlink()
    checkpoint = workdir / "results" / ".train_state" / "tinybert" / "base" / "checkpoint.pt"

    run = subprocess.Popen(snakemake_command(workdir, target), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True, env={**os.environ, "PATH": path_without_this_venv()})
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # snakemake and the training job with it, mid-training
    run.wait()
    assert checkpoint.exists(), "training finished or failed before its first checkpoint"
    assert not (workdir / "results" / "models" / "tinybert" / "base").exists()  # no half-written model

    assert snakemake(workdir, "--unlock").returncode == 0
    result = snakemake(workdir, target)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from step" in (workdir / "logs" / "train" / "tinybert" / "base.log").read_text()
    assert not checkpoint.exists()  # resume state is dropped once the model is saved
    for name in ("predictions.json", "na_probs.json"):
        resumed = (workdir / "results" / "predictions" / "tinybert" / "base" / "dev" / name).read_bytes()
        assert resumed == (smoke_run / "results" / "predictions" / "tinybert" / "base" / "dev" / name).read_bytes()


def test_same_seed_and_config_retrain_to_byte_identical_predictions_and_metrics(smoke_run, tmp_path):
    workdir = tmp_path / "again"
    shutil.copytree(smoke_run, workdir, ignore=shutil.ignore_patterns("locks"))
    models = ("tinylstm", "tinyt5")
    for model in models:
        for folder in ("models", "predictions", "metrics"):
            shutil.rmtree(workdir / "results" / folder / model)
    result = snakemake(workdir, *(f"results/metrics/{m}/base/dev.json" for m in models))
    assert result.returncode == 0, result.stderr[-3000:]
    for model in models:
        outputs = [f"predictions/{model}/base/dev/{name}" for name in ("predictions.json", "na_probs.json")]
        for relative in [*outputs, f"metrics/{model}/base/dev.json"]:
            assert (workdir / "results" / relative).read_bytes() == (smoke_run / "results" / relative).read_bytes(), \
                relative


def planned_jobs(result: subprocess.CompletedProcess) -> list[tuple[str, str | None]]:
    """(rule, model wildcard or None) of every job a dry run plans."""
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout + result.stderr)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        model = re.search(r"wildcards:.*\bmodel=([\w-]+)", block.split("\n\n")[0])
        jobs.append((rule, model.group(1) if model else None))
    return jobs


def test_a_model_target_builds_exactly_that_branch(tmp_path):
    jobs = planned_jobs(snakemake(tmp_path, "model_tinylstm", "--dry-run"))
    rules = {rule for rule, _ in jobs}
    assert {"train", "predict", "evaluate", "efficiency", "model_tinylstm"} <= rules
    assert "summarize" not in rules and "compress" not in rules
    assert {model for _, model in jobs if model} == {"tinylstm"}


def jobs_planned_after(smoke_run, tmp_path, edit) -> list[tuple[str, str | None]]:
    """The jobs a dry run plans on the finished smoke run once ``edit`` has changed the smoke config."""
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    edit(smoke)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(smoke))
    command = [c if c != str(REPO / "configs" / "smoke.yaml") else str(changed)
               for c in snakemake_command(smoke_run, "results/summary.md", "--dry-run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PATH": path_without_this_venv()})
    return planned_jobs(result)


def test_a_changed_hyper_parameter_reruns_that_model_and_the_summary_only(smoke_run, tmp_path):
    jobs = jobs_planned_after(smoke_run, tmp_path,
                              lambda smoke: smoke["models"]["tinylstm"]["train"].update(learning_rate=5.0e-3))
    assert ("train", "tinylstm") in jobs and ("summarize", None) in jobs
    assert {model for _, model in jobs if model} == {"tinylstm"}
    assert {rule for rule, _ in jobs} == {"train", "choose_threshold", "predict", "evaluate", "efficiency", "summarize"}


def test_a_changed_held_out_recipe_rechooses_thresholds_without_retraining(smoke_run, tmp_path):
    recipe = {"share": 0.5, "kinds": {"negation": 1.0}}
    jobs = jobs_planned_after(smoke_run, tmp_path,
                              lambda smoke: smoke["data"]["train_sets"]["lstm_small"].update(holdout_negatives=recipe))
    assert {rule for rule, _ in jobs} == {"prepare_holdout", "choose_threshold", "predict", "evaluate", "summarize"}
    assert {model for _, model in jobs if model} == {"tinylstm"}


def test_predict_abstains_by_the_threshold_its_own_rule_chose(smoke_run):
    for model, variant in (("tinybert", "base"), ("tinybert", "int8"), ("tinylstm", "base")):
        chosen = json.loads((smoke_run / "results" / "thresholds" / model / f"{variant}.json").read_text())
        decision = json.loads((smoke_run / "results" / "predictions" / model / variant / "dev" / "decision.json")
                              .read_text())
        assert decision["threshold"] == chosen["threshold"]
        assert decision["threshold_rule"] == chosen["threshold_rule"]
        assert chosen["threshold_rule"].startswith("best F1 on ")
        best = json.loads((smoke_run / "results" / "predictions" / model / variant / "dev" / "best_spans.json")
                          .read_text())
        assert all(best.values())  # a span for every question, abstained or not


def test_a_model_with_snapshots_has_a_learning_curve_in_the_summary(smoke_run):
    curve = json.loads((smoke_run / "results" / "curves" / "tinybert.json").read_text())["points"]
    training = json.loads((smoke_run / "results" / "models" / "tinybert" / "base" / "training.json").read_text())
    assert [p["step"] for p in curve] == [*range(5, training["steps"], 5), training["steps"]]
    assert [p["trained_s"] for p in curve] == sorted(p["trained_s"] for p in curve)
    final = json.loads((smoke_run / "results" / "metrics" / "tinybert" / "base" / "dev.json").read_text())
    assert curve[-1]["dev"]["f1"] == pytest.approx(final["f1"])  # the last point is the finished model
    assert curve[-1]["dev"]["best_f1"] == pytest.approx(final["best_f1"])
    summary = (smoke_run / "results" / "summary.md").read_text()
    assert "### tinybert" in summary and "![learning curve of tinybert](plots/curve-tinybert.png)" in summary
    assert (smoke_run / "results" / "plots" / "curve-tinybert.png").stat().st_size > 0
