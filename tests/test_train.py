"""Training: an interrupted run resumes from its checkpoint and ends with the same weights."""

import json

import pytest
import torch

from conftest import TINY_MODEL, TINY_TRAIN
from qabench import train as train_module
from qabench.data import load_squad
from qabench.features import WindowSpec, tokenize_examples
from qabench.models import encoder
from qabench.train import TrainSettings, span_batch_loss, train


@pytest.fixture(scope="module")
def features(tokenizer):
    return tokenize_examples(load_squad(TINY_TRAIN)[:24], tokenizer, WindowSpec(64, 16, 24))


SETTINGS = TrainSettings(epochs=2, batch_size=8, learning_rate=1e-3, save_every_steps=3, log_every_steps=1, seed=3)


def _fresh_model():
    model, tokenizer, _ = encoder.build(TINY_MODEL, seed=SETTINGS.seed)
    return model, tokenizer


def _loss(model, tokenizer, features):
    return span_batch_loss(model, encoder.span_logits, features, tokenizer.pad_token_id)


class Interrupted(Exception):
    pass


def test_interrupted_training_resumes_to_identical_weights(features, tmp_path, monkeypatch):
    model, tokenizer = _fresh_model()
    stats = train(model, features, _loss(model, tokenizer, features), SETTINGS, tmp_path / "straight", progress=False)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    assert stats["steps"] > 6

    original_save = train_module._save_state
    saves = []

    def save_then_die(state_dir, model, optimizer, scheduler, step, **kwargs):
        original_save(state_dir, model, optimizer, scheduler, step, **kwargs)
        saves.append(step)
        if len(saves) == 2:
            raise Interrupted

    monkeypatch.setattr(train_module, "_save_state", save_then_die)
    model, tokenizer = _fresh_model()
    with pytest.raises(Interrupted):
        train(model, features, _loss(model, tokenizer, features), SETTINGS, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_module, "_save_state", original_save)

    model, tokenizer = _fresh_model()  # a new process would start from the initial weights
    resumed = train(model, features, _loss(model, tokenizer, features), SETTINGS, tmp_path / "resumed", progress=False)
    assert resumed["wall_s"] > resumed["wall_s_this_run"]  # counts the time before the interruption too
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
