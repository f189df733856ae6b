"""Fine-tuning for span extraction: length-grouped batches, checkpoints, exact resume, several processes."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from qabench import devices
from qabench.batching import grouped_training_batches
from qabench.errors import InputError
from qabench.io import atomic_path, exclusive, first_line
from qabench.progress import bar as progress_bar

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
    precision: str = "fp32"  # or "bf16" (autocast; fast on GPUs and CPUs with AVX-512/AMX), or "auto" (bf16 where fast)
    save_every_steps: int = 200
    log_every_steps: int = 20
    snapshot_every_steps: int | None = None  # keep the weights every N steps, for learning curves
    # learning rate of the layers a pretrained start added (a warm start's new cross-attention); None: learning_rate
    new_weights_learning_rate: float | None = None


def check_settings(settings: TrainSettings, where: str = "training settings") -> None:
    """Numbers a run cannot use are one InputError before anything trains: counts and rates must be
    positive, warmup_ratio a share in [0, 1], weight decay and the gradient norm finite."""
    def number(name: str, integer: bool = False) -> float:
        value = getattr(settings, name)
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise InputError(where, f"{name} must be a finite {'integer' if integer else 'number'}, got {value!r}")
        return value

    rates = ("new_weights_learning_rate",) if settings.new_weights_learning_rate is not None else ()
    for name in ("epochs", "learning_rate", "max_grad_norm", *rates):
        if number(name) <= 0:
            raise InputError(where, f"{name} must be positive, got {getattr(settings, name)!r}")
    for name in ("batch_size", "save_every_steps", "log_every_steps") + (
            ("snapshot_every_steps",) if settings.snapshot_every_steps is not None else ()):
        if number(name, integer=True) < 1:
            raise InputError(where, f"{name} must be a positive integer, got {getattr(settings, name)!r}")
    if not 0 <= number("warmup_ratio") <= 1:
        raise InputError(where, f"warmup_ratio must be between 0 and 1, got {settings.warmup_ratio!r}")
    if number("weight_decay") < 0:
        raise InputError(where, f"weight_decay must not be negative, got {settings.weight_decay!r}")
    number("seed", integer=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def process_rank() -> tuple[int, int]:
    """This process's rank and the number of training processes: (0, 1) unless torch.distributed is up."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def join_processes(device: str) -> str:
    """Join the process group torchrun describes in the environment when it started several processes
    (gloo on the CPU, nccl on GPUs); return the device this process trains on ("cuda" means its own
    GPU, cuda:LOCAL_RANK)."""
    if devices.check(device) == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise InputError("--device", f"training process {local_rank} has no GPU of its own "
                                         f"(torch sees {torch.cuda.device_count()})")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if device == "cpu" else "nccl")
    return device


def _linear_schedule(optimizer, warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_state(state_dir: Path, model, optimizer, scheduler, step: int, rank_rng: list | None = None,
                wall_s: float = 0.0) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "step": step, "torch_rng": torch.get_rng_state(), "wall_s": wall_s,
    }
    if rank_rng is not None:
        state["rank_rng"] = rank_rng
    with atomic_path(state_dir / "checkpoint.pt") as tmp:
        torch.save(state, tmp)


SNAPSHOTS = "snapshots"


def _save_snapshot(state_dir: Path, model, step: int, trained_s: float) -> None:
    """The weights at ``step`` (safetensors; the step and training seconds so far in its metadata)."""
    with atomic_path(state_dir / SNAPSHOTS / f"step-{step:07d}.safetensors") as tmp:
        save_model(model, str(tmp), metadata={"step": str(step), "trained_s": f"{trained_s:.3f}"})


def snapshots(model_dir: str | Path) -> list[dict]:
    """The weight snapshots a training run kept in ``model_dir``, by step: {step, trained_s, path}."""
    found = []
    for path in sorted((Path(model_dir) / SNAPSHOTS).glob("step-*.safetensors")):
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            found.append({"step": int(metadata["step"]), "trained_s": float(metadata["trained_s"]), "path": path})
        except (OSError, KeyError, ValueError, SafetensorError) as err:
            raise InputError(path, f"not a weight snapshot of a training run ({first_line(err)})") from None
    return sorted(found, key=lambda s: s["step"])


def load_snapshot(model, path: str | Path):
    """``model`` (of the architecture the snapshot was taken from) with the snapshot's weights, in eval mode."""
    try:
        load_model(model, str(path), strict=True, device=str(devices.model_device(model)))
    except (OSError, RuntimeError, SafetensorError) as err:
        raise InputError(path, f"does not fit this model ({first_line(err)[:200]})") from None
    return model.eval()


def load_state(checkpoint: Path) -> dict:
    """A resume checkpoint, read as tensors and plain values only (``weights_only``: never unpickles
    anything else, so a planted or foreign file cannot run code); any problem is one InputError."""
    try:
        with warnings.catch_warnings():  # torch warns about a foreign file's pickle protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - torch raises many kinds (UnpicklingError, RuntimeError, EOFError...)
        raise InputError(checkpoint, f"not a readable tensors-only resume state ({type(err).__name__}: "
                                     f"{first_line(err)[:200]}); "
                                     f"delete {checkpoint.parent} to train from the start") from None
    if not isinstance(state, dict):
        raise InputError(checkpoint, f"not a resume state (a {type(state).__name__}); "
                                     f"delete {checkpoint.parent} to train from the start")
    return state


def _loss_entries(loss_log: Path) -> list[dict]:
    """The loss log's entries; a line cut short by a kill is dropped."""
    entries = []
    for line in loss_log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            entries.append(entry)
    return entries


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _gather_rng_states(device: torch.device, world: int) -> list[dict]:
    states = [None] * world
    dist.all_gather_object(states, _rng_state(device))
    return states


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _shared_backward(batch_loss, batch: np.ndarray, params: list, rank: int, world: int,
                     autocast) -> tuple[torch.Tensor, int]:
    """Backward of this rank's share of ``batch``, then gradients summed over the ranks.

    The shares add up to the loss one process computes on the whole batch, so the summed gradient
    is its gradient. A rank with no rows (a short last batch) adds zeros; a parameter that got no
    gradient on any rank keeps none, as in one process. One all-reduce carries the gradients, which
    parameters have one, and the loss and token count; returns the whole batch's loss and tokens.
    """
    rows = batch[rank::world]
    loss, tokens = torch.zeros(()), 0
    if len(rows):
        with autocast:
            loss, tokens = batch_loss(rows, batch)
        loss.backward()
    device = params[0].device
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
                     + [torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device),
                        torch.tensor([loss.item(), tokens], dtype=torch.float32, device=device)])
    dist.all_reduce(flat)
    sizes = [p.numel() for p in params]
    grads, has_grad, totals = flat.split([sum(sizes), len(params), 2])
    for p, grad, got_one in zip(params, grads.split(sizes), has_grad.tolist()):
        p.grad = grad.view_as(p).to(p.dtype) if got_one else None
    return totals[0].cpu(), int(totals[1])


def train(model, features, batch_loss, settings: TrainSettings, state_dir: str | Path, progress: bool = True,
          new_parameters: frozenset[str] = frozenset()) -> dict:
    """Train ``model`` in place on feature rows; resumes from ``state_dir`` if a checkpoint is there.

    ``batch_loss(row_indices) -> (loss, tokens)`` is the family's loss of ``model`` on some rows.
    ``new_parameters`` names the parameters a pretrained start added (``Family.new_parameters``): they
    train at ``settings.new_weights_learning_rate`` where that is set.
    Returns run statistics. The loss log is ``state_dir/loss.jsonl`` (one line per logged step).

    Under torch.distributed (one process per GPU, or gloo processes on a CPU) every process takes
    every ``world``-th row of each batch and calls ``batch_loss(rows, batch)``, which must return the
    rows' share of the loss on the whole ``batch`` (shares sum to it); gradients are summed across
    processes. Batches, steps and the optimizer's updates are those of one process with the same
    settings, equal up to float rounding (dropout draws differ: each process has its own random
    stream). Only rank 0 writes the checkpoint and the loss log; every rank resumes from them.
    """
    check_settings(settings)
    rank, world = process_rank()
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    # one writer of the resume state at a time: a job whose Snakemake was killed may still be stopping
    with exclusive(state_dir) if rank == 0 else contextlib.nullcontext():
        return _train(model, features, batch_loss, settings, state_dir, progress, rank, world, new_parameters)


def _train(model, features, batch_loss, settings: TrainSettings, state_dir: Path, progress: bool, rank: int,
           world: int, new_parameters: frozenset[str]) -> dict:
    seed_everything(settings.seed + rank)
    lengths = features["input_ids"].map(len).to_numpy()
    batches_per_epoch = math.ceil(len(features) / settings.batch_size)
    total_steps = max(1, round(settings.epochs * batches_per_epoch))

    named_trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in named_trainable]
    device = trainable[0].device
    optimizer, scheduler = _optimizer(named_trainable, settings, total_steps, new_parameters)
    step, wall_before = _resume(state_dir, model, optimizer, scheduler, device, rank, world, total_steps,
                               len(features))
    if world > 1:
        with torch.no_grad():  # start every rank from rank 0's weights, as DistributedDataParallel does
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, 0)

    precision = devices.resolve_precision(settings.precision, device.type)
    if settings.precision != precision:
        log.info("precision %s: %s on this %s", settings.precision, precision, device.type)
    autocast = devices.autocast(device.type, precision)
    model.train()
    t0 = time.perf_counter()

    def trained_s() -> float:  # this run's time plus the earlier runs' up to the checkpoint
        return wall_before + time.perf_counter() - t0
    tokens_seen = 0
    running = []
    epoch_batches: dict[int, list[np.ndarray]] = {}
    bar = progress_bar(total=total_steps, initial=step, desc="train", unit="step", disable=not progress or rank > 0)
    with open(state_dir / "loss.jsonl", "a") if rank == 0 else contextlib.nullcontext() as log_file:
        while step < total_steps:
            epoch, position = divmod(step, batches_per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: grouped_training_batches(lengths, settings.batch_size, settings.seed, epoch)}
            loss, tokens = _step(batch_loss, epoch_batches[epoch][position], trainable, optimizer, scheduler,
                                 settings.max_grad_norm, autocast, rank, world)
            step += 1
            tokens_seen += tokens
            running.append(loss.item())
            bar.update(1)
            if step % settings.log_every_steps == 0 or step == total_steps:
                _log_losses(log_file, bar, step, step / batches_per_epoch, running, scheduler.get_last_lr()[0],
                            trained_s())
                running = []
            if step < total_steps:
                _save_progress(state_dir, model, optimizer, scheduler, settings, step, trained_s, device, rank, world)
    bar.close()
    model.eval()
    wall = time.perf_counter() - t0
    return {"steps": total_steps, "windows": len(features), "epochs": settings.epochs, "processes": world,
            "precision": precision,
            "wall_s": round(trained_s(), 1), "wall_s_this_run": round(wall, 1), "tokens_this_run": tokens_seen,
            "tokens_per_s": round(tokens_seen / wall, 1) if wall > 0 else None}


def _optimizer(named_trainable: list, settings: TrainSettings, total_steps: int,
               new_parameters: frozenset[str] = frozenset()):
    """AdamW (no weight decay on biases and norms; the new parameters at ``new_weights_learning_rate``
    where that is set) and the warmup-then-linear-decay schedule, which scales every group alike."""
    rates = {False: settings.learning_rate}
    if settings.new_weights_learning_rate is not None:
        new = [name for name, _ in named_trainable if name in new_parameters]
        if not new:
            raise InputError("training settings", "new_weights_learning_rate is set, but this model has no new "
                                                  "layers to give it (only a warm-started model has them)")
        rates[True] = settings.new_weights_learning_rate
        log.info("%d new parameter tensors train at learning rate %g, the rest at %g",
                 len(new), settings.new_weights_learning_rate, settings.learning_rate)
    groups = []
    for is_new, rate in rates.items():
        members = [p for name, p in named_trainable if (name in new_parameters) == is_new or len(rates) == 1]
        groups += [{"params": [p for p in members if p.ndim >= 2], "weight_decay": settings.weight_decay, "lr": rate},
                   {"params": [p for p in members if p.ndim < 2], "weight_decay": 0.0, "lr": rate}]
    optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate)
    return optimizer, _linear_schedule(optimizer, int(settings.warmup_ratio * total_steps), total_steps)


def _resume(state_dir: Path, model, optimizer, scheduler, device: torch.device, rank: int, world: int,
            total_steps: int, windows: int) -> tuple[int, float]:
    """(step, training seconds before it) of the checkpoint in ``state_dir``, whose model, optimizer,
    schedule and random streams are restored and after whose step the loss log is cut; (0, 0.0) and an
    empty loss log where there is none."""
    checkpoint = state_dir / "checkpoint.pt"
    loss_log = state_dir / "loss.jsonl"
    if not checkpoint.is_file():
        if rank == 0:
            loss_log.write_text("")
        log.info("no saved step to resume from: training from step 0 (%d windows, %d steps)", windows, total_steps)
        return 0, 0.0
    state = load_state(checkpoint)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rank_rng = state.get("rank_rng")
        if rank_rng is not None and len(rank_rng) == world:
            _set_rng_state(rank_rng[rank], device)
        elif rank == 0:  # the other ranks of a run resumed on another process count keep fresh streams
            torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        wall_before = float(state.get("wall_s", 0.0))
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
        raise InputError(checkpoint, f"resume state that does not fit this training run "
                                     f"({first_line(err)}); "
                                     f"delete {state_dir} to train from the start") from None
    log.info("resuming from step %d of %d (%s)", step, total_steps, checkpoint)
    if rank == 0 and loss_log.is_file():  # drop entries logged after the checkpoint
        loss_log.write_text("".join(json.dumps(e) + "\n" for e in _loss_entries(loss_log) if e["step"] <= step))
    return step, wall_before


def _step(batch_loss, batch: np.ndarray, trainable: list, optimizer, scheduler, max_grad_norm: float, autocast,
          rank: int, world: int) -> tuple[torch.Tensor, int]:
    """One optimisation step on ``batch`` (shared among the ``world`` processes): (loss, input tokens)."""
    if world == 1:
        with autocast:
            loss, tokens = batch_loss(batch)
        loss.backward()
    else:
        loss, tokens = _shared_backward(batch_loss, batch, trainable, rank, world, autocast)
    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, tokens


def _log_losses(log_file, bar, step: int, epoch: float, losses: list[float], lr: float, trained_s: float) -> None:
    """A loss-log line (rank 0 only: the other ranks have no ``log_file``) with the mean of the losses
    since the last one, and the progress bar's loss."""
    entry = {"step": step, "epoch": round(epoch, 4), "loss": float(np.mean(losses)), "lr": lr,
             "elapsed_s": round(trained_s, 2)}
    if log_file is not None:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()
    bar.set_postfix(loss=f"{entry['loss']:.3f}")


def _save_progress(state_dir: Path, model, optimizer, scheduler, settings: TrainSettings, step: int, trained_s,
                   device: torch.device, rank: int, world: int) -> None:
    """The weight snapshot and the resume checkpoint that are due after ``step`` (not the last step:
    ``finish`` saves the model); ``trained_s()`` gives the training seconds so far."""
    # the snapshot first: a checkpoint at a step always has that step's snapshot beside it
    if settings.snapshot_every_steps and step % settings.snapshot_every_steps == 0 and rank == 0:
        _save_snapshot(state_dir, model, step, trained_s())
    if step % settings.save_every_steps == 0:
        if world == 1:
            _save_state(state_dir, model, optimizer, scheduler, step, wall_s=trained_s())
        else:
            rank_rng = _gather_rng_states(device, world)
            if rank == 0:
                _save_state(state_dir, model, optimizer, scheduler, step, rank_rng, wall_s=trained_s())


def finish(state_dir: str | Path, out_dir: str | Path) -> None:
    """Keep the loss log and the weight snapshots with the model and drop the resume checkpoint."""
    state_dir = Path(state_dir)
    if (state_dir / "loss.jsonl").is_file():
        shutil.copyfile(state_dir / "loss.jsonl", Path(out_dir) / "loss.jsonl")
    if (state_dir / SNAPSHOTS).is_dir():
        shutil.move(state_dir / SNAPSHOTS, Path(out_dir) / SNAPSHOTS)
    shutil.rmtree(state_dir, ignore_errors=True)
