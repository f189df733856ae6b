"""ONNX Runtime export: the float32 file matches PyTorch, the int8 file is smaller and answers alike."""

import json

import onnx
import pytest

from conftest import TINY_DEV
from qabench.compression import onnx as onnx_variant
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.model_dir import load_model
from qabench.predict import predict


@pytest.fixture(scope="module")
def exported(trained_encoder, tmp_path_factory):
    base_dir, data = trained_encoder
    root = tmp_path_factory.mktemp("onnx")
    for name, options in {"float": {}, "int8": {"quantize": True}}.items():
        onnx_variant.make(base_dir, root / name, options=options, seed=0, data=data)
    return root


def test_float_export_matches_pytorch(exported):
    record = json.loads((exported / "float" / "training.json").read_text())
    assert record["parity"]["questions"] == 24  # every training question (fewer than parity_questions)
    assert record["parity"]["max_abs_logit_diff"] <= onnx_variant.FLOAT_LOGIT_TOLERANCE
    assert record["parity"]["answers_agree"] == 1.0
    settings = json.loads((exported / "float" / "qabench.json").read_text())
    assert settings["variant"] == "onnx" and settings["compression"]["quantize"] is False


def test_int8_file_is_smaller_with_int8_weights_and_answers_like_the_base(exported, trained_encoder):
    graph = onnx.load(str(exported / "int8" / onnx_variant.MODEL_FILE)).graph
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 12  # Q, K, V, output, FFN in and out, in each of 2 layers
    float_file = (exported / "float" / onnx_variant.MODEL_FILE).stat().st_size
    int8_file = (exported / "int8" / onnx_variant.MODEL_FILE).stat().st_size
    assert int8_file < float_file
    dev = load_squad(TINY_DEV)
    base, tokenizer, settings = load_model(trained_encoder[0])
    reference = predict(base, tokenizer, dev, settings, progress=False)
    for name in ("float", "int8"):
        model, tokenizer, settings = load_model(exported / name)
        assert isinstance(model, onnx_variant.OnnxSpanModel)
        result = predict(model, tokenizer, dev, settings, progress=False)
        agree = sum(result.predictions[q] == reference.predictions[q] for q in reference.predictions) / len(dev)
        assert agree >= (1.0 if name == "float" else 0.8), f"{name}: {agree:.2f} of the answers agree"
        assert result.threshold == reference.threshold


def test_bad_options_and_inputs_are_refused(exported, trained_encoder, tmp_path):
    with pytest.raises(InputError, match="unknown onnx option"):
        onnx_variant.resolve_options({"opset": 17})
    with pytest.raises(InputError, match="quantize must be true or false"):
        onnx_variant.resolve_options({"quantize": "yes"})
    with pytest.raises(InputError, match="per_channel must be true or false"):
        onnx_variant.resolve_options({"per_channel": 1})
    with pytest.raises(InputError, match="needs training questions"):
        onnx_variant.make(trained_encoder[0], tmp_path / "no-data", options={}, seed=0)
    with pytest.raises(InputError, match="not a onnx variant|base model, not"):
        onnx_variant.make(exported / "float", tmp_path / "twice", options={}, seed=0)
    with pytest.raises(InputError, match="not an onnx model directory"):
        onnx_variant.load(tmp_path, {})
    assert not (tmp_path / "no-data").exists()
