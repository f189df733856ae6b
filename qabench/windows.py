"""What every family's question/context windows share: the window sizes and question truncation.

A low-level module (it imports no model code), so that the span windows (qabench.models.span), the
families that bring their own windows (qabench.models.t5) and the span decoding
(qabench.postprocess) all read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from qabench.errors import InputError

NOT_CONTEXT = -1  # the character offset of a window position outside the context
SPECIAL_TOKENS_IN_PAIR = 3  # [CLS] question [SEP] context [SEP]


@dataclass(frozen=True)
class WindowSpec:
    max_length: int = 384
    stride: int = 128
    max_question_tokens: int = 64

    def validate(self, where: str = "config") -> None:
        """Every window must hold the question and still move forward through the context."""
        room = self.max_length - self.max_question_tokens - SPECIAL_TOKENS_IN_PAIR
        if room <= 0:
            raise InputError(where, f"max_length {self.max_length} leaves no room for context after a "
                                    f"{self.max_question_tokens}-token question")
        if not 0 <= self.stride < room:
            raise InputError(where, f"stride {self.stride} must be below max_length - max_question_tokens - 3 "
                                    f"= {room}, or windows would not advance through the context")


def truncate_questions(questions: list[str], tokenizer, max_tokens: int) -> list[str]:
    """Cut questions longer than ``max_tokens`` tokens at a token boundary (keeps the stride valid)."""
    encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, offsets in zip(questions, encoded["offset_mapping"]):
        out.append(question if len(offsets) <= max_tokens else question[: offsets[max_tokens - 1][1]])
    return out


# the columns every family's feature shard has: which question a window belongs to, and its tokens
REQUIRED_FEATURE_COLUMNS = ["example_index", "input_ids"]
