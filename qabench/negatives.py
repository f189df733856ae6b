"""Synthetic unanswerable questions for training sets that have none (e.g. SQuAD v1 files).

Three kinds, each labelled unanswerable:
- ``other_paragraph``: the question paired with another paragraph of its article that holds
  none of its answers (easy: the topic usually shifts).
- ``sentence_removed``: the question's own paragraph with the sentence(s) holding the answer
  cut out, so the topic stays and only the evidence is gone.
- ``entity_swap``: the question with one name or number that occurs in the paragraph replaced
  by one from another article, so the paragraph no longer answers it (the kind of edit
  SQuAD 2.0's annotators made most often).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace

import numpy as np

from qabench.data import Example

KINDS = ("other_paragraph", "sentence_removed", "entity_swap")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_SWAPPABLE = re.compile(r"\b(?:[A-Z][a-zA-Z\-]+|\d[\d,.]*\d|\d)\b")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of sentences; separators stay with the preceding sentence."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        spans.append((start, match.end()))
        start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _mentions_answer(text: str, example: Example) -> bool:
    low = text.lower()
    return any(a.strip().lower() in low for a in example.answer_texts if a.strip())


def _negative(example: Example, kind: str, context: str | None = None, question: str | None = None) -> Example:
    return replace(example, id=f"{example.id}-neg-{kind}", context=context or example.context,
                   question=question or example.question, answer_texts=[], answer_starts=[],
                   is_impossible=True, origin=f"neg_{kind}")


def sentence_removed(example: Example) -> Example | None:
    start = example.answer_starts[0]
    end = start + len(example.answer_texts[0])
    kept = [(s, e) for s, e in sentence_spans(example.context) if e <= start or s >= end]
    context = "".join(example.context[s:e] for s, e in kept).strip()
    if len(kept) < 1 or len(context) < 40 or _mentions_answer(context, example):
        return None
    return _negative(example, "sentence_removed", context=context)


def other_paragraph(example: Example, candidates: list[tuple[int, str]], rng: np.random.Generator) -> Example | None:
    options = [c for pid, c in candidates if pid != example.paragraph_id and not _mentions_answer(c, example)]
    if not options:
        return None
    return _negative(example, "other_paragraph", context=options[rng.integers(len(options))])


def entity_swap(example: Example, pool: dict[bool, list[str]], rng: np.random.Generator) -> Example | None:
    """Replace a name or number that the question shares with the paragraph (not its first word)."""
    matches = [m for m in _SWAPPABLE.finditer(example.question)
               if m.start() > 0 and m.group() in example.context]
    if not matches:
        return None
    target = matches[rng.integers(len(matches))]
    numeric = target.group()[0].isdigit()
    words = pool[numeric]
    for _ in range(10):
        word = words[rng.integers(len(words))]
        if word != target.group() and word.lower() not in example.context.lower():
            question = example.question[: target.start()] + word + example.question[target.end():]
            return _negative(example, "entity_swap", question=question)
    return None


def _swap_pool(examples: list[Example]) -> dict[bool, list[str]]:
    words = {m.group() for e in examples for m in _SWAPPABLE.finditer(e.question) if m.start() > 0}
    ordered = sorted(words)
    return {True: [w for w in ordered if w[0].isdigit()], False: [w for w in ordered if not w[0].isdigit()]}


def add_negatives(examples: list[Example], fractions: dict[str, float], seed: int,
                  pool_source: list[Example] | None = None) -> list[Example]:
    """For each kind, turn a seeded ``fraction`` of the answerable examples into an extra negative.

    ``pool_source`` (default: ``examples``) supplies other paragraphs and swap words.
    """
    unknown = set(fractions) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown negative kinds {sorted(unknown)}; known: {list(KINDS)}")
    source = pool_source or examples
    paragraphs_by_title: dict[str, dict[int, str]] = defaultdict(dict)
    for e in source:
        paragraphs_by_title[e.title][e.paragraph_id] = e.context
    pool = _swap_pool(source)
    answerable = [e for e in examples if e.answer_texts]
    negatives = []
    for k, kind in enumerate(KINDS):
        fraction = fractions.get(kind, 0.0)
        if fraction <= 0:
            continue
        rng = np.random.default_rng([seed, k])
        chosen = rng.choice(len(answerable), size=min(len(answerable), round(fraction * len(answerable))),
                            replace=False)
        for i in sorted(chosen):
            e = answerable[i]
            if kind == "sentence_removed":
                neg = sentence_removed(e)
            elif kind == "other_paragraph":
                neg = other_paragraph(e, list(paragraphs_by_title[e.title].items()), rng)
            else:
                neg = entity_swap(e, pool, rng)
            if neg is not None:
                negatives.append(neg)
    return examples + negatives
