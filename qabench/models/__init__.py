"""Model families: the contract every family implements, and the registry that names them.

A config's ``family`` names an entry of ``FAMILIES``. Each entry says which module holds the family
(the module's ``FAMILY`` is an instance of a ``Family`` subclass) and what the family can do, in
words the compression methods ask about (``CAPABILITIES``); reading the registry imports no torch,
so the config check at ``snakemake -n`` stays light. A new family is a module here plus one line in
``FAMILIES``; nothing outside this package asks which family it has.

Span families (encoder, lstm, mamba) derive from ``qabench.models.span.SpanFamily``: they read
[CLS] question [SEP] context [SEP] windows (``qabench.windows.tokenize_examples``) and score
every start and end position, position 0 scoring "no answer". The generative family (t5) implements
the same contract with its own windows, loss and decoding.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from qabench.errors import InputError

# Logit or score of a position or span that can never be the answer (padding, question tokens,
# attention over padding; "no span in any window"). -1e4 rather than -inf or the dtype's minimum: it
# stays finite in fp16 and bf16, so sums of two (start + end) and differences (na_prob) never give
# inf or NaN, yet it is far below any real score and exp() of it is exactly 0 in float32.
MASKED_LOGIT = -1e4
# the attribute of a built model that names the parameters its pretrained start did not have
NEW_PARAMETERS = "qabench_new_parameters"


def mark_new_parameters(model, names: Iterable[str]) -> None:
    """Record which of ``model``'s parameters its pretrained start lacked (a loader's missing keys;
    keys that are not parameters, such as buffers, are dropped), for ``Family.new_parameters``."""
    setattr(model, NEW_PARAMETERS, frozenset(names) & {name for name, _ in model.named_parameters()})


# What a family can do, as the compression methods ask it:
CAPABILITIES = {
    "spans": "reads span windows and scores start/end positions (SpanFamily)",
    "encoder_layers": "a Hugging Face encoder with a stack of transformer layers and a span head "
                      "(layers and heads can be cut or copied: pruned, distilled)",
    "export": "its span function traces with torch.export and the ONNX exporter (int8 inductor, onnx)",
    "adapters": "names the modules LoRA adapts (lora_targets) and those trained in full beside them",
    "warm_start": "builds an encoder-decoder from an encoder checkpoint (checkpoint: {warm_start: SPEC})",
    "continue": "builds from a model directory it saved, to train it further (checkpoint: results/models/M/base)",
}


@dataclass(frozen=True)
class Registration:
    module: str                       # the module whose FAMILY implements the family
    capabilities: frozenset[str]      # keys of CAPABILITIES


FAMILIES: dict[str, Registration] = {
    "encoder": Registration("qabench.models.encoder",
                            frozenset({"spans", "encoder_layers", "export", "adapters", "continue"})),
    "t5": Registration("qabench.models.t5", frozenset({"adapters", "warm_start", "continue"})),
    "lstm": Registration("qabench.models.lstm", frozenset({"spans", "continue"})),
    "mamba": Registration("qabench.models.mamba", frozenset({"spans", "adapters", "continue"})),
}

# the family of a checkpoint without qabench.json: a Hugging Face question-answering encoder
DEFAULT_FAMILY = "encoder"


def _registration(name: str) -> Registration:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def capabilities(name: str) -> frozenset[str]:
    return _registration(name).capabilities


def family(name: str) -> Family:
    return importlib.import_module(_registration(name).module).FAMILY


@dataclass
class WindowScores:
    """What a family's windows yield for post-processing (``qabench.postprocess.answer_questions``)."""

    candidates: Iterable            # (example index, postprocess.Candidate) per window; may be lazy
    windows: int                    # how many windows the questions made
    tokens: int                     # their tokens, all windows together
    windowed_at: float              # time.perf_counter() when windowing ended
    scored_at: float                # ... and when the model had run over every window


class Family(ABC):
    """One model family: how it is built, trained, saved, loaded and read out."""

    name: str
    default_options: dict = {}
    feature_columns: tuple[str, ...] = ()   # the columns of a training feature table the loss reads
    lora_targets: tuple[str, ...] = ()      # module names LoRA adapts by default
    head_modules: tuple[str, ...] = ()      # modules that train in full beside adapters (and stay float in qlora)

    def resolve_options(self, options: dict | None) -> dict:
        """``options`` over ``default_options``; an unknown key is an error."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            raise InputError("config", f"unknown {self.name} option(s) {unknown} "
                                       f"(known: {', '.join(sorted(self.default_options)) or 'none'})")
        return {**self.default_options, **options}

    # ---- model
    @abstractmethod
    def load_tokenizer(self, checkpoint: str | dict, options: dict | None = None):
        """The tokenizer ``build`` would return, without building the model (tokenizing comes first)."""

    @abstractmethod
    def build(self, checkpoint: str | dict, seed: int, options: dict | None = None):
        """(model, tokenizer, origin) for training; ``origin`` says where the weights came from."""

    @abstractmethod
    def save(self, model, tokenizer, out_dir: str | Path) -> None:
        """Everything ``load`` needs, into ``out_dir``."""

    @abstractmethod
    def load(self, model_dir: str | Path):
        """(model, tokenizer) of a saved directory, in eval mode."""

    @abstractmethod
    def architecture(self, model_dir: str | Path):
        """The float model a saved directory's configuration files describe, with random weights
        (int8 rebuilds it, quantizes it, then puts its stored tensors in place)."""

    def saved_tokenizer(self, model_dir: str | Path, options: dict | None = None):
        """The tokenizer saved in ``model_dir`` (without any outside file the original needed)."""
        return self.load_tokenizer(str(model_dir), options)

    def recognizes(self, model_dir: Path) -> bool | None:
        """Whether the files of ``model_dir`` hold a model of this family: True, False, or None when
        they do not say (a variant's own files)."""
        return None

    def is_own_directory(self, checkpoint) -> bool:
        """Whether ``checkpoint`` names a directory whose files say they hold a model of this family."""
        return isinstance(checkpoint, str) and self.recognizes(Path(checkpoint)) is True

    def position_limit(self, model) -> int | None:
        """How many tokens the model takes at most (None: no limit of its own)."""
        return None

    def checkpoint_position_limit(self, checkpoint: str | dict) -> tuple[int, str] | None:
        """(most tokens, where that limit is read) of a checkpoint, where it shows without building the
        model; None: no limit, or not known before the model is built."""
        return None

    def new_parameters(self, model) -> frozenset[str]:
        """Names of the parameters of a model ``build`` made whose pretrained start did not have them
        (a warm start's new layers, a new task head); they train at ``new_weights_learning_rate`` where
        that is set. ``build`` names them with ``mark_new_parameters``."""
        return getattr(model, NEW_PARAMETERS, frozenset())

    def implementation(self, model) -> str | None:
        """Which code path runs the model where the family has more than one (None: one only)."""
        return None

    # ---- training
    @abstractmethod
    def make_features(self, examples: list, tokenizer, spec, options: dict | None = None, example_offset: int = 0):
        """Training windows (a DataFrame with ``feature_columns`` among its columns)."""

    @abstractmethod
    def batch_loss(self, model, tokenizer, features) -> Callable:
        """``loss(rows, batch=None) -> (loss, tokens)`` over rows of ``features`` (see qabench.train)."""

    # ---- inference
    @abstractmethod
    def score_windows(self, model, tokenizer, examples: list, settings: dict, batch_size: int, precision: str,
                      progress: bool) -> WindowScores:
        """Window the questions, run the model, and give each window's answer candidate."""
