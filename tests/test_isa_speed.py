"""benchmarks/isa_speed.py: its AVX2 arm really holds torch to AVX2, and bad arms are refused."""

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("isa_speed", REPO / "benchmarks" / "isa_speed.py")
isa_speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(isa_speed)


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="needs an x86 CPU with AVX2")
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
