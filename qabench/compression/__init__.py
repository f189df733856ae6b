"""Compressed variants of a trained base model. ``variant`` names a module here; each offers

    METHOD: str                       the variant name (pruned, distilled, lora, int8, qlora, onnx)
    FAMILIES: tuple[str, ...]         the model families it applies to
    KEEPS_ITS_DEVICE: bool            whether a variant runs only where it was made (int8, qlora: on the
                                      device of their kernels; onnx: in ONNX Runtime on the CPU) rather than
                                      on the device predict asks for
    make(base_dir, out_dir, *, options, seed, data, state_dir) -> None
        builds the variant from the fine-tuned base in ``base_dir`` (a directory written by
        qabench.finetune) and writes a complete model directory with qabench.finetune.save_model_dir:
        weights, qabench.json (the base's settings plus "variant", "base" and the method's options) and
        training.json (params, trainable_params, training wall time if it trained).
        ``data`` is a TrainingData (features, examples) for methods that train, else unused.
    load(model_dir, settings) -> (model, tokenizer)   ready for qabench.predict.predict, eval mode

qabench.predict.load_model dispatches on qabench.json's "variant" ("base" goes to the family).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import pandas as pd

from qabench.data import Example
from qabench.errors import InputError

# which families each method applies to (each module's FAMILIES must agree; a test checks it)
METHOD_FAMILIES = {
    "pruned": ("encoder",),
    "distilled": ("encoder",),
    "lora": ("encoder", "t5", "mamba"),
    "int8": ("encoder", "t5", "lstm", "mamba"),
    "qlora": ("encoder", "t5", "mamba"),
    "onnx": ("encoder",),
}
METHODS = tuple(METHOD_FAMILIES)


@dataclass
class TrainingData:
    features: pd.DataFrame            # the model's tokenized training windows (as for the base)
    examples: list[Example]           # the examples they came from


def with_defaults(method: str, options: dict | None, defaults: dict) -> dict:
    """A method's ``options`` over its ``defaults``; the config's ``method`` key is dropped, and an
    unknown key is an error (a misspelt option would otherwise silently do nothing)."""
    options = {k: v for k, v in (options or {}).items() if k != "method"}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError("config", f"unknown {method} option(s) {unknown} (known: {', '.join(defaults)})")
    return {**defaults, **options}


def check_train(method: str, overrides: object) -> None:
    """A method's ``train`` option: a mapping of known TrainSettings fields with values a run can use
    (checked when the options are resolved, before any model is loaded)."""
    from dataclasses import fields

    from qabench.train import TrainSettings, check_settings

    if not isinstance(overrides, dict):
        raise InputError("config", f"{method} option train must be a mapping of training settings")
    known = {f.name for f in fields(TrainSettings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError("config", f"unknown {method} train setting(s) {unknown} (known: {', '.join(sorted(known))})")
    check_settings(TrainSettings(**overrides), f"config: {method} option train")


def method(name: str) -> ModuleType:
    if name not in METHODS:
        raise ValueError(f"unknown compression method '{name}' (known: {', '.join(METHODS)})")
    return importlib.import_module(f"qabench.compression.{name}")
