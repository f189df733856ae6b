"""Flattening a SQuAD file into a training or evaluation table: held-out articles, subsets, negatives."""

from __future__ import annotations

import numpy as np

from qabench.data import Example
from qabench.negatives import add_negatives


def split_articles(examples: list[Example], holdout_articles: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out whole articles (seeded) so threshold tuning never sees a training paragraph."""
    titles = sorted({e.title for e in examples})
    if holdout_articles <= 0:
        return examples, []
    if holdout_articles >= len(titles):
        raise ValueError(f"cannot hold out {holdout_articles} of {len(titles)} articles")
    rng = np.random.default_rng([seed, 1])
    held = set(rng.choice(titles, size=holdout_articles, replace=False).tolist())
    return [e for e in examples if e.title not in held], [e for e in examples if e.title in held]


def subset(examples: list[Example], max_questions: int | None, seed: int) -> list[Example]:
    """A seeded sample of questions, kept in file order."""
    if not max_questions or max_questions >= len(examples):
        return examples
    rng = np.random.default_rng([seed, 2])
    keep = np.sort(rng.choice(len(examples), size=max_questions, replace=False))
    return [examples[i] for i in keep]


def prepare(examples: list[Example], *, max_questions: int | None = None, holdout_articles: int = 0,
            holdout_questions: int | None = None, negatives: dict[str, float] | None = None,
            holdout_negatives: dict[str, float] | None = None, seed: int = 13) -> tuple[list[Example], list[Example]]:
    """(train, holdout) tables; the holdout gets ``holdout_negatives`` (default: ``negatives``)."""
    train, holdout = split_articles(examples, holdout_articles, seed)
    train = subset(train, max_questions, seed)
    holdout = subset(holdout, holdout_questions, seed)
    if holdout_negatives is None:
        holdout_negatives = negatives
    if negatives:
        train = add_negatives(train, negatives, seed, pool_source=train)
    if holdout_negatives and holdout:
        holdout = add_negatives(holdout, holdout_negatives, seed + 1, pool_source=holdout)
    return train, holdout
