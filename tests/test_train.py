"""Training: an interrupted run resumes from its checkpoint and ends with the same weights."""

import json
from dataclasses import replace

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN
from qabench import devices
from qabench import train as train_module
from qabench.errors import InputError
from qabench.data import load_squad
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import encoder
from qabench.batching import TRAINING_WIDTH_MULTIPLE, pad_batch, training_width
from qabench.models.span import span_batch_loss, span_loss
from qabench.train import TrainSettings, train


@pytest.fixture(scope="module")
def features(tokenizer):
    return tokenize_examples(load_squad(TINY_TRAIN)[:24], tokenizer, WindowSpec(64, 16, 24))


SETTINGS = TrainSettings(epochs=2, batch_size=8, learning_rate=1e-3, save_every_steps=3, log_every_steps=1, seed=3)


def _fresh_model():
    model, tokenizer, _ = encoder.FAMILY.build(TINY_MODEL, seed=SETTINGS.seed)
    return model, tokenizer


def _loss(model, tokenizer, features):
    return span_batch_loss(model, encoder.FAMILY.span_logits, features, tokenizer.pad_token_id)


class Interrupted(Exception):
    pass


def _train_killed_at_checkpoint(features, settings, state_dir, monkeypatch, step: int) -> None:
    """Train a fresh model that dies right after writing its resume checkpoint of ``step``."""
    original_save = train_module._save_state

    def save_then_die(state_dir, model, optimizer, scheduler, saved_step, **kwargs):
        original_save(state_dir, model, optimizer, scheduler, saved_step, **kwargs)
        if saved_step == step:
            raise Interrupted

    monkeypatch.setattr(train_module, "_save_state", save_then_die)
    model, tokenizer = _fresh_model()
    with pytest.raises(Interrupted):
        train(model, features, _loss(model, tokenizer, features), settings, state_dir, progress=False)
    monkeypatch.setattr(train_module, "_save_state", original_save)


def test_interrupted_training_resumes_to_identical_weights(features, tmp_path, monkeypatch):
    model, tokenizer = _fresh_model()
    stats = train(model, features, _loss(model, tokenizer, features), SETTINGS, tmp_path / "straight", progress=False)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    assert stats["steps"] > 6

    _train_killed_at_checkpoint(features, SETTINGS, tmp_path / "resumed", monkeypatch, step=2 * SETTINGS.save_every_steps)

    checkpoint = tmp_path / "resumed" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["wall_s"] > 0
    state["wall_s"] = 1000.0  # as if the interrupted run had trained for 1000 s: easy to tell apart
    torch.save(state, checkpoint)
    model, tokenizer = _fresh_model()  # a new process would start from the initial weights
    resumed = train(model, features, _loss(model, tokenizer, features), SETTINGS, tmp_path / "resumed", progress=False)
    assert resumed["wall_s"] == pytest.approx(1000.0 + resumed["wall_s_this_run"], abs=0.1)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name]), name

    log = [json.loads(line) for line in (tmp_path / "resumed" / "loss.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, stats["steps"] + 1))


def test_loss_goes_down_on_a_tiny_set(features, tmp_path):
    model, tokenizer = _fresh_model()
    settings = TrainSettings(epochs=8, batch_size=8, learning_rate=2e-3, save_every_steps=1000, log_every_steps=1, seed=3)
    train(model, features, _loss(model, tokenizer, features), settings, tmp_path, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


def test_new_weights_learning_rate_needs_new_weights_and_is_checked(features, tmp_path):
    model, tokenizer = _fresh_model()
    settings = replace(SETTINGS, new_weights_learning_rate=1e-2)
    with pytest.raises(InputError, match="new_weights_learning_rate is set, but this model has no new layers"):
        train(model, features, _loss(model, tokenizer, features), settings, tmp_path, progress=False)
    with pytest.raises(InputError, match="new_weights_learning_rate must be positive"):
        train_module.check_settings(replace(SETTINGS, new_weights_learning_rate=0.0))


def test_new_weights_keep_their_rate_through_the_schedule(features, tmp_path):
    model, tokenizer = _fresh_model()
    new = frozenset({"qa_outputs.weight", "qa_outputs.bias"})
    settings = replace(SETTINGS, epochs=1, new_weights_learning_rate=5e-2, warmup_ratio=0.5)
    named = [(name, p) for name, p in model.named_parameters()]
    optimizer, scheduler = train_module._optimizer(named, settings, total_steps=4, new_parameters=new)
    by_id = {id(p): name for name, p in named}
    for _ in range(3):
        for group in optimizer.param_groups:
            rate = settings.new_weights_learning_rate if {by_id[id(p)] for p in group["params"]} <= new \
                else settings.learning_rate
            assert group["params"] and group["lr"] == pytest.approx(rate * scheduler.lr_lambdas[0](scheduler.last_epoch))
        optimizer.step()
        scheduler.step()
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)


def test_an_encoder_checkpoint_without_a_qa_head_names_the_new_head(tiny_encoder_dir, trained_encoder, features,
                                                                   tmp_path):
    """The new QA head is the encoder's only new layer: with new_weights_learning_rate it alone learns
    (the base rate is negligible here); a checkpoint that has a QA head, or random weights, has none."""
    model, tokenizer, _ = encoder.FAMILY.build(str(tiny_encoder_dir), seed=0)
    new = encoder.FAMILY.new_parameters(model)
    assert new == {"qa_outputs.weight", "qa_outputs.bias"}
    assert encoder.FAMILY.new_parameters(encoder.FAMILY.build(str(trained_encoder[0]), seed=0)[0]) == frozenset()
    assert encoder.FAMILY.new_parameters(_fresh_model()[0]) == frozenset()

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    settings = replace(SETTINGS, epochs=1, learning_rate=1e-9, new_weights_learning_rate=1e-2, warmup_ratio=0)
    train(model, features, _loss(model, tokenizer, features), settings, tmp_path, progress=False, new_parameters=new)
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in model.named_parameters()}
    assert min(moved[n] for n in new) > 1e-4
    assert max(moved[n] for n in moved if n not in new) < 1e-6



def test_training_further_from_a_trained_model_starts_from_its_weights_and_keeps_its_origin(trained_encoder,
                                                                                          features, tmp_path):
    """``checkpoint: results/models/M/base``: the second run starts from M's weights (at a negligible rate
    they stay M's) and its origin says where M's came from and that it was trained further."""
    from qabench import finetune, model_dir

    first = trained_encoder[0]
    window = {"max_length": 64, "stride": 16, "max_question_tokens": 24}
    finetune.run(family="encoder", checkpoint=str(first), options={}, features=features, window=window,
                 train_settings=replace(SETTINGS, epochs=1, learning_rate=1e-12), out_dir=tmp_path / "more",
                 state_dir=tmp_path / "state", data_counts={})
    earlier, again = model_dir.read_settings(first), model_dir.read_settings(tmp_path / "more")
    assert again["origin"] == f"{earlier['origin']}; trained further from {first}"
    assert again["checkpoint"] == str(first)
    before, after = (encoder.FAMILY.load(d)[0].state_dict() for d in (first, tmp_path / "more"))
    assert all(torch.allclose(after[name], tensor, atol=1e-6) for name, tensor in before.items())

def test_padding_a_batch_wider_does_not_change_its_loss(features):
    model, tokenizer = _fresh_model()
    model.eval()
    rows = list(range(8))
    ids = [features["input_ids"].iloc[i] for i in rows]
    types = [features["token_type_ids"].iloc[i] for i in rows]
    starts = torch.tensor(features["start_position"].to_numpy()[rows])
    ends = torch.tensor(features["end_position"].to_numpy()[rows])
    losses = []
    with torch.no_grad():
        for extra in (0, 8, 24):
            inputs = pad_batch(ids, types, tokenizer.pad_token_id, max(len(x) for x in ids) + extra)
            losses.append(float(span_loss(*encoder.FAMILY.span_logits(model, inputs), starts, ends, inputs["attention_mask"])))
    assert losses[1] == pytest.approx(losses[0], abs=1e-5) and losses[2] == pytest.approx(losses[0], abs=1e-5)


@pytest.mark.parametrize(("lengths", "longest", "width"), [([33, 20], 384, 64), ([64], 384, 64), ([1], 384, 32),
                                                           ([90, 7], 100, 96), ([97, 7], 100, 100)])
def test_training_width_rounds_up_to_the_multiple_but_not_past_the_longest_window(lengths, longest, width):
    assert TRAINING_WIDTH_MULTIPLE == 32
    assert training_width(lengths, longest) == width


@pytest.mark.parametrize("fast_bf16, chosen", [(False, "fp32"), (True, "bf16")])
def test_auto_precision_trains_in_bf16_only_where_it_is_fast(features, tmp_path, monkeypatch, fast_bf16, chosen):
    monkeypatch.setattr(devices, "native_bf16", lambda device_type: fast_bf16)
    settings = TrainSettings(epochs=1, batch_size=8, learning_rate=1e-3, save_every_steps=1000, seed=3)
    runs = {}
    for precision in ("auto", chosen, "fp32" if chosen == "bf16" else "bf16"):
        model, tokenizer = _fresh_model()
        stats = train(model, features, _loss(model, tokenizer, features), replace(settings, precision=precision),
                      tmp_path / precision, progress=False)
        runs[precision] = (stats["precision"], model.state_dict())
    assert runs["auto"][0] == chosen
    other = next(p for p in runs if p not in ("auto", chosen))
    for name, tensor in runs["auto"][1].items():
        assert torch.equal(tensor, runs[chosen][1][name]), name
    assert any(not torch.equal(t, runs[other][1][n]) for n, t in runs["auto"][1].items())


def test_bf16_where_it_is_emulated_warns(monkeypatch, caplog):
    monkeypatch.setattr(devices, "native_bf16", lambda device_type: False)
    with caplog.at_level("WARNING"):
        assert devices.resolve_precision("bf16", "cpu") == "bf16"
    assert "10x slower" in caplog.text and "precision: auto" in caplog.text
    with pytest.raises(InputError, match="unknown precision 'fp16'"):
        devices.resolve_precision("fp16", "cpu")


def test_emulated_bf16_is_warned_about_once_per_training_run(features, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(devices, "native_bf16", lambda device_type: False)
    model, tokenizer = _fresh_model()
    settings = TrainSettings(epochs=1, batch_size=8, learning_rate=1e-3, save_every_steps=1000, seed=3, precision="bf16")
    with caplog.at_level("WARNING"):
        stats = train(model, features, _loss(model, tokenizer, features), settings, tmp_path, progress=False)
    assert stats["precision"] == "bf16"
    assert caplog.text.count("10x slower") == 1
    with pytest.raises(ValueError, match="resolved precision"):
        devices.autocast("cpu", "auto")


@pytest.mark.parametrize("kind", ["torch", "raw"])
def test_a_resume_state_that_needs_unpickling_is_refused_and_never_run(features, tmp_path, plant_pickle, kind):
    """Resume state is read with weights_only: a planted pickle is one error line, and its code never runs."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    plant_pickle(state_dir / "checkpoint.pt", kind)
    model, tokenizer = _fresh_model()
    with pytest.raises(InputError, match=r"not a readable tensors-only resume state.*delete .* to train from the start") as err:
        train(model, features, _loss(model, tokenizer, features), SETTINGS, state_dir, progress=False)
    assert "\n" not in str(err.value) and err.value.path == str(state_dir / "checkpoint.pt")
    assert not plant_pickle.marker.exists()


def test_a_loss_log_line_cut_by_a_kill_is_dropped_on_resume(features, tmp_path):
    model, tokenizer = _fresh_model()
    settings = replace(SETTINGS, epochs=1)
    train(model, features, _loss(model, tokenizer, features), replace(settings, save_every_steps=2), tmp_path / "a",
          progress=False)
    model, tokenizer = _fresh_model()
    state = tmp_path / "b"

    class Stop(Exception):
        pass

    original = train_module._save_state

    def save_then_die(*args, **kwargs):
        original(*args, **kwargs)
        with open(state / "loss.jsonl", "a") as log:
            log.write('{"step": 9')  # a line cut short
        raise Stop

    import unittest.mock
    with unittest.mock.patch.object(train_module, "_save_state", save_then_die), pytest.raises(Stop):
        train(model, features, _loss(model, tokenizer, features), replace(settings, save_every_steps=2), state,
              progress=False)
    model, tokenizer = _fresh_model()
    train(model, features, _loss(model, tokenizer, features), replace(settings, save_every_steps=2), state,
          progress=False)
    steps = [json.loads(line)["step"] for line in (state / "loss.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "a" / "loss.jsonl").read_text().splitlines()]


def test_snapshots_keep_the_weights_of_their_step_and_survive_a_resume(features, tmp_path, monkeypatch):
    settings = replace(SETTINGS, snapshot_every_steps=2)
    model, tokenizer = _fresh_model()
    weights_before_call = []
    loss = _loss(model, tokenizer, features)

    def recording_loss(rows, *args):  # the weights before step n+1 are those after step n
        weights_before_call.append({k: v.clone() for k, v in model.state_dict().items()})
        return loss(rows, *args)

    stats = train(model, features, recording_loss, settings, tmp_path / "state", progress=False)
    out = tmp_path / "model"
    out.mkdir()
    train_module.finish(tmp_path / "state", out)
    kept = train_module.snapshots(out)
    assert [s["step"] for s in kept] == list(range(2, stats["steps"], 2))  # the final weights are the model itself
    assert all(0 < a["trained_s"] <= b["trained_s"] for a, b in zip(kept, kept[1:]))
    for snapshot in kept:
        loaded = train_module.load_snapshot(_fresh_model()[0], snapshot["path"])
        assert not loaded.training
        for name, tensor in loaded.state_dict().items():
            assert torch.equal(tensor, weights_before_call[snapshot["step"]][name]), (snapshot["step"], name)

    # a run killed at its checkpoint of step 6 and resumed from it has every snapshot
    _train_killed_at_checkpoint(features, settings, tmp_path / "again", monkeypatch, step=6)
    model, tokenizer = _fresh_model()
    train(model, features, _loss(model, tokenizer, features), settings, tmp_path / "again", progress=False)
    again = train_module.snapshots(tmp_path / "again")
    assert [s["step"] for s in again] == [s["step"] for s in kept]
    for mine, theirs in zip(again, kept):
        assert all(torch.equal(a, b) for a, b in zip(train_module.load_snapshot(_fresh_model()[0], mine["path"]).state_dict().values(),
                                                     train_module.load_snapshot(_fresh_model()[0], theirs["path"]).state_dict().values()))


def test_a_damaged_snapshot_is_one_error_naming_it(tmp_path):
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "step-0000002.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="not a weight snapshot") as err:
        train_module.snapshots(tmp_path)
    assert "step-0000002.safetensors" in str(err.value)
    assert train_module.snapshots(tmp_path / "nothing") == []
