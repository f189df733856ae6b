"""How the Snakefile makes its rules find the qabench that runs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def put_running_interpreter_first() -> None:
    """Rules run `python -m workflow_scripts.NAME`; `python` must be the interpreter running Snakemake.

    Its venv holds qabench even when the user called `.venv/bin/snakemake` without activating it.
    A rule's conda env is activated later, inside the job's shell, so it still comes first.
    """
    # the envs' post-deploy scripts install this checkout (they run from a copy under .snakemake/conda/)
    os.environ.setdefault("QABENCH_PROJECT", str(Path(__file__).resolve().parents[1]))
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
