"""Write the manifest of a split's feature shards: rows, checksums, answer coverage.

    python workflow_scripts/feature_manifest.py --shards SHARD.parquet ... --out manifest.json
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Sequence

from qabench import cli
from qabench.errors import InputError, run_cli
from qabench.windows import REQUIRED_FEATURE_COLUMNS
from qabench.io import read_parquet, reading, stop_with_snakemake, write_json


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    stop_with_snakemake()  # killed Snakemake: stop, write nothing it cannot record
    cli.setup()
    entries = []
    for path in args.shards:
        frame = read_parquet(path, REQUIRED_FEATURE_COLUMNS, what="feature shard")
        try:
            relative = Path(path).resolve().relative_to(Path(args.out).parent.resolve())
        except ValueError:
            raise InputError(path, f"is not inside {Path(args.out).parent}, where the manifest goes") from None
        with reading(path, "feature shard"):  # columns of the wrong kind
            entry = {
                "path": str(relative),
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
