"""A whole training step of the pipeline: build, train, save atomically (the abstain threshold is
chosen afterwards, by qabench.threshold)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from qabench import devices, model_dir, models, train
from qabench.efficiency import parameter_counts


def run(*, family: str, checkpoint: str | dict, options: dict, features, window: dict,
        train_settings: train.TrainSettings, out_dir: str | Path, state_dir: str | Path, data_counts: dict,
        device: str = "cpu") -> dict | None:
    """Build, train (on ``device``) and save; under several training processes only rank 0 saves,
    and the others return None."""
    model_family = models.family(family)
    model, tokenizer, origin = model_family.build(checkpoint, train_settings.seed, options)
    counts = parameter_counts(model)
    devices.move(model, device)
    stats = train.train(model, features, model_family.batch_loss(model, tokenizer, features), train_settings, state_dir,
                        new_parameters=model_family.new_parameters(model))
    if train.process_rank()[0] > 0:
        return None
    settings = model_dir.base_settings(family, window, checkpoint=checkpoint, origin=_line_origin(checkpoint, origin),
                                       options=options)
    model.to("cpu")
    record = {**stats, **counts, "device": device, "settings": asdict(train_settings), "data": data_counts}
    model_dir.write(out_dir, lambda tmp: model_family.save(model, tokenizer, tmp), settings, record, state_dir)
    return settings


def _line_origin(checkpoint: str | dict, origin: str) -> str:
    """A model trained further from a model directory of ours keeps where that one's weights came from
    (the summary's init column): "BERT2BERT warm start from ...; trained further from results/models/..."."""
    if isinstance(checkpoint, str) and (Path(checkpoint) / model_dir.SETTINGS_FILE).is_file():
        earlier = model_dir.read_settings(checkpoint).get("origin")
        if earlier:
            return f"{earlier}; trained further from {checkpoint}"
    return origin
