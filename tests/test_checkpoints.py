"""Random-init models that start from another checkpoint's word embeddings."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from conftest import TINY_MODEL
from qabench.errors import InputError
from qabench.models import encoder, mamba, t5

WIDTH = 32


@pytest.fixture(scope="module")
def source(tmp_path_factory, tokenizer):
    """A small BERT over the MiniLM vocabulary, saved like any local checkpoint directory."""
    torch.manual_seed(1)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=WIDTH, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64))
    path = tmp_path_factory.mktemp("source")
    model.save_pretrained(path)
    return str(path), model.get_input_embeddings().weight.detach().clone()


def random_init(family, width: int, embeddings: str) -> dict:
    fields = {
        "encoder": {**TINY_MODEL["random_init"], "hidden_size": width},
        "t5": {"d_model": width, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2},
        "mamba": {"hidden_size": width, "num_hidden_layers": 1, "state_size": 4},
    }[family]
    return {"tokenizer": TINY_MODEL["tokenizer"], "random_init": fields, "embeddings": embeddings}


@pytest.mark.parametrize("family", ["encoder", "t5", "mamba"])
def test_word_embeddings_copied_from_checkpoint(family, source):
    path, vectors = source
    module = {"encoder": encoder, "t5": t5, "mamba": mamba}[family]
    model, _, origin = module.FAMILY.build(random_init(family, WIDTH, path), seed=0)
    backbones = [model] if family != "mamba" else [model.forward_backbone]
    for backbone in backbones:
        copied = backbone.get_input_embeddings().weight[: len(vectors)]
        assert torch.equal(copied, vectors)
    assert origin.startswith("random init") and origin.endswith(f"word embeddings from {path}")


def test_both_mamba_directions_get_the_embeddings(source):
    path, vectors = source
    model, _, _ = mamba.FAMILY.build(random_init("mamba", WIDTH, path), seed=0, options={"bidirectional": True})
    assert torch.equal(model.backward_backbone.get_input_embeddings().weight[: len(vectors)], vectors)


def test_without_embeddings_the_init_is_random(source):
    path, vectors = source
    spec = random_init("t5", WIDTH, path)
    del spec["embeddings"]
    model, _, origin = t5.FAMILY.build(spec, seed=0)
    assert not torch.equal(model.get_input_embeddings().weight[: len(vectors)], vectors)
    assert "embeddings" not in origin


def test_width_mismatch_is_a_clear_error(source):
    path, _ = source
    with pytest.raises(InputError, match=f"{WIDTH}-d but the model is 48 wide"):
        mamba.FAMILY.build(random_init("mamba", 48, path), seed=0)
