"""Question/context windows for span extraction: token ids, context offsets and start/end labels."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import tokenizers

from qabench import models
from qabench.data import Example
from qabench.errors import InputError
from qabench.io import read_json, read_parquet
from qabench.windows import NOT_CONTEXT, REQUIRED_FEATURE_COLUMNS, WindowSpec, truncate_questions  # shared with t5 (also read from here)

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


def make_features(family: str, examples: list[Example], tokenizer, spec: WindowSpec, options: dict,
                  example_offset: int = 0) -> pd.DataFrame:
    """Training windows in the form the model family reads (span labels, or text targets for t5)."""
    if family in models.SPAN_FAMILIES:
        return tokenize_examples(examples, tokenizer, spec, example_offset=example_offset)
    return models.family(family).make_features(examples, tokenizer, spec, options, example_offset=example_offset)


def without_synthetic_negatives(features: pd.DataFrame, examples: list[Example]) -> pd.DataFrame:
    """Drop the windows of synthetic unanswerable questions (for a model trained on real questions only)."""
    synthetic = np.array([e.origin.startswith("neg_") for e in examples])
    return features[~synthetic[features["example_index"].to_numpy()]].reset_index(drop=True)


def shard_bounds(n_items: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Contiguous [lo, hi) range of shard ``shard`` out of ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    return n_items * shard // n_shards, n_items * (shard + 1) // n_shards


# what every family's feature table has (span families add labels and offsets, t5 its text targets)


def read_feature_shards(paths: list[str]) -> pd.DataFrame:
    """Feature shards as one table; a damaged or foreign shard is one InputError naming it."""
    frames = [read_parquet(p, REQUIRED_FEATURE_COLUMNS, what="feature shard") for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FEATURE_COLUMNS)


def read_manifest_features(manifest_path: str | os.PathLike, verify: bool = True) -> pd.DataFrame:
    """The feature shards a manifest (workflow_scripts/feature_manifest.py) lists, checked against the
    row counts and sha256 sums it recorded: a shard rewritten or damaged since is refused."""
    manifest_path = Path(manifest_path)
    manifest = read_json(manifest_path)
    shards = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(shards, list) or not shards or not all(isinstance(s, dict) and isinstance(s.get("path"), str)
                                                             for s in shards):
        raise InputError(manifest_path, 'not a feature manifest: expected {"shards": [{"path": ...}, ...]}')
    paths = [manifest_path.parent / s["path"] for s in shards]
    if verify:
        for entry, path in zip(shards, paths):
            if not path.is_file():
                raise InputError(manifest_path, f"lists shard {entry['path']}, which does not exist")
            if "sha256" in entry and hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                raise InputError(path, f"does not match its checksum in {manifest_path} (changed or damaged "
                                       "since the manifest was written; rerun the tokenize step)")
    features = read_feature_shards([str(p) for p in paths])
    if not len(features):
        raise InputError(manifest_path, "its shards hold no windows")
    return features


def check_features_match(features: pd.DataFrame, examples: list[Example], features_source: str | os.PathLike,
                         examples_source: str | os.PathLike) -> None:
    """The windows must come from these examples (same order): ``example_index`` in range, and the
    window's ``example_id`` (where recorded) the id of that example."""
    index = features["example_index"].to_numpy()
    if len(index) and (index.min() < 0 or index.max() >= len(examples)):
        raise InputError(features_source, f"windows refer to example {int(index.max())}, but {examples_source} "
                                          f"holds {len(examples)} examples (features of another examples table?)")
    if "example_id" in features.columns and len(index):
        ids = np.asarray([e.id for e in examples], dtype=object)[index]
        mismatch = np.flatnonzero(ids != features["example_id"].to_numpy(dtype=object))
        if len(mismatch):
            row = int(mismatch[0])
            raise InputError(features_source, f"window {row} belongs to question "
                                              f"'{features['example_id'].iloc[row]}', but example {int(index[row])} "
                                              f"of {examples_source} is '{ids[row]}' (features of another examples "
                                              "table?)")
