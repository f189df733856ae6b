"""A fifth model family, written the way a plug-in is: one module with a ``FAMILY`` that implements
``qabench.models.span.SpanFamily``, registered by name in ``qabench.models.FAMILIES`` (the test does
that with monkeypatch). It is deliberately small: a word embedding and a linear start/end head, with
a no-answer score read at position 0 like every span family's."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer

from qabench import checkpoints
from qabench.models import MASKED_LOGIT
from qabench.models.span import SpanFamily

CONFIG_FILE = "toy.json"
WEIGHTS_FILE = "toy.safetensors"


class ToyReader(nn.Module):
    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "width": width}
        self.embedding = nn.Embedding(vocab_size, width)
        self.mix = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embedding(input_ids)
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        question_and_all = (x * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)
        hidden = torch.tanh(self.mix(torch.cat([x, question_and_all.expand_as(x)], dim=-1)))
        start, end = self.head(hidden).float().masked_fill(attention_mask.unsqueeze(-1) == 0, MASKED_LOGIT).unbind(-1)
        return start, end


class ToyFamily(SpanFamily):
    name = "toy"
    default_options = {"width": 16}

    def load_tokenizer(self, checkpoint, options=None):
        return checkpoints.load_pretrained(AutoTokenizer, checkpoint["tokenizer"] if isinstance(checkpoint, dict)
                                           else checkpoint)

    def build(self, checkpoint, seed, options=None):
        options = self.resolve_options(options)
        torch.manual_seed(seed)
        tokenizer = self.load_tokenizer(checkpoint)
        return ToyReader(len(tokenizer), options["width"]), tokenizer, f"random init (toy, width {options['width']})"

    def save(self, model, tokenizer, out_dir) -> None:
        out_dir = Path(out_dir)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS_FILE))
        (out_dir / CONFIG_FILE).write_text(json.dumps(model.config))
        tokenizer.save_pretrained(out_dir)

    def architecture(self, model_dir):
        config = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
        return ToyReader(int(config["vocab_size"]), int(config["width"]))

    def load(self, model_dir):
        model = self.architecture(model_dir)
        model.load_state_dict(load_file(str(Path(model_dir) / WEIGHTS_FILE)))
        return model.eval(), checkpoints.load_pretrained(AutoTokenizer, str(model_dir))

    def recognizes(self, model_dir: Path) -> bool | None:
        return True if (Path(model_dir) / CONFIG_FILE).is_file() else None

    def span_logits(self, model, batch):
        return model(batch["input_ids"], batch["attention_mask"])


FAMILY = ToyFamily()
