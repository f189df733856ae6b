"""Mamba (selective state space) backbones with a start/end span head and a no-answer score.

Unidirectional: one causal backbone reads ``[CLS] question [SEP] context [SEP]``; a token's span
scores come from its own state (it has seen the question, not the context after it), and the
no-answer score from the state of the last real token, the only one that has seen everything.
Bidirectional: a second backbone with its own weights reads each sequence reversed within its own
length; its states are flipped back and concatenated with the forward ones, and the no-answer score
reads both directions' final states (forward at the last token, backward at position 0).

Position 0 of the start and end logits carries the no-answer score, padding positions ``MASKED_LOGIT``;
question and separator positions keep their raw scores (the decoder only looks at context tokens).
"""

from __future__ import annotations

import functools
import json
import math
from contextlib import contextmanager
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, MambaConfig, MambaModel
from transformers.models.mamba import modeling_mamba

from qabench import checkpoints
from qabench.errors import InputError
from qabench.models import MASKED_LOGIT
from qabench.models.sequences import reverse_padded
from qabench.models.span import SpanFamily

NAME = "mamba"
DEFAULT_OPTIONS = {"bidirectional": False}
META_FILE = "mamba.json"
HEADS_FILE = "mamba_heads.safetensors"
FORWARD_DIR = "forward"
BACKWARD_DIR = "backward"
FORMAT_VERSION = 1
SCAN_CHUNK_BYTES = 16 << 20  # below glibc's largest mmap threshold, so chunk buffers get reused


class MambaSpanModel(nn.Module):
    """One or two Mamba backbones, a per-token start/end head and a no-answer head."""

    def __init__(self, forward_backbone: MambaModel, backward_backbone: MambaModel | None = None):
        super().__init__()
        self.forward_backbone = forward_backbone
        self.backward_backbone = backward_backbone
        width = forward_backbone.config.hidden_size * (1 if backward_backbone is None else 2)
        self.span_head = nn.Linear(width, 2)
        self.null_head = nn.Linear(width, 2)

    @property
    def bidirectional(self) -> bool:
        return self.backward_backbone is not None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits, each [batch, length], for right-padded ``input_ids``."""
        batch = input_ids.shape[0]
        lengths = attention_mask.sum(dim=1)
        rows = torch.arange(batch, device=input_ids.device)
        states = _hidden_states(self.forward_backbone, input_ids, attention_mask)
        null_features = states[rows, (lengths - 1).clamp(min=0)]
        if self.backward_backbone is not None:
            backward = _hidden_states(self.backward_backbone, reverse_padded(input_ids, lengths), attention_mask)
            backward = reverse_padded(backward, lengths)
            null_features = torch.cat([null_features, backward[:, 0]], dim=-1)
            states = torch.cat([states, backward], dim=-1)
        span = self.span_head(states)
        null = self.null_head(null_features)
        logits = torch.cat([null[:, None, :].to(span.dtype), span[:, 1:]], dim=1)
        logits = logits.masked_fill(attention_mask[:, :, None] == 0, MASKED_LOGIT)
        start, end = logits.unbind(dim=-1)
        return start, end


def _hidden_states(backbone: MambaModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    # use_cache=False: in eval mode MambaModel would otherwise build a generation cache
    return backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


@functools.cache
def _kernel_packages() -> tuple[str, ...]:
    found = []
    for package in ("mamba_ssm", "causal_conv1d"):
        try:
            __import__(package)
            found.append(package)
        except Exception:  # a broken CUDA extension fails with other errors than ImportError
            pass
    return tuple(found)


def _kernels_in_use(model: MambaSpanModel) -> tuple[str, ...]:
    """The kernel packages transformers calls for ``model``: they only count (and only work) on CUDA."""
    return _kernel_packages() if next(model.parameters()).device.type == "cuda" else ()


def kernel_path(model: MambaSpanModel) -> str:
    """Which Mamba implementation runs: "cuda kernels" (mamba-ssm + causal-conv1d) or "pure pytorch".

    transformers binds the kernel packages when they import and calls them for every tensor, so they
    only count (and only work) with the model on CUDA.
    """
    found = _kernels_in_use(model)
    if len(found) == 2:
        return "cuda kernels"
    if found:
        return f"partial cuda kernels ({found[0]} only)"
    return "pure pytorch"


def selective_scan(hidden_states: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False, **_):
    """The selective scan of transformers' reference path (same arguments and maths), in float32.

    The reference indexes one time step at a time out of [batch, channels, length, state] tensors; the
    backward of each index fills a zero tensor of the full size, so training costs O(length^2).
    ``_SelectiveScan`` keeps both passes linear in the length.
    Shapes: hidden_states, dt, z [b, d, l]; A [d, n]; B, C [b, n, l].
    """
    if return_last_state:
        raise NotImplementedError("span models run without a generation cache")
    dtype = hidden_states.dtype
    # time-major and contiguous, so that every [l, b, d, n] tensor is too and each step is one block
    u = hidden_states.float().permute(2, 0, 1).contiguous()
    dt = dt.float().permute(2, 0, 1).contiguous()
    if delta_bias is not None:
        dt = dt + delta_bias.float()
    if delta_softplus:
        dt = F.softplus(dt)
    B, C = (x.float().permute(2, 0, 1).contiguous() for x in (B, C))
    A = A.float()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (u, dt, A, B, C)):
        out = _SelectiveScan.apply(u, dt, A, B, C)
    else:
        out, _ = _scan(u, dt, A, B, C)
    out = out.permute(1, 2, 0)
    if D is not None:
        out = out + hidden_states.float() * D.float()[None, :, None]
    if z is not None:
        out = out * F.silu(z.float())
    return out.to(dtype)


class _SelectiveScan(torch.autograd.Function):
    """``y[t] = C[t] . h[t]`` with ``h[t] = exp(dt[t] A) * h[t-1] + dt[t] u[t] B[t]`` and ``h[-1] = 0``.

    Time-major float32: u, dt [l, b, d]; A [d, n]; B, C [l, b, n]; y [l, b, d]. The states [l, b, d, n]
    are what costs memory (1.2 GB per Mamba-130m layer at batch 32 x 384), so only the state before each
    segment of about sqrt(l) steps is kept, and backward recomputes a segment's states from it with the
    same arithmetic (so the same values) before the reverse recurrence: one more pass of the forward
    recurrence buys l / sqrt(l) times less memory. Within a segment, the [.., d, n] temporaries are made a
    chunk of steps at a time (``SCAN_CHUNK_BYTES``), because on CPU fresh full-size temporaries cost more
    in page faults than the arithmetic.
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        y, starts = _scan(u, dt, A, B, C, keep_segment_starts=True)
        ctx.save_for_backward(u, dt, A, B, C, starts)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        u, dt, A, B, C, starts = ctx.saved_tensors
        with torch.autocast(u.device.type, enabled=False):
            grad_y = grad_y.contiguous()
            grad_dtu, grad_B, grad_C = torch.empty_like(u), torch.empty_like(B), torch.empty_like(C)
            grad_dt, grad_A = torch.empty_like(dt), torch.zeros_like(A)
            later = None  # (dL/dh, decay) at the first step of the chunk after this one
            segments = _segments(u, A.shape[1])
            for (seg_lo, seg_hi), start in zip(reversed(segments), reversed(starts)):
                states = _states_from(start, u, dt, A, B, seg_lo, seg_hi)  # h[seg_lo - 1] .. h[seg_hi - 1]
                for lo, hi in reversed(_chunks(u, A.shape[1], seg_lo, seg_hi)):
                    decay = torch.exp(dt[lo:hi, ..., None] * A)
                    grad_h = grad_y[lo:hi, ..., None] * C[lo:hi, :, None, :]  # becomes dL/dh[t] in full
                    with _one_thread():
                        if later is not None:
                            torch.addcmul(grad_h[-1], later[1], later[0], out=grad_h[-1])
                        for t in range(hi - lo - 2, -1, -1):
                            torch.addcmul(grad_h[t], decay[t + 1], grad_h[t + 1], out=grad_h[t])
                    later = grad_h[0], decay[0].clone()
                    current = states[lo - seg_lo + 1:hi - seg_lo + 1]  # h[lo] .. h[hi - 1]
                    previous = states[lo - seg_lo:hi - seg_lo]  # h[lo - 1] .. h[hi - 2]
                    grad_C[lo:hi] = _per_step_matmul(grad_y[lo:hi, :, None, :], current).squeeze(-2)
                    grad_B[lo:hi] = _per_step_matmul((dt[lo:hi] * u[lo:hi])[:, :, None, :], grad_h).squeeze(-2)
                    grad_dtu[lo:hi] = _per_step_matmul(grad_h, B[lo:hi, ..., None]).squeeze(-1)
                    # dL/d(dt A) at step t = dL/dh[t] * h[t-1] * decay[t], computed in decay's memory
                    grad_log_decay = decay.mul_(grad_h).mul_(previous)
                    grad_dt[lo:hi] = (grad_log_decay * A).sum(-1)
                    grad_A += grad_log_decay.mul_(dt[lo:hi, :, :, None]).sum(dim=(0, 1))
            return grad_dtu * dt, grad_dt + grad_dtu * u, grad_A, grad_B, grad_C


def _scan(u, dt, A, B, C, keep_segment_starts: bool = False):
    """The outputs y, a segment of steps at a time, each segment's first state computed from the state
    before it; with ``keep_segment_starts`` also those states before each segment, [segments, b, d, n]
    (zeros for the first), which is all that backward keeps."""
    with torch.autocast(u.device.type, enabled=False):
        y = torch.empty_like(u)
        before = u.new_zeros(*u.shape[1:], A.shape[1])
        starts = []
        for lo, hi in _segments(u, A.shape[1]):
            if keep_segment_starts:
                starts.append(before)
            states = _states_from(before, u, dt, A, B, lo, hi)
            y[lo:hi] = _per_step_matmul(states[1:], C[lo:hi, ..., None]).squeeze(-1)
            before = states[-1].clone()  # a view would keep the whole segment alive
        return y, torch.stack(starts) if keep_segment_starts else None


def _states_from(before, u, dt, A, B, lo, hi) -> torch.Tensor:
    """[hi - lo + 1, b, d, n]: the state h[lo - 1] given as ``before``, then h[lo] .. h[hi - 1]."""
    states = u.new_empty(hi - lo + 1, *before.shape)
    states[0] = before
    for c_lo, c_hi in _chunks(u, A.shape[1], lo, hi):
        decay = torch.exp(dt[c_lo:c_hi, ..., None] * A)
        chunk = states[c_lo - lo + 1:c_hi - lo + 1]
        torch.mul((dt[c_lo:c_hi] * u[c_lo:c_hi])[..., None], B[c_lo:c_hi, :, None, :], out=chunk)
        with _one_thread():
            for i in range(c_hi - c_lo):
                torch.addcmul(chunk[i], decay[i], states[c_lo - lo + i], out=chunk[i])
    return states


def _segments(u: torch.Tensor, state_size: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of about sqrt(length) steps (at least one chunk) over the [l, b, d] tensor ``u``,
    the unit of recomputation in backward: sqrt balances the states kept against those recomputed."""
    length = u.shape[0]
    return _ranges(0, length, max(math.isqrt(max(length - 1, 0)) + 1, _chunk_steps(u, state_size)))


def _chunks(u: torch.Tensor, state_size: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) split into ranges whose [.., d, n] slices hold about ``SCAN_CHUNK_BYTES``."""
    return _ranges(lo, hi, _chunk_steps(u, state_size))


def _ranges(lo: int, hi: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, hi)) for start in range(lo, hi, size)]


def _chunk_steps(u: torch.Tensor, state_size: int) -> int:
    step_bytes = u[0].numel() * state_size * u.element_size()
    return max(1, SCAN_CHUNK_BYTES // step_bytes)


@contextmanager
def _one_thread():
    """Run the per-step loops on one thread: each step is a small op, and splitting it over threads
    made it ten times slower on a busy 2-core machine, where a thread waits for one that is descheduled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _per_step_matmul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Matrix products over the leading (l, b) dimensions; torch.matmul would copy a 4-d operand."""
    lead = x.shape[:2]
    out = torch.bmm(x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:]))
    return out.view(*lead, *out.shape[1:])


# The hook: transformers' Mamba layers run their pure-PyTorch selective scan by calling this module-level
# function of transformers.models.mamba.modeling_mamba (looked up when called), whose backward costs
# O(length^2). It is private API, so check_scan_hook() proves on the installed version that swapping it
# reaches the layers (checked with transformers 5.17 and 5.25: 5.25 wraps it in a `kernels` Func module,
# and still looks it up by name).
SCAN_NAME = "mamba_selective_scan"


@contextmanager
def _swapped_scan(scan):
    original = getattr(modeling_mamba, SCAN_NAME)
    setattr(modeling_mamba, SCAN_NAME, scan)
    try:
        yield
    finally:
        setattr(modeling_mamba, SCAN_NAME, original)


@contextmanager
def _linear_time_scan(model: MambaSpanModel):
    """Swap our scan in for transformers' reference one while ``model`` runs without mamba-ssm's kernel."""
    if "mamba_ssm" in _kernels_in_use(model):
        yield
        return
    check_scan_hook()
    with _swapped_scan(selective_scan):
        yield


@functools.cache
def check_scan_hook() -> None:
    """Raise InputError, naming the transformers version, unless swapping ``SCAN_NAME`` makes a Mamba
    layer run our scan, in training and in eval mode (a one-layer model on the CPU, once per process)."""
    import transformers

    where = f"transformers {transformers.__version__}"
    expected = (f"qabench.models.mamba expects its MambaMixer to run modeling_mamba.{SCAN_NAME} (the reference "
                f"selective scan, which it swaps for a linear-time one; checked with 5.17 and 5.25)")
    if not callable(getattr(modeling_mamba, SCAN_NAME, None)):
        raise InputError(where, f"{expected}, but there is no such function; install the locked transformers "
                                f"(./setup.sh) or adapt qabench/models/mamba.py")
    calls = []

    def counting_scan(*args, **kwargs):
        calls.append(1)
        return selective_scan(*args, **kwargs)

    config = MambaConfig(vocab_size=8, hidden_size=4, state_size=2, num_hidden_layers=1, expand=2, conv_kernel=2)
    try:
        # whatever mode the caller is in (the first forward of a predict runs under inference_mode): its
        # random stream stays as it was, no autocast, and every tensor of the probe is a normal one
        with torch.random.fork_rng(devices=[]), torch.autocast("cpu", enabled=False), torch.inference_mode(False):
            ids = torch.tensor([[1, 2, 3]])
            probe = MambaModel(config)
            for training in (True, False):
                probe.train(training)
                with _swapped_scan(counting_scan), torch.set_grad_enabled(training):
                    probe(input_ids=ids, use_cache=False)
    except Exception as err:  # noqa: BLE001 - whatever broke, it is this version's layers against our hook
        raise InputError(where, f"{expected}; a probe forward with it failed ({type(err).__name__}: {err}); "
                                f"install the locked transformers (./setup.sh) or adapt qabench/models/mamba.py") from None
    if len(calls) != 2:
        raise InputError(where, f"{expected}, but the layers ran it {len(calls)} of 2 times with it swapped; "
                                f"install the locked transformers (./setup.sh) or adapt qabench/models/mamba.py")


def _checked_options(options: dict | None) -> dict:
    merged = dict(DEFAULT_OPTIONS)
    for key, value in (options or {}).items():
        if key not in DEFAULT_OPTIONS:
            raise InputError("config", f"unknown mamba option '{key}' (known: {', '.join(DEFAULT_OPTIONS)})")
        if not isinstance(value, bool):
            raise InputError("config", f"mamba option '{key}' must be true or false, not {value!r}")
        merged[key] = value
    return merged


def _read_meta(root: Path) -> dict:
    try:
        meta = json.loads((root / META_FILE).read_text())
    except FileNotFoundError:
        raise InputError(root, f"not a mamba checkpoint (no {META_FILE}; train one with family: mamba)") from None
    except (OSError, ValueError) as err:
        raise InputError(root / META_FILE, f"unreadable mamba metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("family") != NAME or meta.get("format") != FORMAT_VERSION:
        raise InputError(root / META_FILE, f"not a format-{FORMAT_VERSION} mamba checkpoint")
    return meta


def _prepare_tokenizer(tokenizer, spec: str):
    """Make a tokenizer produce ``[CLS] question [SEP] context [SEP]`` windows and pad.

    Mamba's own tokenizers (GPT-NeoX) join a pair with no special tokens at all; then position 0 would
    be a question token and nothing would mark where the context starts, so we add a template that
    uses the tokenizer's own bos/eos tokens as CLS/SEP. BERT-style tokenizers are left as they are.
    """
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    if tokenizer.pad_token is None:
        raise InputError(spec, "the tokenizer has no pad, eos or sep token to pad batches with")
    if _has_pair_separators(tokenizer):
        return tokenizer
    cls = tokenizer.cls_token or tokenizer.bos_token or tokenizer.eos_token
    sep = tokenizer.sep_token or tokenizer.eos_token
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if cls is None or sep is None or backend is None:
        raise InputError(spec, "the tokenizer does not mark question and context apart ([CLS] question [SEP] "
                               "context [SEP]) and has no fast backend with cls/bos and sep/eos tokens to add")
    from tokenizers.processors import TemplateProcessing

    backend.post_processor = TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=sorted({(token, tokenizer.convert_tokens_to_ids(token)) for token in (cls, sep)}),
    )
    if not _has_pair_separators(tokenizer):
        raise InputError(spec, "could not make the tokenizer mark question and context apart")
    return tokenizer


def _has_pair_separators(tokenizer) -> bool:
    sequence_ids = tokenizer("a", "b").sequence_ids()
    return (sequence_ids[0] is None and 0 in sequence_ids and 1 in sequence_ids
            and None in sequence_ids[sequence_ids.index(0):sequence_ids.index(1)])


def _load_backbone(spec: str) -> MambaModel:
    # fp32 master weights whatever dtype the checkpoint was stored in (bf16 runs use autocast)
    return checkpoints.load_pretrained(MambaModel, spec, dtype=torch.float32)


class MambaFamily(SpanFamily):
    name = NAME
    default_options = DEFAULT_OPTIONS
    lora_targets = ("in_proj", "x_proj", "out_proj")
    head_modules = ("span_head", "null_head")

    def resolve_options(self, options: dict | None) -> dict:
        return _checked_options(options)

    def recognizes(self, model_dir: Path) -> bool | None:
        return True if (Path(model_dir) / META_FILE).is_file() else None

    def implementation(self, model) -> str:
        return kernel_path(model)

    def architecture(self, model_dir) -> MambaSpanModel:
        """Backbones as their configs describe them and fresh heads, all with random weights."""
        root = Path(model_dir)
        meta = _read_meta(root)
        backbones = [MambaModel(MambaConfig.from_pretrained(str(root / part)))
                     for part in (FORWARD_DIR, BACKWARD_DIR)[: 2 if meta.get("bidirectional") else 1]]
        return MambaSpanModel(*backbones)

    def load_tokenizer(self, checkpoint: str | dict, options: dict | None = None):
        """The tokenizer ``build`` returns, without building the model."""
        _checked_options(options)
        if isinstance(checkpoint, dict):
            if "tokenizer" not in checkpoint:
                raise InputError("config", "a random-init mamba checkpoint needs a 'tokenizer' spec")
            spec = checkpoint["tokenizer"]
        else:
            spec = checkpoint
        return _prepare_tokenizer(checkpoints.load_pretrained(AutoTokenizer, spec), spec)

    def build(self, checkpoint: str | dict, seed: int, options: dict | None = None):
        """Model, tokenizer and where the weights came from.

        ``checkpoint`` is a spec string (hub id, directory, ``pip:package``) of a Mamba checkpoint, or
        ``{"random_init": {MambaConfig fields}, "tokenizer": spec}`` (vocab_size from the tokenizer), optionally
        with ``"embeddings": spec`` (word embeddings of both directions copied from that checkpoint).
        With ``bidirectional`` the backward backbone starts from the same pretrained weights, or from its
        own random init. A directory this family saved (``results/models/M/base``) is built again, heads
        included, to train it further.
        """
        opts = _checked_options(options)
        if self.is_own_directory(checkpoint):
            return self._saved_model_to_train(checkpoint, opts)
        check_scan_hook()
        tokenizer = self.load_tokenizer(checkpoint, opts)
        torch.manual_seed(seed)
        if isinstance(checkpoint, dict):
            if not isinstance(checkpoint.get("random_init"), dict):
                raise InputError("config", "a mamba checkpoint given as a mapping needs 'random_init' (MambaConfig fields)")
            fields = dict(checkpoint["random_init"])
            unknown = sorted(k for k in fields if not hasattr(MambaConfig(), k))
            if unknown:
                raise InputError("config", f"random_init: {', '.join(unknown)} not MambaConfig fields "
                                           f"(e.g. hidden_size, num_hidden_layers, state_size, expand, conv_kernel)")
            fields.setdefault("vocab_size", len(tokenizer))
            config = MambaConfig(**fields)
            forward = MambaModel(config)
            backward = MambaModel(config) if opts["bidirectional"] else None
            origin = f"random init (mamba, {config.num_hidden_layers} layers, hidden {config.hidden_size}"
            origin += ", bidirectional)" if opts["bidirectional"] else ")"
            origin += checkpoints.init_embeddings_from(checkpoint, [m for m in (forward, backward) if m is not None],
                                                       len(tokenizer))
        else:
            forward = _load_backbone(checkpoint)
            backward = _load_backbone(checkpoint) if opts["bidirectional"] else None
            origin = checkpoint + (" (bidirectional)" if opts["bidirectional"] else "")
        if len(tokenizer) > forward.config.vocab_size:
            raise InputError(str(checkpoint), f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
                                              f"only {forward.config.vocab_size}")
        return MambaSpanModel(forward, backward), tokenizer, origin

    def span_logits(self, model: MambaSpanModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        with _linear_time_scan(model):
            return model(batch["input_ids"].to(device), batch["attention_mask"].to(device))

    def save(self, model: MambaSpanModel, tokenizer, out_dir) -> None:
        """Backbones with save_pretrained in subfolders, heads and options beside them, the tokenizer on top."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.forward_backbone.save_pretrained(out / FORWARD_DIR)
        if model.backward_backbone is not None:
            model.backward_backbone.save_pretrained(out / BACKWARD_DIR)
        heads = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()
                 if name.startswith(("span_head.", "null_head."))}
        safetensors.torch.save_file(heads, str(out / HEADS_FILE))
        meta = {"family": NAME, "format": FORMAT_VERSION, "bidirectional": model.bidirectional}
        (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        tokenizer.save_pretrained(out)

    def _saved_model_to_train(self, model_dir: str, options: dict) -> tuple[MambaSpanModel, object, str]:
        """A saved model in train mode; the config's ``bidirectional`` must be what it was built with."""
        saved = bool(_read_meta(Path(model_dir)).get("bidirectional"))
        if saved != options["bidirectional"]:
            raise InputError(model_dir, f"trained with bidirectional: {str(saved).lower()}, but the config gives "
                                        f"{str(options['bidirectional']).lower()}; give the option it was trained with")
        model, tokenizer = self.load(model_dir)
        model.train()
        return model, tokenizer, f"trained further from {model_dir}"

    def load(self, model_dir) -> tuple[MambaSpanModel, object]:
        """A directory written by ``save``, in eval mode."""
        root = Path(model_dir)
        check_scan_hook()
        meta = _read_meta(root)
        forward = _load_backbone(str(root / FORWARD_DIR))
        backward = _load_backbone(str(root / BACKWARD_DIR)) if meta.get("bidirectional") else None
        model = MambaSpanModel(forward, backward)
        try:
            heads = safetensors.torch.load_file(str(root / HEADS_FILE))
        except (OSError, safetensors.SafetensorError) as err:
            raise InputError(root / HEADS_FILE, f"cannot read the span heads ({err})") from None
        try:
            missing, unexpected = model.load_state_dict(heads, strict=False)
        except RuntimeError as err:  # shapes that do not fit
            raise InputError(root / HEADS_FILE, f"span heads do not fit the backbone ({err})") from None
        missing = [name for name in missing if name.startswith(("span_head.", "null_head."))]
        if missing or unexpected:
            raise InputError(root / HEADS_FILE, f"span heads do not fit the backbone (missing {missing}, "
                                                f"unexpected {unexpected})")
        tokenizer = _prepare_tokenizer(checkpoints.load_pretrained(AutoTokenizer, str(root)), str(root))
        model.eval()
        return model, tokenizer


FAMILY = MambaFamily()
