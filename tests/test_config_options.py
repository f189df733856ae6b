"""Every model family's and compression method's options are checked by the config schema, so a
misspelt or mistyped option stops `snakemake -n` instead of a job (for a variant: after its base has
trained). The names, types and ranges live in schemas/config.schema.yaml; the modules keep their own
defaults and checks for when a job runs, and these tests keep the two in agreement."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qabench import compression, config, models
from qabench.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SCHEMA = config.schema()  # the file's schema with the registries' family and method lists
MODEL_ENTRY = SCHEMA["properties"]["models"]["additionalProperties"]
VARIANT_ENTRY = SCHEMA["properties"]["compression"]["additionalProperties"]


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].removeprefix("#/definitions/")]
    return node


def _branches(entry: dict, key: str) -> dict[str, dict]:
    """``{value: schema}`` of an entry's ``allOf`` of ``if: {KEY: value} then: schema``, each value once."""
    branches: dict[str, dict] = {}
    for branch in entry["allOf"]:
        value = branch["if"]["properties"][key]["const"]
        assert value not in branches, f"two schemas for {key} {value}"
        assert branch["if"].get("required") == [key]
        branches[value] = _resolve(branch["then"])
    return branches


FAMILY_SCHEMAS = {name: _resolve(then["properties"]["options"])
                  for name, then in _branches(MODEL_ENTRY, "family").items()}
METHOD_SCHEMAS = _branches(VARIANT_ENTRY, "method")


def family_defaults(name: str) -> dict:
    return models.family(name).default_options


def method_defaults(name: str) -> dict:
    module = compression.method(name)
    if name == "qlora":  # lora's options and the quantization's
        return {**module.lora.DEFAULT_OPTIONS, **module.QUANT_OPTIONS}
    return module.DEFAULTS if name == "distilled" else module.DEFAULT_OPTIONS


def module_resolve(kind: str, name: str, options: dict) -> dict:
    """What the job does with the options first (raises InputError on a bad one)."""
    if kind == "family":
        return models.family(name).resolve_options(options)
    module = compression.method(name)
    if name == "distilled":
        return module.resolve_options(options, None)
    if name in ("lora", "qlora"):
        return module.resolve_options(options, "encoder")
    return module.resolve_options(options)


@pytest.fixture
def smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def model_of(cfg: dict, family: str) -> str:
    return next(name for name, spec in cfg["models"].items() if spec["family"] == family)


def with_options(cfg: dict, kind: str, name: str, options: dict) -> tuple[dict, str]:
    """``cfg`` with ``options`` for a model of family ``name`` or a variant ``v`` of method ``name``
    (one no model uses, so only the options are checked); and the config key that holds them."""
    if kind == "family":
        model = model_of(cfg, name)
        cfg["models"][model]["options"] = copy.deepcopy(options)
        return cfg, f"models.{model}.options"
    cfg["compression"]["v"] = {"method": name, **copy.deepcopy(options)}
    return cfg, "compression.v"


def refusal(cfg: dict) -> str:
    with pytest.raises(InputError) as info:
        config.validate(cfg, "my.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("my.yaml: ")
    return message


# ------------------------------------------------------------------ one source of truth: schema == modules


def test_the_schema_has_one_options_schema_per_family():
    assert MODEL_ENTRY["properties"]["family"]["enum"] == list(models.FAMILIES)
    assert sorted(FAMILY_SCHEMAS) == sorted(models.FAMILIES)


def test_the_schema_has_one_options_schema_per_method():
    assert VARIANT_ENTRY["properties"]["method"]["enum"] == list(compression.METHODS)
    assert sorted(METHOD_SCHEMAS) == sorted(compression.METHODS)
    for name, schema in METHOD_SCHEMAS.items():
        assert schema["properties"]["method"] == {"const": name}


@pytest.mark.parametrize("family", models.FAMILIES)
def test_family_option_names_are_the_modules(family):
    schema = FAMILY_SCHEMAS[family]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(family_defaults(family))


@pytest.mark.parametrize("method", compression.METHODS)
def test_method_option_names_are_the_modules(method):
    schema = METHOD_SCHEMAS[method]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) - {"method"} == set(method_defaults(method))


@pytest.mark.parametrize("method", [m for m in compression.METHODS if "train" in METHOD_SCHEMAS[m]["properties"]])
def test_a_methods_train_settings_are_the_train_settings_fields(method):
    from dataclasses import fields

    from qabench.train import TrainSettings

    assert "train" in method_defaults(method)
    train = _resolve(METHOD_SCHEMAS[method]["properties"]["train"])
    assert train["additionalProperties"] is False
    assert set(train["properties"]) == {f.name for f in fields(TrainSettings)}


def test_every_method_that_takes_train_settings_has_them_in_the_schema():
    for method in compression.METHODS:
        assert ("train" in method_defaults(method)) == ("train" in METHOD_SCHEMAS[method]["properties"]), method


@pytest.mark.parametrize("kind,name", [*(("family", f) for f in models.FAMILIES),
                                       *(("method", m) for m in compression.METHODS)])
def test_the_modules_defaults_pass_the_schema_and_the_module(smoke, kind, name):
    defaults = family_defaults(name) if kind == "family" else method_defaults(name)
    config.validate(with_options(smoke, kind, name, defaults)[0])
    if kind == "family" and name == "encoder":
        return  # takes no options: nothing to resolve
    module_resolve(kind, name, copy.deepcopy(defaults))


def test_options_are_kept_as_written(smoke):
    """The schema fills in no option defaults: options are rule params, and a default filled in here
    would change them (and rerun finished jobs) whenever a module's default is added."""
    written = copy.deepcopy(smoke)
    validated = config.validate(smoke)
    for name, spec in written["models"].items():
        assert validated["models"][name]["options"] == spec.get("options", {})
    for name, options in written["compression"].items():
        assert validated["compression"][name] == {"method": name, **options}


# ------------------------------------------------------------------------------------------- bad options

# (kind, family or method, options, what the message says after the options' key): each refused by the
# schema AND by the module the job would run
BAD = [
    ("family", "lstm", {"hiden_size": 8}, ": unknown lstm option 'hiden_size'"),
    ("family", "lstm", {"hidden_size": 0}, ".hidden_size: "),
    ("family", "lstm", {"hidden_size": 8.5}, ".hidden_size: "),
    ("family", "lstm", {"vocab_size": 0}, ".vocab_size: "),
    ("family", "lstm", {"char_embedding_dim": -1}, ".char_embedding_dim: "),
    ("family", "lstm", {"dropout": 1.0}, ".dropout: "),
    ("family", "lstm", {"trainable_embeddings": "yes"}, ".trainable_embeddings: "),
    ("family", "t5", {"beams": 4}, ": unknown t5 option 'beams'"),
    ("family", "t5", {"num_beams": 0}, ".num_beams: "),
    ("family", "t5", {"max_answer_tokens": 0}, ".max_answer_tokens: "),
    ("family", "t5", {"no_answer_text": "??"}, ".no_answer_text: "),
    ("family", "t5", {"answers_from_context": "yes"}, ".answers_from_context: "),
    ("family", "mamba", {"bidirectonal": True}, ": unknown mamba option 'bidirectonal'"),
    ("family", "mamba", {"bidirectional": "yes"}, ".bidirectional: "),
    ("method", "lora", {"rnak": 8}, ": unknown lora option 'rnak'"),
    ("method", "lora", {"rank": "eight"}, ".rank: "),
    ("method", "lora", {"rank": 0}, ".rank: "),
    ("method", "lora", {"alpha": 0}, ".alpha: "),
    ("method", "lora", {"dropout": 1}, ".dropout: "),
    ("method", "lora", {"target_modules": []}, ".target_modules: "),
    ("method", "lora", {"target_modules": "query"}, ".target_modules: "),
    ("method", "lora", {"device": "gpu"}, ".device: "),
    ("method", "lora", {"train": {"epoch": 1}}, ".train: unknown training setting 'epoch'"),
    ("method", "lora", {"train": {"gpus": 1}}, ".train: unknown training setting 'gpus'"),
    ("method", "lora", {"train": {"warmup_ratio": 2}}, ".train.warmup_ratio: "),
    ("method", "lora", {"train": {"batch_size": 0}}, ".train.batch_size: "),
    ("method", "lora", {"train": {"learning_rate": 0}}, ".train.learning_rate: "),
    ("method", "lora", {"train": [1]}, ".train: "),
    ("method", "qlora", {"quant_type": "int4"}, ".quant_type: "),
    ("method", "qlora", {"double_quant": "yes"}, ".double_quant: "),
    ("method", "qlora", {"compute_dtype": "fp8"}, ".compute_dtype: "),
    ("method", "qlora", {"rank": 0}, ".rank: "),
    ("method", "int8", {"backend": "fast"}, ".backend: "),
    ("method", "int8", {"device": "tpu"}, ".device: "),
    ("method", "int8", {"device": "cuda", "backend": "dynamic"}, ".backend: "),
    ("method", "int8", {"device": "cuda", "backend": "inductor"}, ".backend: "),
    ("method", "int8", {"backend": "inductor", "per_channel": False}, ".per_channel: "),
    ("method", "int8", {"backend": "bitsandbytes", "quantize_embeddings": True}, ".quantize_embeddings: "),
    ("method", "int8", {"device": "cuda", "quantize_embeddings": True}, ".quantize_embeddings: "),
    ("method", "int8", {"backend": "inductor", "engine": "x86"}, ".engine: "),
    ("method", "int8", {"per_channel": "yes"}, ".per_channel: "),
    ("method", "int8", {"quantize_head": "no"}, ".quantize_head: "),
    ("method", "int8", {"backend": "inductor", "quantize_head": False}, ".quantize_head: "),
    ("method", "int8", {"quantise_embeddings": True}, ": unknown int8 option 'quantise_embeddings'"),
    ("method", "pruned", {"target_encoder_ratio": 1.0}, ".target_encoder_ratio: "),
    ("method", "pruned", {"target_encoder_ratio": 0}, ".target_encoder_ratio: "),
    ("method", "pruned", {"calibration_windows": 0}, ".calibration_windows: "),
    ("method", "pruned", {"head_share": 1.5}, ".head_share: "),
    ("method", "pruned", {"ratio": 0.5}, ": unknown pruned option 'ratio'"),
    ("method", "distilled", {"layer_init": "last"}, ".layer_init: "),
    ("method", "distilled", {"alpha": 1.5}, ".alpha: "),
    ("method", "distilled", {"temperature": 0}, ".temperature: "),
    ("method", "distilled", {"teacher": "x"}, ": unknown distilled option 'teacher'"),
    ("method", "onnx", {"quantize": "yes"}, ".quantize: "),
    ("method", "onnx", {"parity_questions": 0}, ".parity_questions: "),
    ("method", "onnx", {"parity": 4}, ": unknown onnx option 'parity'"),
]


@pytest.mark.parametrize("kind,name,options,named", BAD, ids=[f"{n}-{next(iter(o))}-{i}" for i, (_, n, o, _)
                                                              in enumerate(BAD)])
def test_a_bad_option_is_refused_by_the_schema_and_by_the_module(smoke, kind, name, options, named):
    cfg, key = with_options(smoke, kind, name, options)
    message = refusal(cfg)
    assert f"{key}{named}" in message, message
    with pytest.raises(InputError):
        module_resolve(kind, name, copy.deepcopy(options))


# refused by the schema, where the module's option check lets them through and the job fails later (or
# reads them loosely): a device torch cannot parse, a negative seed numpy refuses, a student layer count
# checked only once the teacher is loaded, an engine checked against the job machine's torch, a count
# given as text or as true
STRICTER = [
    ("method", "distilled", {"device": "cuda:x"}, ".device: "),
    ("method", "lora", {"train": {"seed": -1}}, ".train.seed: "),
    ("method", "distilled", {"student_layers": 0}, ".student_layers: "),
    ("method", "int8", {"engine": "mkl"}, ".engine: "),
    ("family", "t5", {"num_beams": "4"}, ".num_beams: "),
    ("family", "lstm", {"char_embedding_dim": True}, ".char_embedding_dim: "),
]


@pytest.mark.parametrize("kind,name,options,named", STRICTER, ids=[f"{n}-{next(iter(o))}" for _, n, o, _ in STRICTER])
def test_the_schema_refuses_before_the_job_what_the_job_would_refuse_later(smoke, kind, name, options, named):
    cfg, key = with_options(smoke, kind, name, options)
    assert f"{key}{named}" in refusal(cfg)


GOOD = [
    ("family", "lstm", {"vocab_size": None, "char_embedding_dim": 8, "dropout": 0}),
    ("family", "t5", {"no_answer_text": "no answer", "num_beams": 4}),
    ("family", "t5", {"answers_from_context": True, "num_beams": 2}),
    ("family", "mamba", {"bidirectional": False}),
    ("method", "lora", {"rank": 2, "alpha": 0.5, "dropout": 0.0, "target_modules": ["query"], "device": "cuda:1",
                        "train": {"epochs": 0.5, "seed": 3, "max_grad_norm": 0.5, "log_every_steps": 5}}),
    ("method", "qlora", {"quant_type": "fp4", "double_quant": False, "compute_dtype": "fp16", "device": "cuda"}),
    ("method", "int8", {"device": "cuda"}),
    ("method", "int8", {"device": "cuda", "backend": "bitsandbytes", "per_channel": False}),
    ("method", "int8", {"backend": "inductor"}),
    ("method", "int8", {"quantize_head": False}),
    ("method", "int8", {"device": "cuda", "quantize_head": False}),
    ("method", "int8", {"backend": "dynamic", "quantize_embeddings": True, "per_channel": False}),
    ("method", "pruned", {"head_share": None, "target_encoder_ratio": 0.5}),
    ("method", "distilled", {"student_layers": 2, "layer_init": "first", "alpha": 0, "temperature": 1}),
    ("method", "onnx", {"quantize": True, "per_channel": False, "parity_questions": 1}),
]


@pytest.mark.parametrize("kind,name,options", GOOD, ids=[f"{n}-{i}" for i, (_, n, _) in enumerate(GOOD)])
def test_good_options_pass_the_schema_and_the_module(smoke, kind, name, options):
    config.validate(with_options(smoke, kind, name, options)[0])
    module_resolve(kind, name, copy.deepcopy(options))


def test_an_unknown_variant_option_names_the_key_and_the_known_ones(smoke):
    smoke["compression"]["my_lora"] = {"method": "lora", "rnak": 8}
    assert refusal(smoke) == ("my.yaml: compression.my_lora: unknown lora option 'rnak' "
                              "(known: rank, alpha, dropout, target_modules, train, device)")


def test_an_unknown_family_option_names_the_family(smoke):
    smoke["models"][model_of(smoke, "lstm")]["options"]["hiden_size"] = 8
    message = refusal(smoke)
    assert "options: unknown lstm option 'hiden_size' (known: vocab_size, hidden_size," in message


def test_an_encoder_takes_no_options(smoke):
    model = model_of(smoke, "encoder")
    smoke["models"][model]["options"] = {"dropout": 0.1}
    assert refusal(smoke).endswith(f"models.{model}.options: unknown encoder option 'dropout' "
                                   "(the encoder family takes no options)")


def test_a_wrong_type_says_what_it_must_be(smoke):
    smoke["compression"]["lora"]["rank"] = "eight"
    assert refusal(smoke).endswith('compression.lora.rank: must be an integer, not "eight"')
    smoke["compression"]["lora"]["rank"] = 8.0  # a float, as the module sees it
    assert refusal(smoke).endswith("compression.lora.rank: must be an integer, not 8.0")


def test_a_choice_lists_the_choices(smoke):
    smoke["compression"]["int8"]["backend"] = "fast"
    assert refusal(smoke).endswith('compression.int8.backend: must be one of null, dynamic, inductor, '
                                   'bitsandbytes, not "fast"')


def test_an_option_named_variant_takes_its_method_from_its_name(smoke):
    smoke["compression"]["qlora"]["rank"] = 0
    assert "compression.qlora.rank: must be at least 1" in refusal(smoke)


def test_int8_inductor_on_another_family_is_refused(smoke):
    model = model_of(smoke, "lstm")
    smoke["models"][model]["variants"] = ["int8_inductor"]
    message = refusal(smoke)
    assert f"models.{model}.variants: int8_inductor: the inductor int8 backend exports encoders only" in message


def test_qlora_on_cuda_for_t5_is_refused_like_the_module_does(smoke):
    model = model_of(smoke, "t5")
    smoke["compression"]["qlora"]["device"] = "cuda"
    smoke["models"][model]["variants"] = ["qlora"]
    assert f"models.{model}.variants: qlora: qlora on cuda applies to the encoder, mamba families only" \
        in refusal(smoke)
    with pytest.raises(InputError):
        compression.method("qlora").resolve_options({"device": "cuda"}, "t5")
    compression.method("qlora").resolve_options({"device": "cuda"}, "mamba")


# ----------------------------------------------------------------------------------- snakemake -n refuses


def dry_run(tmp_path: Path, overlay: dict) -> subprocess.CompletedProcess:
    """``snakemake -n`` on the smoke config with ``overlay`` merged over it, as an overlay is used."""
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                           str(tmp_path), "--cores", "1", "-n", "--configfile", str(SMOKE), str(path), "--",
                           "results/summary.md"], capture_output=True, text=True, timeout=300, env=os.environ)


def error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


def test_dry_run_refuses_an_unknown_variant_option(tmp_path):
    line = error_line(dry_run(tmp_path, {"compression": {"lora": {"rnak": 4}}}))
    assert "compression.lora: unknown lora option 'rnak'" in line and str(SMOKE) in line


def test_dry_run_refuses_a_misspelt_family_option(tmp_path):
    smoke = yaml.safe_load(SMOKE.read_text())
    model = model_of(smoke, "lstm")
    line = error_line(dry_run(tmp_path, {"models": {model: {"options": {"hiden_size": 8}}}}))
    assert f"models.{model}.options: unknown lstm option 'hiden_size'" in line


def test_a_models_new_weights_learning_rate_reaches_its_training_command_only(tmp_path):
    smoke = yaml.safe_load(SMOKE.read_text())
    model = model_of(smoke, "t5")
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(
        {"models": {model: {"train": {"new_weights_learning_rate": 0.003}}}}))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                             str(tmp_path), "--cores", "1", "-n", "-p", "--configfile", str(SMOKE),
                             str(tmp_path / "overlay.yaml"), "--", "results/summary.md"],
                            capture_output=True, text=True, timeout=300, env=os.environ)
    assert result.returncode == 0, result.stderr[-2000:]
    commands = [line for line in result.stdout.splitlines() if "workflow_scripts.train" in line]
    assert len(commands) == len(smoke["models"])
    flagged = [line for line in commands if "--new-weights-learning-rate 0.003" in line]
    assert len(flagged) == 1 and f"results/models/{model}/base" in flagged[0]


# ------------------------------------------------------------------------------ the shipped configs pass


def stack(name: str) -> list[str]:
    """The config files ``name`` is meant to be used with, in order, as its header's command line gives
    them (``--configfile config.yaml configs/NAME.yaml``); just itself when it names none."""
    header = []
    for line in (REPO / name).read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    for line in header:
        found = re.search(r"--configfile\s+(.+)$", line)
        if found:
            files = found.group(1).split()
            assert files[-1] == name, f"{name}'s header runs {files}"
            return files
    return [name]


@pytest.mark.parametrize("name", ["config.yaml", *sorted(f"configs/{p.name}" for p in (REPO / "configs").glob("*.yaml"))])
def test_every_shipped_config_validates(name):
    from snakemake.utils import update_config

    merged: dict = {}
    for path in stack(name):
        update_config(merged, yaml.safe_load((REPO / path).read_text()))
    assert config.validate(merged, name, base_dir=REPO)["models"]


def test_overlays_are_found_from_their_headers():
    assert stack("configs/families-cpu.yaml") == ["config.yaml", "configs/variants-cpu.yaml",
                                                  "configs/families-cpu.yaml"]
    assert stack("configs/smoke.yaml") == ["configs/smoke.yaml"]
