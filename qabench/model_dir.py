"""The model directory: its files, and its settings file ``qabench.json``, which every writer and reader
goes through.

A model directory holds the family's (or the method's) weight files, the tokenizer, ``qabench.json``
and ``training.json``. ``qabench.json`` (format 2) says

    format        2
    family        the model family (qabench.models.FAMILIES)
    method        "base" for a trained model, else the compression method that made it (qabench.compression.METHODS)
    variant       the variant's own name: "base", or the config's compression key (int8_inductor, ...)
    base          (variants) the base model directory it was made from
    compression   (variants) the method's options
    checkpoint, origin, options    where the weights came from and the family's options
    max_length, stride, max_question_tokens, max_answer_tokens, n_best    window and decision settings

Format 1 (no ``format`` key) named the method in ``variant``; it is read as format 2 with that method.
A directory without ``qabench.json`` but with a Hugging Face ``config.json`` is a foreign checkpoint
of the default family, read with the default settings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from qabench import checkpoints, compression, devices, machine, models, train
from qabench.errors import InputError
from qabench.io import atomic_dir, first_line, read_json, write_json
from qabench.names import NAME
from qabench.windows import WindowSpec

log = logging.getLogger(__name__)

SETTINGS_FILE = "qabench.json"
TRAINING_FILE = "training.json"
FORMAT_VERSION = 2
BASE = "base"  # the method and variant name of a trained (not compressed) model
DEFAULT_SETTINGS = {"max_length": 384, "stride": 128, "max_question_tokens": 64,
                    "max_answer_tokens": 30, "n_best": 20}
POSITIVE_INT_SETTINGS = ("max_length", "max_question_tokens", "n_best", "max_answer_tokens")
# files of a family's saved directory that hold weights (write_architecture keeps the rest)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pt2", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack")


# ----------------------------------------------------------------------------------------------- writing


def base_settings(family: str, window: dict, *, checkpoint, origin: str, options: dict) -> dict:
    """``qabench.json`` of a trained model."""
    return {**DEFAULT_SETTINGS, **window, "format": FORMAT_VERSION, "family": family, "method": BASE,
            "variant": BASE, "origin": origin, "checkpoint": checkpoint, "options": options}


def variant_settings(base: dict, base_dir: str | Path, method: str, variant: str | None, method_options: dict,
                     **extra) -> dict:
    """``qabench.json`` of a variant made by ``method`` from the base whose settings are ``base``;
    ``variant`` is its own name (None: the method's); ``extra`` replaces base settings the variant
    changes (its origin; a student of another family: family, checkpoint, options)."""
    return {**base, **extra, "format": FORMAT_VERSION, "method": method, "variant": variant or method,
            "base": str(base_dir), "compression": {"method": method, **method_options}}


def method_of(settings: dict) -> str:
    return settings.get("method", BASE)


def require_base(settings: dict, base_dir: str | Path, method: str) -> None:
    """A method starts from a trained base model, not from another variant."""
    if method_of(settings) != BASE:
        raise InputError(base_dir, f"{method} starts from a base model, not a {settings['variant']} variant")


def write(out_dir: str | Path, save: Callable[[Path], None], settings: dict, record: dict,
          state_dir: str | Path | None = None) -> None:
    """Write a model directory atomically: weights (``save``), qabench.json settings, training.json record
    (and, with ``state_dir``, the training's snapshots and log, see qabench.train.finish). The record
    gains the machine it was made on, so its times say which CPU they came from."""
    with atomic_dir(out_dir) as tmp:
        save(tmp)  # may complete ``record`` (int8 and onnx add the size they saved)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        made_on = machine.describe(torch.get_num_threads(), str(record.get("device", "cpu")))
        write_json(tmp / TRAINING_FILE, {**record, "machine": made_on})
        if state_dir is not None:
            train.finish(state_dir, tmp)


def _is_weight_file(path: Path) -> bool:
    return path.name.endswith(WEIGHT_SUFFIXES) or path.name.endswith(".index.json")


def write_architecture(family: str, model, tokenizer, out_dir: str | Path) -> None:
    """What the family saves for the float ``model``, less its weight files: the configuration the
    family's ``architecture`` rebuilds the model from, and the tokenizer (for variants that store their
    weights in their own form: int8, qlora)."""
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="architecture-") as tmp:
        models.family(family).save(model, tokenizer, tmp)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file() and not _is_weight_file(path):
                target = out_dir / path.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)


# ----------------------------------------------------------------------------------------------- reading


def _upgrade(settings: dict) -> dict:
    """Format 1 named the method in ``variant``."""
    if "format" not in settings:
        settings = {**settings, "format": FORMAT_VERSION, "method": settings.get("variant", BASE)}
    return settings


def _check_settings(settings: dict, path: Path) -> None:
    """A qabench.json's values: known format, family and method, a usable variant name, sensible window
    and decision settings."""
    if settings.get("format") != FORMAT_VERSION:
        raise InputError(path, f"format {settings.get('format')!r} is not one this qabench reads ({FORMAT_VERSION})")
    if settings.get("family") not in models.FAMILIES:
        raise InputError(path, f"unknown family {settings.get('family')!r} (known: {', '.join(models.FAMILIES)})")
    method = method_of(settings)
    if method != BASE and method not in compression.METHODS:
        raise InputError(path, f"unknown method {method!r} (known: {BASE}, {', '.join(compression.METHODS)})")
    variant = settings.get("variant", BASE)
    if not isinstance(variant, str) or not NAME.fullmatch(variant) or (variant == BASE) != (method == BASE):
        raise InputError(path, f"variant name {variant!r} is not one a {method} model can have")
    for key in POSITIVE_INT_SETTINGS:
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(path, f"{key} must be a positive integer, found {value!r}")
    stride = settings.get("stride")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 0:
        raise InputError(path, f"stride must be a non-negative integer, found {stride!r}")
    if not isinstance(settings.get("options", {}), dict):
        raise InputError(path, "options must be a JSON object")


def saved_family(model_dir: Path) -> str | None:
    """The family the files of ``model_dir`` hold, where they say (None: they do not, e.g. onnx or qlora)."""
    for name in models.FAMILIES:
        if models.family(name).recognizes(model_dir):
            return name
    return None


def read_settings(model: str | Path) -> dict:
    """Window and decision settings saved with a checkpoint (defaults for foreign checkpoints), checked:
    a damaged or contradictory qabench.json, or an empty directory, is one InputError."""
    settings = {**DEFAULT_SETTINGS, "format": FORMAT_VERSION, "family": models.DEFAULT_FAMILY, "method": BASE,
                "variant": BASE, "options": {}}
    root = Path(checkpoints.resolve(str(model)))
    path = root / SETTINGS_FILE
    if root.is_dir() and not path.is_file():
        if not any(root.iterdir()):
            raise InputError(root, "empty directory, not a model directory (train one, or point at a directory "
                                   "with qabench.json or a Hugging Face config.json)")
        if not (root / "config.json").is_file():
            raise InputError(root, "not a model directory (no qabench.json, and no config.json of a Hugging "
                                   "Face checkpoint)")
    if path.is_file():
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise InputError(path, f"expected a JSON object, found {type(saved).__name__}")
        settings.update(_upgrade(saved))
    _check_settings(settings, path)
    if root.is_dir():
        found = saved_family(root)
        if found is not None and found != settings["family"]:
            raise InputError(path, f"says family {settings['family']!r}, but the weights in {root} are "
                                   f"a{'n' if found[0] in 'aeiou' else ''} {found} model")
    return settings


def fit_window(settings: dict, limit: int | None, model: str | Path, saved: bool) -> dict:
    """A foreign checkpoint's default window (384 tokens) cut to what its position table takes, stride
    and question budget scaled alike, with a warning; a saved model (``saved``: it has a qabench.json)
    whose window is too long is refused."""
    if limit is None or settings["max_length"] <= limit:
        return settings
    if saved:
        raise InputError(Path(str(model)) / SETTINGS_FILE, f"max_length {settings['max_length']} exceeds the "
                                                           f"model's {limit} positions")
    scale = limit / settings["max_length"]
    fitted = {**settings, "max_length": limit, "stride": max(1, int(settings["stride"] * scale)),
              "max_question_tokens": max(1, int(settings["max_question_tokens"] * scale))}
    WindowSpec(fitted["max_length"], fitted["stride"], fitted["max_question_tokens"]).validate(str(model))
    log.warning("%s takes at most %d tokens: windows of %d tokens (stride %d, questions up to %d tokens) instead "
                "of the default %d", model, limit, fitted["max_length"], fitted["stride"],
                fitted["max_question_tokens"], settings["max_length"])
    return fitted


def check_weight_files(model_dir: Path) -> None:
    """Every safetensors file of the directory has a readable header whose tensors fit the file (a cheap
    check, before any library starts loading and printing progress): a truncated, garbage or planted
    file is one InputError naming it."""
    for path in sorted(model_dir.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - SafetensorError, OSError
            raise InputError(path, f"damaged weights, not a readable safetensors file ({first_line(err)})") from None


# ----------------------------------------------------------------------------------------------- loading


def load_model(model: str | Path, device: str = "cpu"):
    """(model, tokenizer, settings) of a checkpoint of any family or variant; foreign checkpoints are encoders.

    The model runs on ``device``, except variants made for one device (int8, qlora), which keep theirs.
    Any failure to load a model directory is one InputError naming it.
    """
    settings = read_settings(model)
    devices.check(device)
    root = Path(checkpoints.resolve(str(model)))
    if root.is_dir():
        check_weight_files(root)
    try:
        with _no_progress_bars():
            loaded, tokenizer = _load(model, settings)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged directory fails in any of the libraries that read it
        if not root.is_dir():
            raise
        raise InputError(model, f"cannot load this {settings['family']} {settings['variant']} model "
                                f"({type(err).__name__}: {first_line(err)})") from None
    saved = (root / SETTINGS_FILE).is_file()
    settings = fit_window(settings, models.family(settings["family"]).position_limit(loaded), model, saved)
    if method_of(settings) != BASE and compression.keeps_its_device(method_of(settings)):
        return loaded, tokenizer, settings
    devices.move(loaded, device)
    return loaded, tokenizer, settings


@contextlib.contextmanager
def _no_progress_bars():
    """transformers draws a "Loading weights" bar per model it reads: noise in a job's log, and on a
    damaged directory lines before the one error line."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load(model: str | Path, settings: dict):
    """The loader the settings name: the method's for a variant, the family's for a base."""
    if method_of(settings) != BASE:
        return compression.method(method_of(settings)).load(str(model), settings)
    return models.family(settings["family"]).load(str(model))
