"""LoRA: low-rank adapters fine-tuned from the original pretrained checkpoint.

LoRA is a way to fine-tune, so the variant starts from the checkpoint the base was fine-tuned from
(the base's ``checkpoint`` setting, rebuilt with the family's ``build``), trains on the base's own
training windows, and is compared with the fully fine-tuned base. Only the adapters (rank ``rank``
matrices beside every targeted Linear) and the heads (peft ``modules_to_save``) train; the
pretrained weights stay frozen. Layers the pretrained start lacks (``Family.new_parameters``, e.g. a
warm-started decoder's cross-attention) have no pretrained weights to adapt: like the heads they train
in full and get no adapters (``new_weight_modules``).

The variant directory holds the merged model, saved by the family (the adapters folded into the
weights, so inference costs what the base costs), and the adapters on their own in ``adapter/``
(peft's format: LoRA matrices plus the trained head, a small fraction of the model).

Options (defaults in ``DEFAULT_OPTIONS``): ``rank``, ``alpha`` (the update is scaled by alpha/rank),
``dropout`` (on the adapters' input), ``target_modules`` (a list of module names; default per
family's ``lora_targets``) and ``train`` (TrainSettings fields over ``DEFAULT_TRAIN``; batch size
and precision default to the base's).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from qabench import compression, devices, model_dir, models
from qabench.compression import check_train, with_defaults
from qabench.errors import InputError
from qabench.io import first_line, read_json
from qabench.model_dir import read_settings
from qabench.train import TrainSettings, train

log = logging.getLogger(__name__)

METHOD = "lora"
# The default targets are each family's ``lora_targets``, every Linear of the blocks: the QLoRA paper
# (Dettmers et al. 2023, section 4) found adapters on all linear layers were needed to match full fine-tuning, where query/value alone fell
# short. The price on MiniLM-L6 (CPU, batch 32 x 384): 333k instead of 74k trainable parameters and
# a training step about 1.3x as long as with query/value adapters only.
# "dense" is BERT's attention output and both feed-forward Linears. Names that a model lacks are
# skipped (T5 v1.0 has wi, v1.1 wi_0/wi_1); Mamba's dt_proj is left out because transformers reads
# its weight directly (dt_proj.weight @ x), which would bypass an adapter. The task heads (the family's
# ``head_modules``) train in full (peft modules_to_save); T5 has none: its LM head is tied to the
# embeddings and the answer is generated text.
DEFAULT_OPTIONS = {"rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": None, "train": {}, "device": "cpu"}
DEFAULT_TRAIN = {"epochs": 1.0, "learning_rate": 5e-4}
INHERITED_TRAIN = ("batch_size", "precision")  # taken from the base's training settings when not given
ADAPTER_DIR = "adapter"


# ---------------------------------------------------------------------------------------------- options


def resolve_options(options: dict | None, family: str, method: str = METHOD, extra: dict | None = None) -> dict:
    """``options`` over the defaults (``method`` dropped), checked; ``target_modules`` filled per family."""
    merged = with_defaults(method, options, {**DEFAULT_OPTIONS, **(extra or {})})
    if not isinstance(merged["rank"], int) or isinstance(merged["rank"], bool) or merged["rank"] < 1:
        raise InputError("config", f"{method} option rank must be a positive integer, not {merged['rank']!r}")
    if not isinstance(merged["alpha"], (int, float)) or merged["alpha"] <= 0:
        raise InputError("config", f"{method} option alpha must be a positive number, not {merged['alpha']!r}")
    if not isinstance(merged["dropout"], (int, float)) or not 0 <= merged["dropout"] < 1:
        raise InputError("config", f"{method} option dropout must be in [0, 1), not {merged['dropout']!r}")
    if merged["target_modules"] is None:
        merged["target_modules"] = list(models.family(family).lora_targets)
    targets = merged["target_modules"]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise InputError("config", f"{method} option target_modules must be a non-empty list of module names")
    check_train(method, merged["train"])
    devices.check_option(method, merged["device"])
    return merged


def base_settings_for(base_dir: str | Path, method: str) -> dict:
    """The base's qabench.json settings, checked: a base model of a family the method applies to."""
    if not (Path(base_dir) / "qabench.json").is_file():
        raise InputError(base_dir, "not a model directory written by the train rule (no qabench.json)")
    settings = read_settings(base_dir)
    model_dir.require_base(settings, base_dir, method)
    compression.check_applies(method, settings["family"], base_dir)
    if "checkpoint" not in settings:
        raise InputError(base_dir, f"{method} retrains from the base's original checkpoint, but its qabench.json "
                                   "has no 'checkpoint' (retrain the base with this version of qabench)")
    return settings


def train_settings(base_dir: str | Path, overrides: dict, seed: int) -> TrainSettings:
    """The method's defaults, the base's batch size and precision, then the config's ``train``."""
    record_path = Path(base_dir) / "training.json"
    base_train = read_json(record_path).get("settings", {}) if record_path.is_file() else {}
    inherited = {k: base_train[k] for k in INHERITED_TRAIN if k in base_train}
    return TrainSettings(**{**inherited, **DEFAULT_TRAIN, "seed": seed, **overrides})


def inside(name: str, modules: list[str]) -> bool:
    """Whether module ``name`` is one of ``modules`` or lies within one."""
    return any(name == module or name.startswith(f"{module}.") for module in modules)


def new_weight_modules(model: nn.Module, family: str) -> list[str]:
    """The largest modules all of whose parameters are new (``Family.new_parameters``: weights the
    pretrained start lacked), in model order. An adapter on a frozen random weight learns little, so
    these train in full as the heads do. A new parameter in a module that also holds pretrained ones
    (a BERT LM head's bias beside its tied embedding matrix) stays at its initial value."""
    named = dict(model.named_parameters())
    new = {id(named[name]) for name in models.family(family).new_parameters(model) if name in named}
    chosen: list[str] = []
    for name, module in model.named_modules():
        if not name or inside(name, chosen):
            continue
        parameters = list(module.parameters())
        if parameters and all(id(p) in new for p in parameters):
            chosen.append(name)
    return chosen


def lora_config(options: dict, family: str, full_modules: list[str] = (), excluded: list[str] = ()):
    """peft's configuration: adapters on ``target_modules`` but not on ``excluded``; the family's heads
    and ``full_modules`` train in full."""
    from peft import LoraConfig

    return LoraConfig(r=options["rank"], lora_alpha=options["alpha"], lora_dropout=options["dropout"],
                      target_modules=list(options["target_modules"]),
                      modules_to_save=list(dict.fromkeys([*models.family(family).head_modules, *full_modules])) or None,
                      exclude_modules=list(excluded) or None, bias="none")


def add_adapters(model: nn.Module, options: dict, family: str, method: str = METHOD):
    """(peft model, the model with adapters injected) -- the second is the family's own class, which
    the family's loss and ``span_logits`` take; only adapters, heads and new layers require grad."""
    from peft import get_peft_model

    full_modules = new_weight_modules(model, family)
    targets = set(options["target_modules"])
    excluded = [name for name, _ in model.named_modules()
                if name.rsplit(".", 1)[-1] in targets and inside(name, full_modules)]
    if full_modules:
        log.info("%s: %d modules the pretrained start lacks train in full: %s", method, len(full_modules),
                 ", ".join(full_modules))
    try:
        peft_model = get_peft_model(model, lora_config(options, family, full_modules, excluded))
    except ValueError as err:  # no module matched target_modules, or one that peft cannot wrap
        raise InputError("config", f"{method} target_modules {options['target_modules']}: "
                                   f"{first_line(err)}") from None
    return peft_model, peft_model.get_base_model()


# ---------------------------------------------------------------------------------------------- training


class TrainableView(nn.Module):
    """What ``train.train`` trains: the model's parameters, but a state dict of the trainable ones only.

    The frozen weights are rebuilt identically from the original checkpoint, so resume checkpoints
    hold just the adapters and heads (and bitsandbytes 4-bit layers, which cannot be reloaded with
    ``load_state_dict``, never go through it).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def state_dict(self, *args, **kwargs):
        return {name: p.detach() for name, p in self.model.named_parameters() if p.requires_grad}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        own = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        if set(state_dict) != set(own):
            missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
            raise RuntimeError(f"resume state does not fit the adapters (missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]})")
        with torch.no_grad():
            for name, tensor in state_dict.items():
                own[name].copy_(tensor)
        return nn.modules.module._IncompatibleKeys([], [])


def adapter_counts(model: nn.Module) -> dict:
    """Trainable parameters: LoRA matrices, and the rest (``head_params``: heads and new layers)."""
    lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and ".lora_" in n)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "lora_params": lora, "head_params": trainable - lora}


def wrapped_modules(model: nn.Module) -> list[str]:
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def train_adapters(family: str, model: nn.Module, tokenizer, data, settings: TrainSettings,
                   state_dir: str | Path | None) -> tuple[dict, Path]:
    """Train the adapted ``model`` in place on ``data.features``; (statistics, the state dir used)."""
    state = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix=f"{METHOD}-state-"))
    batch_loss = models.family(family).batch_loss(model, tokenizer, data.features)
    stats = train(TrainableView(model), data.features, batch_loss, settings, state)
    return stats, state


def dir_bytes(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def save_adapter(peft_model, out_dir: Path) -> None:
    """peft's adapter files (LoRA matrices and the trained heads) in ``out_dir / ADAPTER_DIR``."""
    if (out_dir / ADAPTER_DIR).exists():
        shutil.rmtree(out_dir / ADAPTER_DIR)
    peft_model.save_pretrained(str(out_dir / ADAPTER_DIR))
    readme = out_dir / ADAPTER_DIR / "README.md"  # peft's model-card template: no information
    if readme.is_file():
        readme.unlink()


# ---------------------------------------------------------------------------------------------- make / load


def make(base_dir: str | Path, out_dir: str | Path, *, options: dict | None = None, seed: int = 13, data=None,
         state_dir: str | Path | None = None, variant: str | None = None) -> None:
    """Fine-tune LoRA adapters from the base's original checkpoint; write the merged model and the adapters."""
    if data is None:
        raise InputError(base_dir, "lora trains: it needs the base's training windows")
    base_settings = base_settings_for(base_dir, METHOD)
    family = base_settings["family"]
    model_family = models.family(family)
    opts = resolve_options(options, family)
    settings_train = train_settings(base_dir, opts["train"], seed)

    device = devices.check(opts["device"])
    model, tokenizer, origin = model_family.build(base_settings["checkpoint"], seed, base_settings.get("options"))
    peft_model, adapted = add_adapters(model, opts, family)
    devices.move(adapted, device)
    counts = adapter_counts(adapted)
    wrapped = wrapped_modules(adapted)
    log.info("lora from %s: rank %d on %d modules, %d trainable parameters", origin, opts["rank"], len(wrapped),
             counts["trainable_params"])
    stats, state = train_adapters(family, adapted, tokenizer, data, settings_train, state_dir)
    save_adapter(peft_model, state)  # before merging, which takes the adapters out of the model

    merged = peft_model.merge_and_unload()
    merged.eval()
    settings = model_dir.variant_settings(base_settings, base_dir, METHOD, variant, opts,
                                          origin=f"lora (rank {opts['rank']}) from {origin}")
    merged.to("cpu")
    params = sum(p.numel() for p in merged.parameters())
    record = {**stats, "params": params, **counts, "device": device, "trainable_fraction": round(counts["trainable_params"] / params, 5),
              "adapted_modules": len(wrapped), "settings": asdict(settings_train),
              "data": data.counts()}

    def save(tmp: Path) -> None:
        shutil.copytree(state / ADAPTER_DIR, tmp / ADAPTER_DIR)
        model_family.save(merged, tokenizer, tmp)
        record["adapter_bytes"] = dir_bytes(tmp / ADAPTER_DIR)
        record["merged_bytes"] = dir_bytes(tmp) - record["adapter_bytes"]

    model_dir.write(out_dir, save, settings, record, state)


def check_adapter(model_dir: str | Path) -> None:
    """The adapters beside the model must be readable tensors (safetensors): a damaged or planted file
    makes the whole directory suspect, even where predict reads the merged weights only."""
    from safetensors import safe_open

    adapter_dir = Path(model_dir) / ADAPTER_DIR
    if not adapter_dir.is_dir():
        return
    for path in sorted(adapter_dir.iterdir()):
        if path.suffix in (".bin", ".pt", ".pth"):
            raise InputError(path, "adapter weights in a pickle format, which qabench never loads; delete "
                                   f"{model_dir} and rerun snakemake to rebuild it")
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as f:
                    list(f.keys())
            except Exception as err:  # noqa: BLE001 - SafetensorError, OSError
                raise InputError(path, f"damaged adapter weights, not a readable safetensors file "
                                       f"({first_line(err)})") from None


def load(model_dir: str | Path, settings: dict):
    """The merged model (the family's own format) and its tokenizer, in eval mode."""
    check_adapter(model_dir)
    model, tokenizer = models.family(settings["family"]).load(str(model_dir))
    model.eval()
    return model, tokenizer
