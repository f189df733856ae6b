"""Feature shards of every family: reading them (checked against their manifest), matching them to
their examples, and splitting work into shards. The windows themselves are the families' (make_features)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from qabench.data import Example
from qabench.errors import InputError
from qabench.io import read_json, read_parquet
from qabench.windows import REQUIRED_FEATURE_COLUMNS


def without_synthetic_negatives(features: pd.DataFrame, examples: list[Example]) -> pd.DataFrame:
    """Drop the windows of synthetic unanswerable questions (for a model trained on real questions only)."""
    synthetic = np.array([e.origin.startswith("neg_") for e in examples])
    return features[~synthetic[features["example_index"].to_numpy()]].reset_index(drop=True)


def shard_bounds(n_items: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Contiguous [lo, hi) range of shard ``shard`` out of ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is not in 0..{n_shards - 1}")
    return n_items * shard // n_shards, n_items * (shard + 1) // n_shards


def read_feature_shards(paths: list[str]) -> pd.DataFrame:
    """Feature shards as one table; a damaged or foreign shard is one InputError naming it."""
    frames = [read_parquet(p, REQUIRED_FEATURE_COLUMNS, what="feature shard") for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=REQUIRED_FEATURE_COLUMNS)


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
