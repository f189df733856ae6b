"""Synthetic unanswerable questions and the train / held-out split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from qabench.data import Example, load_squad
from qabench.negatives import (
    _SWAPPABLE, add_negatives, antonym, entity_swap, negation, other_paragraph, paragraph_entity_swap,
    sentence_removed, sentence_spans, split_by_weight, synthetic_needed, top_up_negatives,
)
from qabench.prepare import prepare, split_articles, subset, top_up

REPO = Path(__file__).resolve().parents[1]
TRAIN_TINY = REPO / "tests" / "data" / "train-tiny.json"
DEV_TINY = REPO / "tests" / "data" / "dev-tiny.json.gz"


@pytest.fixture(scope="module")
def train() -> list[Example]:
    return load_squad(TRAIN_TINY)


@pytest.fixture(scope="module")
def dev() -> list[Example]:
    return load_squad(DEV_TINY)


def _example(context: str, answer: str, question: str = "What is it?", pid: int = 0, qid: str = "q") -> Example:
    return Example(qid, "T", pid, context, question, [answer], [context.index(answer)])


# ---------------------------------------------------------------- sentences


@pytest.mark.parametrize("text", [
    "",
    "One sentence without an end",
    "First one. Second one! Third one? Fourth.",
    "  Leading space. Trailing space.  ",
    'He said "Stop." Then (in 1990.) 42 people left.\nNew line here. U.S. troops won.',
    "Ends with dots... And more text",
])
def test_sentence_spans_cover_the_text(text):
    spans = sentence_spans(text)
    assert "".join(text[s:e] for s, e in spans) == text
    assert all(s < e for s, e in spans)
    assert all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))


def test_sentence_spans_split_where_expected():
    text = "Alpha comes first. Beta is second! Gamma third? 1999 was a year."
    parts = [text[s:e] for s, e in sentence_spans(text)]
    assert parts == ["Alpha comes first. ", "Beta is second! ", "Gamma third? ", "1999 was a year."]


def test_sentence_spans_cover_real_contexts(train):
    for context in {e.context for e in train}:
        spans = sentence_spans(context)
        assert "".join(context[s:e] for s, e in spans) == context
        assert len(spans) >= 2


# ---------------------------------------------------------------- sentence_removed

SENTENCES = [
    "The river rises in the northern hills of the province. ",
    "It was first mapped by the surveyor Jonas Pike in 1851. ",
    "Today the valley is known for its orchards and its mills.",
]


def test_sentence_removed_drops_exactly_the_answer_sentence():
    context = "".join(SENTENCES)
    neg = sentence_removed(_example(context, "Jonas Pike", "Who first mapped the river?"))
    assert neg is not None
    assert neg.context == SENTENCES[0] + SENTENCES[2]
    assert "Jonas Pike" not in neg.context
    assert neg.is_impossible and neg.answer_texts == [] and neg.answer_starts == []
    assert neg.question == "Who first mapped the river?"
    assert neg.id == "q-neg-sentence_removed" and neg.origin == "neg_sentence_removed"


def test_sentence_removed_refuses_when_the_answer_occurs_elsewhere():
    context = "".join(SENTENCES) + " The mills still grind grain for Jonas Pike and his heirs."
    assert sentence_removed(_example(context, "Jonas Pike")) is None


def test_sentence_removed_answer_across_two_sentences():
    context = "".join(SENTENCES)
    neg = sentence_removed(_example(context, "in 1851. Today"))
    assert neg is not None
    assert neg.context == SENTENCES[0].strip()  # both sentences the answer touches are gone


def test_sentence_removed_refuses_a_too_short_remainder():
    context = "Short one here. " + SENTENCES[1]
    assert sentence_removed(_example(context, "Jonas Pike")) is None


def test_sentence_removed_on_real_data(train):
    made = 0
    for example in train:
        neg = sentence_removed(example)
        if neg is None:
            continue
        made += 1
        start = example.answer_starts[0]
        end = start + len(example.answer_texts[0])
        spans = sentence_spans(example.context)
        kept = [example.context[s:e] for s, e in spans if e <= start or s >= end]
        dropped = [example.context[s:e] for s, e in spans if not (e <= start or s >= end)]
        assert dropped
        assert neg.context == "".join(kept).strip()
        assert example.answer_texts[0].lower() not in neg.context.lower()
        assert len(neg.context) >= 40
    assert made > len(train) // 2


# ---------------------------------------------------------------- other_paragraph


def test_other_paragraph_never_picks_a_paragraph_with_the_answer():
    example = _example("".join(SENTENCES), "Jonas Pike", pid=3)
    clean = "A different paragraph about bridges and ferries on the lower river."
    candidates = [
        (3, example.context),                                   # its own paragraph
        (4, "In 1860 JONAS PIKE drew a second map of the coast."),  # holds the answer (other case)
        (5, clean),
        (6, "The survey by jonas pike was reprinted twice."),
    ]
    for seed in range(30):
        neg = other_paragraph(example, candidates, np.random.default_rng(seed))
        assert neg is not None and neg.context == clean
        assert neg.is_impossible and neg.answer_texts == [] and neg.origin == "neg_other_paragraph"
        assert neg.question == example.question and neg.id == "q-neg-other_paragraph"
    assert other_paragraph(example, candidates[:2] + candidates[3:], np.random.default_rng(0)) is None


def test_other_paragraph_on_real_data(train):
    by_title: dict[str, dict[int, str]] = {}
    for e in train:
        by_title.setdefault(e.title, {})[e.paragraph_id] = e.context
    rng = np.random.default_rng(1)
    made = 0
    for example in train:
        neg = other_paragraph(example, list(by_title[example.title].items()), rng)
        if neg is None:
            continue
        made += 1
        assert neg.context != example.context
        assert neg.context in by_title[example.title].values()
        assert example.answer_texts[0].lower() not in neg.context.lower()
    assert made > len(train) // 2


# ---------------------------------------------------------------- entity_swap


def _swapped_word(original: Example, neg: Example) -> list[tuple[str, str]]:
    """Every (target, replacement) that turns the original question into the new one."""
    q, new = original.question, neg.question
    found = []
    for m in _SWAPPABLE.finditer(q):
        tail = q[m.end():]
        if new.startswith(q[:m.start()]) and new.endswith(tail) and len(new) - len(tail) > m.start():
            found.append((m, new[m.start():len(new) - len(tail)]))
    return found


def _check_swap(original: Example, neg: Example) -> None:
    assert neg.is_impossible and neg.answer_texts == [] and neg.answer_starts == []
    assert neg.context == original.context and neg.question != original.question
    assert neg.origin == "neg_entity_swap" and neg.id == f"{original.id}-neg-entity_swap"
    options = [(m, word) for m, word in _swapped_word(original, neg)
               if m.start() > 0 and m.group() in original.context and word != m.group()
               and word.lower() not in original.context.lower()
               and word[0].isdigit() == m.group()[0].isdigit()]
    assert options, (original.question, neg.question)


def test_entity_swap_by_hand():
    context = "Marie Curie won the Nobel Prize in Physics in 1903 together with Pierre Curie."
    example = _example(context, "1903", "When did Marie Curie win the Nobel Prize?")
    pool = {True: ["1903", "1911", "1850"], False: ["Curie", "Nobel", "Einstein", "Bohr", "Physics"]}
    swaps = set()
    for seed in range(40):
        neg = entity_swap(example, pool, np.random.default_rng(seed))
        assert neg is not None
        _check_swap(example, neg)
        swaps.add(neg.question)
        assert neg.question.startswith("When did ")  # the first word is never a target
    # only names from the pool that are not in the context can come in
    allowed = {"When did Einstein Curie win the Nobel Prize?", "When did Bohr Curie win the Nobel Prize?",
               "When did Marie Einstein win the Nobel Prize?", "When did Marie Bohr win the Nobel Prize?",
               "When did Marie Curie win the Einstein Prize?", "When did Marie Curie win the Bohr Prize?",
               "When did Marie Curie win the Nobel Einstein?", "When did Marie Curie win the Nobel Bohr?"}
    assert swaps <= allowed and len(swaps) >= 4


def test_entity_swap_needs_a_shared_name():
    example = _example("".join(SENTENCES), "Jonas Pike", "who mapped the river first?")
    assert entity_swap(example, {True: ["1"], False: ["Bohr"]}, np.random.default_rng(0)) is None


def test_entity_swap_on_real_data(train):
    negatives = add_negatives(train, {"entity_swap": 1.0}, seed=5)[len(train):]
    assert len(negatives) > 10
    by_id = {e.id: e for e in train}
    for neg in negatives:
        _check_swap(by_id[neg.id.removesuffix("-neg-entity_swap")], neg)


# ---------------------------------------------------------------- question-side kinds

LIGHTHOUSE = ("The lighthouse at Port Ellis was built by Samuel Reed in 1852. It was rebuilt in 1901 after a storm. "
              "Anna Vale kept the light until 1930, when Thomas Grey took over.")


def test_paragraph_entity_swap_by_hand():
    example = _example(LIGHTHOUSE, "Samuel Reed", "Who built the lighthouse at Port Ellis in 1852?")
    seen = set()
    for seed in range(60):
        neg = paragraph_entity_swap(example, np.random.default_rng(seed))
        assert neg is not None and neg.is_impossible and neg.context == example.context
        assert neg.origin == "neg_paragraph_entity_swap" and neg.id == "q-neg-paragraph_entity_swap"
        seen.add(neg.question)
    # "1852", "Port" and "Ellis" are in the answer's sentence: they can go but not come in; "It",
    # "The" and "Anna" only start sentences; "Samuel" and "Reed" are the answer; numbers replace numbers
    assert seen == {
        f"Who built the lighthouse at {a} {b} in {c}?"
        for a, b, c in [("Vale", "Ellis", "1852"), ("Thomas", "Ellis", "1852"),
                        ("Grey", "Ellis", "1852"), ("Port", "Vale", "1852"),
                        ("Port", "Thomas", "1852"), ("Port", "Grey", "1852"), ("Port", "Ellis", "1901"),
                        ("Port", "Ellis", "1930")]}


def test_paragraph_entity_swap_needs_a_name_of_the_paragraph():
    example = _example(LIGHTHOUSE, "Samuel Reed", "who built the lighthouse?")
    assert paragraph_entity_swap(example, np.random.default_rng(0)) is None


@pytest.mark.parametrize("question, answer, expected", [
    ("Who kept the light first?", "Anna Vale", "Who kept the light last?"),
    ("When was the Northern tower rebuilt?", "1901", "When was the Southern tower rebuilt?"),
    # the answer's sentence holds the opposite: the flipped question could still be answered there
    ("What happened after the storm?", "rebuilt", None),
    ("Who built the lighthouse?", "Samuel Reed", None),
])
def test_antonym_by_hand(question, answer, expected):
    context = LIGHTHOUSE.replace("It was rebuilt", "Before the storm it was rebuilt") + " The Northern tower fell."
    neg = antonym(_example(context, answer, question), np.random.default_rng(0))
    assert (neg.question if neg else None) == expected


@pytest.mark.parametrize("question, expected", [
    ("Who was the keeper in 1930?", "Who was not the keeper in 1930?"),
    ("In what year did Reed build it?", "In what year did not Reed build it?"),
    ("Who never kept the light?", None),
    ("Which keeper wasn't paid?", None),
    ("Who kept the light?", None),
])
def test_negation_by_hand(question, expected):
    neg = negation(_example(LIGHTHOUSE, "Anna Vale", question))
    assert (neg.question if neg else None) == expected


@pytest.mark.parametrize("kind", ["paragraph_entity_swap", "antonym", "negation"])
def test_question_side_kinds_on_real_data(train, kind):
    negatives = add_negatives(train, {kind: 1.0}, seed=5)[len(train):]
    assert len(negatives) > 5
    by_id = {e.id: e for e in train}
    for neg in negatives:
        original = by_id[neg.id.removesuffix(f"-neg-{kind}")]
        assert neg.context == original.context and neg.question != original.question
        assert neg.origin == f"neg_{kind}" and neg.is_impossible and not neg.answer_texts


def test_new_kinds_leave_the_earlier_kinds_unchanged(train):
    """Each kind draws from its own seeded stream, so adding kinds keeps an older recipe's negatives."""
    alone = add_negatives(train, FRACTIONS, seed=9)
    together = add_negatives(train, {**FRACTIONS, "negation": 0.5, "antonym": 0.5}, seed=9)
    assert together[: len(alone)] == alone
    assert {e.origin for e in together[len(alone):]} == {"neg_negation", "neg_antonym"}


# ---------------------------------------------------------------- add_negatives

FRACTIONS = {"sentence_removed": 0.3, "entity_swap": 0.3, "other_paragraph": 0.2}


def test_add_negatives_is_deterministic_and_labelled(train):
    first = add_negatives(train, FRACTIONS, seed=11)
    again = add_negatives(train, FRACTIONS, seed=11)
    other = add_negatives(train, FRACTIONS, seed=12)
    assert first == again
    assert [e.id for e in first] != [e.id for e in other]
    assert first[:len(train)] == train  # originals kept, unchanged, first
    added = first[len(train):]
    assert added
    assert all(e.is_impossible and e.answer_texts == [] and e.answer_starts == [] for e in added)
    assert {e.origin for e in added} == {f"neg_{k}" for k in FRACTIONS}
    ids = [e.id for e in first]
    assert len(ids) == len(set(ids))


def test_add_negatives_fractions_are_roughly_honoured(train):
    answerable = sum(1 for e in train if e.answer_texts)
    for seed in (1, 2):
        counts = Counter(e.origin for e in add_negatives(train, FRACTIONS, seed=seed))
        assert counts["original"] == len(train)
        for kind, fraction in FRACTIONS.items():
            target = round(fraction * answerable)
            assert 0.5 * target <= counts[f"neg_{kind}"] <= target, (kind, counts)
    none = add_negatives(train, {"sentence_removed": 0.0}, seed=1)
    assert none == train


def test_add_negatives_uses_only_answerable_questions():
    dev = load_squad(DEV_TINY)
    out = add_negatives(dev, {"sentence_removed": 1.0, "other_paragraph": 1.0}, seed=3)
    impossible_ids = {e.id for e in dev if e.is_impossible}
    for neg in out[len(dev):]:
        assert neg.id.rsplit("-neg-", 1)[0] not in impossible_ids


def test_add_negatives_rejects_unknown_kinds(train):
    with pytest.raises(ValueError, match="unknown negative kinds"):
        add_negatives(train, {"shuffle": 0.5}, seed=1)


# ---------------------------------------------------------------- top-up and prepare

RECIPE = {"share": 0.4, "kinds": {"sentence_removed": 3, "entity_swap": 2, "other_paragraph": 1}}


@pytest.mark.parametrize("answerable, real, share, expected", [
    (20, 0, 1 / 3, 10),     # 10 / 30
    (100, 0, 0.5, 100),
    (100, 60, 0.5, 40),     # 100 / 200
    (100, 30, 0.2, 0),      # the real ones already exceed the share: nothing added, nothing removed
    (10, 0, 0.0, 0),
    (7, 1, 1 / 3, 3),       # 4 / 11 = 0.364: the smallest count that reaches the share
])
def test_synthetic_needed_by_hand(answerable, real, share, expected):
    assert synthetic_needed(answerable, real, share) == expected
    total = answerable + real + expected
    assert expected == 0 or (real + expected) / total >= share > (real + expected - 1) / (total - 1)


def test_synthetic_needed_refuses_a_share_of_one():
    with pytest.raises(ValueError, match="share"):
        synthetic_needed(10, 0, 1.0)


def test_split_by_weight_sums_to_the_total():
    assert split_by_weight(10, {"sentence_removed": 3, "entity_swap": 2, "other_paragraph": 1}) == {
        "sentence_removed": 5, "entity_swap": 3, "other_paragraph": 2}
    # a tie goes to the kind listed first in KINDS
    assert split_by_weight(7, {"negation": 1, "antonym": 1, "entity_swap": 0}) == {"negation": 3, "antonym": 4}
    assert split_by_weight(0, {"negation": 1}) == {} and split_by_weight(5, {}) == {}


def test_top_up_counts_real_unanswerable_questions_first(dev):
    answerable = [e for e in dev if e.answer_texts]
    real = [e for e in dev if e.is_impossible]
    assert real, "dev-tiny should hold real unanswerable questions"
    out, record = top_up_negatives(dev, 0.6, {"sentence_removed": 1, "other_paragraph": 1}, seed=3)
    assert out[: len(dev)] == dev
    synthetic = out[len(dev):]
    assert record["real_unanswerable"] == len(real) and record["answerable"] == len(answerable)
    assert record["synthetic_wanted"] == synthetic_needed(len(answerable), len(real), 0.6)
    assert len(synthetic) == sum(record["synthetic"].values()) == record["synthetic_wanted"] - record["shortfall"]
    assert all(e.is_impossible and e.origin.startswith("neg_") for e in synthetic)
    # a share the real ones already reach adds nothing
    out, record = top_up_negatives(dev, len(real) / len(dev) / 2, {"sentence_removed": 1}, seed=3)
    assert out == dev and record["synthetic_wanted"] == 0


def test_top_up_is_seeded_and_switched_off_by_share_zero(train):
    first = top_up_negatives(train, 0.4, RECIPE["kinds"], seed=5)
    assert first == top_up_negatives(train, 0.4, RECIPE["kinds"], seed=5)
    assert first[0] != top_up_negatives(train, 0.4, RECIPE["kinds"], seed=6)[0]
    assert top_up_negatives(train, 0.0, RECIPE["kinds"], seed=5)[0] == train
    made = first[1]["synthetic"]
    assert made["sentence_removed"] >= made["entity_swap"] >= made["other_paragraph"] > 0


def test_prepare_holds_out_whole_articles(train):
    titles = {e.title for e in train}
    tr, held, record = prepare(train, holdout_articles=1, negatives=RECIPE, seed=7)
    train_titles, held_titles = {e.title for e in tr}, {e.title for e in held}
    assert len(held_titles) == 1 and not train_titles & held_titles
    assert train_titles | held_titles == titles
    # every original question of a held-out article is in the holdout, none lost
    assert sorted(e.id for e in held if e.origin == "original") == sorted(
        e.id for e in train if e.title in held_titles)
    assert sum(e.origin == "original" for e in tr) + sum(e.origin == "original" for e in held) == len(train)
    # negatives never carry a paragraph from the other side
    assert not {e.context for e in tr} & {e.context for e in held}
    assert {e.origin for e in held} == {"original"} and any(e.origin != "original" for e in tr)
    # the share is reached (up to what the kinds could make)
    unanswerable = sum(e.is_impossible for e in tr)
    assert unanswerable == record["real_unanswerable"] + sum(record["synthetic"].values())
    assert record["shortfall"] or unanswerable / len(tr) >= 0.4
    # seeded
    assert prepare(train, holdout_articles=1, negatives=RECIPE, seed=7) == (tr, held, record)


def test_the_holdout_gets_its_own_negatives_from_its_own_questions(train):
    _, held, _ = prepare(train, holdout_articles=1, negatives=RECIPE, seed=7)
    topped, record = top_up(held, {"share": 0.3, "kinds": {"negation": 1.0}}, seed=7)
    assert topped[: len(held)] == held and {e.origin for e in topped[len(held):]} == {"neg_negation"}
    assert {e.context for e in topped} == {e.context for e in held}  # nothing from the training articles
    assert top_up(held, {"share": 0, "kinds": {"negation": 1.0}}, seed=7)[0] == held  # share 0: none
    assert top_up(held, None, seed=7)[1]["synthetic_wanted"] == 0


def test_prepare_subsets_are_seeded_and_in_file_order(train):
    tr, held, _ = prepare(train, max_questions=20, holdout_articles=1, holdout_questions=5, seed=4)
    assert len(tr) == 20 and len(held) == 5
    order = {e.id: i for i, e in enumerate(train)}
    assert [order[e.id] for e in tr] == sorted(order[e.id] for e in tr)
    assert subset(train, 20, 4) == subset(train, 20, 4)
    assert subset(train, None, 4) == train and subset(train, 500, 4) == train


def test_split_articles_errors_and_no_holdout(train):
    assert split_articles(train, 0, 1) == (train, [])
    with pytest.raises(ValueError, match="cannot hold out"):
        split_articles(train, 3, 1)
