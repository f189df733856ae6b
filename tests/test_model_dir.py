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
