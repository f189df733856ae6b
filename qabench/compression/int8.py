"""Post-training int8 quantization of a fine-tuned base model (no training, no data).

Three backends:

* ``dynamic`` (CPU, the default): torch dynamic quantization. Every ``nn.Linear`` and ``nn.LSTM``
  gets int8 weights (a scale per output row, or one per matrix) and int8 matmuls with activations
  quantized on the fly; optionally the embeddings too (int8 rows with a float scale per row). Works
  on any family, since it only looks at module types (Mamba's ``dt_proj`` and tied weights stay
  float, see ``KEEP_FLOAT`` and ``_targets``).
* ``inductor`` (CPU, encoders): the same maths (int8 weights with a scale per output row, activations
  quantized per call) as a graph: the model is exported (``torch.export``), quantized with torchao's
  x86 Inductor quantizer and compiled by ``torch.compile`` when loaded, which fuses the quantize,
  int8 matmul (oneDNN, AMX/VNNI where the CPU has them) and dequantize steps that the eager backend
  runs one call at a time. Stored as an exported program; loading compiles it (tens of seconds,
  needs a C++ compiler, as any CPU ``torch.compile`` does).
* ``bitsandbytes`` (meant for CUDA, chosen by ``device: cuda``): every ``nn.Linear`` becomes a
  ``bnb.nn.Linear8bitLt`` (LLM.int8: int8 weights, fp16 outlier columns). Exercised here on CPU
  only (bitsandbytes >= 0.45 runs it there); the CUDA path is untested.

The directory holds tensors and JSON only, never a pickle: ``int8_weights.safetensors`` (every
int8 weight as its int8 values with its scales and zero points, the float tensors as they are; what
is what is in the file's metadata) beside the float architecture's configuration and tokenizer files,
as the family saves them less their weight files. ``load`` rebuilds the float model from that
configuration (random weights), quantizes it with the recorded options, which gives the right module
types and shapes, and puts the stored tensors in place. A directory of the older format, a pickled
module (``int8_model.pt``) or exported program (``int8_program.pt2``), is refused, never unpickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch._inductor.config
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.ao.nn.quantized import dynamic as dynamic_quantized
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from qabench import compression, machine, model_dir, models
from qabench.compression import with_defaults
from qabench.efficiency import disk_size_mb
from qabench.errors import InputError
from qabench.io import first_line
from qabench.models import encoder
from qabench.model_dir import DEFAULT_SETTINGS, load_model, read_settings

log = logging.getLogger(__name__)

METHOD = "int8"
DEFAULT_OPTIONS = {
    "device": "cpu",               # where the quantized model runs: cpu or cuda
    "backend": None,               # dynamic | inductor | bitsandbytes; None: dynamic on cpu, bitsandbytes on cuda
    "quantize_embeddings": False,  # dynamic backend only: int8 embedding tables too
    "per_channel": True,           # dynamic backend: a scale per output row rather than per matrix
    "quantize_head": True,         # dynamic and bitsandbytes: false keeps the family's head modules float
    "engine": None,                # dynamic backend: torch's quantized engine (x86, fbgemm, onednn); None: torch's default
    "activation_bits": "auto",     # dynamic backend's Linears: 7, 8, or auto (8 where the CPU has int8 dot products)
}
ACTIVATION_BITS = (7, 8, "auto")
# A dynamic int8 model made before the option had torch's 7-bit activations
ACTIVATION_BITS_BEFORE_THE_OPTION = 7
WEIGHTS_FILE = "int8_weights.safetensors"
FORMAT_VERSION = 2
# format 1 stored pickles (a whole module, or an exported program); they are refused, never loaded
OLD_FILES = ("int8_model.pt", "int8_program.pt2")
BACKENDS = ("dynamic", "inductor", "bitsandbytes")
CPU_BACKENDS = ("dynamic", "inductor")
# Modules whose ``.weight`` the model reads directly (Mamba's slow path does ``dt_proj.weight @ x``);
# a quantized module has no weight tensor, so these stay float.
KEEP_FLOAT = ("dt_proj",)


class FullRangeDynamicLinear(dynamic_quantized.Linear):
    """torch's dynamic int8 Linear with its activations quantized to 256 levels instead of 128.

    On x86 torch's module always asks for ``reduce_range``: 7-bit activations, so that fbgemm's int16
    sums of two u8 x s8 products cannot saturate on CPUs without int8 dot-product instructions. CPUs
    with them (AVX512-VNNI, AVX-VNNI, AMX) accumulate in int32, where the eighth bit costs nothing and
    halves the rounding of every activation (the default MiniLM's span logits on 8 windows of random
    tokens, a hand probe: mean error against float 0.056 instead of 0.126)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed_params.dtype != torch.qint8:
            raise TypeError(f"{type(self).__name__} runs qint8 weights, not {self._packed_params.dtype}")
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                  reduce_range=False).to(x.dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedLinear8bitActivations"


def resolve_activation_bits(bits: int | str) -> int:
    """7 or 8; ``auto``: 8 where this CPU has int8 dot products, else torch's 7."""
    if bits == "auto":
        return 8 if machine.int8_dot_products() else 7
    return bits


def resolve_options(options: dict | None) -> dict:
    """Defaults filled in and checked; ``method`` (the config's) is accepted and dropped."""
    merged = with_defaults(METHOD, options, DEFAULT_OPTIONS)
    if merged["device"] not in ("cpu", "cuda"):
        raise InputError("config", f"int8 option device must be cpu or cuda, got {merged['device']!r}")
    if merged["backend"] is None:
        merged["backend"] = "dynamic" if merged["device"] == "cpu" else "bitsandbytes"
    if merged["backend"] not in BACKENDS:
        raise InputError("config", f"int8 option backend must be one of {', '.join(BACKENDS)}, got {merged['backend']!r}")
    if merged["backend"] in CPU_BACKENDS and merged["device"] != "cpu":
        raise InputError("config", f"the {merged['backend']} int8 backend runs on cpu only "
                                   "(use backend: bitsandbytes on cuda)")
    if merged["backend"] == "inductor" and not merged["per_channel"]:
        raise InputError("config", "the inductor int8 backend quantizes weights per output row only (per_channel: true)")
    for name in ("quantize_embeddings", "per_channel", "quantize_head"):
        if not isinstance(merged[name], bool):
            raise InputError("config", f"int8 option {name} must be true or false, got {merged[name]!r}")
    if merged["quantize_embeddings"] and merged["backend"] != "dynamic":
        raise InputError("config", "quantize_embeddings needs the dynamic backend")
    if not merged["quantize_head"] and merged["backend"] == "inductor":
        raise InputError("config", "the inductor int8 backend quantizes every Linear (quantize_head: true)")
    if merged["activation_bits"] not in ACTIVATION_BITS or isinstance(merged["activation_bits"], bool):
        raise InputError("config", f"int8 option activation_bits must be 7, 8 or auto, got {merged['activation_bits']!r}")
    if merged["activation_bits"] != "auto" and merged["backend"] != "dynamic":
        raise InputError("config", "the int8 option activation_bits applies to the dynamic backend only")
    if merged["engine"] is not None:
        if merged["backend"] != "dynamic":
            raise InputError("config", "the int8 option engine applies to the dynamic backend only")
        supported = [e for e in torch.backends.quantized.supported_engines if e != "none"]
        if merged["engine"] not in supported:
            raise InputError("config", f"int8 option engine {merged['engine']!r} is not one this torch supports "
                                       f"({', '.join(supported)})")
    return merged


@contextlib.contextmanager
def quantized_engine(engine: str | None):
    """Run with torch's quantized engine set to ``engine`` (None: leave it). The engine decides how
    int8 weights are packed and which kernels run them: onednn uses AMX on CPUs that have it."""
    previous = torch.backends.quantized.engine
    if engine is not None:
        torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def _targets(model: nn.Module, types: tuple[type, ...], keep_float: tuple[str, ...] = ()) -> list[str]:
    """Names of the modules of ``types`` to quantize: not those named in ``KEEP_FLOAT`` or
    ``keep_float``, nor any inside them. Tied weights (T5's embeddings and lm_head) stay float:
    quantizing each user separately would store the shared matrix several times."""
    kept = set(KEEP_FLOAT) | set(keep_float)
    users: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for p in module.parameters(recurse=False):
            users[id(p)] = users.get(id(p), 0) + 1
    return [name for name, module in model.named_modules(remove_duplicate=False)
            if isinstance(module, types) and not kept & set(name.split("."))
            and all(users[id(p)] == 1 for p in module.parameters(recurse=False))]


def _weight_count(model: nn.Module, names: list[str]) -> int:
    modules = dict(model.named_modules(remove_duplicate=False))
    return sum(p.numel() for name in names for pname, p in modules[name].named_parameters() if "bias" not in pname)


def _float_input(_module: nn.Module, args: tuple) -> tuple | None:
    """Quantized kernels take float32 only; under bf16 autocast their inputs arrive in bf16."""
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return (x.float(), *args[1:])
    return None


def quantize_dynamic(model: nn.Module, embeddings: bool = False, per_channel: bool = True,
                     keep_float: tuple[str, ...] = (), activation_bits: int = 7) -> tuple[nn.Module, int]:
    """A copy with int8 Linear/LSTM (and optionally Embedding) modules, but those in ``keep_float``,
    and how many weights became int8. ``activation_bits`` 8: the Linears quantize their inputs to 256
    levels (``FullRangeDynamicLinear``); 7: torch's own."""
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig
    from torch.ao.quantization import per_channel_dynamic_qconfig
    from torch.ao.quantization import quantize_dynamic as torch_quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name in _targets(model, (nn.Linear, nn.LSTM), keep_float)}
    if embeddings:
        spec.update({name: float_qparams_weight_only_qconfig for name in _targets(model, (nn.Embedding,))})
    quantized_weights = _weight_count(model, list(spec))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao is deprecated in favour of torchao
        warnings.simplefilter("ignore", UserWarning)
        quantized = torch_quantize_dynamic(model, spec, dtype=torch.qint8)
    modules = dict(quantized.named_modules(remove_duplicate=False))
    for name in spec:
        if activation_bits == 8 and type(modules[name]) is dynamic_quantized.Linear:
            modules[name].__class__ = FullRangeDynamicLinear
        modules[name].register_forward_pre_hook(_float_input)
    return quantized.eval(), quantized_weights


def _import_torchao() -> None:
    try:
        import torchao.quantization.pt2e  # noqa: F401
    except ImportError:
        raise InputError("config", "the inductor int8 backend needs torchao (pip install torchao)") from None


def _drop_unused_tensors(graph_module: nn.Module) -> None:
    """After conversion the graph reads the int8 copies of the weights; the float originals are still
    attributes of the module and would be saved with it (the file would grow, not shrink)."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()]:
        if name not in used:
            owner_name, _, attribute = name.rpartition(".")
            delattr(graph_module.get_submodule(owner_name) if owner_name else graph_module, attribute)


def quantize_inductor(model: nn.Module) -> tuple[torch.export.ExportedProgram, int]:
    """The encoder exported with int8 weights (a scale per output row) and activations quantized per
    call, as torchao's x86 Inductor quantizer lays it out for ``torch.compile``; and how many weights
    are int8. Dynamic activation scales need no calibration data."""
    _import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    inputs, shapes = encoder.export_inputs(model.config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(encoder.SpanFunction(model.eval()), (), inputs, dynamic_shapes=shapes)
        quantizer = x86.X86InductorQuantizer().set_global(
            x86.get_default_x86_inductor_quantization_config(is_dynamic=True))
        prepared = prepare_pt2e(program.module(), quantizer)
        prepared(**inputs)  # the weight observers see the weights
        converted = convert_pt2e(prepared)
        _drop_unused_tensors(converted)
        program = torch.export.export(converted, (), inputs, dynamic_shapes=shapes)
    quantized_weights = sum(t.numel() for t in program.state_dict.values() if t.dtype == torch.int8)
    return program, quantized_weights


class CompiledSpanModel(nn.Module):
    """An exported int8 program compiled by Inductor, called like a QA model (start/end logits out).

    Inputs are padded to a multiple of ``LENGTH_BUCKET`` tokens (the padding masked, the logits cut
    back): oneDNN builds its int8 kernels for each input shape the first time it sees one, which
    costs more than the matmul itself, so a few shapes are reused rather than one per length. The
    model is compiled and every bucket run once when built, so predict and the benchmarks never
    wait for a compile or a kernel build."""

    LENGTH_BUCKET = 32

    def __init__(self, program: torch.export.ExportedProgram, vocab_size: int, max_length: int):
        super().__init__()
        # Freezing lets Inductor pre-pack the int8 weights for oneDNN; without it every call
        # dequantizes them. It is a process-wide setting (as the engine is for the dynamic backend):
        # the compile-time option form fails on these graphs in torch 2.13.
        torch._inductor.config.freezing = True
        # torch 2.13's oneDNN lowering warns about its own tensor copies at every compile
        warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning,
                                module=r"torch\._inductor\.mkldnn_lowerings")
        # Kept out of the module tree: an exported graph refuses .eval(), which predict calls.
        self.__dict__["compiled"] = torch.compile(program.module(), dynamic=True)
        self.max_length = max_length
        with torch.inference_mode():
            self(**encoder.span_inputs(2, self.LENGTH_BUCKET, vocab_size))  # torch.compile specializes batch 1 apart
            for length in range(self.LENGTH_BUCKET, max_length + self.LENGTH_BUCKET, self.LENGTH_BUCKET):
                self(**encoder.span_inputs(1, min(length, max_length), vocab_size))

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        length = input_ids.shape[1]
        padded = max(length, min(-(-length // self.LENGTH_BUCKET) * self.LENGTH_BUCKET, self.max_length))
        if padded > length:
            input_ids, attention_mask, token_type_ids = (
                nn.functional.pad(x, (0, padded - length)) for x in (input_ids, attention_mask, token_type_ids))
        start, end = self.compiled(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return QuestionAnsweringModelOutput(start_logits=start[:, :length], end_logits=end[:, :length])


def quantize_bitsandbytes(model: nn.Module, device: str, threshold: float = 6.0,
                          keep_float: tuple[str, ...] = ()) -> tuple[nn.Module, int]:
    """Replace every Linear but those in ``keep_float`` by an LLM.int8 ``Linear8bitLt``; moving to
    ``device`` quantizes the weights."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise InputError("config", "the bitsandbytes int8 backend needs bitsandbytes "
                                   "(pip install bitsandbytes)") from None
    quantized_weights = 0
    modules = dict(model.named_modules(remove_duplicate=False))
    for name in _targets(model, (nn.Linear,), keep_float):
        linear = modules[name]
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        replacement = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                          has_fp16_weights=False, threshold=threshold)
        replacement.weight = bnb.nn.Int8Params(linear.weight.data.clone(), requires_grad=False,
                                               has_fp16_weights=False)
        if linear.bias is not None:
            replacement.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
        setattr(parent, child, replacement)
        quantized_weights += linear.weight.numel()
    return model.to(device).eval(), quantized_weights


def quantize(model: nn.Module, options: dict, head_modules: tuple[str, ...] = ()) -> tuple[nn.Module, int]:
    """The quantized model for resolved ``options`` and the number of weights now stored as int8.
    ``head_modules`` (the family's) stay float where ``quantize_head`` is false."""
    keep_float = () if options["quantize_head"] else tuple(head_modules)
    if options["backend"] == "dynamic":
        with quantized_engine(options["engine"]):
            return quantize_dynamic(model, options["quantize_embeddings"], options["per_channel"], keep_float,
                                    resolve_activation_bits(options["activation_bits"]))
    if options["backend"] == "inductor":
        return quantize_inductor(model)
    if options["device"] == "cuda" and not torch.cuda.is_available():
        raise InputError("config", "int8 device cuda asked for, but torch sees no GPU")
    return quantize_bitsandbytes(model, options["device"], keep_float=keep_float)


def float_architecture(model_dir: str | Path, family: str) -> nn.Module:
    """The float model that ``model_dir``'s configuration files describe, with random weights (``load``
    quantizes it and replaces every weight)."""
    try:
        return models.family(family).architecture(model_dir)
    except InputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(model_dir, f"the int8 model's configuration files are missing or damaged "
                                    f"({first_line(err)})") from None


# -------------------------------------------------------- int8 weights as plain tensors (safetensors)


def _put_qtensor(tensors: dict, qtensors: dict, key: str, q: torch.Tensor) -> None:
    """A quantized tensor as its integer values, scales and zero points (plain tensors)."""
    tensors[f"{key}.values"] = q.int_repr().contiguous()
    if q.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        tensors[f"{key}.scale"] = torch.tensor([q.q_scale()], dtype=torch.float64)
        tensors[f"{key}.zero_point"] = torch.tensor([q.q_zero_point()], dtype=torch.int64)
        qtensors[key] = {"scheme": "per_tensor"}
    else:
        tensors[f"{key}.scale"] = q.q_per_channel_scales().contiguous()
        tensors[f"{key}.zero_point"] = q.q_per_channel_zero_points().contiguous()
        qtensors[key] = {"scheme": "per_channel", "axis": int(q.q_per_channel_axis())}


def _get_qtensor(tensors: dict, qtensors: dict, key: str) -> torch.Tensor:
    """The quantized tensor ``_put_qtensor`` stored (qint8 from int8 values, quint8 from uint8)."""
    entry = qtensors[key]
    values, scale, zero_point = (tensors[f"{key}.{part}"] for part in ("values", "scale", "zero_point"))
    if values.dtype not in (torch.int8, torch.uint8):
        raise ValueError(f"{key}: quantized values must be int8 or uint8, found {values.dtype}")
    if entry["scheme"] == "per_tensor":
        return torch._make_per_tensor_quantized_tensor(values, float(scale[0]), int(zero_point[0]))
    return torch._make_per_channel_quantized_tensor(values, scale, zero_point, int(entry["axis"]))


def _quantized_modules(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """The torch.ao int8 modules of ``model`` by name, with their kind."""
    from torch.ao.nn import quantized as nnq

    kinds = ((dynamic_quantized.Linear, "linear"), (FullRangeDynamicLinear, "linear"),
             (dynamic_quantized.LSTM, "lstm"), (nnq.Embedding, "embedding"))
    found = {}
    for name, module in model.named_modules():
        for kind_type, kind in kinds:
            if type(module) is kind_type:
                found[name] = (kind, module)
    return found


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)


def int8_state(model: nn.Module | torch.export.ExportedProgram) -> tuple[dict[str, torch.Tensor], dict]:
    """Every tensor ``load`` needs, as plain tensors, and the layout that says what they are."""
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(model, torch.export.ExportedProgram):
        layout = {"format": FORMAT_VERSION, "kind": "program", "state": sorted(model.state_dict),
                  "constants": sorted(model.constants)}
        for name, value in [*model.state_dict.items(), *model.constants.items()]:
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"the int8 program's {name} is a {type(value).__name__}, not a tensor")
            tensors[name] = value.detach().cpu().contiguous().clone()
        return tensors, layout
    quantized = _quantized_modules(model)
    qtensors: dict[str, dict] = {}
    for name, (kind, module) in quantized.items():
        if kind == "linear":
            _put_qtensor(tensors, qtensors, f"{name}.weight", module.weight())
            if module.bias() is not None:
                tensors[f"{name}.bias"] = module.bias().detach().contiguous()
        elif kind == "lstm":
            for key, weight in module.get_weight().items():
                _put_qtensor(tensors, qtensors, f"{name}.{key}", weight)
            for key, bias in module.get_bias().items():
                if bias is not None:
                    tensors[f"{name}.{key}"] = bias.detach().contiguous()
        else:
            _put_qtensor(tensors, qtensors, f"{name}.weight", module.weight())
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    prefixes = tuple(f"{name}." for name in quantized)
    for key, value in model.state_dict(keep_vars=False).items():
        if key.startswith(prefixes):
            continue  # the int8 modules' packed state, stored above as plain tensors
        if not isinstance(value, torch.Tensor) or value.is_quantized:
            raise TypeError(f"int8 cannot store {key} ({type(value).__name__}) as a plain tensor")
        identity = _storage_key(value)
        if identity in seen:  # a tied weight (one tensor under several names): stored once
            aliases[key] = seen[identity]
            continue
        seen[identity] = key
        tensors[key] = value.detach().cpu().contiguous()
    shared = {}
    for key, value in tensors.items():  # distinct tensors that share memory: safetensors wants copies
        pointer = value.untyped_storage().data_ptr()
        if pointer in shared:
            tensors[key] = value.clone()
        shared.setdefault(pointer, key)
    layout = {"format": FORMAT_VERSION, "kind": "module", "quantized": {n: k for n, (k, _) in quantized.items()},
              "qtensors": qtensors, "aliases": aliases}
    return tensors, layout


def save(model: nn.Module | torch.export.ExportedProgram, out_dir: str | Path) -> None:
    """The quantized model's tensors into ``out_dir/int8_weights.safetensors`` (its layout in the metadata).
    ``write_architecture`` writes the configuration and tokenizer beside it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors, layout = int8_state(model)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"qabench_int8": json.dumps(layout)})


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise InputError(path, f"damaged int8 weights, not a readable safetensors file "
                               f"({first_line(err)})") from None
    try:
        layout = json.loads(metadata["qabench_int8"])
        if not isinstance(layout, dict) or layout.get("kind") not in ("module", "program"):
            raise ValueError("unknown kind")
    except (KeyError, ValueError):
        raise InputError(path, "no int8 layout in its metadata (not written by qabench's int8 variant)") from None
    if layout.get("format") != FORMAT_VERSION:
        raise InputError(path, f"int8 weights of format {layout.get('format')!r}, this qabench reads format "
                               f"{FORMAT_VERSION}; delete {path.parent} and rerun snakemake to rebuild it")
    return tensors, layout


def _put_state(model: nn.Module, tensors: dict[str, torch.Tensor], layout: dict) -> None:
    """Load what ``int8_state`` stored into a freshly quantized ``model`` of the same architecture."""
    quantized = _quantized_modules(model)
    expected = layout["quantized"]
    if {n: k for n, (k, _) in quantized.items()} != expected:
        raise ValueError(f"its int8 layers ({len(expected)}) are not those of the architecture its "
                         f"configuration describes ({len(quantized)})")
    qtensors = layout["qtensors"]

    def same_shape(stored: torch.Tensor, current: torch.Tensor, key: str) -> torch.Tensor:
        if tuple(stored.shape) != tuple(current.shape):
            raise ValueError(f"{key} has shape {tuple(stored.shape)}, the architecture {tuple(current.shape)}")
        return stored

    for name, (kind, module) in quantized.items():
        if kind == "linear":
            weight = same_shape(_get_qtensor(tensors, qtensors, f"{name}.weight"), module.weight(), f"{name}.weight")
            bias = tensors.get(f"{name}.bias")
            if (bias is None) != (module.bias() is None):
                raise ValueError(f"{name}.bias is {'missing' if bias is None else 'not expected'}")
            module.set_weight_bias(weight, None if bias is None else same_shape(bias, module.bias(), f"{name}.bias"))
        elif kind == "lstm":
            current = {**module.get_weight(), **module.get_bias()}
            values = {}
            for key, tensor in current.items():
                stored = (_get_qtensor(tensors, qtensors, f"{name}.{key}") if key in module.get_weight()
                          else tensors[f"{name}.{key}"])
                values[key] = same_shape(stored, tensor, f"{name}.{key}")
            module.set_weight_bias(values)
        else:
            module.set_weight(same_shape(_get_qtensor(tensors, qtensors, f"{name}.weight"), module.weight(),
                                         f"{name}.weight"))
    prefixes = tuple(f"{name}." for name in quantized)
    # the int8 modules' own state as now set (their loaders need every key of it and the state dict's
    # version metadata), with the stored plain tensors in place of the random ones
    state = model.state_dict()
    plain = {key: tensors[key] for key in tensors if not key.startswith(prefixes)}
    plain.update({alias: tensors[key] for alias, key in layout["aliases"].items()})
    missing = sorted(key for key in state if not key.startswith(prefixes) and key not in plain)
    unexpected = sorted(set(plain) - set(state))
    if missing or unexpected:
        raise ValueError(f"tensors missing {missing[:3]}, unexpected {unexpected[:3]}")
    state.update(plain)
    model.load_state_dict(state, strict=True)


def _put_program_state(program: torch.export.ExportedProgram, tensors: dict[str, torch.Tensor],
                       layout: dict) -> None:
    """Replace the tensors of a freshly quantized program with the stored ones (same graph, same names)."""
    targets = {**program.state_dict, **program.constants}
    if set(targets) != set(layout["state"]) | set(layout["constants"]) or set(tensors) != set(targets):
        raise ValueError("its tensors are not those of the graph its configuration gives")
    with torch.no_grad():
        for name, target in targets.items():
            stored = tensors[name]
            if stored.shape != target.shape or stored.dtype != target.dtype:
                raise ValueError(f"{name} is {stored.dtype} {tuple(stored.shape)}, the graph's "
                                 f"{target.dtype} {tuple(target.shape)}")
            target.copy_(stored)


def make(base_dir: str | Path, out_dir: str | Path, *, options: dict | None = None, seed: int = 0,
         data=None, state_dir: str | Path | None = None, variant: str | None = None) -> None:
    """Quantize the base in ``base_dir`` and write the variant to ``out_dir``. ``seed``, ``data`` and
    ``state_dir`` are unused (nothing trains)."""
    options = resolve_options(options)
    if options["backend"] == "dynamic" and options["engine"] is None:
        options["engine"] = torch.backends.quantized.engine  # record which one packed the weights
    if options["backend"] == "dynamic":
        options["activation_bits"] = resolve_activation_bits(options["activation_bits"])  # record what ran
    base_settings = read_settings(base_dir)
    model_dir.require_base(base_settings, base_dir, METHOD)
    family = base_settings["family"]
    compression.check_applies(METHOD, family, base_dir)
    if options["backend"] == "inductor" and "export" not in models.capabilities(family):
        raise InputError(base_dir, f"the inductor int8 backend exports encoders only, not the {family} family "
                                   "(use the dynamic backend)")
    model, tokenizer, _ = load_model(base_dir)
    params = sum(p.numel() for p in model.parameters())
    architecture = Path(tempfile.mkdtemp(prefix="int8-architecture-"))
    try:
        model_dir.write_architecture(family, model, tokenizer, architecture)  # before bitsandbytes swaps the Linears
        t0 = time.perf_counter()
        quantized, quantized_weights = quantize(model, options, models.family(family).head_modules)
        wall = time.perf_counter() - t0
    except BaseException:
        shutil.rmtree(architecture, ignore_errors=True)
        raise
    settings = model_dir.variant_settings(base_settings, base_dir, METHOD, variant, options)
    record = {"params": params, "trainable_params": 0, "int8_weights": quantized_weights,
              "int8_fraction": round(quantized_weights / params, 4), "backend": options["backend"],
              "device": options["device"], "quantize_wall_s": round(wall, 2),
              "base_size_mb": disk_size_mb(base_dir)}

    def write(tmp: Path) -> None:
        shutil.copytree(architecture, tmp, dirs_exist_ok=True)
        save(quantized, tmp)
        record["size_mb"] = disk_size_mb(tmp)
        record["size_ratio"] = round(record["size_mb"] / record["base_size_mb"], 3)

    try:
        model_dir.write(out_dir, write, settings, record)
    finally:
        shutil.rmtree(architecture, ignore_errors=True)


def load(model_dir: str | Path, settings: dict) -> tuple[nn.Module, object]:
    """The quantized model (eval mode, on the device it was made for) and its tokenizer, from tensors
    and JSON only. A dynamic model's weights are packed for torch's quantized engine, so this sets the
    engine the model was made with for the whole process (a predict or benchmark process runs one model)."""
    model_dir = Path(model_dir)
    for name in OLD_FILES:
        if (model_dir / name).exists():
            raise InputError(model_dir / name, "an int8 model pickled by an older qabench; pickles are never loaded "
                                               f"(they can run any code): delete {model_dir} and rerun snakemake "
                                               "(or workflow_scripts.compress --method int8) to rebuild it")
    path = model_dir / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(model_dir, f"not an int8 model directory (no {WEIGHTS_FILE})")
    recorded = dict(settings.get("compression") or {})
    if recorded.get("backend") == "dynamic":  # make records the backend it resolved
        recorded.setdefault("activation_bits", ACTIVATION_BITS_BEFORE_THE_OPTION)
    try:
        options = resolve_options(recorded)
    except InputError as err:
        raise InputError(model_dir / "qabench.json", f"compression: {err.problem}") from None
    tensors, layout = _read_weights(path)
    family = settings["family"]
    if options["device"] == "cuda" and not torch.cuda.is_available():
        raise InputError(model_dir, "this int8 model was made for cuda (bitsandbytes), but torch sees no GPU")
    if (layout["kind"] == "program") != (options["backend"] == "inductor"):
        raise InputError(path, f"holds a {layout['kind']}, which the {options['backend']} backend of its "
                               "qabench.json does not make")
    tokenizer = models.family(family).saved_tokenizer(model_dir, settings.get("options"))
    skeleton = float_architecture(model_dir, family)
    if layout["kind"] == "program":
        if "export" not in models.capabilities(family):
            raise InputError(model_dir / "qabench.json", f"an inductor int8 program of the {family} family")
        _import_torchao()  # registers the quantize/dequantize ops the program calls
        program, _ = quantize_inductor(skeleton)
        try:
            _put_program_state(program, tensors, layout)
        except (ValueError, KeyError, RuntimeError) as err:
            raise InputError(path, f"does not fit the model its configuration describes ({err})") from None
        max_length = settings.get("max_length", DEFAULT_SETTINGS["max_length"])
        return CompiledSpanModel(program, len(tokenizer), max_length).eval(), tokenizer
    if options["engine"] is not None:
        torch.backends.quantized.engine = options["engine"]
    if options["activation_bits"] == 8 and not machine.int8_dot_products():
        log.warning("%s: made with 8-bit activations (activation_bits: 8), but this CPU has no int8 dot-product "
                    "instructions (VNNI/AMX): fbgemm's int16 sums can saturate and answers may differ; rebuild it "
                    "with activation_bits: 7 for this machine", model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized, _ = quantize(skeleton, options, models.family(family).head_modules)
        try:
            _put_state(quantized, tensors, layout)
        except (ValueError, KeyError, RuntimeError, TypeError) as err:
            raise InputError(path, f"does not fit the model its configuration describes "
                                   f"({first_line(err)})") from None
    return quantized.eval(), tokenizer
