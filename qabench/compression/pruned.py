"""Structured pruning of a BERT-style encoder (attention heads and FFN neurons), then recovery fine-tuning.

1. Importance on a seeded sample of training windows (the calibration windows), with the span loss:
   a head's is |dL/dm_h| for a mask m_h = 1 on its output (Michel et al. 2019), an FFN neuron's
   |dL/dm_j| for a mask on its activation (= |activation x gradient|), summed over batches. Head
   scores are L2-normalised per layer, as Michel et al. do; neuron scores stay raw, a first-order
   estimate of the loss change that is comparable across layers (normalising them too emptied one
   layer's FFN of the fine-tuned MiniLM and cost more loss).
2. The least important heads and neurons are removed until the transformer blocks keep
   ``target_encoder_ratio`` of their parameters (embeddings and the QA head are not counted).
   The matrices really shrink: query/key/value rows and attention-output columns of removed heads,
   intermediate rows and output columns of removed neurons. Every layer keeps >= 1 head and neuron.
3. Recovery fine-tuning with qabench.train (resumable).

A pruned model has per-layer head counts and FFN widths that a BERT config cannot express, so its
directory holds the original config, the weights and ``pruning.json`` (the heads and neurons kept per
layer); ``load`` rebuilds the full-size model from the config, shrinks it the same way and loads the
weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModelForQuestionAnswering
from transformers.pytorch_utils import prune_linear_layer

from qabench import compression, devices, model_dir, train
from qabench.batching import sorted_batches
from qabench.compression import check_train, with_defaults
from qabench.errors import InputError
from qabench.efficiency import parameter_counts
from qabench.io import first_line
from qabench.models import encoder
from qabench.models.span import span_batch_loss
from qabench.model_dir import load_model, read_settings

log = logging.getLogger(__name__)

METHOD = "pruned"
DEFAULT_OPTIONS = {
    "target_encoder_ratio": 0.75,  # share of the transformer blocks' parameters kept
    "calibration_windows": 256,    # training windows the importance is measured on
    "calibration_batch_size": 16,
    # Share of the removed parameters taken from attention heads; FFN neurons make up the rest of
    # the target (also when heads run out: every layer keeps one). Proportional to their sizes would be
    # 1/3 in BERT; on the fine-tuned MiniLM at 0.75, the loss right after pruning was lowest near
    # 0.4 of the shares tried (0, 0.25, 1/3, 0.4, 0.5, 0.6, 0.75, 1). None: proportional.
    "head_share": 0.4,
    "train": {},                   # TrainSettings overrides for the recovery fine-tuning
    "device": "cpu",               # where importance and recovery fine-tuning run: cpu or cuda
}
TRAIN_DEFAULTS = {"epochs": 1.0}
WEIGHTS_FILE = "pruned_model.safetensors"
PRUNING_FILE = "pruning.json"
PLAN_FILE = "pruning_plan.json"  # in state_dir: a resumed run prunes exactly as the interrupted one
FORMAT_VERSION = 1


def resolve_options(options: dict | None) -> dict:
    """Defaults filled in and checked; ``method`` (the config's) is accepted and dropped."""
    merged = with_defaults(METHOD, options, DEFAULT_OPTIONS)
    ratio = merged["target_encoder_ratio"]
    if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise InputError("config", f"pruned option target_encoder_ratio must be in (0, 1), got {ratio!r}")
    for name in ("calibration_windows", "calibration_batch_size"):
        if not isinstance(merged[name], int) or merged[name] < 1:
            raise InputError("config", f"pruned option {name} must be a positive integer, got {merged[name]!r}")
    share = merged["head_share"]
    if share is not None and (not isinstance(share, (int, float)) or not 0 <= share <= 1):
        raise InputError("config", f"pruned option head_share must be in [0, 1] or null, got {share!r}")
    check_train(METHOD, merged["train"])
    devices.check_option(METHOD, merged["device"])
    return merged


# ---------------------------------------------------------------------------------------------- structure


def _is_bert_layer(layer: nn.Module) -> bool:
    try:
        attention = layer.attention
        parts = (attention.self.query, attention.self.key, attention.self.value, attention.output.dense,
                 layer.intermediate.dense, layer.output.dense)
    except AttributeError:
        return False
    return all(isinstance(m, nn.Linear) for m in parts)


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a BERT-style model (bert, roberta, electra, ...), or an InputError."""
    layers = getattr(getattr(getattr(model, "base_model", None), "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not layers or not all(_is_bert_layer(layer) for layer in layers):
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise InputError("config", f"pruned needs a BERT-style encoder (attention.self.query/key/value, "
                                   f"intermediate.dense, output.dense); {model_type} is laid out differently")
    return list(layers)


def _head_size(layer: nn.Module) -> int:
    return int(layer.attention.self.attention_head_size)


def layer_shape(layer: nn.Module) -> tuple[int, int]:
    """(heads, FFN neurons) a block has now."""
    return layer.attention.self.query.out_features // _head_size(layer), layer.intermediate.dense.out_features


def encoder_params(model: nn.Module) -> int:
    return sum(p.numel() for layer in encoder_layers(model) for p in layer.parameters())


def _unit_params(layer: nn.Module) -> tuple[int, int]:
    """Parameters one head and one neuron of ``layer`` hold (weights and biases that go with it)."""
    d, attention = _head_size(layer), layer.attention
    head = sum(d * m.in_features + (d if m.bias is not None else 0)
               for m in (attention.self.query, attention.self.key, attention.self.value))
    head += d * attention.output.dense.out_features
    up, down = layer.intermediate.dense, layer.output.dense
    neuron = up.in_features + (1 if up.bias is not None else 0) + down.out_features
    return head, neuron


@contextlib.contextmanager
def masked(model: nn.Module, head_masks: list[torch.Tensor], neuron_masks: list[torch.Tensor]) -> Iterator[None]:
    """Multiply each head's attention output and each FFN activation by its mask while inside."""
    hooks = []

    def scale_heads(mask: torch.Tensor, d: int):
        def hook(_module, args):
            x = args[0]
            return (x.view(*x.shape[:-1], -1, d) * mask[:, None].to(x)).view(x.shape),  # x's dtype and device
        return hook

    def scale_neurons(mask: torch.Tensor):
        return lambda _module, args: (args[0] * mask.to(args[0]),)

    try:
        for layer, head_mask, neuron_mask in zip(encoder_layers(model), head_masks, neuron_masks):
            heads_hook = scale_heads(head_mask, _head_size(layer))
            hooks.append(layer.attention.output.dense.register_forward_pre_hook(heads_hook))
            hooks.append(layer.output.dense.register_forward_pre_hook(scale_neurons(neuron_mask)))
        yield
    finally:
        for hook in hooks:
            hook.remove()


def importance(model: nn.Module, features, pad_id: int,
               batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """Per-layer head and neuron importance (summed |mask gradient|) and the mean span loss on ``features``."""
    layers = encoder_layers(model)
    head_masks = [torch.ones(layer_shape(layer)[0], requires_grad=True) for layer in layers]
    neuron_masks = [torch.ones(layer_shape(layer)[1], requires_grad=True) for layer in layers]
    head_scores = [torch.zeros(m.shape) for m in head_masks]
    neuron_scores = [torch.zeros(m.shape) for m in neuron_masks]
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    model.eval()  # no dropout: the importance of the model as it predicts
    model.requires_grad_(False)  # only the masks need gradients
    batch_loss = span_batch_loss(model, encoder.FAMILY.span_logits, features, pad_id)
    total, rows = 0.0, 0
    try:
        with masked(model, head_masks, neuron_masks):
            for batch in sorted_batches(features["input_ids"].map(len).to_numpy(), batch_size):
                loss, _ = batch_loss(batch)
                grads = torch.autograd.grad(loss, head_masks + neuron_masks)
                for score, grad in zip(head_scores + neuron_scores, grads):
                    score += grad.abs()
                total += loss.item() * len(batch)
                rows += len(batch)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(trainable[name])
    return head_scores, neuron_scores, total / rows


def normalise(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's scores divided by their L2 norm."""
    return [s / s.norm().clamp(min=1e-12) for s in scores]


def choose(model: nn.Module, head_scores: list[torch.Tensor], neuron_scores: list[torch.Tensor],
           target_ratio: float, head_share: float | None = None) -> dict:
    """The plan: original indices of the heads and neurons each layer keeps, meeting ``target_ratio``."""
    layers = encoder_layers(model)
    units = [_unit_params(layer) for layer in layers]
    shapes = [layer_shape(layer) for layer in layers]
    before = encoder_params(model)
    to_remove = before - target_ratio * before
    if head_share is None:
        removable_heads = sum((h - 1) * unit[0] for (h, _), unit in zip(shapes, units))
        removable_neurons = sum((n - 1) * unit[1] for (_, n), unit in zip(shapes, units))
        head_share = removable_heads / max(1, removable_heads + removable_neurons)
    head_budget = head_share * to_remove

    def ranked(scores: list[torch.Tensor]) -> list[tuple[int, int]]:
        entries = [(float(s), layer, i) for layer, layer_scores in enumerate(scores)
                   for i, s in enumerate(layer_scores)]
        return [(layer, i) for _, layer, i in sorted(entries)]

    heads = [set(range(h)) for h, _ in shapes]
    removed = 0.0
    for layer, i in ranked(head_scores):
        # a head goes if that brings the removed heads nearer the head budget (round to nearest)
        if removed + units[layer][0] / 2 > head_budget:
            break
        if len(heads[layer]) > 1:
            heads[layer].discard(i)
            removed += units[layer][0]
    neurons = [set(range(n)) for _, n in shapes]
    for layer, i in ranked(neuron_scores):
        if removed >= to_remove:
            break
        if len(neurons[layer]) > 1:
            neurons[layer].discard(i)
            removed += units[layer][1]
    return {"heads": [sorted(h) for h in heads], "neurons": [sorted(n) for n in neurons]}


def apply(model: nn.Module, plan: dict) -> nn.Module:
    """Shrink ``model`` in place to the heads and neurons ``plan`` keeps (indices into the current layers)."""
    layers = encoder_layers(model)
    if len(plan["heads"]) != len(layers) or len(plan["neurons"]) != len(layers):
        raise InputError("pruning plan", f"{len(plan['heads'])} layers planned, the model has {len(layers)}")
    for layer, keep_heads, keep_neurons in zip(layers, plan["heads"], plan["neurons"]):
        d = _head_size(layer)
        attention = layer.attention
        if len(keep_heads) < layer_shape(layer)[0]:
            index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep_heads])
            for name in ("query", "key", "value"):
                setattr(attention.self, name, prune_linear_layer(getattr(attention.self, name), index, dim=0))
            attention.output.dense = prune_linear_layer(attention.output.dense, index, dim=1)
            attention.self.num_attention_heads = len(keep_heads)
            attention.self.all_head_size = len(keep_heads) * d
        if len(keep_neurons) < layer_shape(layer)[1]:
            index = torch.tensor(keep_neurons, dtype=torch.long)
            layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, index, dim=0)
            layer.output.dense = prune_linear_layer(layer.output.dense, index, dim=1)
    return model


# ---------------------------------------------------------------------------------------------- variant


def _calibration_rows(features, count: int, seed: int):
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(features), size=min(count, len(features)), replace=False))
    return features.iloc[rows].reset_index(drop=True)


def mean_loss(model: nn.Module, features, pad_id: int, batch_size: int) -> float:
    """Mean span loss per window, eval mode, no gradients."""
    model.eval()
    batch_loss = span_batch_loss(model, encoder.FAMILY.span_logits, features, pad_id)
    total = 0.0
    with torch.no_grad():
        for batch in sorted_batches(features["input_ids"].map(len).to_numpy(), batch_size):
            total += batch_loss(batch)[0].item() * len(batch)
    return total / len(features)


def prune(model: nn.Module, calibration, pad_id: int, options: dict) -> dict:
    """Measure importance, choose and apply the plan; returns the plan with what it measured."""
    t0 = time.perf_counter()
    head_scores, neuron_scores, loss = importance(model, calibration, pad_id, options["calibration_batch_size"])
    t1 = time.perf_counter()
    plan = choose(model, normalise(head_scores), neuron_scores, options["target_encoder_ratio"], options["head_share"])
    apply(model, plan)
    return {**plan, "base_calibration_loss": loss, "importance_wall_s": round(t1 - t0, 2),
            "prune_wall_s": round(time.perf_counter() - t0, 2)}


def _shape_record(model: nn.Module) -> dict:
    shapes = [layer_shape(layer) for layer in encoder_layers(model)]
    return {"heads": [h for h, _ in shapes], "neurons": [n for _, n in shapes],
            "encoder_params": encoder_params(model), "params": parameter_counts(model)["params"]}


def make(base_dir: str | Path, out_dir: str | Path, *, options: dict | None = None, seed: int = 0,
         data=None, state_dir: str | Path | None = None, variant: str | None = None) -> None:
    """Prune the encoder in ``base_dir``, fine-tune it on ``data.features``, save."""
    options = resolve_options(options)
    base_settings = read_settings(base_dir)
    _check_inputs(base_dir, base_settings, data, state_dir)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)

    device = devices.check(options["device"])
    model, tokenizer, _ = load_model(base_dir)
    encoder_layers(model)  # refuse other layouts before any work
    devices.move(model, device)
    before = _shape_record(model)
    calibration = _calibration_rows(data.features, options["calibration_windows"], seed)
    plan = _prune_or_replay(model, calibration, tokenizer.pad_token_id, options, state_dir / PLAN_FILE)
    after = _shape_record(model)
    log.info("pruned encoder %d -> %d parameters (%.3f)", before["encoder_params"], after["encoder_params"],
             after["encoder_params"] / before["encoder_params"])

    train_settings = train.TrainSettings(**{"seed": seed, **TRAIN_DEFAULTS, **options["train"]})
    model.train()
    stats = train.train(model, data.features, span_batch_loss(model, encoder.FAMILY.span_logits, data.features,
                                                                    tokenizer.pad_token_id),
                        train_settings, state_dir)
    recovered_loss = mean_loss(model, calibration, tokenizer.pad_token_id, options["calibration_batch_size"])

    settings = model_dir.variant_settings(base_settings, base_dir, METHOD, variant, options)
    record = {
        **stats, **parameter_counts(model), **_pruning_record(before, after, options),
        "calibration_windows": len(calibration),
        "calibration_loss": {"base": plan["base_calibration_loss"], "pruned": plan["pruned_calibration_loss"],
                             "recovered": recovered_loss},
        "importance_wall_s": plan["importance_wall_s"], "prune_wall_s": plan["prune_wall_s"],
        "settings": asdict(train_settings), "data": data.counts(),
    }
    kept = {"format": FORMAT_VERSION, "heads": plan["heads"], "neurons": plan["neurons"]}
    model.to("cpu")
    model_dir.write(out_dir, lambda tmp: save(model, tokenizer, kept, tmp), settings, record, state_dir)


def _check_inputs(base_dir: str | Path, base_settings: dict, data, state_dir: str | Path | None) -> None:
    """Refuse, before any work, a base that is not an encoder base model, and missing data or state_dir."""
    compression.check_applies(METHOD, base_settings["family"], base_dir)
    model_dir.require_base(base_settings, base_dir, METHOD)
    if data is None or len(data.features) == 0:
        raise InputError("pruned", "needs training windows (data.features) for importance and recovery fine-tuning")
    if state_dir is None:
        raise InputError("pruned", "needs a state_dir for its resumable recovery fine-tuning")


def _prune_or_replay(model: nn.Module, calibration, pad_id: int, options: dict, plan_path: Path) -> dict:
    """Prune ``model`` in place and record the plan (with the pruned model's calibration loss) in
    ``plan_path``; where a plan is recorded already (a resumed run), apply that one instead."""
    if plan_path.is_file():  # resuming: prune as before, whatever float noise the importance would have
        plan = json.loads(plan_path.read_text())
        apply(model, plan)
        return plan
    plan = prune(model, calibration, pad_id, options)
    plan["pruned_calibration_loss"] = mean_loss(model, calibration, pad_id, options["calibration_batch_size"])
    plan_path.write_text(json.dumps(plan) + "\n")
    return plan


def _pruning_record(before: dict, after: dict, options: dict) -> dict:
    """What pruning kept, for training.json (after the training stats and parameter counts)."""
    return {
        "params_before": before["params"],
        "encoder_params_before": before["encoder_params"], "encoder_params_after": after["encoder_params"],
        "encoder_ratio": round(after["encoder_params"] / before["encoder_params"], 4),
        "target_encoder_ratio": options["target_encoder_ratio"],
        "heads_before": before["heads"], "heads_kept": after["heads"],
        "neurons_before": before["neurons"], "neurons_kept": after["neurons"],
    }


def save(model: nn.Module, tokenizer, kept: dict, out_dir: str | Path) -> None:
    """Weights, the unpruned config, the kept heads/neurons per layer, and the tokenizer."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS_FILE))
    model.config.save_pretrained(out_dir)
    (out_dir / PRUNING_FILE).write_text(json.dumps(kept) + "\n")
    tokenizer.save_pretrained(out_dir)


def load(model_dir: str | Path, settings: dict | None = None) -> tuple[nn.Module, object]:
    """A pruned model directory (eval mode) and its tokenizer."""
    model_dir = Path(model_dir)
    try:
        kept = json.loads((model_dir / PRUNING_FILE).read_text())
    except FileNotFoundError:
        raise InputError(model_dir, f"not a pruned model directory (no {PRUNING_FILE})") from None
    if not isinstance(kept, dict) or kept.get("format") != FORMAT_VERSION:
        raise InputError(model_dir / PRUNING_FILE, f"not a format-{FORMAT_VERSION} pruning record")
    config = AutoConfig.from_pretrained(str(model_dir))
    model = AutoModelForQuestionAnswering.from_config(config)
    apply(model, kept)
    try:
        model.load_state_dict(load_file(str(model_dir / WEIGHTS_FILE)), strict=True)
    except (OSError, RuntimeError) as err:
        raise InputError(model_dir / WEIGHTS_FILE,
                         f"weights do not fit the pruned layout ({first_line(err)})") from None
    model.eval()
    return model, encoder.FAMILY.load_tokenizer(str(model_dir))
