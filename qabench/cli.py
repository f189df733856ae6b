"""Small pieces every workflow script shares: logging and CPU threads."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

from qabench.errors import InputError
from qabench.io import check_positive


def setup(threads: int | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if threads:
        import torch

        torch.set_num_threads(threads)


def parse_checkpoint(value: str) -> str | dict:
    """A checkpoint spec from the command line: a plain string, or a JSON object for random init."""
    if value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise InputError("--checkpoint", f"not valid JSON ({err.msg})") from None
    return value


def parse_options(value: str) -> dict:
    """A model's family options from the command line (a JSON object)."""
    try:
        options = json.loads(value)
    except json.JSONDecodeError as err:
        raise InputError("--options", f"not valid JSON ({err.msg})") from None
    if not isinstance(options, dict):
        raise InputError("--options", "must be a JSON object")
    return options


def add_inference_options(parser: argparse.ArgumentParser, precisions: Sequence[str]) -> None:
    """--batch-size, --precision (one of ``precisions``), --threads and --device: how a model is run."""
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", choices=precisions, default="fp32")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (int8 and qlora variants keep their own)")


def check_inference_options(args: argparse.Namespace) -> None:
    check_positive("--batch-size", args.batch_size)
    check_positive("--threads", args.threads)
