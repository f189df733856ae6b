"""Batches with dynamic padding: length-sorted for inference, length-grouped and shuffled for training."""

from __future__ import annotations

import numpy as np
import torch


def pad_batch(input_ids: list[np.ndarray], token_type_ids: list[np.ndarray], pad_id: int,
              width: int | None = None) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in the batch (or to ``width``), not to a fixed length."""
    width = max(len(x) for x in input_ids) if width is None else width
    ids = np.full((len(input_ids), width), pad_id, dtype=np.int64)
    types = np.zeros((len(input_ids), width), dtype=np.int64)
    mask = np.zeros((len(input_ids), width), dtype=np.int64)
    for row, (x, t) in enumerate(zip(input_ids, token_type_ids)):
        ids[row, : len(x)] = x
        types[row, : len(t)] = t
        mask[row, : len(x)] = 1
    return {
        "input_ids": torch.from_numpy(ids),
        "token_type_ids": torch.from_numpy(types),
        "attention_mask": torch.from_numpy(mask),
    }


# Training pads each batch to a multiple of this many tokens, so that a few shapes recur instead of
# hundreds and the CPU allocator can reuse its cached blocks. 250 MiniLM steps (2 threads, bf16):
# unbucketed the process grew from 4 to 8.7 GB (12.5 GB peak), at 8 to 5.2 (8.4 peak), at 32 it
# stayed near 4 GB, for 5% more time per step (NOTES.md, 2026-11-27).
TRAINING_WIDTH_MULTIPLE = 32


def training_width(lengths, longest: int) -> int:
    """A training batch's width: its longest row rounded up to TRAINING_WIDTH_MULTIPLE, but never past
    ``longest`` (the training set's longest window, so never past what the model was built for)."""
    return min(-(-max(lengths) // TRAINING_WIDTH_MULTIPLE) * TRAINING_WIDTH_MULTIPLE, longest)


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices grouped longest-first so each batch pads very little."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def grouped_training_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                             group_factor: int = 50) -> list[np.ndarray]:
    """Shuffle, sort by length inside chunks of ``group_factor`` batches, then shuffle the batches.

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = batch_size * group_factor
    batches = []
    for lo in range(0, len(order), chunk):
        part = order[lo:lo + chunk]
        part = part[np.argsort(-np.asarray(lengths)[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
