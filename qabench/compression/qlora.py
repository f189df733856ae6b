"""QLoRA: LoRA adapters trained on top of a frozen 4-bit (NF4, double-quantized) base.

Like ``lora`` the variant is fine-tuned from the original pretrained checkpoint of the base (the
base's ``checkpoint`` setting) on the base's training windows. Before the adapters go on, every
Linear of the pretrained model becomes a bitsandbytes ``Linear4bit`` (NF4 by default, with double
quantization: the per-block scales are themselves quantized to 8 bits). Embeddings, norms and the
task heads stay float32, as in the QLoRA paper, and so do the layers the pretrained start lacks
(``lora.new_weight_modules``: they train in full). Kept float as well: Linears whose weight is tied to
another module, those a model asks to keep in float32 (``_keep_in_fp32_modules``: T5's ``wo``,
whose weight dtype T5 casts activations to), Mamba's ``dt_proj`` (its weight is read directly), and
Linears whose shape the CPU 4-bit kernel cannot pack (in_features not a multiple of 64 or
out_features not a multiple of 32) -- training.json lists them.

Inference keeps the 4-bit base with the adapters beside it (nothing is merged). The directory holds

* ``qlora_base.pt``: the quantized base's state dict (4-bit weights with their quantization state,
  float tensors for the rest) and the names of the 4-bit modules; a tensors-only torch file, loaded
  with ``weights_only=True``;
* ``adapter/``: the LoRA matrices and the trained heads (peft format);
* the float architecture's configuration files as the family saves them, less the weights
  (``qabench.model_dir.write_architecture``), and the tokenizer files.

``load`` rebuilds the architecture from those files (``Family.architecture``: random weights, all
overwritten), puts the stored 4-bit weights in place and adds the adapters: it needs nothing outside
the directory. A format-1 directory (without the configuration files) rebuilt the architecture from
the original checkpoint spec, which must then still be reachable; it is read that way still.

bitsandbytes 0.50 runs this on the CPU: training dequantizes each 4-bit weight to ``compute_dtype``
for its matmul; in eval mode, on CPUs with AVX512-BF16, the weights are repacked for a fused
4-bit kernel that computes in bf16 whatever ``compute_dtype`` says. With ``device: cuda`` the same
code places the model on the GPU (bitsandbytes' CUDA kernels); span families only, untested here.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from qabench import model_dir, models
from qabench.compression import lora
from qabench.devices import place
from qabench.errors import InputError
from qabench.io import first_line

log = logging.getLogger(__name__)

METHOD = "qlora"
QUANT_OPTIONS = {
    "quant_type": "nf4",       # nf4 (4-bit NormalFloat) or fp4
    "double_quant": True,      # quantize the per-block scales too (about 0.4 bits per weight saved)
    "compute_dtype": "fp32",   # dtype of the dequantized weights in training matmuls: fp32, bf16 or fp16
}
COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BASE_FILE = "qlora_base.pt"
FORMAT_VERSION = 2  # 2: the float architecture's configuration files are saved beside it
REBUILT_FORMAT = 1  # format 1 rebuilt the architecture from the original checkpoint at load time
BLOCKSIZE = 64  # bitsandbytes' 4-bit block size
KEEP_FLOAT = ("dt_proj",)  # Mamba's slow path computes dt_proj.weight @ x


# ---------------------------------------------------------------------------------------------- options


def resolve_options(options: dict | None, family: str) -> dict:
    merged = lora.resolve_options(options, family, METHOD, QUANT_OPTIONS)
    if merged["quant_type"] not in ("nf4", "fp4"):
        raise InputError("config", f"qlora option quant_type must be nf4 or fp4, not {merged['quant_type']!r}")
    if not isinstance(merged["double_quant"], bool):
        raise InputError("config", f"qlora option double_quant must be true or false, not {merged['double_quant']!r}")
    if merged["compute_dtype"] not in COMPUTE_DTYPES:
        raise InputError("config", f"qlora option compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, "
                                   f"not {merged['compute_dtype']!r}")
    if merged["device"].startswith("cuda") and "spans" not in models.capabilities(family):
        raise InputError("config", f"qlora on cuda supports the span families only, not {family}")
    return merged


def _bnb():
    try:
        import bitsandbytes
    except ImportError:
        raise InputError("config", "qlora needs bitsandbytes (pip install bitsandbytes)") from None
    return bitsandbytes


# ---------------------------------------------------------------------------------------------- quantization


def _keep_float_names(model: nn.Module) -> set[str]:
    names = set(KEEP_FLOAT)
    for module in model.modules():
        names.update(getattr(module, "_keep_in_fp32_modules", None) or ())
    return names


def plan(model: nn.Module, family: str) -> tuple[list[str], dict[str, str]]:
    """(names of the Linears to quantize, {name: why} of the Linears kept float)."""
    uses: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        uses[id(parameter)] = uses.get(id(parameter), 0) + 1
    keep_names = _keep_float_names(model)
    heads = set(models.family(family).head_modules)
    new_layers = lora.new_weight_modules(model, family)
    quantize, kept = [], {}
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in heads:
            kept[name] = "task head (trained in full)"
        elif lora.inside(name, new_layers):
            kept[name] = "not in the pretrained start (trained in full)"
        elif leaf in keep_names:
            kept[name] = "kept float by the model or read as a plain weight"
        elif uses[id(module.weight)] > 1:
            kept[name] = "weight tied to another module"
        elif module.in_features % BLOCKSIZE or module.out_features % 32:
            kept[name] = f"shape {module.out_features}x{module.in_features} does not fit the 4-bit CPU kernel"
        else:
            quantize.append(name)
    return quantize, kept


def _linear4bit(linear: nn.Linear, options: dict):
    """An empty 4-bit layer of ``linear``'s shape (its weight is set by the caller)."""
    return _bnb().nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                compute_dtype=COMPUTE_DTYPES[options["compute_dtype"]],
                                compress_statistics=options["double_quant"], quant_type=options["quant_type"],
                                device="meta")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantize(model: nn.Module, names: list[str], options: dict) -> nn.Module:
    """Replace the Linears ``names`` by 4-bit ones (quantized from their weights) and move the model to
    the device; returns the model."""
    bnb = _bnb()
    for name in names:
        linear = model.get_submodule(name)
        layer = _linear4bit(linear, options)
        layer.weight = bnb.nn.Params4bit(linear.weight.data.detach().clone().float(), requires_grad=False,
                                         blocksize=BLOCKSIZE, compress_statistics=options["double_quant"],
                                         quant_type=options["quant_type"], module=layer)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.data.detach().clone(), requires_grad=False)
        layer.weight._quantize(options["device"])  # quantizes in place, on the device
        _set_module(model, name, layer)
    return model.to(options["device"])


def _load_quantized(model: nn.Module, payload: dict, options: dict) -> nn.Module:
    """Put the stored 4-bit weights and the float tensors of ``payload`` into the skeleton ``model``."""
    bnb = _bnb()
    state = payload["state"]
    device = options["device"]
    taken = set()
    for name in payload["quantized"]:
        linear = model.get_submodule(name)
        layer = _linear4bit(linear, options)
        prefix = f"{name}.weight."
        stats = {key[len(name) + 1:]: value for key, value in state.items() if key.startswith(prefix)}
        taken.update([f"{name}.weight", *(f"{name}.{key}" for key in stats)])  # from_prequantized pops from stats
        layer.weight = bnb.nn.Params4bit.from_prequantized(state[f"{name}.weight"], stats, requires_grad=False,
                                                           device=device, module=layer)
        if linear.bias is not None:
            layer.bias = nn.Parameter(state[f"{name}.bias"].to(device), requires_grad=False)
            taken.add(f"{name}.bias")
        _set_module(model, name, layer)
    rest = {key: value for key, value in state.items() if key not in taken}
    model.to(device)
    missing, unexpected = model.load_state_dict(rest, strict=False)
    missing = [key for key in missing if key not in taken]
    if missing or unexpected:
        raise InputError(BASE_FILE, f"the stored 4-bit base does not fit the model's "
                                    f"architecture (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model


def is_4bit(module: nn.Module) -> bool:
    return type(module).__name__ == "Linear4bit" and type(module).__module__.startswith("bitsandbytes")


def logical_params(model: nn.Module) -> int:
    """Parameters as the model's maths sees them (a 4-bit weight counts its full shape, not its bytes)."""
    total = 0
    for parameter in model.parameters():
        state = getattr(parameter, "quant_state", None)
        total += state.shape.numel() if state is not None and state.shape is not None else parameter.numel()
    return total


def storage_bytes(model: nn.Module, names: list[str]) -> dict:
    """Bytes of the 4-bit modules ``names`` as stored (weights, quantization state, biases) vs float32."""
    stored = fp32 = 0
    for name in names:
        state = model.get_submodule(name).state_dict()
        stored += sum(t.numel() * t.element_size() for t in state.values())
        weight = model.get_submodule(name).weight
        fp32 += 4 * (weight.quant_state.shape.numel() + sum(t.numel() for k, t in state.items() if k == "bias"))
    return {"quantized_bytes": stored, "quantized_fp32_bytes": fp32}


# ---------------------------------------------------------------------------------------------- make / load


def prepare(base_settings: dict, options: dict, seed: int):
    """The original model with a 4-bit base and fresh adapters.

    Returns (peft model, adapted model of the family's class, tokenizer, origin, info) where info
    holds the serialized 4-bit base (``BASE_FILE`` bytes) and what was quantized.
    """
    from peft import prepare_model_for_kbit_training

    family = base_settings["family"]
    if options["device"].startswith("cuda") and not torch.cuda.is_available():
        raise InputError("config", "qlora device cuda asked for, but torch sees no GPU")
    model, tokenizer, origin = models.family(family).build(base_settings["checkpoint"], seed,
                                                            base_settings.get("options"))
    architecture = Path(tempfile.mkdtemp(prefix="qlora-architecture-"))
    model_dir.write_architecture(family, model, tokenizer, architecture)  # before the Linears become 4-bit
    names, kept = plan(model, family)
    if not names:
        raise InputError("config", f"qlora found no Linear layer to quantize in the {family} model")
    fp32_params = sum(p.numel() for p in model.parameters())
    model = quantize(model, names, options)
    buffer = io.BytesIO()  # now, before any forward pass repacks the weights for the CPU kernel
    torch.save({"format": FORMAT_VERSION, "quantized": names, "state": model.state_dict()}, buffer)
    info = {"base_file": buffer.getvalue(), "architecture": architecture, "quantized_modules": names, "kept_float": kept,
            **storage_bytes(model, names), "fp32_params": fp32_params}
    # freezes the base and upcasts any half-precision float weights (ours are float32 already); gradient
    # checkpointing stays off: memory is not what limits a CPU run, and it costs a second forward
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_model, adapted = lora.add_adapters(model, options, family, METHOD)
    place(adapted, options["device"])
    return peft_model, adapted, tokenizer, origin, info


def save_files(out_dir: Path, info: dict, adapter_dir: Path) -> None:
    (out_dir / BASE_FILE).write_bytes(info["base_file"])
    shutil.copytree(adapter_dir, out_dir / lora.ADAPTER_DIR)
    shutil.copytree(info["architecture"], out_dir, dirs_exist_ok=True)  # configuration and tokenizer


def make(base_dir: str | Path, out_dir: str | Path, *, options: dict | None = None, seed: int = 13, data=None,
         state_dir: str | Path | None = None, variant: str | None = None) -> None:
    """Train LoRA adapters on a 4-bit copy of the base's original checkpoint; write base, adapters, tokenizer."""
    if data is None:
        raise InputError(base_dir, "qlora trains: it needs the base's training windows")
    base_settings = lora.base_settings_for(base_dir, METHOD)
    family = base_settings["family"]
    opts = resolve_options(options, family)
    settings_train = lora.train_settings(base_dir, opts["train"], seed)

    peft_model, adapted, tokenizer, origin, info = prepare(base_settings, opts, seed)
    try:
        counts = lora.adapter_counts(adapted)
        wrapped = lora.wrapped_modules(adapted)
        log.info("qlora from %s: %d Linears in 4-bit %s, rank %d adapters on %d modules, %d trainable parameters",
                 origin, len(info["quantized_modules"]), opts["quant_type"], opts["rank"], len(wrapped),
                 counts["trainable_params"])
        stats, state = lora.train_adapters(family, adapted, tokenizer, data, settings_train, state_dir)
        lora.save_adapter(peft_model, state)

        adapted.eval()
        origin = f"qlora ({opts['quant_type']} base, rank {opts['rank']}) from {origin}"
        settings = model_dir.variant_settings(base_settings, base_dir, METHOD, variant, opts, origin=origin)
        params = logical_params(adapted)
        record = {**stats, "params": params, **counts,
                  "trainable_fraction": round(counts["trainable_params"] / params, 5), "adapted_modules": len(wrapped), "quantized_modules": len(info["quantized_modules"]),
                  "kept_float_linears": info["kept_float"], "quantized_bytes": info["quantized_bytes"],
                  "quantized_fp32_bytes": info["quantized_fp32_bytes"], "base_params_fp32": info["fp32_params"],
                  "settings": asdict(settings_train), "data": data.counts()}

        def save(tmp: Path) -> None:
            save_files(tmp, info, state / lora.ADAPTER_DIR)
            record["adapter_bytes"] = lora.dir_bytes(tmp / lora.ADAPTER_DIR)
            record["base_file_bytes"] = (tmp / BASE_FILE).stat().st_size

        model_dir.write(out_dir, save, settings, record, state)
    finally:
        shutil.rmtree(info["architecture"], ignore_errors=True)


def load(model_dir: str | Path, settings: dict):
    """The 4-bit base with its adapters (the family's model class, eval mode) and the tokenizer."""
    from peft import PeftModel

    model_dir = Path(model_dir)
    path = model_dir / BASE_FILE
    if not path.is_file() or not (model_dir / lora.ADAPTER_DIR).is_dir():
        raise InputError(model_dir, f"not a qlora model directory (no {BASE_FILE} or {lora.ADAPTER_DIR}/)")
    family = settings["family"]
    options = {**QUANT_OPTIONS, **settings.get("compression", {})}
    if options["device"].startswith("cuda") and not torch.cuda.is_available():
        log.warning("qlora model made for %s, but torch sees no GPU: loading it on the CPU", options["device"])
        options["device"] = "cpu"
    try:  # tensors and plain values only: a file that needs any other unpickling is refused, never run
        with warnings.catch_warnings():  # torch warns about a foreign file's pickle protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        raise InputError(path, f"not a readable tensors-only qlora base ({type(err).__name__}: "
                               f"{first_line(err)}); delete {model_dir} and rerun snakemake to rebuild it") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT_VERSION, REBUILT_FORMAT):
        raise InputError(path, f"not a format-{FORMAT_VERSION} qlora base file")
    model_family = models.family(family)
    # the architecture only: every weight is overwritten below
    if payload["format"] == REBUILT_FORMAT:
        skeleton, _, _ = model_family.build(settings["checkpoint"], 0, settings.get("options"))
    else:
        skeleton = model_family.architecture(model_dir)
    model = _load_quantized(skeleton, payload, options)
    model.requires_grad_(False)
    lora.check_adapter(model_dir)
    try:
        peft_model = PeftModel.from_pretrained(model, str(model_dir / lora.ADAPTER_DIR))
    except Exception as err:  # noqa: BLE001 - peft, safetensors and torch each raise their own
        raise InputError(model_dir / lora.ADAPTER_DIR, f"unreadable adapters ({type(err).__name__}: "
                                                       f"{first_line(err)})") from None
    adapted = peft_model.get_base_model()
    place(adapted, options["device"])
    adapted.eval()
    tokenizer = model_family.saved_tokenizer(model_dir, settings.get("options"))
    return adapted, tokenizer
