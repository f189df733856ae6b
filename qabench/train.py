"""Fine-tuning for span extraction: length-grouped batches, checkpoints, exact resume."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from qabench.batching import grouped_training_batches, pad_batch
from qabench.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: float = 2.0
    learning_rate: float = 5e-5
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 13
    precision: str = "fp32"  # or "bf16" (autocast; fast on CPUs with AMX and on GPUs)
    save_every_steps: int = 200
    log_every_steps: int = 20


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def span_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    loss = torch.nn.functional.cross_entropy
    return (loss(start_logits.float(), start_positions) + loss(end_logits.float(), end_positions)) / 2


def span_batch_loss(model, span_logits, features, pad_id: int):
    """The loss of a span family's ``model`` on some feature rows, and how many real tokens it saw."""
    ids = features["input_ids"].tolist()
    types = features["token_type_ids"].tolist()
    starts = torch.tensor(features["start_position"].to_numpy(), dtype=torch.long)
    ends = torch.tensor(features["end_position"].to_numpy(), dtype=torch.long)

    def batch_loss(batch: np.ndarray) -> tuple[torch.Tensor, int]:
        inputs = pad_batch([ids[i] for i in batch], [types[i] for i in batch], pad_id)
        start_logits, end_logits = span_logits(model, inputs)
        return span_loss(start_logits, end_logits, starts[batch], ends[batch]), int(inputs["attention_mask"].sum())
    return batch_loss


def _linear_schedule(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_state(state_dir: Path, model, optimizer, scheduler, step: int) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "step": step, "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(state_dir / "checkpoint.pt") as tmp:
        torch.save(state, tmp)


def train(model, features, batch_loss, settings: TrainSettings, state_dir: str | Path, progress: bool = True) -> dict:
    """Train ``model`` in place on feature rows; resumes from ``state_dir`` if a checkpoint is there.

    ``batch_loss(row_indices) -> (loss, tokens)`` is the family's loss of ``model`` on some rows.
    Returns run statistics. The loss log is ``state_dir/loss.jsonl`` (one line per logged step).
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(settings.seed)
    lengths = features["input_ids"].map(len).to_numpy()
    batches_per_epoch = math.ceil(len(features) / settings.batch_size)
    total_steps = max(1, round(settings.epochs * batches_per_epoch))

    trainable = [p for p in model.parameters() if p.requires_grad]
    no_decay = [p for p in trainable if p.ndim < 2]
    decay = [p for p in trainable if p.ndim >= 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
    )
    scheduler = _linear_schedule(optimizer, int(settings.warmup_ratio * total_steps), total_steps)

    step = 0
    checkpoint = state_dir / "checkpoint.pt"
    loss_log = state_dir / "loss.jsonl"
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        log.info("resuming from step %d of %d (%s)", step, total_steps, checkpoint)
        if loss_log.is_file():  # drop entries logged after the checkpoint
            kept = [l for l in loss_log.read_text().splitlines() if json.loads(l)["step"] <= step]
            loss_log.write_text("".join(k + "\n" for k in kept))
    else:
        loss_log.write_text("")
        log.info("training from scratch: %d windows, %d steps", len(features), total_steps)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.precision == "bf16")
    model.train()
    t0 = time.perf_counter()
    tokens_seen = 0
    running = []
    epoch_batches: dict[int, list[np.ndarray]] = {}
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not progress, mininterval=10)
    with open(loss_log, "a") as log_file:
        while step < total_steps:
            epoch, position = divmod(step, batches_per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: grouped_training_batches(lengths, settings.batch_size, settings.seed, epoch)}
            batch = epoch_batches[epoch][position]
            with autocast:
                loss, tokens = batch_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += tokens
            running.append(loss.item())
            bar.update(1)
            if step % settings.log_every_steps == 0 or step == total_steps:
                entry = {"step": step, "epoch": round(step / batches_per_epoch, 4), "loss": float(np.mean(running)),
                         "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.perf_counter() - t0, 2)}
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
                bar.set_postfix(loss=f"{entry['loss']:.3f}")
                running = []
            if step % settings.save_every_steps == 0 and step < total_steps:
                _save_state(state_dir, model, optimizer, scheduler, step)
    bar.close()
    model.eval()
    wall = time.perf_counter() - t0
    return {"steps": total_steps, "windows": len(features), "epochs": settings.epochs,
            "wall_s_this_run": round(wall, 1), "tokens_this_run": tokens_seen,
            "tokens_per_s": round(tokens_seen / wall, 1) if wall > 0 else None}


def finish(state_dir: str | Path, out_dir: str | Path) -> None:
    """Keep the loss log with the model and drop the resume checkpoint."""
    state_dir = Path(state_dir)
    if (state_dir / "loss.jsonl").is_file():
        shutil.copyfile(state_dir / "loss.jsonl", Path(out_dir) / "loss.jsonl")
    shutil.rmtree(state_dir, ignore_errors=True)
