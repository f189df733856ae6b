"""Fetch a SQuAD file (URL with sha256, or a local path) to a gzip JSON file, atomically.

    python workflow_scripts/download.py --url URL --sha256 HEX [--mirror DIR ...] --out FILE.json.gz
    python workflow_scripts/download.py --path FILE.json[.gz] [--sha256 HEX] --out FILE.json.gz
    python workflow_scripts/download.py --first-of SOURCES.json [--mirror DIR ...] --out FILE.json.gz \
        --provenance-out SOURCE.json

--first-of takes a JSON list of sources ({"name", "url" or "path", "sha256", "description"}) and
uses the first that can be had: a missing file or a failed download falls through to the next, a
checksum mismatch stops. --provenance-out records which one was used and why others were skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Sequence

from qabench import cli
from qabench.download import fetch, fetch_first
from qabench.errors import InputError, run_cli
from qabench.io import write_json


def parse_sources(text: str) -> list[dict]:
    try:
        sources = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError("--first-of", f"not JSON ({err})") from None
    if not isinstance(sources, list) or not sources or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str) and ("url" in s or "path" in s) for s in sources):
        raise InputError("--first-of", "expected a non-empty JSON list of objects with a name and a url or path")
    return sources


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url")
    source.add_argument("--path")
    source.add_argument("--first-of", help="JSON list of sources, tried in order")
    parser.add_argument("--sha256", help="expected sha256 of the (uncompressed) JSON")
    parser.add_argument("--mirror", action="append", default=[], help="folder to look in before downloading")
    parser.add_argument("--out", required=True)
    parser.add_argument("--provenance-out", help="with --first-of: where to record the source used")
    args = parser.parse_args(argv)
    cli.setup()
    if args.first_of is None:
        origin = fetch(args.out, url=args.url, path=args.path, sha256=args.sha256, mirrors=args.mirror)
        logging.info("wrote %s from %s", args.out, origin)
        return 0
    candidates = parse_sources(args.first_of)
    provenance = fetch_first(args.out, candidates, mirrors=args.mirror)
    chosen = next(c for c in candidates if c["name"] == provenance["source"])
    provenance["description"] = chosen.get("description", provenance["source"])
    for skipped in provenance["skipped"]:
        logging.info("source %s skipped: %s", skipped["source"], skipped["why"])
    logging.info("wrote %s from source %s (%s): %s", args.out, provenance["source"], provenance["origin"],
                 provenance["description"])
    if args.provenance_out:
        write_json(args.provenance_out, provenance)
    return 0


if __name__ == "__main__":
    run_cli(main)
