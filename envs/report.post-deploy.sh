#!/usr/bin/env bash
# Snakemake runs this in the new env after creating it, from a copy under .snakemake/conda/ and in
# Snakemake's working directory: the script's own location says nothing about where the project is.
set -euo pipefail
# --- project: the qabench checkout (Snakemake's working directory, unless QABENCH_PROJECT names it)
project=${QABENCH_PROJECT:-$PWD}
if ! grep -qs '^name = "qabench"$' "$project/pyproject.toml"; then
    echo "error: $project is not the qabench checkout; with snakemake --directory elsewhere, set QABENCH_PROJECT to the checkout" >&2
    exit 1
fi
# --- end project
# editable, so jobs run the checkout's current code as they do from setup.sh's venv (Snakemake rebuilds
# the env only when this script or the env file changes); no dependencies: the env file pinned them, and
# setuptools, the build backend, is among them
python -m pip install --no-deps --no-build-isolation -e "$project"
