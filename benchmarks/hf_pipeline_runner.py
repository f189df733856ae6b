"""Answer questions with transformers' question-answering pipeline, one question per call.

Run by benchmarks/predict_speed.py inside its own virtualenv (.venv-hf457, transformers 4.57.6,
the last line that still ships the pipeline); it imports nothing from qabench.

    .venv-hf457/bin/python benchmarks/hf_pipeline_runner.py --model DIR --questions Q.json \
        --out OUT.json --threads 2 --max-seq-len 384 --doc-stride 128 --max-question-len 64

Q.json is a list of {"id", "question", "context"}. OUT.json gets {"predictions": {id: text}
("" when the pipeline answers no-answer), "seconds": timed loop only, "questions": count, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import transformers
from transformers import pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--questions", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-seq-len", type=int, required=True)
    parser.add_argument("--doc-stride", type=int, required=True)
    parser.add_argument("--max-question-len", type=int, required=True)
    parser.add_argument("--max-answer-len", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3, help="untimed questions answered first")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.questions, encoding="utf-8") as f:
        questions = json.load(f)
    qa = pipeline("question-answering", model=args.model, tokenizer=args.model, device=-1)
    options = dict(handle_impossible_answer=True, max_answer_len=args.max_answer_len,
                   max_seq_len=args.max_seq_len, doc_stride=args.doc_stride,
                   max_question_len=args.max_question_len)

    for q in questions[: args.warmup]:
        qa(question=q["question"], context=q["context"], **options)
    predictions = {}
    t0 = time.perf_counter()
    for q in questions:
        answer = qa(question=q["question"], context=q["context"], **options)
        predictions[q["id"]] = answer["answer"]
    seconds = time.perf_counter() - t0

    out = {"predictions": predictions, "seconds": seconds, "questions": len(questions),
           "threads": torch.get_num_threads(), "transformers": transformers.__version__,
           "torch": torch.__version__}
    tmp = f"{args.out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
