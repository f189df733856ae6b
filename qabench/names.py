"""Names that become parts of paths (results/, logs/) and of Snakemake wildcard patterns: models,
variants, data sources, training and evaluation sets."""

from __future__ import annotations

import re

# ASCII letters, digits, _ and -, not starting with - (it would read as an option)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
