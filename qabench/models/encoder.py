"""BERT-family encoders with a start/end span head; the CLS position scores "no answer"."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

from qabench import checkpoints
from qabench.errors import InputError
from qabench.models import mark_new_parameters
from qabench.models.span import SpanFamily

# model types of Hugging Face configs that hold another family's model (t5's and encoder-decoders, Mamba backbones)
NOT_ENCODER_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5", "encoder-decoder", "mamba", "mamba2")


class EncoderFamily(SpanFamily):
    name = "encoder"
    lora_targets = ("query", "key", "value", "dense")
    head_modules = ("qa_outputs",)

    def load_tokenizer(self, checkpoint: str | dict, options: dict | None = None):
        spec = checkpoint["tokenizer"] if isinstance(checkpoint, dict) else checkpoint
        return checkpoints.load_pretrained(AutoTokenizer, spec)

    def build(self, checkpoint: str | dict, seed: int, options: dict | None = None):
        """Model and tokenizer for training, plus a short description of where the weights came from.

        ``checkpoint`` is a spec string (hub id, directory, ``pip:package``) or
        ``{"random_init": {config fields}, "tokenizer": spec, "model_type": "bert"}``, optionally with
        ``"embeddings": spec`` (word embeddings copied from that checkpoint).
        """
        torch.manual_seed(seed)
        tokenizer = self.load_tokenizer(checkpoint)
        if isinstance(checkpoint, dict):
            fields = dict(checkpoint["random_init"])
            fields.setdefault("vocab_size", tokenizer.vocab_size)
            config = AutoConfig.for_model(checkpoint.get("model_type", "bert"), **fields)
            model = AutoModelForQuestionAnswering.from_config(config)
            origin = f"random init ({config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size})"
            origin += checkpoints.init_embeddings_from(checkpoint, [model], tokenizer.vocab_size)
        else:
            model, loading = checkpoints.load_pretrained(AutoModelForQuestionAnswering, checkpoint,
                                                         output_loading_info=True)
            mark_new_parameters(model, loading["missing_keys"])  # an encoder checkpoint has no QA head
            origin = checkpoint
        return model, tokenizer, origin

    def save(self, model, tokenizer, out_dir) -> None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)

    def load(self, model_dir):
        """A fine-tuned model directory (ours or any hub/local QA checkpoint) for inference."""
        tokenizer = checkpoints.load_pretrained(AutoTokenizer, str(model_dir))
        model = checkpoints.load_pretrained(AutoModelForQuestionAnswering, str(model_dir))
        model.eval()
        return model, tokenizer

    def architecture(self, model_dir):
        return AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(str(model_dir)))

    def recognizes(self, model_dir: Path) -> bool | None:
        """A Hugging Face config.json of any model type but the other families' is an encoder's."""
        model_type = checkpoints.saved_model_type(model_dir)
        return None if model_type is None else model_type not in NOT_ENCODER_MODEL_TYPES

    def position_limit(self, model) -> int | None:
        return _position_limit(getattr(model, "config", None))

    def checkpoint_position_limit(self, checkpoint: str | dict) -> tuple[int, str] | None:
        """Where the checkpoint's config can be read without building the model (a random-init spec, a
        local or pip checkpoint directory): its position limit and where that comes from."""
        try:
            if isinstance(checkpoint, dict):
                fields = dict(checkpoint.get("random_init") or {})
                config = AutoConfig.for_model(checkpoint.get("model_type", "bert"), **fields)
                where = "checkpoint random_init"
            else:
                target = checkpoints.resolve(checkpoint)
                if not Path(target).is_dir():
                    return None  # a hub id: building it says whether it is there
                config, where = AutoConfig.from_pretrained(target), target
        except InputError:
            raise
        except Exception:  # noqa: BLE001 - an unreadable config is reported when the model is built
            return None
        limit = _position_limit(config)
        return None if limit is None else (limit, where)

    def span_logits(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {k: batch[k] for k in SPAN_INPUTS if k in batch}
        out = model(**inputs)
        return out.start_logits, out.end_logits


FAMILY = EncoderFamily()


def _position_limit(config) -> int | None:
    """How many tokens an encoder with this (Hugging Face) config takes: its position table's size
    (RoBERTa-style tables start after the padding index), or None when it has no such limit."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "data2vec-text", "longformer"):
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    return limit


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
