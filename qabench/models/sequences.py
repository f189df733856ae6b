"""Helpers for batches of right-padded sequences, shared by the model families."""

from __future__ import annotations

import torch


def reversal_order(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """Gather indices [batch, length] that reverse each row's first ``lengths`` positions and keep the
    padding after them in place (the order is its own inverse)."""
    position = torch.arange(length, device=lengths.device)[None, :]
    real = lengths[:, None]
    return torch.where(position < real, real - 1 - position, position)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``lengths[b]`` steps of every sequence of ``x`` [batch, length, ...]; padding
    stays at the end, so applying it twice gives ``x`` back."""
    order = reversal_order(lengths, x.shape[1])
    order = order.reshape(*order.shape, *[1] * (x.dim() - 2)).expand_as(x)
    return x.gather(1, order)
