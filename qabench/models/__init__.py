"""Model families. A config's ``family`` names a module here; every module offers

    FAMILY: str
    build(checkpoint, seed, options) -> (model, tokenizer, origin)   fresh model for training;
        ``origin`` says where the weights came from ("random init (...)" when not pretrained)
    load_tokenizer(checkpoint, options) -> tokenizer    the tokenizer ``build`` would return, without
        building the model (the tokenize rule runs before training)
    save(model, tokenizer, out_dir)                     everything ``load`` needs, into ``out_dir``
    load(model_dir) -> (model, tokenizer)               in eval mode

Span families (encoder, lstm, mamba) read windows made by ``qabench.features.tokenize_examples``
([CLS] question [SEP] context [SEP], right-padded) and also offer

    span_logits(model, batch) -> (start_logits, end_logits)   each [batch, length]; position 0
        scores "no answer" (the label of an unanswerable window is (0, 0))

The generative family (t5) brings its own features, loss and decoding:

    make_features(examples, tokenizer, spec, options, example_offset=0) -> DataFrame
    batch_loss(model, tokenizer, features) -> callable(indices) -> (loss, tokens)
    predict(model, tokenizer, examples, settings, batch_size, threshold, precision, progress)
        -> qabench.postprocess.PredictionResult
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = ("encoder", "t5", "lstm", "mamba")
SPAN_FAMILIES = ("encoder", "lstm", "mamba")
# Logit or score of a position or span that can never be the answer (padding, question tokens,
# attention over padding; "no span in any window"). -1e4 rather than -inf or the dtype's minimum: it
# stays finite in fp16 and bf16, so sums of two (start + end) and differences (na_prob) never give
# inf or NaN, yet it is far below any real score and exp() of it is exactly 0 in float32.
MASKED_LOGIT = -1e4


def family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return importlib.import_module(f"qabench.models.{name}")
