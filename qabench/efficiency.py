"""Cost of running a QA checkpoint: parameters, size, latency at batch 1, throughput, peak memory."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import torch

from qabench import models
from qabench.data import Example
from qabench.predict import predict


def implementation(model, settings: dict) -> str | None:
    """Which code path runs the model where a family has more than one (Mamba: CUDA kernels or the
    pure-PyTorch scan), so the summary can say; None where there is only one."""
    return models.family(settings["family"]).implementation(model)


def disk_size_mb(model_dir: str | Path) -> float:
    """Everything in the checkpoint directory: weights, config, tokenizer files."""
    files = [p for p in Path(model_dir).rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 2)


def parameter_counts(model) -> dict:
    """The model's parameters as they are now: all of them (``params``), those that train
    (``trainable_params``) and those not exactly zero (``nonzero_params``, what pruning leaves)."""
    params = list(model.parameters())
    return {"params": sum(p.numel() for p in params),
            "trainable_params": sum(p.numel() for p in params if p.requires_grad),
            "nonzero_params": int(sum(int(torch.count_nonzero(p)) for p in params))}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure(model, tokenizer, examples: list[Example], settings: dict, *, warmup: int = 5,
            batch_size: int = 64, precision: str = "fp32") -> dict:
    """Latency per question at batch 1 (after warm-up) and throughput at ``batch_size``."""
    for example in examples[:warmup]:
        predict(model, tokenizer, [example], settings, batch_size=1, precision=precision, progress=False)
    latencies = []
    for example in examples:
        t0 = time.perf_counter()
        predict(model, tokenizer, [example], settings, batch_size=1, precision=precision, progress=False)
        latencies.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    predict(model, tokenizer, examples, settings, batch_size=batch_size, precision=precision, progress=False)
    batched = time.perf_counter() - t0
    return {
        "questions": len(examples), "warmup": warmup,
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2),
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2),
        "throughput_qps": round(len(examples) / batched, 2), "throughput_batch_size": batch_size,
        "precision": precision, "peak_mem_mb": peak_rss_mb(),
        **({"peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if torch.cuda.is_available() else {}),
    }
