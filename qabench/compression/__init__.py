"""Compressed variants of a trained base model: the contract every method implements, and the registry.

A config's compression method names an entry of ``METHODS``. Each entry says which module holds the
method, which family capabilities (``qabench.models.CAPABILITIES``) it needs, and whether its
variant runs only where it was made; reading the registry imports no torch. Each module offers

    METHOD: str                       the method's name
    make(base_dir, out_dir, *, options, seed, data, state_dir, variant=None) -> None
        builds the variant named ``variant`` (None: the method's name) from the fine-tuned base in
        ``base_dir`` (a directory written by qabench.finetune) and writes a complete model directory
        with qabench.model_dir.write: weights, qabench.json (qabench.model_dir.variant_settings: the
        base's settings plus method, variant name, base and the method's options) and training.json
        (params, trainable_params, training wall time if it trained).
        ``data`` is a TrainingData (features, examples) for methods that train, else unused.
    load(model_dir, settings) -> (model, tokenizer)   ready for qabench.predict.predict, eval mode

qabench.model_dir.load_model dispatches on qabench.json's "method" ("base" goes to the family).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import pandas as pd

from qabench import models
from qabench.data import Example
from qabench.errors import InputError

@dataclass(frozen=True)
class Registration:
    module: str                     # the module that makes and loads the variant
    requires: frozenset[str]        # the family capabilities it needs (qabench.models.CAPABILITIES)
    keeps_its_device: bool          # whether the variant runs only where it was made (int8, qlora: on the
                                    # device of their kernels; onnx: in ONNX Runtime on the CPU) rather than
                                    # on the device predict asks for


METHODS: dict[str, Registration] = {
    "pruned": Registration("qabench.compression.pruned", frozenset({"encoder_layers"}), False),
    "distilled": Registration("qabench.compression.distilled", frozenset({"encoder_layers"}), False),
    "lora": Registration("qabench.compression.lora", frozenset({"adapters"}), False),
    "int8": Registration("qabench.compression.int8", frozenset(), True),
    "qlora": Registration("qabench.compression.qlora", frozenset({"adapters"}), True),
    "onnx": Registration("qabench.compression.onnx", frozenset({"export"}), True),
}


def applies(method_name: str, family: str) -> bool:
    """Whether ``method_name`` applies to models of ``family``."""
    return METHODS[method_name].requires <= models.capabilities(family)


def families(method_name: str) -> list[str]:
    """The registered families ``method_name`` applies to."""
    return [family for family in models.FAMILIES if applies(method_name, family)]


def check_applies(method_name: str, family: str, where: object) -> None:
    if not applies(method_name, family):
        raise InputError(where, f"{method_name} does not apply to the {family} family (it applies to "
                                f"{', '.join(families(method_name))})")


def keeps_its_device(method_name: str) -> bool:
    return METHODS[method_name].keeps_its_device


@dataclass
class TrainingData:
    features: pd.DataFrame            # the model's tokenized training windows (as for the base)
    examples: list[Example]           # the examples they came from

    def counts(self) -> dict:
        """What a method trained on, for its training.json (the summary's "N training questions")."""
        return {"questions": len(self.examples), "windows": len(self.features)}


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
    return importlib.import_module(METHODS[name].module)
