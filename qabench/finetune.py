"""A whole training step of the pipeline: build, train, tune the abstain threshold, save atomically."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from qabench import metrics, models, train
from qabench.data import Example
from qabench.io import write_json
from qabench.predict import DEFAULT_SETTINGS, SETTINGS_FILE, predict

log = logging.getLogger(__name__)


def tune_threshold(model, tokenizer, holdout: list[Example], settings: dict, batch_size: int,
                   precision: str) -> tuple[float, dict]:
    """The na-prob threshold that maximises F1 on held-out training articles (never the eval sets)."""
    result = predict(model, tokenizer, holdout, settings, batch_size=batch_size, threshold=0.0, precision=precision)
    scores = metrics.evaluate(holdout, result.predictions, result.na_probs, na_prob_thresh=0.0)
    return float(scores["best_f1_thresh"]), scores


def run(*, family: str, checkpoint: str | dict, options: dict, features, holdout: list[Example], window: dict,
        train_settings: train.TrainSettings, out_dir: str | Path, state_dir: str | Path, data_counts: dict,
        predict_batch_size: int = 64) -> dict:
    model_family = models.family(family)
    model, tokenizer, origin = model_family.build(checkpoint, train_settings.seed, options)
    if family in models.SPAN_FAMILIES:
        batch_loss = train.span_batch_loss(model, model_family.span_logits, features, tokenizer.pad_token_id)
    else:
        batch_loss = model_family.batch_loss(model, tokenizer, features)
    stats = train.train(model, features, batch_loss, train_settings, state_dir)
    settings = {**DEFAULT_SETTINGS, **window, "family": family, "origin": origin, "options": options}
    if holdout:
        threshold, holdout_scores = tune_threshold(model, tokenizer, holdout, settings, predict_batch_size,
                                                   train_settings.precision)
        settings.update(null_threshold=threshold, threshold_source=f"best F1 on {len(holdout)} held-out questions")
        log.info("abstain threshold %.3f (held-out F1 %.2f at threshold 0, %.2f at the tuned threshold)",
                 threshold, holdout_scores["f1"], holdout_scores["best_f1"])
    else:
        holdout_scores = None
        settings.update(threshold_source="default 0 (no held-out set)")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model_family.save(model, tokenizer, tmp)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        params = sum(p.numel() for p in model.parameters())
        write_json(tmp / "training.json", {
            **stats, "params": params, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "settings": asdict(train_settings), "data": data_counts, "holdout_scores": holdout_scores,
        })
        train.finish(state_dir, tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return settings
