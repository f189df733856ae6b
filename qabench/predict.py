"""Batched span-extraction inference on any SQuAD-format questions with any QA checkpoint."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qabench import checkpoints, devices, models, postprocess
from qabench.batching import pad_batch, sorted_batches
from qabench.data import Example
from qabench.features import WindowSpec, tokenize_examples
from qabench.progress import bar as progress_bar

SETTINGS_FILE = "qabench.json"
DEFAULT_SETTINGS = {"max_length": 384, "stride": 128, "max_question_tokens": 64,
                    "max_answer_tokens": 30, "n_best": 20, "null_threshold": 0.0}


def read_settings(model: str | Path) -> dict:
    """Window and decision settings saved with a checkpoint (defaults for foreign checkpoints)."""
    settings = {**DEFAULT_SETTINGS, "family": "encoder", "options": {}}
    path = Path(checkpoints.resolve(str(model))) / SETTINGS_FILE
    if path.is_file():
        settings.update(json.loads(path.read_text()))
    return settings


def load_model(model: str | Path, device: str = "cpu"):
    """(model, tokenizer, settings) of a checkpoint of any family or variant; foreign checkpoints are encoders.

    The model runs on ``device``, except variants made for one device (int8, qlora), which keep theirs.
    """
    settings = read_settings(model)
    devices.check(device)
    if settings.get("variant", "base") != "base":
        from qabench import compression

        method = compression.method(settings["variant"])
        loaded, tokenizer = method.load(str(model), settings)
        if method.KEEPS_ITS_DEVICE:
            return loaded, tokenizer, settings
    else:
        loaded, tokenizer = models.family(settings["family"]).load(str(model))
    devices.move(loaded, device)
    return loaded, tokenizer, settings


@dataclass
class PredictionResult:
    predictions: dict[str, str]
    na_probs: dict[str, float]
    answers: dict[str, postprocess.Answer]
    threshold: float
    stats: dict = field(default_factory=dict)


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
            threshold: float | None = None, precision: str = "fp32", progress: bool = True,
            abstain_share: float | None = None) -> PredictionResult:
    """Tokenize into windows, run the model length-sorted, and pick the best answer per question.

    The abstain threshold is ``threshold``, else the model's own (chosen on held-out training
    articles); with ``abstain_share`` it is the one that abstains on that share of ``examples``.
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
    return PredictionResult({qid: postprocess.decide(answer, share_threshold) for qid, answer in result.answers.items()},
                            result.na_probs, result.answers, share_threshold, result.stats)


def _predict_spans(model, model_family, tokenizer, examples: list[Example], settings: dict, batch_size: int,
                   threshold: float | None, precision: str, progress: bool) -> PredictionResult:
    threshold = settings["null_threshold"] if threshold is None else threshold
    spec = WindowSpec(settings["max_length"], settings["stride"], settings["max_question_tokens"])
    t0 = time.perf_counter()
    features = tokenize_examples(examples, tokenizer, spec)
    t1 = time.perf_counter()
    logits = window_logits(model, model_family.span_logits, features, tokenizer.pad_token_id, batch_size, precision, progress)
    t2 = time.perf_counter()
    windows_by_example: dict[int, list[dict]] = {}
    for row, (start, end) in zip(features.itertuples(index=False), logits):
        windows_by_example.setdefault(row.example_index, []).append(
            {"start_logits": start, "end_logits": end, "offset_start": row.offset_start, "offset_end": row.offset_end})
    answers, predictions, na_probs = {}, {}, {}
    for index, example in enumerate(examples):
        answer = postprocess.answer_question(example.context, windows_by_example[index],
                                             settings["n_best"], settings["max_answer_tokens"])
        answers[example.id] = answer
        predictions[example.id] = postprocess.decide(answer, threshold)
        na_probs[example.id] = answer.na_prob
    t3 = time.perf_counter()
    stats = {
        "questions": len(examples), "windows": len(features),
        "tokens": int(features["input_ids"].map(len).sum()),
        "tokenize_s": t1 - t0, "model_s": t2 - t1, "postprocess_s": t3 - t2, "total_s": t3 - t0,
        "questions_per_s": len(examples) / (t3 - t0), "batch_size": batch_size, "precision": precision,
        "threads": torch.get_num_threads(),
    }
    return PredictionResult(predictions, na_probs, answers, threshold, stats)
