"""Flattening a SQuAD file into a training or evaluation table: held-out articles, subsets, negatives."""

from __future__ import annotations

import numpy as np

from qabench.data import Example
from qabench.negatives import top_up_negatives


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
            holdout_questions: int | None = None, negatives: dict | None = None,
            seed: int = 13) -> tuple[list[Example], list[Example], dict]:
    """(train, holdout, record): whole articles held out, seeded subsets, then synthetic negatives
    for the training table.

    ``negatives`` is a recipe ``{"share": S, "kinds": {kind: weight}}``: real unanswerable questions
    count first and synthetic ones of those kinds top them up to a share S of all questions (none when
    S is 0 or None, or the real ones reach it). The held-out questions are returned as they are: they
    get their own recipe later (``top_up``), so that changing it never touches the training table.
    The record says what the training table holds.
    """
    train, holdout = split_articles(examples, holdout_articles, seed)
    train = subset(train, max_questions, seed)
    holdout = subset(holdout, holdout_questions, seed)
    train, record = top_up(train, negatives, seed)
    return train, holdout, record


def top_up(examples: list[Example], recipe: dict | None, seed: int) -> tuple[list[Example], dict]:
    """``examples`` with synthetic negatives made from themselves by ``recipe``, and their record."""
    recipe = recipe or {}
    return top_up_negatives(examples, recipe.get("share") or 0.0, recipe.get("kinds", {}), seed,
                            pool_source=examples)
