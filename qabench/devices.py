"""Where a model runs: the CPU, or a GPU with inputs moved in and outputs moved back.

The training loop, the post-processing and the decoders keep their tensors on the CPU; a model
placed on a GPU gets hooks that move its inputs there and its outputs back, so no caller changes.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from qabench.errors import InputError

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "auto")
log = logging.getLogger(__name__)


def _is_device_name(device) -> bool:
    return isinstance(device, str) and (device in DEVICES or device.startswith("cuda:"))


def check(device: str) -> str:
    """``device`` if this machine has it; a one-line error otherwise."""
    if not _is_device_name(device):
        raise InputError("--device", f"unknown device '{device}' (known: {', '.join(DEVICES)})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device", f"{device} asked for, but torch sees no GPU")
    return device


def check_option(method: str, device) -> str:
    """A compression method's ``device`` option, checked for form only (the job that uses it may run
    on another machine, one with the GPU)."""
    if not _is_device_name(device):
        raise InputError("config", f"{method} option device must be cpu or cuda, not {device!r}")
    return device


def to_device(value, device):
    """Tensors inside ``value`` (nested dicts, lists, tuples, model outputs) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):  # ModelOutput is a dict too
        return type(value)(**{k: to_device(v, device) for k, v in value.items()}) if hasattr(value, "to_tuple") \
            else {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def place(model: nn.Module, device: str) -> None:
    """Hooks that move ``model``'s inputs to ``device`` and its outputs back to the CPU (the model's
    weights must already be there)."""
    if device == "cpu":
        return
    model.register_forward_pre_hook(lambda _m, args, kwargs: (to_device(args, device), to_device(kwargs, device)),
                                    with_kwargs=True)
    model.register_forward_hook(lambda _m, _args, output: to_device(output, "cpu"))


def move(model: nn.Module, device: str) -> nn.Module:
    """``model`` on ``device`` with its inputs and outputs moved by ``place``."""
    if device != "cpu":
        model.to(device)
        place(model, device)
    return model


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def native_bf16(device_type: str) -> bool:
    """Whether bf16 has fast kernels here: a GPU that supports it, or a CPU that oneDNN runs bf16 on
    (AVX-512, AMX). Elsewhere autocast emulates it: 11x slower than fp32 on an AVX2-only EPYC."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto``: bf16 where it is fast, fp32 elsewhere; ``fp32`` and ``bf16`` as given (a warning when
    bf16 will be emulated)."""
    if precision not in PRECISIONS:
        raise InputError("--precision", f"unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    if precision == "bf16" and not native_bf16(device_type):
        log.warning("bf16 asked for, but this %s has no fast bf16 kernels: expect it to run about 10x slower "
                    "than fp32 (precision: auto picks fp32 here)", device_type.upper())
    return precision


def autocast(device_type: str, precision: str):
    """The context a model runs in at ``precision``, as ``resolve_precision`` returned it (resolving
    once per run keeps its warning to one line)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"autocast takes a resolved precision (fp32 or bf16), not {precision!r}")
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
