"""A whole training step of the pipeline: build, train, tune the abstain threshold, save atomically."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from qabench import devices, metrics, models, train
from qabench.data import Example
from qabench.io import atomic_dir, write_json
from qabench.predict import DEFAULT_SETTINGS, SETTINGS_FILE, predict

log = logging.getLogger(__name__)


def tune_threshold(model, tokenizer, holdout: list[Example], settings: dict, batch_size: int,
                   precision: str) -> tuple[float, dict]:
    """The na-prob threshold that maximises F1 on held-out training articles (never the eval sets)."""
    result = predict(model, tokenizer, holdout, settings, batch_size=batch_size, threshold=0.0, precision=precision)
    scores = metrics.evaluate(holdout, result.predictions, result.na_probs, na_prob_thresh=0.0)
    return float(scores["best_f1_thresh"]), scores


def span_or_family_loss(family: str, model, tokenizer, features):
    """The training loss of ``model`` on feature rows: span cross-entropy, or the family's own (t5)."""
    model_family = models.family(family)
    if family in models.SPAN_FAMILIES:
        return train.span_batch_loss(model, model_family.span_logits, features, tokenizer.pad_token_id)
    return model_family.batch_loss(model, tokenizer, features)


def add_threshold(model, tokenizer, holdout: list[Example], settings: dict, batch_size: int,
                  precision: str) -> dict | None:
    """Store the abstain threshold chosen on held-out questions in ``settings``; return the held-out scores."""
    if not holdout:
        settings.update(threshold_source="default 0 (no held-out set)")
        return None
    threshold, scores = tune_threshold(model, tokenizer, holdout, settings, batch_size, precision)
    settings.update(null_threshold=threshold, threshold_source=f"best F1 on {len(holdout)} held-out questions")
    log.info("abstain threshold %.3f (held-out F1 %.2f at threshold 0, %.2f at the tuned threshold)",
             threshold, scores["f1"], scores["best_f1"])
    return scores


def parameter_counts(model) -> dict:
    return {"params": sum(p.numel() for p in model.parameters()),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def save_model_dir(out_dir: str | Path, save: Callable[[Path], None], settings: dict, record: dict,
                   state_dir: str | Path | None = None) -> None:
    """Write a model directory atomically: weights (``save``), qabench.json settings, training.json record."""
    with atomic_dir(out_dir) as tmp:
        save(tmp)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        write_json(tmp / "training.json", record)
        if state_dir is not None:
            train.finish(state_dir, tmp)


def run(*, family: str, checkpoint: str | dict, options: dict, features, holdout: list[Example], window: dict,
        train_settings: train.TrainSettings, out_dir: str | Path, state_dir: str | Path, data_counts: dict,
        predict_batch_size: int = 64, device: str = "cpu") -> dict | None:
    """Build, train (on ``device``), tune the threshold and save; under several training processes
    only rank 0 does the last two, and the others return None."""
    model_family = models.family(family)
    model, tokenizer, origin = model_family.build(checkpoint, train_settings.seed, options)
    counts = parameter_counts(model)
    devices.move(model, device)
    stats = train.train(model, features, span_or_family_loss(family, model, tokenizer, features), train_settings,
                        state_dir)
    if train.process_rank()[0] > 0:
        return None
    settings = {**DEFAULT_SETTINGS, **window, "family": family, "variant": "base", "origin": origin,
                "checkpoint": checkpoint, "options": options}
    # the precision training resolved to, so an emulated bf16 is not warned about a second time
    holdout_scores = add_threshold(model, tokenizer, holdout, settings, predict_batch_size, stats["precision"])
    model.to("cpu")
    record = {**stats, **counts, "device": device, "settings": asdict(train_settings), "data": data_counts,
              "holdout_scores": holdout_scores}
    save_model_dir(out_dir, lambda tmp: model_family.save(model, tokenizer, tmp), settings, record, state_dir)
    return settings
