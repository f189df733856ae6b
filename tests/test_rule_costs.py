"""benchmarks/rule_costs.py: each job's costs read from its benchmark file, examples from its output."""

import importlib.util
import json
from pathlib import Path

import pytest

from qabench.errors import InputError

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("rule_costs", REPO / "benchmarks" / "rule_costs.py")
rule_costs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rule_costs)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def benchmark(results: Path, name: str, wall: str, rss: str, cpu: str) -> None:
    write(results / "benchmarks" / name, HEADER + f"{wall}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t{cpu}\n")


@pytest.fixture
def run(tmp_path):
    results = tmp_path / "results"
    benchmark(results, "train/m/base.tsv", "100.0", "1000.0", "50.0")
    write(results / "models/m/base/training.json",
          json.dumps({"steps": 10, "windows": 75, "epochs": 1.0, "settings": {"batch_size": 8}}))
    benchmark(results, "train/m/lora.tsv", "40.0", "900.0", "30.0")  # a partial epoch: every batch full
    write(results / "models/m/lora/training.json",
          json.dumps({"steps": 3, "windows": 75, "epochs": 0.3, "settings": {"batch_size": 4}}))
    benchmark(results, "train/m/int8.tsv", "8.0", "500.0", "7.5")
    write(results / "models/m/int8/training.json", json.dumps({"params": 5, "trainable_params": 0}))
    benchmark(results, "threshold/m/base.tsv", "20.0", "800.0", "16.0")
    write(results / "thresholds/m/base.json", json.dumps({"threshold": -1.0, "holdout_scores": {"total": 64}}))
    benchmark(results, "predict/m/base/dev.tsv", "9.0", "700.0", "6.0")
    write(results / "predictions/m/base/dev/predictions.json", json.dumps({"a": "x", "b": "", "c": "y"}))
    benchmark(results, "feature_manifest/m.tsv", "0.5", "NA", "NA")
    benchmark(results, "tokenize/m/train-1.tsv", "3.0", "300.0", "2.0")
    benchmark(results, "download/dev_tiny.tsv", "1.0", "100.0", "0.5")
    return results


def test_rows_name_rule_model_variant_and_job_with_costs_per_example(run, tmp_path, capsys):
    out = tmp_path / "costs.json"
    assert rule_costs.main(["--results", str(run), "--out", str(out)]) == 0
    rows = {(r["rule"], r["model"], r["variant"], r["job"]): r for r in json.loads(out.read_text())}
    assert set(rows) == {("train", "m", "base", ""), ("compress", "m", "lora", ""), ("compress", "m", "int8", ""),
                         ("choose_threshold", "m", "base", ""), ("predict", "m", "base", "dev"),
                         ("feature_manifest", "m", "", ""), ("tokenize_shard", "m", "", "train-1"),
                         ("download", "", "", "dev_tiny")}
    train = rows["train", "m", "base", ""]
    # 10 steps of 8 would be 80, but one epoch of 75 windows holds 75 (the last batch is short)
    assert (train["wall_s"], train["cpu_s"], train["peak_rss_mb"], train["examples"]) == (100.0, 50.0, 1000.0, 75)
    # sampled every 0.5 s to 15 s, then at 45 and 75 s: the last 25 s of its CPU time went uncounted
    assert train["last_sample_s"] == 75.0 and train["cpu_s_est"] == pytest.approx(50 * 100 / 75)
    assert train["cpu_s_per_example"] == pytest.approx(50 * 100 / 75 / 75)
    threshold = rows["choose_threshold", "m", "base", ""]  # 20 s wall: last sampled at 15 s
    assert threshold["last_sample_s"] == 15.0 and threshold["cpu_s_est"] == pytest.approx(16 * 20 / 15)
    assert rows["compress", "m", "lora", ""]["examples"] == 12  # 3 steps of 4, within 0.3 x 75
    assert rows["compress", "m", "int8", ""]["examples"] is None  # int8 trains nothing
    assert rows["choose_threshold", "m", "base", ""]["examples"] == 64
    assert rows["predict", "m", "base", "dev"]["cpu_s_per_example"] == pytest.approx(2.0)
    manifest = rows["feature_manifest", "m", "", ""]
    assert manifest["cpu_s"] is None and manifest["peak_rss_mb"] is None  # NA: ended before the first sample
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| rule | model | variant | job |")
    assert "| predict | m | base | dev | 9.0 | 9.0 | 6.0 | 6.0 | 700 | 3 questions | 2.000 |" in table  # dense
    assert "| feature_manifest | m |  |  | 0.5 | 0.5 |  |  |  |  |  |" in table


@pytest.mark.parametrize("wall, last", [(0.3, 0.3), (15.0, 15.0), (15.1, 15.0), (44.9, 15.0), (45.0, 45.0),
                                        (104.0, 75.0), (105.0, 105.0)])
def test_last_sample_follows_snakemakes_schedule(wall, last):
    """0.5 s apart for the first 15 s, then 30 s apart (snakemake/benchmark.py; its constants are imported,
    so a Snakemake that drops them fails this module's import loudly)."""
    assert rule_costs.last_sample_s(wall) == last


def test_a_damaged_benchmark_file_is_named(run):
    write(run / "benchmarks/predict/m/base/dev.tsv", "s\tmax_rss\n1.0\t2.0\n")
    with pytest.raises(InputError, match=r"predict/m/base/dev\.tsv: not a Snakemake benchmark file"):
        rule_costs.main(["--results", str(run)])
    benchmark(run, "predict/m/base/dev.tsv", "fast", "700.0", "6.0")
    with pytest.raises(InputError, match=r"dev\.tsv: column s holds 'fast', not a number"):
        rule_costs.main(["--results", str(run)])


def test_a_damaged_training_record_is_named(run):
    write(run / "models/m/base/training.json", json.dumps({"steps": 10}))
    with pytest.raises(InputError, match=r"models/m/base/training\.json: needs steps, windows, epochs"):
        rule_costs.main(["--results", str(run)])
