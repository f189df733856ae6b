"""Fetch a SQuAD file (URL with sha256, or a local path) to a gzip JSON file, atomically.

    python workflow_scripts/download.py --url URL --sha256 HEX [--mirror DIR ...] --out FILE.json.gz
    python workflow_scripts/download.py --path FILE.json[.gz] [--sha256 HEX] --out FILE.json.gz
"""

from __future__ import annotations

import argparse
import logging
from typing import Sequence

from qabench import cli
from qabench.download import fetch
from qabench.errors import run_cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url")
    source.add_argument("--path")
    parser.add_argument("--sha256", help="expected sha256 of the (uncompressed) JSON")
    parser.add_argument("--mirror", action="append", default=[], help="folder to look in before downloading")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    cli.setup()
    origin = fetch(args.out, url=args.url, path=args.path, sha256=args.sha256, mirrors=args.mirror)
    logging.info("wrote %s from %s", args.out, origin)
    return 0


if __name__ == "__main__":
    run_cli(main)
