"""Synthetic unanswerable questions for training sets that have none (e.g. SQuAD v1 files).

Six kinds, each labelled unanswerable. Three change the paragraph or bring in a foreign word:
- ``other_paragraph``: the question paired with another paragraph of its article that holds
  none of its answers (easy: the topic usually shifts).
- ``sentence_removed``: the question's own paragraph with the sentence(s) holding the answer
  cut out, so the topic stays and only the evidence is gone.
- ``entity_swap``: the question with one name or number that occurs in the paragraph replaced
  by one from another article, so the paragraph no longer answers it (the kind of edit
  SQuAD 2.0's annotators made most often).

Three rewrite the question with words of its own paragraph only, after the edits SQuAD 2.0's
annotators made (Rajpurkar et al. 2018: entity swap, antonym, negation), so that no word the
paragraph lacks gives them away:
- ``paragraph_entity_swap``: a name or number of the question replaced by another of the same
  paragraph that is not in the answer's sentence.
- ``antonym``: a word of the question replaced by its opposite (``first`` -> ``last``), when the
  answer's sentence does not hold the opposite.
- ``negation``: ``not`` inserted after the question's auxiliary verb (``When was not ...``).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import replace

import numpy as np

from qabench.data import Example

# new kinds go last: each kind's random stream is seeded by its position
KINDS = ("other_paragraph", "sentence_removed", "entity_swap", "paragraph_entity_swap", "antonym", "negation")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_SWAPPABLE = re.compile(r"\b(?:[A-Z][a-zA-Z\-]+|\d[\d,.]*\d|\d)\b")
_AUXILIARY = re.compile(r"\b(?:is|was|are|were|do|does|did|can|could|will|would|has|have|had|should|may|might)\b",
                        re.IGNORECASE)
_NEGATED = re.compile(r"\b(?:not|never|no)\b|n't\b", re.IGNORECASE)
_OPPOSITE_PAIRS = """first last; earliest latest; early late; before after; largest smallest; larger smaller;
    biggest smallest; most least; more fewer; highest lowest; higher lower; high low; maximum minimum;
    longest shortest; longer shorter; oldest youngest; older younger; best worst; better worse;
    north south; northern southern; east west; eastern western; increase decrease; increased decreased;
    won lost; win lose; above below; upper lower; inside outside; internal external; import export;
    imports exports; began ended; start end; started ended; opened closed; rise fall; rose fell;
    positive negative; public private; male female; ancient modern; top bottom; success failure;
    successful unsuccessful; legal illegal; accepted rejected; supported opposed; strongest weakest;
    strong weak; richest poorest; common rare; heaviest lightest; hottest coldest; warmest coolest;
    wettest driest; fastest slowest; deepest shallowest; popular unpopular; allowed banned;
    entered left; joined left; arrived departed; born died; birth death; gained lost; added removed"""
_OPPOSITES = {}
for _pair in _OPPOSITE_PAIRS.split(";"):
    _a, _b = _pair.split()
    _OPPOSITES.setdefault(_a, _b)
    _OPPOSITES.setdefault(_b, _a)
_OPPOSABLE = re.compile(r"\b(?:" + "|".join(sorted(_OPPOSITES, key=len, reverse=True)) + r")\b", re.IGNORECASE)


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


def _answer_sentence(example: Example) -> str:
    """The sentence(s) of the context that hold the first answer."""
    start = example.answer_starts[0]
    end = start + len(example.answer_texts[0])
    return "".join(example.context[s:e] for s, e in sentence_spans(example.context) if s < end and e > start)


def _inner_names(text: str) -> set[str]:
    """Names and numbers of ``text``, less capitalised words that only start a sentence ("The")."""
    out = set()
    for match in _SWAPPABLE.finditer(text):
        before = text[: match.start()].rstrip()
        if match.group()[0].isdigit() or (before and before[-1] not in ".!?\"'("):
            out.add(match.group())
    return out


def paragraph_entity_swap(example: Example, rng: np.random.Generator) -> Example | None:
    """Replace a name or number the question shares with the paragraph by another of the paragraph,
    of the same sort (number for number), that neither the question nor the answer's sentence holds."""
    names = _inner_names(example.context)
    matches = [m for m in _SWAPPABLE.finditer(example.question) if m.start() > 0 and m.group() in names]
    if not matches:
        return None
    target = matches[rng.integers(len(matches))]
    evidence = _answer_sentence(example)
    numeric = target.group()[0].isdigit()
    options = sorted(w for w in names if w[0].isdigit() == numeric and w not in example.question
                     and w not in evidence and not any(w in a for a in example.answer_texts))
    if not options:
        return None
    word = options[rng.integers(len(options))]
    question = example.question[: target.start()] + word + example.question[target.end():]
    return _negative(example, "paragraph_entity_swap", question=question)


def antonym(example: Example, rng: np.random.Generator) -> Example | None:
    """Replace a word of the question by its opposite, unless the answer's sentence holds the opposite."""
    evidence = _answer_sentence(example).lower()
    matches = [m for m in _OPPOSABLE.finditer(example.question)
               if not re.search(rf"\b{_OPPOSITES[m.group().lower()]}\b", evidence)]
    if not matches:
        return None
    target = matches[rng.integers(len(matches))]
    word = _OPPOSITES[target.group().lower()]
    if target.group()[0].isupper():
        word = word.capitalize()
    question = example.question[: target.start()] + word + example.question[target.end():]
    return _negative(example, "antonym", question=question)


def negation(example: Example) -> Example | None:
    """Insert ``not`` after the question's first auxiliary verb, if the question has no negation."""
    match = _AUXILIARY.search(example.question)
    if match is None or _NEGATED.search(example.question):
        return None
    question = example.question[: match.end()] + " not" + example.question[match.end():]
    return _negative(example, "negation", question=question)


def _swap_pool(examples: list[Example]) -> dict[bool, list[str]]:
    words = {m.group() for e in examples for m in _SWAPPABLE.finditer(e.question) if m.start() > 0}
    ordered = sorted(words)
    return {True: [w for w in ordered if w[0].isdigit()], False: [w for w in ordered if not w[0].isdigit()]}


class _Maker:
    """Builds one kind's negative of an answerable example, with the pools ``source`` supplies."""

    def __init__(self, source: list[Example]):
        self.paragraphs_by_title: dict[str, dict[int, str]] = defaultdict(dict)
        for e in source:
            self.paragraphs_by_title[e.title][e.paragraph_id] = e.context
        self.pool = _swap_pool(source)

    def __call__(self, kind: str, e: Example, rng: np.random.Generator) -> Example | None:
        if kind == "sentence_removed":
            return sentence_removed(e)
        if kind == "other_paragraph":
            return other_paragraph(e, list(self.paragraphs_by_title[e.title].items()), rng)
        if kind == "entity_swap":
            return entity_swap(e, self.pool, rng)
        if kind == "paragraph_entity_swap":
            return paragraph_entity_swap(e, rng)
        if kind == "antonym":
            return antonym(e, rng)
        return negation(e)


def _check_kinds(kinds) -> None:
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown negative kinds {sorted(unknown)}; known: {list(KINDS)}")


def add_negatives(examples: list[Example], fractions: dict[str, float], seed: int,
                  pool_source: list[Example] | None = None) -> list[Example]:
    """For each kind, turn a seeded ``fraction`` of the answerable examples into an extra negative
    (kinds that cannot rewrite an example yield fewer).

    ``pool_source`` (default: ``examples``) supplies other paragraphs and swap words.
    """
    _check_kinds(fractions)
    make = _Maker(pool_source or examples)
    answerable = [e for e in examples if e.answer_texts]
    negatives = []
    for k, kind in enumerate(KINDS):
        fraction = fractions.get(kind, 0.0)
        if fraction <= 0:
            continue
        rng = np.random.default_rng([seed, k])
        chosen = rng.choice(len(answerable), size=min(len(answerable), round(fraction * len(answerable))),
                            replace=False)
        negatives += [neg for i in sorted(chosen) if (neg := make(kind, answerable[i], rng)) is not None]
    return examples + negatives


def synthetic_needed(answerable: int, unanswerable: int, share: float) -> int:
    """Synthetic negatives that bring ``unanswerable`` of ``answerable + unanswerable`` questions up to
    ``share`` unanswerable (none when the real ones already reach it)."""
    if not 0 <= share < 1:
        raise ValueError(f"the unanswerable share must be in [0, 1), not {share}")
    return max(0, math.ceil((share * (answerable + unanswerable) - unanswerable) / (1 - share) - 1e-9))


def split_by_weight(total: int, weights: dict[str, float]) -> dict[str, int]:
    """``total`` shared among the kinds in proportion to ``weights`` (largest remainders; sums to total)."""
    weights = {k: w for k, w in weights.items() if w > 0}
    if not weights or total <= 0:
        return {}
    exact = {k: total * w / sum(weights.values()) for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], KINDS.index(k)))[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def top_up_negatives(examples: list[Example], share: float, weights: dict[str, float], seed: int,
                     pool_source: list[Example] | None = None) -> tuple[list[Example], dict]:
    """``examples`` plus synthetic negatives, so that ``share`` of all questions are unanswerable.

    Real unanswerable questions count first; the missing ones are split among the kinds by
    ``weights``, each kind rewriting a seeded order of the answerable questions until it has its
    count (or runs out). Returns the examples and a record: wanted, made per kind, shortfall.
    """
    _check_kinds(weights)
    answerable = [e for e in examples if e.answer_texts]
    real = len(examples) - len(answerable)
    wanted = synthetic_needed(len(answerable), real, share) if weights else 0
    counts = split_by_weight(wanted, weights)
    make = _Maker(pool_source or examples)
    negatives, made = [], {}
    for k, kind in enumerate(KINDS):
        if not counts.get(kind):
            continue
        rng = np.random.default_rng([seed, k])
        kind_negatives = []
        for i in rng.permutation(len(answerable)):
            if len(kind_negatives) == counts[kind]:
                break
            neg = make(kind, answerable[int(i)], rng)
            if neg is not None:
                kind_negatives.append(neg)
        made[kind] = len(kind_negatives)
        negatives += kind_negatives
    record = {"answerable": len(answerable), "real_unanswerable": real, "share_wanted": share,
              "synthetic_wanted": wanted, "synthetic": made, "shortfall": wanted - sum(made.values())}
    return examples + negatives, record
