"""benchmarks/isa_speed.py: its AVX2 arm really holds torch to AVX2, and bad arms are refused."""

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("isa_speed", REPO / "benchmarks" / "isa_speed.py")
isa_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(isa_speed)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))


@pytest.mark.skipif("avx2" not in cpu_flags(), reason="needs an x86 CPU with AVX2")
def test_avx2_limit_is_taken_by_torch():
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    limited = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **isa_speed.ISA_LIMITS["avx2"]},
                             capture_output=True, text=True, check=True)
    assert limited.stdout.strip() == "AVX2"


def test_arms_are_isa_and_precision():
    assert isa_speed.parse_arm("avx2:fp32") == ("avx2", "fp32")
    for bad in ("avx2", "avx512:fp32", "native:fp16", ":bf16"):
        with pytest.raises(argparse.ArgumentTypeError):
            isa_speed.parse_arm(bad)
