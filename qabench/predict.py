"""Batched span-extraction inference on any SQuAD-format questions with any QA checkpoint."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch

from qabench import checkpoints, compression, devices, models, postprocess
from qabench.data import Example
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.io import first_line, read_json
from qabench.postprocess import PredictionResult

log = logging.getLogger(__name__)

SETTINGS_FILE = "qabench.json"
DEFAULT_SETTINGS = {"max_length": 384, "stride": 128, "max_question_tokens": 64,
                    "max_answer_tokens": 30, "n_best": 20}


POSITIVE_INT_SETTINGS = ("max_length", "max_question_tokens", "n_best", "max_answer_tokens")


def _check_settings(settings: dict, path: Path) -> None:
    """A qabench.json's values: known family and variant, sensible window and decision settings."""
    if settings.get("family") not in models.FAMILIES:
        raise InputError(path, f"unknown family {settings.get('family')!r} (known: {', '.join(models.FAMILIES)})")
    variant = settings.get("variant", "base")
    if variant != "base" and variant not in compression.METHODS:
        raise InputError(path, f"unknown variant {variant!r} (known: base, {', '.join(compression.METHODS)})")
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
    settings = {**DEFAULT_SETTINGS, "family": models.DEFAULT_FAMILY, "options": {}}
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
        settings.update(saved)
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
    from safetensors import safe_open

    for path in sorted(model_dir.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as err:  # noqa: BLE001 - SafetensorError, OSError
            raise InputError(path, f"damaged weights, not a readable safetensors file ({first_line(err)})") from None


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
        if not Path(checkpoints.resolve(str(model))).is_dir():
            raise
        raise InputError(model, f"cannot load this {settings['family']} {settings.get('variant', 'base')} model "
                                f"({type(err).__name__}: {first_line(err)})") from None
    saved = (Path(checkpoints.resolve(str(model))) / SETTINGS_FILE).is_file()
    settings = fit_window(settings, models.family(settings["family"]).position_limit(loaded), model, saved)
    if settings.get("variant", "base") != "base" and compression.keeps_its_device(settings["variant"]):
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
    if settings.get("variant", "base") != "base":
        return compression.method(settings["variant"]).load(str(model), settings)
    return models.family(settings["family"]).load(str(model))


def predict(model, tokenizer, examples: list[Example], settings: dict, batch_size: int = 64,
            threshold: float = 0.0, precision: str = "fp32", progress: bool = True,
            abstain_share: float | None = None) -> PredictionResult:
    """Window the questions, run the model, and pick the best answer per question.

    A question is abstained on ("") when its na_prob exceeds ``threshold`` (see qabench.threshold);
    with ``abstain_share`` the threshold is the one that abstains on that share of ``examples``.
    """
    started = time.perf_counter()
    scores = models.family(settings["family"]).score_windows(model, tokenizer, examples, settings, batch_size,
                                                             precision, progress)
    answers = postprocess.answer_questions([example.id for example in examples], scores.candidates)
    stats = postprocess.run_stats(len(examples), scores.windows, scores.tokens,
                                  (started, scores.windowed_at, scores.scored_at, time.perf_counter()), batch_size,
                                  precision, torch.get_num_threads())
    if abstain_share is not None:
        threshold = postprocess.threshold_for_abstain_share([a.na_prob for a in answers.values()], abstain_share)
    return PredictionResult.from_answers(answers, threshold, stats)
