"""Batched inference of any family on SQuAD-format questions (load a model with qabench.model_dir.load_model)."""

from __future__ import annotations

import time

import torch

from qabench import models, postprocess
from qabench.data import Example
from qabench.postprocess import PredictionResult


def predict(model, tokenizer, examples: list[Example], settings: dict, batch_size: int = 64,
            threshold: float = 0.0, precision: str = "fp32", progress: bool = True,
            abstain_share: float | None = None) -> PredictionResult:
    """Window the questions, run the model, and pick the best answer per question.

    A question is abstained on ("") when its na_prob exceeds ``threshold`` (see qabench.threshold);
    with ``abstain_share`` the threshold is the one that abstains on that share of ``examples``.
    """
    started = time.perf_counter()
    scores = models.family(settings["family"]).score_windows(model, tokenizer, examples, settings, batch_size,
                                                             precision, progress)
    answers = postprocess.answer_questions([example.id for example in examples], scores.candidates)
    stats = postprocess.run_stats(len(examples), scores.windows, scores.tokens,
                                  (started, scores.windowed_at, scores.scored_at, time.perf_counter()), batch_size,
                                  precision, torch.get_num_threads())
    if abstain_share is not None:
        threshold = postprocess.threshold_for_abstain_share([a.na_prob for a in answers.values()], abstain_share)
    return PredictionResult.from_answers(answers, threshold, stats)
