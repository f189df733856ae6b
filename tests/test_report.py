"""The summary's comparisons: each variant against its own base, Pareto fronts, plots."""

import pytest

from qabench import report


def _row(model, variant, f1, latency, size, eval_set="dev", exact=None, family="encoder"):
    return {"model": model, "variant": variant, "family": family, "eval_set": eval_set, "f1": f1,
            "exact": f1 - 2 if exact is None else exact, "latency_ms_p50": latency, "size_mb": size}


def test_variants_are_compared_with_their_own_base():
    rows = [_row("a", "base", 70.0, 40.0, 80.0), _row("a", "int8", 69.2, 20.0, 20.0),
            _row("b", "base", 60.0, 10.0, 10.0), _row("a", "base", 50.0, 40.0, 80.0, eval_set="other"),
            _row("a", "int8", 52.5, 25.0, 20.0, eval_set="other")]
    report.add_comparisons(rows)
    dev_int8, other_int8 = rows[1], rows[4]
    assert dev_int8["delta_f1"] == pytest.approx(-0.8) and dev_int8["delta_exact"] == pytest.approx(-0.8)
    assert dev_int8["size_ratio"] == pytest.approx(0.25) and dev_int8["speedup_p50"] == pytest.approx(2.0)
    assert other_int8["delta_f1"] == pytest.approx(2.5) and other_int8["speedup_p50"] == pytest.approx(1.6)
    assert "delta_f1" not in rows[0] and "delta_f1" not in rows[2]


def test_missing_costs_leave_ratios_empty():
    rows = [_row("a", "base", 70.0, None, None), _row("a", "lora", 68.0, 30.0, 1.0)]
    report.add_comparisons(rows)
    assert rows[1]["delta_f1"] == pytest.approx(-2.0)
    assert "size_ratio" not in rows[1] and "speedup_p50" not in rows[1]


def test_pareto_front_keeps_only_undominated_points():
    a, b, c, d = (_row("a", "base", 70.0, 40.0, 1), _row("b", "base", 65.0, 10.0, 1),
                  _row("c", "base", 64.0, 30.0, 1), _row("d", "base", 70.0, 50.0, 1))
    front = report.pareto_front([a, b, c, d], "latency_ms_p50")
    assert front == [a, b]  # c is beaten by b on both; d ties a on F1 but is slower


def test_models_no_better_than_always_abstain_are_off_the_front():
    abstain = {**_row("always-abstain", "base", 50.07, None, None), "family": "baseline"}
    fast_abstainer, slow_reader = _row("m", "base", 50.07, 5.0, 1), _row("e", "base", 60.0, 40.0, 1)
    rows = report.add_comparisons([abstain, fast_abstainer, slow_reader])
    assert not fast_abstainer["pareto_latency"] and slow_reader["pareto_latency"]
    assert "**e**" in report.to_markdown(rows) and "**m**" not in report.to_markdown(rows)
    slow_reader["f1"] = 45.0
    rows = report.add_comparisons([abstain, fast_abstainer, slow_reader])
    assert "no model beats always-abstain" in report.to_markdown(rows)


def test_summary_markdown_shows_deltas_and_plots(tmp_path):
    rows = report.add_comparisons([_row("a", "base", 70.0, 40.0, 80.0), _row("a", "int8", 69.2, 20.0, 20.0)])
    for name in report.PLOTS:
        report.plot_pareto(rows, "dev", name, tmp_path / f"dev-{name}.png")
        assert (tmp_path / f"dev-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = report.to_markdown(rows, {"dev": [("F1 against latency", "plots/dev-f1-vs-latency.png")]})
    int8_line = next(line for line in markdown.splitlines() if "| int8 |" in line)
    assert "-0.80" in int8_line and "0.25x" in int8_line and "2.00x" in int8_line
    assert "![F1 against latency](plots/dev-f1-vs-latency.png)" in markdown
    csv_text = report.to_csv(rows)
    assert "delta_f1" in csv_text.splitlines()[0]


def test_a_row_says_how_its_own_threshold_was_chosen(tmp_path):
    import json

    from qabench.report import measured_row

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "qabench.json").write_text(json.dumps({}))
    (tmp_path / "metrics.json").write_text(json.dumps({"exact": 50.0, "f1": 55.0}))
    entry = {"metrics": str(tmp_path / "metrics.json"), "decision": str(tmp_path / "decision.json"),
             "model_dir": str(model_dir), "model": "m", "variant": "base", "family": "encoder", "eval_set": "dev"}
    decision = {"threshold": -7.4, "questions_per_s": 10.0}
    (tmp_path / "decision.json").write_text(json.dumps(decision))
    assert measured_row(entry)["threshold_source"] is None  # a decision file that does not say
    rule = "abstain on a share of 0.5 of these questions (highest na_prob)"
    (tmp_path / "decision.json").write_text(json.dumps({**decision, "threshold_rule": rule}))
    assert measured_row(entry)["threshold_source"] == rule
    assert measured_row(entry)["family"] == "encoder"  # from the entry where the directory does not say
    (model_dir / "qabench.json").write_text(json.dumps({"family": "mamba"}))  # a Mamba distilled from the encoder
    assert measured_row(entry)["family"] == "mamba"


def test_a_row_says_what_its_model_trained_on_and_its_gap_to_the_best_threshold(tmp_path):
    import json

    from qabench.report import measured_row, to_markdown

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "training.json").write_text(json.dumps({"data": {"questions": 30}, "wall_s": 60}))
    (tmp_path / "metrics.json").write_text(json.dumps({"exact": 50.0, "f1": 55.25, "best_f1": 57.0}))
    (tmp_path / "decision.json").write_text(json.dumps({"threshold": -2.0, "questions_per_s": 10.0}))
    summary = "offline partial SQuAD 2.0 train: 20 answerable, 4 real unanswerable + 6 synthetic unanswerable"
    (tmp_path / "record.json").write_text(json.dumps({"summary": summary}))
    entry = {"metrics": str(tmp_path / "metrics.json"), "decision": str(tmp_path / "decision.json"),
             "model_dir": str(model_dir), "train_record": str(tmp_path / "record.json"),
             "model": "m", "variant": "base", "family": "encoder", "eval_set": "dev"}
    row = measured_row(entry)
    assert row["train_data"] == summary and row["threshold_gap_f1"] == 1.75
    markdown = to_markdown([row])
    assert f"trained on {summary}" in markdown and "| 1.75 |" in markdown
