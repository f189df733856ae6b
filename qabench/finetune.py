"""A whole training step of the pipeline: build, train, save atomically (the abstain threshold is
chosen afterwards, by qabench.threshold)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from qabench import devices, models, train
from qabench.efficiency import parameter_counts
from qabench.io import atomic_dir, write_json
from qabench.predict import DEFAULT_SETTINGS, SETTINGS_FILE


def save_model_dir(out_dir: str | Path, save: Callable[[Path], None], settings: dict, record: dict,
                   state_dir: str | Path | None = None) -> None:
    """Write a model directory atomically: weights (``save``), qabench.json settings, training.json record."""
    with atomic_dir(out_dir) as tmp:
        save(tmp)
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        write_json(tmp / "training.json", record)
        if state_dir is not None:
            train.finish(state_dir, tmp)


def run(*, family: str, checkpoint: str | dict, options: dict, features, window: dict,
        train_settings: train.TrainSettings, out_dir: str | Path, state_dir: str | Path, data_counts: dict,
        device: str = "cpu") -> dict | None:
    """Build, train (on ``device``) and save; under several training processes only rank 0 saves,
    and the others return None."""
    model_family = models.family(family)
    model, tokenizer, origin = model_family.build(checkpoint, train_settings.seed, options)
    counts = parameter_counts(model)
    devices.move(model, device)
    stats = train.train(model, features, model_family.batch_loss(model, tokenizer, features), train_settings, state_dir)
    if train.process_rank()[0] > 0:
        return None
    settings = {**DEFAULT_SETTINGS, **window, "family": family, "variant": "base", "origin": origin,
                "checkpoint": checkpoint, "options": options}
    model.to("cpu")
    record = {**stats, **counts, "device": device, "settings": asdict(train_settings), "data": data_counts}
    save_model_dir(out_dir, lambda tmp: model_family.save(model, tokenizer, tmp), settings, record, state_dir)
    return settings
