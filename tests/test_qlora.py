"""QLoRA variant: NF4 double-quantized 4-bit base layers, small storage, adapters train, exact reload."""

import io
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL, TINY_TRAIN
from qabench.compression import TrainingData, lora, qlora
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import encoder
from qabench.model_dir import DEFAULT_SETTINGS, load_model
from qabench.predict import predict
from test_lora import WINDOW, keep_trained_models, write_base_dir

# the CPU 4-bit kernel packs weights in blocks of 64 inputs and 32 outputs: widths of 64 and 128
QLORA_MODEL = {**TINY_MODEL, "random_init": {**TINY_MODEL["random_init"], "hidden_size": 64, "intermediate_size": 128}}
BASE_SETTINGS = {**DEFAULT_SETTINGS, **WINDOW, "family": "encoder", "variant": "base", "checkpoint": QLORA_MODEL,
                 "options": {}}


HOLDOUT = load_squad(TINY_TRAIN)[24:34]  # questions the adapters never trained on

@pytest.fixture(scope="module")
def data(tokenizer):
    examples = load_squad(TINY_TRAIN)
    features = tokenize_examples(examples[:24], tokenizer, WindowSpec(**WINDOW))
    return TrainingData(features, examples[:24])


def _batch(tokenizer, data):
    from qabench.batching import pad_batch

    rows = data.features.iloc[:6]
    return pad_batch(rows["input_ids"].tolist(), rows["token_type_ids"].tolist(), tokenizer.pad_token_id)


def test_linears_are_nf4_double_quantized_and_small(data):
    opts = qlora.resolve_options({"rank": 4}, "encoder")
    _, adapted, tokenizer, _, info = qlora.prepare(BASE_SETTINGS, opts, seed=0)
    layer = adapted.bert.encoder.layer[0]
    linears = {"query": layer.attention.self.query, "key": layer.attention.self.key,
               "value": layer.attention.self.value, "attention.output": layer.attention.output.dense,
               "intermediate": layer.intermediate.dense, "output": layer.output.dense}
    for name, module in linears.items():
        base = module.base_layer  # the adapters wrap the 4-bit layer
        assert qlora.is_4bit(base), name
        assert base.weight.quant_type == "nf4" and base.weight.quant_state.quant_type == "nf4"
        assert base.weight.compress_statistics and base.weight.quant_state.nested, name  # double quantization
        assert base.weight.dtype == torch.uint8 and not base.weight.requires_grad
        assert module.lora_A["default"].weight.requires_grad
    assert type(adapted.qa_outputs.modules_to_save["default"]) is torch.nn.Linear  # the head stays float
    assert sorted(info["quantized_modules"]) == sorted(
        f"bert.encoder.layer.0.{p}" for p in ("attention.self.query", "attention.self.key", "attention.self.value",
                                              "attention.output.dense", "intermediate.dense", "output.dense"))
    assert qlora.logical_params(adapted) > info["fp32_params"]  # 4-bit weights count their full shape

    # stored: 4 bits a weight, plus the (double-quantized) block scales
    payload = torch.load(io.BytesIO(info["base_file"]), weights_only=True)
    state = payload["state"]
    for name in info["quantized_modules"]:
        shape = adapted.get_submodule(name).base_layer.weight.quant_state.shape
        assert state[f"{name}.weight"].numel() * state[f"{name}.weight"].element_size() == shape.numel() // 2
        assert f"{name}.weight.nested_absmax" in state
    assert info["quantized_bytes"] < 0.25 * info["quantized_fp32_bytes"]


def test_saved_and_loaded_model_gives_identical_logits(tmp_path, data):
    opts = qlora.resolve_options({"rank": 4}, "encoder")
    peft_model, adapted, tokenizer, _, info = qlora.prepare(BASE_SETTINGS, opts, seed=1)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)  # adapters and head away from their initial values
    batch = _batch(tokenizer, data)
    adapted.eval()
    with torch.no_grad():
        start, end = encoder.FAMILY.span_logits(adapted, batch)
    lora.save_adapter(peft_model, tmp_path)
    out = tmp_path / "model"
    out.mkdir()
    qlora.save_files(out, info, tmp_path / lora.ADAPTER_DIR)
    settings = {**BASE_SETTINGS, "variant": "qlora", "compression": {"method": "qlora", **opts}}
    loaded, _ = qlora.load(out, settings)
    assert qlora.is_4bit(loaded.bert.encoder.layer[0].attention.self.query.base_layer)
    with torch.no_grad():
        loaded_start, loaded_end = encoder.FAMILY.span_logits(loaded, batch)
    assert torch.equal(loaded_start, start) and torch.equal(loaded_end, end)


def test_make_trains_adapters_and_loads(tmp_path, data, monkeypatch):
    base = write_base_dir(tmp_path / "base", QLORA_MODEL)
    out = tmp_path / "qlora"
    options = {"rank": 4, "dropout": 0.0, "train": {"epochs": 6, "learning_rate": 1e-2, "log_every_steps": 1}}
    trained = keep_trained_models(monkeypatch)
    qlora.make(base, out, options=options, seed=3, data=data, state_dir=tmp_path / "state")

    losses = [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert all(t.abs().max() > 0 for k, t in adapter.items() if "lora_B" in k)  # B starts at zero
    record = json.loads((out / "training.json").read_text())
    assert record["quantized_modules"] == 6 and record["trainable_params"] < 0.01 * record["params"]
    assert record["adapter_bytes"] < 0.01 * record["base_file_bytes"]

    # the directory holds everything loading needs: the original checkpoint is not built again
    monkeypatch.setattr(type(encoder.FAMILY), "build", lambda *a, **k: pytest.fail("qlora load rebuilt the base"))
    model, tokenizer, settings = load_model(out)
    assert settings["method"] == settings["variant"] == "qlora" and settings["compression"]["quant_type"] == "nf4"
    assert qlora.is_4bit(model.bert.encoder.layer[0].attention.self.value.base_layer)
    # the reloaded model scores held-out questions exactly as the trained one did
    result = predict(model, tokenizer, HOLDOUT, settings, batch_size=8, progress=False)
    assert result.na_probs == predict(trained[0].eval(), tokenizer, HOLDOUT, settings, batch_size=8,
                                      progress=False).na_probs
    assert set(result.predictions) == {e.id for e in HOLDOUT}


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="quant_type"):
        qlora.resolve_options({"quant_type": "int4"}, "encoder")
    with pytest.raises(InputError, match="compute_dtype"):
        qlora.resolve_options({"compute_dtype": "fp8"}, "encoder")
    with pytest.raises(InputError, match="unknown qlora option"):
        qlora.resolve_options({"bits": 4}, "encoder")


class Interrupted(Exception):
    pass


def test_interrupted_training_resumes_to_identical_adapters(tmp_path, data, monkeypatch):
    from qabench import train as train_module

    base = write_base_dir(tmp_path / "base", QLORA_MODEL)
    options = {"rank": 4, "train": {"epochs": 1, "learning_rate": 1e-2, "save_every_steps": 5}}
    qlora.make(base, tmp_path / "straight", options=options, seed=4, data=data, state_dir=tmp_path / "s1")

    original_save = train_module._save_state

    def save_then_die(state_dir, model, optimizer, scheduler, step, **kwargs):
        original_save(state_dir, model, optimizer, scheduler, step, **kwargs)
        raise Interrupted

    monkeypatch.setattr(train_module, "_save_state", save_then_die)
    with pytest.raises(Interrupted):
        qlora.make(base, tmp_path / "resumed", options=options, seed=4, data=data, state_dir=tmp_path / "s2")
    monkeypatch.setattr(train_module, "_save_state", original_save)
    state = torch.load(tmp_path / "s2" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 5 and all(".lora_" in k or ".modules_to_save." in k for k in state["model"])

    qlora.make(base, tmp_path / "resumed", options=options, seed=4, data=data, state_dir=tmp_path / "s2")
    straight = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
