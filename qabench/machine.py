"""The machine a number was measured on, recorded beside the number: CPU model, the instruction sets that
decide its speed (a 2-core AVX2 EPYC trains ~1.5x slower than an AVX-512 one), threads and versions."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
import transformers

# The /proc/cpuinfo flags that change which kernels torch and oneDNN run (fp32 width, bf16, int8 dot products).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # u8 x s8 products summed in int32


def _cpuinfo() -> tuple[str, list[str]]:
    """(CPU model, the SPEED_FLAGS it has) from the first processor's block of /proc/cpuinfo."""
    try:
        first_block = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        first_block = ""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_block.splitlines())}
    present = set(fields.get("flags", "").split())
    return fields.get("model name") or platform.processor() or "unknown", [f for f in SPEED_FLAGS if f in present]


def int8_dot_products() -> bool:
    """Whether this CPU has int8 dot-product instructions (VNNI or AMX), which sum int8 products in
    int32 without saturating."""
    return any(flag in INT8_DOT_PRODUCT_FLAGS for flag in _cpuinfo()[1])


def describe(threads: int, device: str = "cpu") -> dict:
    cpu, flags = _cpuinfo()
    machine = {"device": device, "cpu": cpu, "cpu_flags": flags,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version()}
    if device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return machine
