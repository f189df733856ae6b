"""Reading, validating and flattening SQuAD-format files (v1.1 or v2.0, .json or .json.gz)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qabench.errors import InputError
from qabench.io import read_json, read_parquet, reading

EXAMPLE_COLUMNS = [
    "id", "title", "paragraph_id", "context", "question",
    "answer_texts", "answer_starts", "is_impossible", "origin",
]


@dataclass
class Example:
    """One question about one context; ``answer_texts`` is empty for an unanswerable question."""

    id: str
    title: str
    paragraph_id: int
    context: str
    question: str
    answer_texts: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)
    is_impossible: bool = False
    origin: str = "original"


def _require(obj: object, key: str, kind: type | tuple, where: str, path: Path):
    if not isinstance(obj, dict):
        raise InputError(path, f"{where}: expected an object, found {type(obj).__name__}")
    if key not in obj:
        raise InputError(path, f"{where}: missing key '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InputError(path, f"{where}.{key}: expected {names}, found {type(value).__name__}")
    return value


def parse_squad(dataset: object, path: str | os.PathLike) -> list[Example]:
    """Validate an already-decoded SQuAD object and return its questions in file order."""
    path = Path(path)
    articles = _require(dataset, "data", list, "top level", path)
    examples: list[Example] = []
    seen: dict[str, str] = {}
    paragraph_id = 0
    for a, article in enumerate(articles):
        where_a = f"data[{a}]"
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = _require(article, "paragraphs", list, where_a, path)
        for p, paragraph in enumerate(paragraphs):
            where_p = f"{where_a}.paragraphs[{p}]"
            context = _require(paragraph, "context", str, where_p, path)
            qas = _require(paragraph, "qas", list, where_p, path)
            for q, qa in enumerate(qas):
                where_q = f"{where_p}.qas[{q}]"
                qid = _require(qa, "id", str, where_q, path)
                question = _require(qa, "question", str, where_q, path)
                if qid in seen:
                    raise InputError(path, f"duplicate question id '{qid}' at {where_q} (first at {seen[qid]})")
                seen[qid] = where_q
                if not question.strip():
                    raise InputError(path, f"question '{qid}' is empty ({where_q})")
                answers = _require(qa, "answers", list, where_q, path)
                texts, starts = [], []
                for n, answer in enumerate(answers):
                    where_n = f"{where_q}.answers[{n}]"
                    text = _require(answer, "text", str, where_n, path)
                    start = _require(answer, "answer_start", int, where_n, path)
                    if not text:
                        raise InputError(path, f"question '{qid}': answer {n} has empty text")
                    if isinstance(start, bool) or start < 0 or context[start:start + len(text)] != text:
                        found = context[start:start + len(text)] if isinstance(start, int) else ""
                        raise InputError(
                            path,
                            f"question '{qid}': answer {text!r} does not match the context at offset "
                            f"{start} (context has {found!r})",
                        )
                    texts.append(text)
                    starts.append(start)
                impossible = qa.get("is_impossible", not texts)
                if not isinstance(impossible, bool):
                    raise InputError(path, f"{where_q}.is_impossible: expected true/false")
                if impossible and texts:
                    raise InputError(path, f"question '{qid}': is_impossible is true but it has answers")
                if not impossible and not texts:
                    raise InputError(path, f"question '{qid}': no answers and is_impossible is not true")
                examples.append(Example(qid, title, paragraph_id, context, question, texts, starts, impossible))
            paragraph_id += 1
    if not examples:
        raise InputError(path, "holds no questions")
    return examples


def load_squad(path: str | os.PathLike) -> list[Example]:
    """Read and validate a SQuAD file; every problem is an InputError naming the file."""
    return parse_squad(read_json(path), path)


def examples_to_frame(examples: list[Example]) -> pd.DataFrame:
    return pd.DataFrame([vars(e) for e in examples], columns=EXAMPLE_COLUMNS)


def frame_to_examples(frame: pd.DataFrame) -> list[Example]:
    return [
        Example(
            id=row.id, title=row.title, paragraph_id=int(row.paragraph_id), context=row.context,
            question=row.question, answer_texts=list(row.answer_texts),
            answer_starts=[int(s) for s in row.answer_starts], is_impossible=bool(row.is_impossible),
            origin=row.origin,
        )
        for row in frame.itertuples(index=False)
    ]


def read_examples(path: str | os.PathLike) -> list[Example]:
    """Examples from a prepared parquet table or straight from a SQuAD file; a damaged table or an
    empty question (a model would answer a question nobody asked) is one InputError."""
    path = Path(path)
    if path.suffix != ".parquet":
        return load_squad(path)
    with reading(path, "examples table"):
        examples = frame_to_examples(read_parquet(path, EXAMPLE_COLUMNS, "examples table"))
    for example in examples:
        if not isinstance(example.question, str) or not example.question.strip():
            raise InputError(path, f"question '{example.id}' is empty")
    return examples
