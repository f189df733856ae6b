"""The model directory's settings file: one writer, one reader, versioned, with the variant's own name."""

from __future__ import annotations

import json

import pytest

from qabench import model_dir
from qabench.compression import int8
from qabench.errors import InputError
from qabench.predict import predict

WINDOW = {"max_length": 64, "stride": 16, "max_question_tokens": 24}


def _write_settings(path, settings):
    path.mkdir(parents=True, exist_ok=True)
    (path / model_dir.SETTINGS_FILE).write_text(json.dumps(settings))
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return path


def test_base_settings_read_back_as_written(tmp_path):
    written = model_dir.base_settings("encoder", WINDOW, checkpoint="pip:x", origin="test", options={})
    read = model_dir.read_settings(_write_settings(tmp_path / "m", written))
    assert read == {**written}
    assert read["format"] == model_dir.FORMAT_VERSION and read["method"] == read["variant"] == "base"


def test_format_1_names_the_method_in_variant(tmp_path):
    old = {**model_dir.DEFAULT_SETTINGS, "family": "encoder", "variant": "int8", "compression": {"method": "int8"}}
    read = model_dir.read_settings(_write_settings(tmp_path / "m", old))
    assert read["format"] == 2 and read["method"] == "int8" and read["variant"] == "int8"


@pytest.mark.parametrize("change, problem", [
    ({"format": 3}, "format 3 is not one this qabench reads"),
    ({"method": "int8", "variant": "base"}, "variant name 'base' is not one a int8 model can have"),
    ({"method": "base", "variant": "fast"}, "variant name 'fast' is not one a base model can have"),
    ({"method": "int8", "variant": "../up"}, "variant name '../up'"),
    ({"method": "shrink", "variant": "shrink"}, "unknown method 'shrink'"),
])
def test_contradictory_settings_are_one_line_errors(tmp_path, change, problem):
    settings = {**model_dir.base_settings("encoder", WINDOW, checkpoint="x", origin="x", options={}), **change}
    path = _write_settings(tmp_path / "m", settings)
    with pytest.raises(InputError) as info:
        model_dir.read_settings(path)
    assert problem in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(str(path / model_dir.SETTINGS_FILE))


def test_a_variant_records_its_own_name_and_its_method(trained_encoder, tmp_path, examples_for_variants):
    base, _ = trained_encoder
    out = tmp_path / "int8_fast"
    int8.make(base, out, options={}, seed=0, variant="int8_fast")
    model, tokenizer, settings = model_dir.load_model(out)
    assert settings["variant"] == "int8_fast" and settings["method"] == "int8" and settings["base"] == str(base)
    assert set(predict(model, tokenizer, examples_for_variants, settings, progress=False).predictions) == \
        {e.id for e in examples_for_variants}


@pytest.fixture
def examples_for_variants():
    from conftest import TINY_DEV
    from qabench.data import load_squad

    return load_squad(TINY_DEV)[:8]


def test_a_model_directory_records_the_machine_it_was_made_on(tmp_path):
    """Training times mean little without the CPU's instruction sets (an AVX2 EPYC trains ~1.5x slower than
    an AVX-512 one), so every model directory's record names them, read from /proc/cpuinfo."""
    import torch

    from qabench.machine import SPEED_FLAGS

    settings = model_dir.base_settings("encoder", WINDOW, checkpoint="pip:x", origin="test", options={})
    made = {"device": "cpu", "wall_s": 1.5}

    def save(tmp):  # as int8 does: the record learns the saved size while saving
        (tmp / "config.json").write_text("{}")
        made["size_mb"] = 0.01

    model_dir.write(tmp_path / "m", save, settings, made)
    record = json.loads((tmp_path / "m" / model_dir.TRAINING_FILE).read_text())
    assert record["wall_s"] == 1.5 and record["device"] == "cpu" and record["size_mb"] == 0.01
    machine = record["machine"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["threads"] == torch.get_num_threads() and machine["torch"] == torch.__version__
    cpuinfo = open("/proc/cpuinfo").read().splitlines()
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    assert machine["cpu_flags"] == [flag for flag in SPEED_FLAGS if flag in flags]
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    assert machine["cpu"] == (model or machine["cpu"]) and machine["cpu"]
