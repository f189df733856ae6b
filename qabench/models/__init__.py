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
        -> qabench.predict.PredictionResult
"""

from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES = ("encoder", "t5", "lstm", "mamba")
SPAN_FAMILIES = ("encoder", "lstm", "mamba")


def family(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return importlib.import_module(f"qabench.models.{name}")
