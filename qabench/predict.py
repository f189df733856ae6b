"""Batched span-extraction inference on any SQuAD-format questions with any QA checkpoint."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import numpy as np
import torch

from qabench import checkpoints, compression, devices, models, postprocess
from qabench.batching import pad_batch, sorted_batches
from qabench.data import Example
from qabench.errors import InputError
from qabench.features import WindowSpec, tokenize_examples
from qabench.io import first_line, read_json
from qabench.postprocess import PredictionResult
from qabench.progress import bar as progress_bar

log = logging.getLogger(__name__)

SETTINGS_FILE = "qabench.json"
DEFAULT_SETTINGS = {"max_length": 384, "stride": 128, "max_question_tokens": 64,
                    "max_answer_tokens": 30, "n_best": 20}


# files that say which family a saved directory holds (config.json's model_type says t5 or encoder)
FAMILY_MARKERS = {"lstm_config.json": "lstm", "mamba.json": "mamba"}
T5_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5")
NOT_ENCODER_MODEL_TYPES = (*T5_MODEL_TYPES, "mamba", "mamba2")
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
    for marker, family in FAMILY_MARKERS.items():
        if (model_dir / marker).is_file():
            return family
    config = model_dir / "config.json"
    if config.is_file():
        fields = read_json(config)
        model_type = fields.get("model_type") if isinstance(fields, dict) else None
        if isinstance(model_type, str):
            return "t5" if model_type in T5_MODEL_TYPES else (None if model_type in NOT_ENCODER_MODEL_TYPES
                                                               else "encoder")
    return None


def read_settings(model: str | Path) -> dict:
    """Window and decision settings saved with a checkpoint (defaults for foreign checkpoints), checked:
    a damaged or contradictory qabench.json, or an empty directory, is one InputError."""
    settings = {**DEFAULT_SETTINGS, "family": "encoder", "options": {}}
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


def position_limit(config) -> int | None:
    """How many tokens an encoder with this (Hugging Face) config takes: its position table's size
    (RoBERTa-style tables start after the padding index), or None when it has no such limit."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "data2vec-text", "longformer"):
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


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
    if settings["family"] == "encoder":
        saved = (Path(checkpoints.resolve(str(model))) / SETTINGS_FILE).is_file()
        settings = fit_window(settings, position_limit(getattr(loaded, "config", None)), model, saved)
    if settings.get("variant", "base") != "base" and compression.method(settings["variant"]).KEEPS_ITS_DEVICE:
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


def window_logits(model, span_logits, features, pad_id: int, batch_size: int, precision: str = "fp32",
                  progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Start/end logits (float32, unpadded) for every feature row, in row order."""
    lengths = features["input_ids"].map(len).to_numpy()
    ids = features["input_ids"].tolist()
    types = features["token_type_ids"].tolist()
    out: list = [None] * len(features)
    device_type = devices.model_device(model).type
    autocast = devices.autocast(device_type, devices.resolve_precision(precision, device_type))
    model.eval()
    with torch.inference_mode(), autocast:
        for batch in progress_bar(sorted_batches(lengths, batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            inputs = pad_batch([ids[i] for i in batch], [types[i] for i in batch], pad_id)
            start, end = span_logits(model, inputs)
            start, end = start.float().numpy(), end.float().numpy()
            for row, i in enumerate(batch):
                out[i] = (start[row, : lengths[i]], end[row, : lengths[i]])
    return out


def predict(model, tokenizer, examples: list[Example], settings: dict, batch_size: int = 64,
            threshold: float = 0.0, precision: str = "fp32", progress: bool = True,
            abstain_share: float | None = None) -> PredictionResult:
    """Tokenize into windows, run the model length-sorted, and pick the best answer per question.

    A question is abstained on ("") when its na_prob exceeds ``threshold`` (see qabench.threshold);
    with ``abstain_share`` the threshold is the one that abstains on that share of ``examples``.
    """
    model_family = models.family(settings.get("family", "encoder"))
    if hasattr(model_family, "span_logits"):
        result = _predict_spans(model, model_family, tokenizer, examples, settings, batch_size, threshold, precision,
                                progress)
    else:
        result = model_family.predict(model, tokenizer, examples, settings, batch_size=batch_size,
                                      threshold=threshold, precision=precision, progress=progress)
    if abstain_share is None:
        return result
    share_threshold = postprocess.threshold_for_abstain_share(result.na_probs.values(), abstain_share)
    return PredictionResult.from_answers(result.answers, share_threshold, result.stats)


def _predict_spans(model, model_family, tokenizer, examples: list[Example], settings: dict, batch_size: int,
                   threshold: float, precision: str, progress: bool) -> PredictionResult:
    spec = WindowSpec(settings["max_length"], settings["stride"], settings["max_question_tokens"])
    t0 = time.perf_counter()
    features = tokenize_examples(examples, tokenizer, spec)
    t1 = time.perf_counter()
    logits = window_logits(model, model_family.span_logits, features, tokenizer.pad_token_id, batch_size, precision, progress)
    t2 = time.perf_counter()
    candidates = ((row.example_index, postprocess.window_candidate(
        examples[row.example_index].context, start, end, row.offset_start, row.offset_end, settings["n_best"],
        settings["max_answer_tokens"])) for row, (start, end) in zip(features.itertuples(index=False), logits))
    answers = postprocess.answer_questions([example.id for example in examples], candidates)
    t3 = time.perf_counter()
    stats = postprocess.run_stats(len(examples), len(features), int(features["input_ids"].map(len).sum()),
                                  (t0, t1, t2, t3), batch_size, precision, torch.get_num_threads())
    return PredictionResult.from_answers(answers, threshold, stats)
