"""BERT-family encoders with a start/end span head; the CLS position scores "no answer"."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

from qabench import checkpoints

FAMILY = "encoder"


def load_tokenizer(checkpoint: str | dict, options: dict | None = None):
    spec = checkpoint["tokenizer"] if isinstance(checkpoint, dict) else checkpoint
    return checkpoints.load_pretrained(AutoTokenizer, spec)


def build(checkpoint: str | dict, seed: int, options: dict | None = None):
    """Model and tokenizer for training, plus a short description of where the weights came from.

    ``checkpoint`` is a spec string (hub id, directory, ``pip:package``) or
    ``{"random_init": {config fields}, "tokenizer": spec, "model_type": "bert"}``, optionally with
    ``"embeddings": spec`` (word embeddings copied from that checkpoint).
    """
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(checkpoint)
    if isinstance(checkpoint, dict):
        fields = dict(checkpoint["random_init"])
        fields.setdefault("vocab_size", tokenizer.vocab_size)
        config = AutoConfig.for_model(checkpoint.get("model_type", "bert"), **fields)
        model = AutoModelForQuestionAnswering.from_config(config)
        origin = f"random init ({config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size})"
        origin += checkpoints.init_embeddings_from(checkpoint, [model], tokenizer.vocab_size)
    else:
        model = checkpoints.load_pretrained(AutoModelForQuestionAnswering, checkpoint)
        origin = checkpoint
    return model, tokenizer, origin


def save(model, tokenizer, out_dir) -> None:
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load(model_dir: str):
    """A fine-tuned model directory (ours or any hub/local QA checkpoint) for inference."""
    tokenizer = checkpoints.load_pretrained(AutoTokenizer, model_dir)
    model = checkpoints.load_pretrained(AutoModelForQuestionAnswering, model_dir)
    model.eval()
    return model, tokenizer


def span_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = model(**inputs)
    return out.start_logits, out.end_logits


SPAN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class SpanFunction(nn.Module):
    """An encoder QA model as tensors in, (start, end) logits out: the function that torch.export
    and the ONNX exporter trace."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.start_logits, out.end_logits


def span_inputs(batch: int, length: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """Placeholder inputs of one shape (for tracing and warm-up)."""
    ids = torch.arange(batch * length, dtype=torch.long).reshape(batch, length) % vocab_size
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def export_inputs(config) -> tuple[dict[str, torch.Tensor], dict]:
    """Example inputs for an export and their dynamic shapes: any batch, any length the model's
    position table allows (the example's batch of 2 keeps the batch dimension from being fixed at 1)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    length = torch.export.Dim("length", min=2, max=config.max_position_embeddings)
    return span_inputs(2, 32, config.vocab_size), {name: {0: batch, 1: length} for name in SPAN_INPUTS}
