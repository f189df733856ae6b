"""Knowledge distillation: a shallower encoder learns from the fine-tuned base's span logits.

The student starts from the teacher's own weights (embeddings, span head and some of its layers),
or from another model directory (``student_checkpoint``, e.g. a pruned variant). Each batch costs
``alpha * KD + (1 - alpha) * span cross-entropy``; ``alpha: 0`` trains the same student on the hard
labels alone (the no-teacher control) and never runs the teacher.
"""

from __future__ import annotations

import copy
import math
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering, PreTrainedModel

from qabench import compression, devices, finetune, model_dir, models
from qabench.batching import pad_batch, training_width
from qabench.compression import TrainingData, check_train, with_defaults
from qabench.errors import InputError
from qabench.models import MASKED_LOGIT
from qabench.model_dir import load_model
from qabench.models.span import span_loss
from qabench.train import TrainSettings, train

log = logging.getLogger(__name__)

METHOD = "distilled"
DEFAULTS = {"student_layers": None, "layer_init": "every_other", "student_checkpoint": None, "student_model": None,
            "temperature": 2.0, "alpha": 0.5, "train": {},
            "device": "cpu"}  # where the teacher and the student run while distilling: cpu or cuda
LAYER_INITS = ("every_other", "first")
DEFAULT_TRAIN = {"epochs": 1.0}
STUDENT_METHODS = ("base", "pruned", "distilled")  # models that load as plain float encoders


def kd_loss(student_start: torch.Tensor, student_end: torch.Tensor, teacher_start: torch.Tensor,
            teacher_end: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the softened start and end distributions, averaged over the two.

    KL is summed over positions and averaged over rows, in float32; positions where ``mask`` is 0
    (padding) take no part in either distribution.
    """
    def kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = student.float() / temperature, teacher.float() / temperature
        if mask is not None:
            padding = mask == 0
            student, teacher = student.masked_fill(padding, MASKED_LOGIT), teacher.masked_fill(padding, MASKED_LOGIT)
        log_p = F.log_softmax(teacher, dim=-1)
        return F.kl_div(F.log_softmax(student, dim=-1), log_p, reduction="batchmean", log_target=True)

    return temperature ** 2 * (kl(student_start, teacher_start) + kl(student_end, teacher_end)) / 2


def distill_batch_loss(student, teacher, student_logits: Callable, teacher_logits: Callable, features, pad_id: int,
                       alpha: float, temperature: float) -> Callable[[np.ndarray], tuple[torch.Tensor, int]]:
    """``rows -> (loss, tokens)`` for qabench.train.train; the teacher runs only when ``alpha > 0``."""
    ids = features["input_ids"].tolist()
    types = features["token_type_ids"].tolist()
    starts = torch.tensor(features["start_position"].to_numpy(), dtype=torch.long)
    ends = torch.tensor(features["end_position"].to_numpy(), dtype=torch.long)
    longest = max(len(x) for x in ids)

    def batch_loss(batch: np.ndarray) -> tuple[torch.Tensor, int]:
        width = training_width((len(ids[i]) for i in batch), longest)
        inputs = pad_batch([ids[i] for i in batch], [types[i] for i in batch], pad_id, width)
        tokens = int(inputs["attention_mask"].sum())
        start, end = student_logits(student, inputs)
        hard = span_loss(start, end, starts[batch], ends[batch], inputs["attention_mask"])
        if alpha == 0:
            return hard, tokens
        with torch.no_grad():
            teacher_start, teacher_end = teacher_logits(teacher, inputs)
        soft = kd_loss(start, end, teacher_start, teacher_end, temperature, inputs["attention_mask"])
        return alpha * soft + (1 - alpha) * hard, tokens
    return batch_loss


def kept_layers(teacher_layers: int, student_layers: int, layer_init: str) -> list[int]:
    """The teacher layers (0-based, in order) that become the student's layers."""
    if not 1 <= student_layers < teacher_layers:
        raise ValueError(f"student_layers must be between 1 and {teacher_layers - 1} (the teacher has "
                         f"{teacher_layers}), not {student_layers}")
    if layer_init == "first":
        return list(range(student_layers))
    # every_other spaces the kept layers evenly from the bottom (DistilBERT's 0, 2, 4, ...): the student
    # starts with features from the whole depth and layer 0 still reads the embeddings it was trained on;
    # "first" keeps an exact contiguous stack but drops the top layers the span head was tuned on.
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def _layer_list(model) -> str:
    """The dotted name of the encoder's list of transformer layers (``bert.encoder.layer`` for BERT)."""
    n_layers = model.config.num_hidden_layers
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers]
    if len(names) != 1:
        raise ValueError(f"cannot tell which module list holds the {n_layers} layers of {type(model).__name__}")
    return names[0]


def student_from_teacher(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """The teacher's architecture with only ``layers``, every weight copied from the teacher."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = AutoModelForQuestionAnswering.from_config(config)
    prefix = _layer_list(teacher) + "."
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) not in layers:
                continue
            key = f"{prefix}{layers.index(int(index))}.{rest}"
        state[key] = value.detach().clone()
    student.load_state_dict(state, strict=True)
    return student


def resolve_options(options: dict, teacher_layers: int | None) -> dict:
    """Defaults filled in and checked; unknown keys are an error (a typo would silently do nothing).
    With ``teacher_layers`` None (before the teacher is loaded) ``student_layers`` is not resolved yet."""
    resolved = with_defaults(METHOD, options, DEFAULTS)
    if resolved["layer_init"] not in LAYER_INITS:
        raise InputError("distilled options", f"layer_init must be one of {LAYER_INITS}, not {resolved['layer_init']!r}")
    alpha, temperature = resolved["alpha"], resolved["temperature"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise InputError("distilled options", f"alpha must be in [0, 1], not {alpha!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise InputError("distilled options", f"temperature must be positive, not {temperature!r}")
    check_train(METHOD, resolved["train"])
    devices.check_option(METHOD, resolved["device"])
    _check_student_model(resolved)
    if teacher_layers is None:
        return resolved
    if resolved["student_layers"] is None:
        resolved["student_layers"] = max(1, teacher_layers // 2)
    if not (resolved["student_checkpoint"] or resolved["student_model"]) \
            and not 1 <= resolved["student_layers"] < teacher_layers:
        raise InputError("distilled options", f"student_layers must be between 1 and {teacher_layers - 1} (the "
                                              f"teacher has {teacher_layers}), not {resolved['student_layers']}")
    return resolved


def _load_student_checkpoint(spec: str, teacher_tokenizer) -> PreTrainedModel:
    student, tokenizer, settings = load_model(spec)
    method = model_dir.method_of(settings)
    if not compression.applies(METHOD, settings["family"]) or method not in STUDENT_METHODS \
            or not isinstance(student, PreTrainedModel):
        raise InputError(spec, f"student_checkpoint must be a float encoder ({', '.join(STUDENT_METHODS)} "
                               f"models), not {settings.get('family')}/{method}")
    if tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise InputError(spec, "student_checkpoint has another vocabulary than the teacher (the windows are the teacher's)")
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    return student


def _check_student_model(resolved: dict) -> None:
    spec = resolved["student_model"]
    if spec is None:
        return
    if resolved["student_checkpoint"]:
        raise InputError("distilled options", "give student_checkpoint or student_model, not both")
    if not isinstance(spec, dict) or not {"family", "checkpoint"} <= set(spec) \
            or not set(spec) <= {"family", "checkpoint", "options"}:
        raise InputError("distilled options", "student_model must be {family: NAME, checkpoint: SPEC, options: {...}}")
    if spec["family"] not in models.FAMILIES or "spans" not in models.capabilities(spec["family"]):
        span_families = [f for f in models.FAMILIES if "spans" in models.capabilities(f)]
        raise InputError("distilled options", f"student_model family must be a span family ({', '.join(span_families)}), "
                                              f"not {spec['family']!r}")


def _build_student(spec: dict, seed: int, teacher_tokenizer):
    """(student, its family's name, origin) of a fresh ``student_model`` that reads the teacher's windows."""
    student, tokenizer, origin = models.family(spec["family"]).build(spec["checkpoint"], seed, spec.get("options"))
    if tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise InputError("distilled options", "student_model has another vocabulary than the teacher (the windows "
                                              "are the teacher's)")
    return student, spec["family"], origin


def make(base_dir: str | Path, out_dir: str | Path, *, options: dict, seed: int, data: TrainingData | None,
         state_dir: str | Path | None, variant: str | None = None) -> None:
    """Distil the base in ``base_dir`` into a smaller encoder (or a fresh model of another span family)
    and write it as a model directory."""
    if data is None:
        raise InputError(base_dir, "distillation trains: it needs the base's training windows")
    resolve_options(options, None)  # refuse bad options before the teacher is loaded
    teacher, tokenizer, base_settings = load_model(base_dir)
    model_dir.require_base(base_settings, base_dir, METHOD)
    compression.check_applies(METHOD, base_settings["family"], base_dir)
    teacher.eval()
    teacher.requires_grad_(False)
    teacher_layers = teacher.config.num_hidden_layers
    opts = resolve_options(options, teacher_layers)
    student_family, student_settings = base_settings["family"], {}
    if opts["student_checkpoint"]:
        student = _load_student_checkpoint(opts["student_checkpoint"], tokenizer)
        layers, origin = None, f"distilled from {base_dir} into {opts['student_checkpoint']}"
    elif opts["student_model"]:
        student, student_family, student_origin = _build_student(opts["student_model"], seed, tokenizer)
        layers, origin = None, f"distilled from {base_dir} into {student_origin}"
        student_settings = {"family": student_family, "checkpoint": opts["student_model"]["checkpoint"],
                            "options": models.family(student_family).resolve_options(
                                opts["student_model"].get("options"))}
    else:
        layers = kept_layers(teacher_layers, opts["student_layers"], opts["layer_init"])
        student = student_from_teacher(teacher, layers)
        origin = f"distilled from {base_dir}: teacher layers {layers} of {teacher_layers}"
    if opts["alpha"] == 0:
        origin = origin.replace("distilled from", "labels only (no teacher), student initialised from", 1)
    settings_train = TrainSettings(**{**DEFAULT_TRAIN, "seed": seed, **opts["train"]})
    device = devices.check(opts["device"])
    devices.move(teacher, device)
    devices.move(student, device)
    log.info("%s; alpha %.2f, temperature %.1f", origin, opts["alpha"], opts["temperature"])

    teacher_family = models.family(base_settings["family"])
    batch_loss = distill_batch_loss(student, teacher, models.family(student_family).span_logits,
                                    teacher_family.span_logits, data.features, tokenizer.pad_token_id,
                                    opts["alpha"], opts["temperature"])
    state = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="distilled-state-"))
    stats = train(student, data.features, batch_loss, settings_train, state)

    settings = model_dir.variant_settings(base_settings, base_dir, METHOD, variant, opts, origin=origin,
                                          **student_settings)
    student.to("cpu")
    record = {**stats, **finetune.parameter_counts(student), "device": device,
              "teacher_params": finetune.parameter_counts(teacher)["params"],
              "teacher_layers": teacher_layers,
              "student_layers": getattr(getattr(student, "config", None), "num_hidden_layers", None),
              "kept_teacher_layers": layers, "distillation": {k: opts[k] for k in ("alpha", "temperature")},
              "settings": asdict(settings_train),
              "data": data.counts()}
    model_dir.write(out_dir, lambda tmp: models.family(student_family).save(student, tokenizer, tmp), settings,
                    record, state)


def load(model_dir: str, settings: dict):
    """A distilled student is a plain model of its family (an encoder, or the student_model's family)."""
    return models.family(settings["family"]).load(model_dir)
