"""Write the manifest of a split's feature shards: rows, checksums, answer coverage.

    python workflow_scripts/feature_manifest.py --shards SHARD.parquet ... --out manifest.json
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Sequence

import pandas as pd

from qabench import cli
from qabench.errors import run_cli
from qabench.io import write_json


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    cli.setup()
    entries = []
    for path in args.shards:
        frame = pd.read_parquet(path)
        entry = {
            "path": str(Path(path).relative_to(Path(args.out).parent)),
            "windows": len(frame),
            "examples": int(frame["example_index"].nunique()),
            "tokens": int(frame["input_ids"].map(len).sum()),
            "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
        }
        if "start_position" in frame:  # span families; generative targets are text
            entry["windows_with_answer"] = int((frame["start_position"] > 0).sum())
        entries.append(entry)
    totals = {k: sum(e[k] for e in entries) for k in ("windows", "examples", "tokens", "windows_with_answer")
              if all(k in e for e in entries)}
    write_json(args.out, {"shards": entries, **totals})
    return 0


if __name__ == "__main__":
    run_cli(main)
