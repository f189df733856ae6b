"""The machine a number was measured on, recorded beside the number: CPU model, the instruction sets that
decide its speed (a 2-core AVX2 EPYC trains ~1.5x slower than an AVX-512 one), threads and versions."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
import transformers

# The /proc/cpuinfo flags that change which kernels torch and oneDNN run (fp32 width, bf16, int8 dot products).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo() -> tuple[str, list[str]]:
    """(CPU model, the SPEED_FLAGS it has) from the first processor's block of /proc/cpuinfo."""
    try:
        first_block = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        first_block = ""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first_block.splitlines())}
    present = set(fields.get("flags", "").split())
    return fields.get("model name") or platform.processor() or "unknown", [f for f in SPEED_FLAGS if f in present]


def describe(threads: int, device: str = "cpu") -> dict:
    cpu, flags = _cpuinfo()
    machine = {"device": device, "cpu": cpu, "cpu_flags": flags,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "python": platform.python_version()}
    if device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return machine
