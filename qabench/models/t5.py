"""Text-to-text QA: "question: Q context: WINDOW" -> answer text or a no-answer string.

The model is a T5 (pretrained, or from random weights) or an encoder-decoder warm-started from an
encoder checkpoint (``checkpoint: {warm_start: SPEC}``: BERT2BERT, Rothe et al. 2020, "Leveraging
Pre-trained Checkpoints for Sequence Generation Tasks"): encoder and decoder both start from SPEC's
weights, the decoder with causal self-attention and new cross-attention layers. Its origin says so;
it is not a T5.

Contexts longer than the input are split into overlapping windows, as for the span families. Each
window gets a generated answer and two exact sequence log-probabilities (teacher forced): that of
its answer and that of the no-answer string. Like the span models, a question takes its best answer
over windows and its least confident no-answer score, and na_prob = null - answer.

With the option ``answers_from_context`` the answer is generated under a constraint that keeps it a
span of the window's context (each step may only extend a token sequence the context holds, and stop
once it has one): the decoder then chooses the span, as an extractive reader does, instead of
writing words the context may not have.

With the option ``no_answer_head`` the model also gets a linear layer over the mean of the encoder's
output that scores "no answer in this window", trained beside the generator (binary cross-entropy on
the windows whose target is the no-answer text, added to the generator's loss). Its logit is then the
window's no-answer score, instead of the two sequence log-probabilities: the head decides whether
and where to answer, the decoder writes the answer. The head is saved beside the model's own files
(``no_answer_head.json`` and ``.safetensors``); a directory that has them loads with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer,
                          EncoderDecoderModel, T5Config, T5ForConditionalGeneration)
from transformers.generation import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from qabench import checkpoints, devices
from qabench.batching import sorted_batches
from qabench.data import Example
from qabench.errors import InputError
from qabench.io import first_line, read_json, write_json
from qabench.metrics import normalize_answer
from qabench.models import Family, WindowScores, mark_new_parameters
from qabench.postprocess import Candidate
from qabench.progress import bar as progress_bar
from qabench.windows import WindowSpec, truncate_questions

# model types of Hugging Face configs this family reads: T5s, and warm-started encoder-decoders
MODEL_TYPES = ("t5", "mt5", "umt5", "longt5", "encoder-decoder")
DEFAULT_OPTIONS = {"no_answer_text": "unanswerable", "max_answer_tokens": 32, "num_beams": 1,
                   "answers_from_context": False, "no_answer_head": False}
FEATURE_COLUMNS = ["example_index", "example_id", "input_ids", "labels", "window_start", "window_end"]
IGNORE_INDEX = -100
PREFIX = "question: {question} context:"


def _checked_options(options: dict | None) -> dict:
    """``options`` over the defaults; unknown keys are an error (a typo would silently change nothing)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InputError("config", f"unknown t5 options {unknown} (known: {sorted(DEFAULT_OPTIONS)})")
    merged = {**DEFAULT_OPTIONS, **options}
    if not normalize_answer(merged["no_answer_text"]):
        raise InputError("config", "t5 option no_answer_text must hold a word (it is compared after normalisation)")
    if int(merged["max_answer_tokens"]) < 1 or int(merged["num_beams"]) < 1:
        raise InputError("config", "t5 options max_answer_tokens and num_beams must be at least 1")
    for flag in ("answers_from_context", "no_answer_head"):
        if not isinstance(merged[flag], bool):
            raise InputError("config", f"t5 option {flag} must be true or false")
    return merged


def special_ids(tokenizer) -> tuple[int, int]:
    """(pad, eos) ids. A WordPiece tokenizer has no EOS: its [SEP] ends sequences and [PAD] pads
    and starts the decoder, so BERT vocabularies work for a randomly initialised T5."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if tokenizer.pad_token_id is None or eos is None:
        raise InputError(tokenizer.name_or_path, "tokenizer needs a pad token and an EOS (or [SEP]) token for T5")
    return tokenizer.pad_token_id, eos


# ---------------------------------------------------------------------------------------------- model


def _warm_started(spec: str, tokenizer, pad: int, eos: int):
    """(model, tokenizer, origin): an encoder-decoder with encoder and decoder from the encoder
    checkpoint ``spec``; the decoder starts each answer from the tokenizer's [CLS] (or BOS). The
    decoder's parameters the checkpoint lacked (its cross-attention, an LM head an encoder has not)
    are marked as new (``mark_new_parameters``)."""
    target = checkpoints.resolve(spec)
    try:
        encoder = AutoModel.from_pretrained(target)
        decoder, loading = AutoModelForCausalLM.from_pretrained(target, is_decoder=True, add_cross_attention=True,
                                                                output_loading_info=True)
    except OSError as err:
        raise InputError(spec, f"cannot warm-start an encoder-decoder from it ({first_line(err)})") from None
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    mark_new_parameters(model, (f"decoder.{key}" for key in loading["missing_keys"]))
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    model.config.decoder_start_token_id = pad if start is None else start
    model.config.pad_token_id, model.config.eos_token_id = pad, eos
    model.config.vocab_size = model.config.decoder.vocab_size
    layers = model.config.encoder.num_hidden_layers
    origin = (f"BERT2BERT warm start from {spec} (encoder-decoder, not T5: {layers}+{layers} layers from its "
              "weights, cross-attention new)")
    return model, tokenizer, origin


# ------------------------------------------------------------------------------------- no-answer head

HEAD = "no_answer_head"                    # the head's attribute on the model (a Linear to one logit)
HEAD_CONFIG = "no_answer_head.json"        # in a saved directory: the model has a head
HEAD_WEIGHTS = "no_answer_head.safetensors"
NO_ANSWER_TEXT = "qabench_no_answer_text"  # attribute: the target text of the windows the head calls "no answer"


def _head(model) -> nn.Module | None:
    return getattr(model, HEAD, None)


def _attach_head(model) -> nn.Linear:
    """A new head (random weights) on ``model``, sized to its encoder's output."""
    head = nn.Linear(model.get_input_embeddings().embedding_dim, 1)
    model.add_module(HEAD, head)
    return head


def _null_logits(head: nn.Module, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each window's "no answer here" logit from the mean of its encoder states over real tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
    return head(pooled).squeeze(-1)


def _save_head(model, out_dir: Path) -> None:
    head = _head(model)
    write_json(out_dir / HEAD_CONFIG, {"hidden_size": head.in_features})
    save_file({name: t.detach().contiguous().cpu() for name, t in head.state_dict().items()}, out_dir / HEAD_WEIGHTS)


def _read_head_config(model, directory: Path) -> bool:
    """Attach a head with random weights where ``directory`` says the model has one; whether it did."""
    path = directory / HEAD_CONFIG
    if not path.is_file():
        return False
    config = read_json(path)
    hidden = config.get("hidden_size") if isinstance(config, dict) else None
    if hidden != model.get_input_embeddings().embedding_dim:
        raise InputError(path, f"no-answer head of width {hidden!r} does not fit the model "
                               f"(width {model.get_input_embeddings().embedding_dim})")
    _attach_head(model)
    return True


def _load_head(model, directory: Path) -> None:
    """The saved head of ``directory`` on ``model``, where it has one."""
    if not _read_head_config(model, directory):
        return
    path = directory / HEAD_WEIGHTS
    try:
        _head(model).load_state_dict(load_file(path))
    except (OSError, SafetensorError, RuntimeError) as err:
        raise InputError(path, f"not a usable no-answer head ({first_line(err)})") from None


# -------------------------------------------------------------------------------------------- windows


@dataclass
class _Window:
    example_index: int
    input_ids: np.ndarray
    labels: np.ndarray
    context_ids: np.ndarray  # the window's context tokens (a slice of input_ids)
    offsets: np.ndarray  # [n, 2] character offsets of context_ids in the example's context


def _prefix_overhead(tokenizer) -> int:
    """Tokens the input adds around question and context: the prompt words and the EOS."""
    return len(tokenizer(PREFIX.format(question=""), add_special_tokens=False)["input_ids"]) + 1


def _check_spec(spec: WindowSpec, tokenizer) -> None:
    spec.validate()
    room = spec.max_length - spec.max_question_tokens - _prefix_overhead(tokenizer)
    if room <= spec.stride:
        raise InputError("config", f"stride {spec.stride} must be below max_length - max_question_tokens - "
                                   f"{_prefix_overhead(tokenizer)} (the T5 prompt) = {room}")


def _windows(examples: list[Example], tokenizer, spec: WindowSpec, no_answer_text: str,
             example_offset: int = 0) -> list[_Window]:
    """Every window of every example, in example order."""
    _check_spec(spec, tokenizer)
    _, eos = special_ids(tokenizer)
    questions = truncate_questions([e.question.strip() for e in examples], tokenizer, spec.max_question_tokens)
    prefixes = tokenizer([PREFIX.format(question=q) for q in questions], add_special_tokens=False)["input_ids"]
    contexts = list(dict.fromkeys(e.context for e in examples))  # paragraphs repeat across questions
    encoded = tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True)
    context_tokens = {c: (np.asarray(ids, np.int32), np.asarray(off, np.int64).reshape(-1, 2))
                      for c, ids, off in zip(contexts, encoded["input_ids"], encoded["offset_mapping"])}
    no_answer = _target_ids(tokenizer, no_answer_text, eos)
    out = []
    for i, (example, prefix) in enumerate(zip(examples, prefixes)):
        ids, offsets = context_tokens[example.context]
        room = max(1, spec.max_length - len(prefix) - 1)
        step = max(1, room - spec.stride)  # _check_spec makes this room - stride for any question
        answer = None
        if example.answer_texts:
            start = example.answer_starts[0]
            answer = (start, start + len(example.answer_texts[0]), _target_ids(tokenizer, example.answer_texts[0], eos))
        lo = 0
        while True:
            hi = min(lo + room, len(ids))
            window_ids, window_offsets = ids[lo:hi], offsets[lo:hi]
            inside = (answer is not None and hi > lo
                      and window_offsets[0, 0] <= answer[0] <= answer[1] <= window_offsets[-1, 1])
            labels = answer[2] if inside else no_answer
            input_ids = np.concatenate([np.asarray(prefix, np.int32), window_ids, np.asarray([eos], np.int32)])
            out.append(_Window(example_offset + i, input_ids, labels, window_ids, window_offsets))
            if hi >= len(ids):
                break
            lo += step
    return out


def _target_ids(tokenizer, text: str, eos: int) -> np.ndarray:
    ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    return np.asarray([*ids, eos], np.int32)


# ----------------------------------------------------------------------------------------- training


def _pad(sequences: list[np.ndarray], value: int) -> torch.Tensor:
    out = np.full((len(sequences), max(len(s) for s in sequences)), value, dtype=np.int64)
    for row, s in enumerate(sequences):
        out[row, : len(s)] = s
    return torch.from_numpy(out)


def _pad_inputs(sequences: list[np.ndarray], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids padded to the longest row, and the attention mask."""
    mask = _pad([np.ones(len(s), np.int64) for s in sequences], 0)
    return _pad(sequences, pad), mask


def _rows(encoder_outputs: BaseModelOutput, rows: list[int]) -> BaseModelOutput:
    """Encoder outputs of the given batch rows (rows may repeat)."""
    return BaseModelOutput(last_hidden_state=encoder_outputs.last_hidden_state[rows])


def _sequence_logprobs(model, encoder_outputs, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of log p(label token) per row, teacher forced (labels padded with IGNORE_INDEX)."""
    labels = labels.to(devices.model_device(model))
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                   decoder_input_ids=decoder_input_ids).logits.float()
    labels = labels.to(logits.device)  # devices.place brings a GPU model's outputs back to the CPU
    keep = labels != IGNORE_INDEX
    picked = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(-1)


# ---------------------------------------------------------------------------------------- inference


class _BanFirstTokens(LogitsProcessor):
    """Forbid some tokens as the first generated token (the no-answer text's first token, EOS, pad)."""

    def __init__(self, token_ids: list[int]):
        self.token_ids = token_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] == 1:  # only the decoder start token so far
            scores[:, self.token_ids] = -float("inf")
        return scores


class _ContextSpans(LogitsProcessor):
    """Keep each generated answer a span of its window's context: the first token is any context
    token; each later one must extend the answer so far to a token sequence the context holds; EOS
    is allowed once the answer is not empty. Rows of a beam search are ``num_beams`` per window."""

    def __init__(self, contexts: list[np.ndarray], num_beams: int, eos: int):
        self.contexts, self.num_beams, self.eos = contexts, num_beams, eos

    def allowed(self, context: np.ndarray, answer: np.ndarray) -> np.ndarray:
        """Token ids that may follow ``answer`` (the generated ids after the decoder start)."""
        k = len(answer)
        if k == 0:
            return np.unique(context)
        if k >= len(context):
            return np.asarray([self.eos])
        starts = np.flatnonzero((np.lib.stride_tricks.sliding_window_view(context[:-1], k) == answer).all(1))
        return np.unique(np.append(context[starts + k], self.eos))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, 1:].cpu().numpy()  # drop the decoder start token
        mask = torch.full_like(scores, -float("inf"))
        for row, answer in enumerate(generated):
            if (answer == self.eos).any():  # finished: generate pads it, whatever the scores
                mask[row] = 0
                continue
            allowed = self.allowed(self.contexts[row // self.num_beams], answer)
            mask[row, torch.from_numpy(allowed.astype(np.int64))] = 0
        return scores + mask


def _snap_to_context(answer_ids: np.ndarray, window: _Window, context: str) -> str | None:
    """The context's own characters where the answer tokens occur in the window, if they do;
    exact text beats a decoded one (an uncased WordPiece vocabulary decodes "U.S." as "u. s.")."""
    n = len(answer_ids)
    if n == 0 or n > len(window.context_ids):
        return None
    hits = np.flatnonzero((np.lib.stride_tricks.sliding_window_view(window.context_ids, n) == answer_ids).all(1))
    if not len(hits):
        return None
    start = hits[0]
    # strip: a SentencePiece token's offsets include the space before the word
    return context[window.offsets[start, 0]:window.offsets[start + n - 1, 1]].strip()


@dataclass(frozen=True)
class _Generation:
    """How answers are generated and told apart from the no-answer text."""

    pad: int
    eos: int
    null_ids: np.ndarray  # the no-answer text's target ids
    null_norm: str  # the no-answer text, normalised
    kwargs: dict  # for model.generate
    ban: _BanFirstTokens  # no first token that starts an abstention (for the second try)
    from_context: bool  # answers constrained to spans of the window's context

    @classmethod
    def of(cls, model, tokenizer, options: dict) -> _Generation:
        pad, eos = special_ids(tokenizer)
        null_ids = _target_ids(tokenizer, options["no_answer_text"], eos)
        kwargs = {"max_new_tokens": int(options["max_answer_tokens"]), "num_beams": int(options["num_beams"]),
                  "do_sample": False, "pad_token_id": pad, "eos_token_id": eos,
                  "decoder_start_token_id": model.config.decoder_start_token_id}
        return cls(pad, eos, null_ids, normalize_answer(options["no_answer_text"]), kwargs,
                   _BanFirstTokens(sorted({int(null_ids[0]), eos, pad})), options["answers_from_context"])

    def processors(self, windows: list[_Window], second_try: bool) -> LogitsProcessorList:
        """The logits processors of one generate call over ``windows``."""
        chosen = [_ContextSpans([w.context_ids for w in windows], self.kwargs["num_beams"], self.eos)] \
            if self.from_context else []
        return LogitsProcessorList(chosen + ([self.ban] if second_try else []))

    def usable(self, text: str) -> bool:
        """Whether a generated text is an answer: not empty, not the no-answer text."""
        return normalize_answer(text) not in ("", self.null_norm)


def _score_windows(model, tokenizer, generation: _Generation, windows: list[_Window], examples: list[Example],
                   batch_size: int, precision: str, progress: bool) -> list[Candidate]:
    """Per window, in window order: its generated answer with the answer's log-probability (None
    where the answer is not usable) and the no-answer text's log-probability; with a no-answer head,
    minus the head's logit as the answer's score and 0 as the no-answer score (so a question's
    na_prob is its least "no answer" window's logit, and its answer that window's)."""
    scored: list[Candidate] = [None] * len(windows)  # type: ignore[list-item]
    lengths = np.array([len(w.input_ids) for w in windows])
    # the encoder and generate are not the model's forward, so devices.place does not move their inputs
    device = devices.model_device(model)
    autocast = devices.autocast(device.type, devices.resolve_precision(precision, device.type))
    head = _head(model)
    model.eval()
    with torch.inference_mode(), autocast:
        for batch in progress_bar(sorted_batches(lengths, batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            inputs, mask = (t.to(device) for t in _pad_inputs([windows[i].input_ids for i in batch], generation.pad))
            encoded = model.get_encoder()(input_ids=inputs, attention_mask=mask)
            answers = _generate_answers(model, tokenizer, generation, encoded, mask, [windows[i] for i in batch],
                                        examples)
            if head is not None:
                null = _null_logits(head, encoded.last_hidden_state, mask).float().cpu().numpy()
                for row, (i, (_, text)) in enumerate(zip(batch, answers)):
                    scored[i] = Candidate(-float(null[row]) if generation.usable(text) else None, text, 0.0)
                continue
            # one teacher-forced pass scores every answer candidate and the no-answer text
            both = _pad([np.append(ids, generation.eos) for ids, _ in answers] + [generation.null_ids] * len(batch),
                        IGNORE_INDEX)
            logprobs = _sequence_logprobs(model, _rows(encoded, list(range(len(batch))) * 2),
                                          torch.cat([mask, mask]), both).cpu().numpy()
            for row, (i, (_, text)) in enumerate(zip(batch, answers)):
                scored[i] = Candidate(float(logprobs[row]) if generation.usable(text) else None, text,
                                      float(logprobs[len(batch) + row]))
    return scored


def _generate_answers(model, tokenizer, generation: _Generation, encoded: BaseModelOutput, mask: torch.Tensor,
                      windows: list[_Window], examples: list[Example]) -> list[tuple[np.ndarray, str]]:
    """The (answer ids, answer text) each window of a batch generates; where the answer is not usable,
    generated again with the abstention's first tokens banned."""
    generated = model.generate(encoder_outputs=encoded, attention_mask=mask,
                               logits_processor=generation.processors(windows, second_try=False),
                               **generation.kwargs).cpu().numpy()
    answers = [_decode_answer(tokenizer, generation, w, g, examples) for w, g in zip(windows, generated)]
    redo = [row for row, (_, text) in enumerate(answers) if not generation.usable(text)]
    if redo:
        again = model.generate(encoder_outputs=_rows(encoded, redo), attention_mask=mask[redo],
                               logits_processor=generation.processors([windows[r] for r in redo], second_try=True),
                               **generation.kwargs).cpu().numpy()
        for row, g in zip(redo, again):
            answers[row] = _decode_answer(tokenizer, generation, windows[row], g, examples)
    return answers


def _decode_answer(tokenizer, generation: _Generation, window: _Window, generated: np.ndarray,
                   examples: list[Example]) -> tuple[np.ndarray, str]:
    """A generated sequence's answer ids (up to EOS or pad) and text: the context's own characters
    where those tokens occur in the window, else the decoded tokens."""
    answer_ids = generated[1:]  # drop the decoder start token
    stop = np.flatnonzero((answer_ids == generation.eos) | (answer_ids == generation.pad))
    answer_ids = answer_ids[: stop[0]] if len(stop) else answer_ids
    text = _snap_to_context(answer_ids, window, examples[window.example_index].context)
    if text is None:
        text = tokenizer.decode(answer_ids.tolist(), skip_special_tokens=True).strip()
    return answer_ids, text


class T5Family(Family):
    name = "t5"
    default_options = DEFAULT_OPTIONS
    feature_columns = ("input_ids", "labels")
    # T5's Linears, and a warm-started BERT encoder-decoder's (its decoder's cross-attention included)
    lora_targets = ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo", "query", "key", "value", "dense")
    head_modules = (HEAD,)  # where the model has one (option no_answer_head)

    def resolve_options(self, options: dict | None) -> dict:
        return _checked_options(options)

    def recognizes(self, model_dir: Path) -> bool | None:
        model_type = checkpoints.saved_model_type(model_dir)
        return None if model_type is None else model_type in MODEL_TYPES

    def architecture(self, model_dir):
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(str(model_dir)))
        _read_head_config(model, Path(model_dir))
        return model

    def load_tokenizer(self, checkpoint: str | dict, options: dict | None = None):
        if isinstance(checkpoint, dict):
            spec = checkpoint.get("tokenizer", checkpoint.get("warm_start"))
        else:
            spec = checkpoint
        return checkpoints.load_pretrained(AutoTokenizer, spec)

    def build(self, checkpoint: str | dict, seed: int, options: dict | None = None):
        """Model, tokenizer and weight origin for training.

        ``checkpoint`` is a spec string (``t5-small``, ``google/flan-t5-base``, a directory, such as
        another model's ``results/models/M/base`` to train further),
        ``{"random_init": {T5Config fields}, "tokenizer": spec}``, optionally with ``"embeddings": spec``
        (word embeddings copied from that checkpoint), or ``{"warm_start": spec}`` (an encoder-decoder
        whose encoder and decoder start from the encoder checkpoint ``spec``, with its tokenizer).

        With the option ``no_answer_head`` a model without one gets a new head (a new parameter); a
        directory that holds a head brings it, whatever the option says.
        """
        options = _checked_options(options)
        model, tokenizer, origin = self._build_model(checkpoint, seed, options)
        if _head(model) is None and options["no_answer_head"]:
            head = _attach_head(model)
            mark_new_parameters(model, self.new_parameters(model) | {f"{HEAD}.{name}" for name, _ in head.named_parameters()})
        if _head(model) is not None:
            setattr(model, NO_ANSWER_TEXT, options["no_answer_text"])
            origin += ", with a no-answer head"
        return model, tokenizer, origin

    def _build_model(self, checkpoint: str | dict, seed: int, options: dict):
        torch.manual_seed(seed)
        tokenizer = self.load_tokenizer(checkpoint, options)
        if not isinstance(checkpoint, dict):  # a T5, or an encoder-decoder this family trained before
            model = checkpoints.load_pretrained(AutoModelForSeq2SeqLM, checkpoint)
            target = Path(checkpoints.resolve(checkpoint))
            if target.is_dir():
                _load_head(model, target)
            return model, tokenizer, checkpoint
        pad, eos = special_ids(tokenizer)
        if "warm_start" in checkpoint:
            return _warm_started(checkpoint["warm_start"], tokenizer, pad, eos)
        fields = dict(checkpoint["random_init"])
        if "d_model" in fields and "num_heads" in fields:
            fields.setdefault("d_kv", fields["d_model"] // fields["num_heads"])
        fields.update(vocab_size=len(tokenizer), pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad)
        config = T5Config(**fields)
        model = T5ForConditionalGeneration(config)
        origin = f"random init (t5, {config.num_layers} layers, d_model {config.d_model})"
        origin += checkpoints.init_embeddings_from(checkpoint, [model], len(tokenizer))
        return model, tokenizer, origin

    def save(self, model, tokenizer, out_dir) -> None:
        head = _head(model)
        if head is None:
            model.save_pretrained(out_dir)
        else:  # the head is not part of the Hugging Face model: its own files, beside
            delattr(model, HEAD)
            try:
                model.save_pretrained(out_dir)
            finally:
                model.add_module(HEAD, head)
            _save_head(model, Path(out_dir))
        tokenizer.save_pretrained(out_dir)

    def load(self, model_dir: str):
        """A T5 or encoder-decoder directory (ours, or any hub/local one) for inference."""
        model = checkpoints.load_pretrained(AutoModelForSeq2SeqLM, str(model_dir))  # first: clearer error
        _load_head(model, Path(model_dir))
        tokenizer = checkpoints.load_pretrained(AutoTokenizer, model_dir)
        model.eval()
        return model, tokenizer

    def make_features(self, examples: list[Example], tokenizer, spec: WindowSpec, options: dict | None = None,
                      example_offset: int = 0) -> pd.DataFrame:
        """One row per window: input ids, target ids (answer or no-answer text, then EOS) and the
        window's character range in the context (``window_start``, ``window_end``)."""
        options = _checked_options(options)
        windows = _windows(examples, tokenizer, spec, options["no_answer_text"], example_offset)
        rows = {
            "example_index": [w.example_index for w in windows],
            "example_id": [examples[w.example_index - example_offset].id for w in windows],
            "input_ids": [w.input_ids for w in windows],
            "labels": [w.labels for w in windows],
            "window_start": [int(w.offsets[0, 0]) if len(w.offsets) else 0 for w in windows],
            "window_end": [int(w.offsets[-1, 1]) if len(w.offsets) else 0 for w in windows],
        }
        return pd.DataFrame(rows, columns=FEATURE_COLUMNS)

    def batch_loss(self, model, tokenizer, features: pd.DataFrame) -> Callable[..., tuple[torch.Tensor, int]]:
        """``loss_fn(indices)`` -> (mean token cross-entropy over the rows' targets, input tokens).

        ``loss_fn(indices, batch)`` gives the rows' share of that mean over the whole ``batch`` (the
        summed cross-entropy of the rows' target tokens over the batch's target token count), as
        ``train.train`` asks of it under several processes.

        With a no-answer head the loss adds the head's mean binary cross-entropy over the rows (a row's
        target: its labels are the no-answer text), its share over ``batch`` likewise.
        """
        pad, eos = special_ids(tokenizer)
        ids = features["input_ids"].tolist()
        labels = features["labels"].tolist()
        head = _head(model)
        if head is not None:
            null = _target_ids(tokenizer, getattr(model, NO_ANSWER_TEXT, DEFAULT_OPTIONS["no_answer_text"]), eos)
            is_null = torch.tensor([np.array_equal(row, null) for row in labels], dtype=torch.float32)

        def loss_fn(indices: np.ndarray, batch: np.ndarray | None = None) -> tuple[torch.Tensor, int]:
            inputs, mask = _pad_inputs([ids[i] for i in indices], pad)
            targets = _pad([labels[i] for i in indices], IGNORE_INDEX)
            decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=targets)
            outputs = model(input_ids=inputs, attention_mask=mask, decoder_input_ids=decoder_input_ids)
            logits = outputs.logits
            if batch is None:
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                                         ignore_index=IGNORE_INDEX)
            else:
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                                         ignore_index=IGNORE_INDEX, reduction="sum")
                loss = loss / sum(len(labels[i]) for i in batch)
            if head is not None:
                null_logits = _null_logits(head, outputs.encoder_last_hidden_state, mask).float()
                loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
                    null_logits, is_null[torch.as_tensor(indices)].to(null_logits.device), reduction="sum") / len(indices if batch is None else batch)
            return loss, int(mask.sum())

        return loss_fn

    def score_windows(self, model, tokenizer, examples: list[Example], settings: dict, batch_size: int,
                      precision: str, progress: bool) -> WindowScores:
        """Generate an answer per window and score it and the no-answer text.

        A window whose generation is the no-answer text (or empty) is decoded again with the first
        token of the no-answer text, EOS and pad banned at the first step: its answer candidate is then the
        best sequence that does not start like the abstention (an approximation of the best non-null
        sequence that costs one more generation only for those windows).
        """
        options = _checked_options(settings.get("options"))
        spec = WindowSpec(settings["max_length"], settings["stride"], settings["max_question_tokens"])
        generation = _Generation.of(model, tokenizer, options)
        windows = _windows(examples, tokenizer, spec, options["no_answer_text"])
        windowed_at = time.perf_counter()
        candidates = _score_windows(model, tokenizer, generation, windows, examples, batch_size, precision, progress)
        scored_at = time.perf_counter()
        return WindowScores([(window.example_index, candidate) for window, candidate in zip(windows, candidates)],
                            len(windows), sum(len(w.input_ids) for w in windows), windowed_at, scored_at)


FAMILY = T5Family()
