"""Device placement: clear errors on a machine without the device, nested outputs moved whole."""

import pytest
import torch
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from qabench import devices
from qabench.errors import InputError


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_without_one_is_a_one_line_error():
    with pytest.raises(InputError, match="cuda asked for, but torch sees no GPU"):
        devices.check("cuda")


def test_unknown_device_is_refused():
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        devices.check("tpu")


def test_nested_outputs_move_whole_and_keep_their_types():
    output = QuestionAnsweringModelOutput(start_logits=torch.ones(2, 3, dtype=torch.float64),
                                          end_logits=torch.zeros(2, 3, dtype=torch.float64))
    moved = devices.to_device({"out": output, "pair": (torch.ones(1), [torch.zeros(1)]), "n": 3},
                              torch.device("cpu"))
    assert isinstance(moved["out"], QuestionAnsweringModelOutput)
    assert torch.equal(moved["out"].start_logits, output.start_logits)
    assert isinstance(moved["pair"], tuple) and isinstance(moved["pair"][1], list) and moved["n"] == 3


def test_a_cpu_model_is_left_as_it_is():
    model = torch.nn.Linear(2, 2)
    assert devices.move(model, "cpu") is model
    assert not model._forward_pre_hooks and devices.model_device(model).type == "cpu"


@pytest.mark.parametrize("method", ["lora", "qlora", "pruned", "distilled"])
def test_methods_that_train_take_a_device_option(method):
    from qabench.compression import distilled, lora, pruned, qlora

    resolve = {"lora": lambda o: lora.resolve_options(o, "encoder"), "qlora": lambda o: qlora.resolve_options(o, "encoder"),
               "pruned": pruned.resolve_options, "distilled": lambda o: distilled.resolve_options(o, teacher_layers=4)}[method]
    assert resolve({})["device"] == "cpu"
    assert resolve({"device": "cuda"})["device"] == "cuda"  # form only: the job may run on a GPU node
    with pytest.raises(InputError, match=f"{method} option device must be cpu or cuda"):
        resolve({"device": "tpu"})


@pytest.mark.parametrize("variant, moved", [("base", True), ("lora", True), ("pruned", True), ("distilled", True),
                                             ("int8", False), ("qlora", False), ("onnx", False)])
def test_predict_runs_a_variant_where_asked_unless_it_keeps_its_device(monkeypatch, variant, moved):
    # a LoRA trained on a GPU records compression.device "cuda" but runs wherever predict asks;
    # int8 and qlora run on the device of their kernels, onnx in ONNX Runtime
    from qabench import compression, model_dir, models

    model = torch.nn.Linear(2, 2)
    settings = {"method": variant, "variant": variant, "family": "encoder"}
    if variant != "base":
        settings["compression"] = {"method": variant, "device": "cuda"}
        # imported before the patch: a method that imports read_settings by name would keep the stand-in
        compression.method(variant)
    monkeypatch.setattr(model_dir, "read_settings", lambda path: settings)
    monkeypatch.setattr(devices, "check", lambda device: device)
    if variant == "base":
        monkeypatch.setattr(models.family("encoder"), "load", lambda path: (model, None))
    else:
        monkeypatch.setattr(compression.method(variant), "load", lambda path, s: (model, None))
    calls = []
    monkeypatch.setattr(devices, "move", lambda m, device: calls.append(device) or m)
    model_dir.load_model("some/dir", device="cuda")
    assert calls == (["cuda"] if moved else [])
