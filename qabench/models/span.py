"""The span families' common base: [CLS] question [SEP] context [SEP] windows with start/end
labels, the span loss, and reading each window's best spans out of its start/end logits."""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Callable

import numpy as np
import pandas as pd
import tokenizers
import torch

from qabench import devices, postprocess
from qabench.batching import pad_batch, sorted_batches, training_width
from qabench.data import Example
from qabench.models import Family, WindowScores
from qabench.progress import bar as progress_bar
from qabench.windows import NOT_CONTEXT, WindowSpec, truncate_questions

FEATURE_COLUMNS = [
    "example_index", "example_id", "input_ids", "token_type_ids",
    "offset_start", "offset_end", "start_position", "end_position",
]


def _label(offset_start: np.ndarray, offset_end: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """Token span covering [char_start, char_end) or (0, 0) (the CLS position) if not inside the window."""
    context = np.flatnonzero(offset_start != NOT_CONTEXT)
    if len(context) == 0:
        return 0, 0
    first, last = context[0], context[-1]
    if offset_start[first] > char_start or offset_end[last] < char_end:
        return 0, 0
    start = first + int(np.searchsorted(offset_end[first:last + 1], char_start, side="right"))
    end = first + int(np.searchsorted(offset_start[first:last + 1], char_end, side="left")) - 1
    if start > end:
        return 0, 0
    return start, end


def _check_context_covered(batch: list[Example], reached: list[int], tokenizer) -> None:
    """Refuse windows that stop before their context's last token (``reached``: per example, the
    furthest context character its windows cover): tokenizers 0.23.2 cut some overflowing windows
    short and dropped the rest of long contexts (51 of SQuAD 2.0 dev's questions lost the end of
    their paragraph), so answers there could never be predicted."""
    contexts = list(dict.fromkeys(e.context for e in batch))
    last_end = {c: (offsets[-1][1] if offsets else 0) for c, offsets in zip(
        contexts, tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"])}
    for example, end in zip(batch, reached):
        if end < last_end[example.context]:
            raise RuntimeError(f"tokenizers {tokenizers.__version__} windowed question {example.id} up to character "
                               f"{end} of its context's {last_end[example.context]}: the rest would never be read; "
                               f"install tokenizers>=0.23.3")


def tokenize_examples(
    examples: list[Example], tokenizer, spec: WindowSpec, example_offset: int = 0, batch_size: int = 512
) -> pd.DataFrame:
    """One row per window; ``example_index`` counts from ``example_offset`` (for shards)."""
    spec.validate()
    rows: dict[str, list] = {c: [] for c in FEATURE_COLUMNS}
    for batch_start in range(0, len(examples), batch_size):
        batch = examples[batch_start:batch_start + batch_size]
        questions = truncate_questions([e.question.lstrip() for e in batch], tokenizer, spec.max_question_tokens)
        encoded = tokenizer(
            questions,
            [e.context for e in batch],
            truncation="only_second",
            max_length=spec.max_length,
            stride=spec.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
            padding=False,
        )
        reached = [0] * len(batch)
        for i, sample in enumerate(encoded["overflow_to_sample_mapping"]):
            example = batch[sample]
            sequence_ids = encoded.sequence_ids(i)
            offsets = encoded["offset_mapping"][i]
            starts = np.array([o[0] if s == 1 else NOT_CONTEXT for o, s in zip(offsets, sequence_ids)], np.int32)
            ends = np.array([o[1] if s == 1 else NOT_CONTEXT for o, s in zip(offsets, sequence_ids)], np.int32)
            reached[sample] = max(reached[sample], int(ends.max()))
            if example.answer_texts:
                char_start = example.answer_starts[0]
                start, end = _label(starts, ends, char_start, char_start + len(example.answer_texts[0]))
            else:
                start, end = 0, 0
            rows["example_index"].append(example_offset + batch_start + sample)
            rows["example_id"].append(example.id)
            rows["input_ids"].append(np.asarray(encoded["input_ids"][i], np.int32))
            rows["token_type_ids"].append(np.asarray(encoded["token_type_ids"][i], np.int8))
            rows["offset_start"].append(starts)
            rows["offset_end"].append(ends)
            rows["start_position"].append(start)
            rows["end_position"].append(end)
        _check_context_covered(batch, reached, tokenizer)
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS)


def span_loss(start_logits, end_logits, start_positions, end_positions, attention_mask=None) -> torch.Tensor:
    """Mean of the start and end cross-entropies; padding (``attention_mask`` 0) gets no probability,
    so how wide a batch is padded does not change its loss."""
    start_logits, end_logits = start_logits.float(), end_logits.float()
    if attention_mask is not None:
        padding = attention_mask.to(start_logits.device) == 0
        start_logits = start_logits.masked_fill(padding, float("-inf"))
        end_logits = end_logits.masked_fill(padding, float("-inf"))
    loss = torch.nn.functional.cross_entropy
    return (loss(start_logits, start_positions) + loss(end_logits, end_positions)) / 2


def span_batch_loss(model, span_logits, features, pad_id: int):
    """The loss of a span ``model`` on some feature rows, and how many real tokens it saw.

    ``batch_loss(rows, batch)`` gives the rows' share of the loss on ``batch`` instead (see
    ``qabench.train.train``): the loss is a mean over windows, so the share is weighted by the rows'
    fraction of the windows. Rows are padded to ``batching.training_width`` of the whole batch.
    """
    ids = features["input_ids"].tolist()
    types = features["token_type_ids"].tolist()
    starts = torch.tensor(features["start_position"].to_numpy(), dtype=torch.long)
    ends = torch.tensor(features["end_position"].to_numpy(), dtype=torch.long)
    longest = max(len(x) for x in ids)

    def batch_loss(rows: np.ndarray, batch: np.ndarray | None = None) -> tuple[torch.Tensor, int]:
        width = training_width((len(ids[i]) for i in (rows if batch is None else batch)), longest)
        inputs = pad_batch([ids[i] for i in rows], [types[i] for i in rows], pad_id, width)
        start_logits, end_logits = span_logits(model, inputs)
        loss = span_loss(start_logits, end_logits, starts[rows], ends[rows], inputs["attention_mask"])
        if batch is not None:
            loss = loss * (len(rows) / len(batch))
        return loss, int(inputs["attention_mask"].sum())
    return batch_loss


def window_logits(model, span_logits, features, pad_id: int, batch_size: int, precision: str = "fp32",
                  progress: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Start/end logits (float32, unpadded) for every feature row, in row order."""
    lengths = features["input_ids"].map(len).to_numpy()
    ids = features["input_ids"].tolist()
    types = features["token_type_ids"].tolist()
    out: list = [None] * len(features)
    device_type = devices.model_device(model).type
    autocast = devices.autocast(device_type, devices.resolve_precision(precision, device_type))
    model.eval()
    with torch.inference_mode(), autocast:
        for batch in progress_bar(sorted_batches(lengths, batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            inputs = pad_batch([ids[i] for i in batch], [types[i] for i in batch], pad_id)
            start, end = span_logits(model, inputs)
            start, end = start.float().numpy(), end.float().numpy()
            for row, i in enumerate(batch):
                out[i] = (start[row, : lengths[i]], end[row, : lengths[i]])
    return out


class SpanFamily(Family):
    """A family whose model scores every start and end position of a window (position 0: no answer)."""

    feature_columns = ("input_ids", "token_type_ids", "start_position", "end_position")

    @abstractmethod
    def span_logits(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(start_logits, end_logits), each [batch, length], for a padded batch of windows."""

    def make_features(self, examples: list[Example], tokenizer, spec: WindowSpec, options: dict | None = None,
                      example_offset: int = 0) -> pd.DataFrame:
        return tokenize_examples(examples, tokenizer, spec, example_offset=example_offset)

    def batch_loss(self, model, tokenizer, features: pd.DataFrame) -> Callable:
        return span_batch_loss(model, self.span_logits, features, tokenizer.pad_token_id)

    def score_windows(self, model, tokenizer, examples: list[Example], settings: dict, batch_size: int,
                      precision: str, progress: bool) -> WindowScores:
        spec = WindowSpec(settings["max_length"], settings["stride"], settings["max_question_tokens"])
        features = tokenize_examples(examples, tokenizer, spec)
        windowed_at = time.perf_counter()
        logits = window_logits(model, self.span_logits, features, tokenizer.pad_token_id, batch_size, precision,
                               progress)
        scored_at = time.perf_counter()
        candidates = ((row.example_index, postprocess.window_candidate(
            examples[row.example_index].context, start, end, row.offset_start, row.offset_end, settings["n_best"],
            settings["max_answer_tokens"])) for row, (start, end) in zip(features.itertuples(index=False), logits))
        return WindowScores(candidates, len(features), int(features["input_ids"].map(len).sum()), windowed_at,
                            scored_at)
