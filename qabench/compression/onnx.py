"""ONNX Runtime export of a fine-tuned encoder for CPU serving, in float32 or with int8 weights.

The encoder is exported with torch.onnx (any batch, any length up to its position table),
optionally quantized with ONNX Runtime's dynamic int8 quantizer (int8 MatMul weights, activations
quantized per call), and checked against PyTorch on questions of the training data before
it is written: the largest start/end logit difference and the share of answers that agree are
recorded in training.json, and a float32 export that does not match PyTorch is refused. ONNX
Runtime runs it on as many threads as torch is given.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from qabench.batching import pad_batch
from qabench import compression, model_dir
from qabench.compression import with_defaults
from qabench.efficiency import disk_size_mb
from qabench.errors import InputError
from qabench.windows import WindowSpec
from qabench.models.span import tokenize_examples
from qabench.models import encoder
from qabench.model_dir import load_model, read_settings
from qabench.predict import predict

METHOD = "onnx"
DEFAULT_OPTIONS = {
    "quantize": False,        # int8 MatMul weights (ONNX Runtime dynamic quantization)
    "per_channel": True,      # with quantize: a weight scale per output column rather than per matrix
    "parity_questions": 64,   # training questions the export is checked on
}
MODEL_FILE = "model.onnx"
OUTPUT_NAMES = ("start_logits", "end_logits")
# float32 ONNX Runtime against PyTorch: kernels differ in summation order, not more
FLOAT_LOGIT_TOLERANCE = 1e-3


def resolve_options(options: dict | None) -> dict:
    merged = with_defaults(METHOD, options, DEFAULT_OPTIONS)
    for name in ("quantize", "per_channel"):
        if not isinstance(merged[name], bool):
            raise InputError("config", f"onnx option {name} must be true or false, got {merged[name]!r}")
    if not isinstance(merged["parity_questions"], int) or merged["parity_questions"] < 1:
        raise InputError("config", f"onnx option parity_questions must be a positive integer, "
                                   f"got {merged['parity_questions']!r}")
    return merged


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise InputError("config", "the onnx variant needs onnxruntime (pip install onnxruntime onnx onnxscript)") from None
    return onnxruntime


class OnnxSpanModel(nn.Module):
    """An ONNX Runtime session called like a QA model: tensors in, start/end logits out."""

    def __init__(self, path: str | Path, threads: int):
        super().__init__()
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # spinning threads would keep the cores busy between calls and skew side-by-side timings
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feeds = {name: given[name].numpy() for name in self.input_names}
        start, end = self.session.run(list(OUTPUT_NAMES), feeds)
        return QuestionAnsweringModelOutput(start_logits=torch.from_numpy(start), end_logits=torch.from_numpy(end))


def export(model: nn.Module, path: Path) -> None:
    """The encoder as one self-contained ONNX file with dynamic batch and length."""
    inputs, shapes = encoder.export_inputs(model.config)
    # the exporter and its graph passes narrate every step at INFO/WARNING
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(encoder.SpanFunction(model.eval()), (), str(path), kwargs=inputs,
                              input_names=list(encoder.SPAN_INPUTS), output_names=list(OUTPUT_NAMES),
                              dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def quantize_int8(path: Path, per_channel: bool) -> None:
    """Replace the float32 file at ``path`` by its dynamic-int8 form (int8 weights of every MatMul)."""
    _import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = path.with_suffix(".float.onnx")
    path.rename(float_path)
    quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     per_channel=per_channel)
    float_path.unlink()


def parity(reference: nn.Module, exported: nn.Module, tokenizer, settings: dict, examples) -> dict:
    """How closely the exported model follows PyTorch on ``examples``: the largest start/end logit
    difference over real (unpadded) positions and the share of answers that agree."""
    spec = WindowSpec(settings["max_length"], settings["stride"], settings["max_question_tokens"])
    features = tokenize_examples(examples, tokenizer, spec)
    ids, types = features["input_ids"].tolist(), features["token_type_ids"].tolist()
    largest = 0.0
    with torch.inference_mode():
        for first in range(0, len(ids), 16):
            batch = pad_batch(ids[first:first + 16], types[first:first + 16], tokenizer.pad_token_id)
            mask = batch["attention_mask"].bool()
            want, got = reference(**batch), exported(**batch)
            for name in OUTPUT_NAMES:
                difference = (getattr(want, name) - getattr(got, name)).abs()[mask]
                largest = max(largest, float(difference.max()))
    want = predict(reference, tokenizer, examples, settings, progress=False).predictions
    got = predict(exported, tokenizer, examples, settings, progress=False).predictions
    agree = sum(got[q] == want[q] for q in want) / len(want)
    return {"questions": len(examples), "max_abs_logit_diff": round(largest, 6), "answers_agree": round(agree, 4)}


def make(base_dir: str | Path, out_dir: str | Path, *, options: dict | None = None, seed: int = 0,
         data=None, state_dir: str | Path | None = None, variant: str | None = None) -> None:
    """Export the base in ``base_dir`` (quantized if asked), check it against PyTorch on training
    questions (``data.examples``) and write the variant to ``out_dir``."""
    options = resolve_options(options)
    _import_onnxruntime()
    base_settings = read_settings(base_dir)
    model_dir.require_base(base_settings, base_dir, METHOD)
    compression.check_applies(METHOD, base_settings["family"], base_dir)
    model, tokenizer, _ = load_model(base_dir)
    params = sum(p.numel() for p in model.parameters())
    pool = data.examples if data is not None else []
    if not pool:
        raise InputError(base_dir, "onnx needs training questions to check the export against PyTorch")
    checked = random.Random(seed).sample(pool, min(options["parity_questions"], len(pool)))
    settings = model_dir.variant_settings(base_settings, base_dir, METHOD, variant, options)
    record = {"params": params, "trainable_params": 0, "base_size_mb": disk_size_mb(base_dir)}

    def write(tmp: Path) -> None:
        t0 = time.perf_counter()
        export(model, tmp / MODEL_FILE)
        if options["quantize"]:
            quantize_int8(tmp / MODEL_FILE, options["per_channel"])
        record["export_wall_s"] = round(time.perf_counter() - t0, 2)
        record["parity"] = parity(model, OnnxSpanModel(tmp / MODEL_FILE, torch.get_num_threads()), tokenizer,
                                  base_settings, checked)
        if not options["quantize"] and record["parity"]["max_abs_logit_diff"] > FLOAT_LOGIT_TOLERANCE:
            raise InputError(base_dir, f"the ONNX export does not match PyTorch (largest logit difference "
                                       f"{record['parity']['max_abs_logit_diff']}, tolerance {FLOAT_LOGIT_TOLERANCE})")
        tokenizer.save_pretrained(tmp)
        record["size_mb"] = disk_size_mb(tmp)
        record["size_ratio"] = round(record["size_mb"] / record["base_size_mb"], 3)

    model_dir.write(out_dir, write, settings, record)
    logging.info("onnx%s export: %s", " int8" if options["quantize"] else "", record["parity"])


def load(model_dir: str | Path, settings: dict) -> tuple[nn.Module, object]:
    """An ONNX Runtime session on ``torch.get_num_threads()`` threads and the tokenizer."""
    model_dir = Path(model_dir)
    if not (model_dir / MODEL_FILE).is_file():
        raise InputError(model_dir, f"not an onnx model directory (no {MODEL_FILE})")
    return OnnxSpanModel(model_dir / MODEL_FILE, torch.get_num_threads()).eval(), encoder.FAMILY.load_tokenizer(str(model_dir))
