"""Which held-out negatives choose an abstain threshold that holds on SQuAD 2.0 dev?

    python benchmarks/threshold_sources.py --model results/models/minilm/base \
        --train results/data/train/default/source.json.gz --dev results/data/raw/squad_v2_dev.json.gz \
        --config config.yaml [--train-set default] [--dev-questions N] [--precision fp32] [--threads 2] [--out FILE]

A trained model's abstain threshold is the F1-best one on its held-out training articles, so it
depends on which synthetic negatives those articles get. This rebuilds the model's held-out articles
exactly as its training set's prepare step did, gives them each recipe below in turn, chooses each
recipe's threshold there, and applies it to dev, printing dev F1 side by side with dev's own best F1
(which reads dev's labels: a reference, not a rule):
- ``real only``: the held-out articles' own real unanswerable questions, nothing synthetic;
- ``config``: the training set's held-out recipe (real ones topped up with synthetic ones to its
  share; this row's threshold is the one the train rule chose);
- ``real + trained kinds 1:1``: real ones topped up to half of all questions with the kinds the
  model trained on;
- ``real + unseen kinds 1:1``: the same with question-side kinds the model never trained on.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch
from snakemake.utils import update_config

from qabench import config as qconfig
from qabench import metrics
from qabench.data import load_squad
from qabench.errors import run_cli
from qabench.io import read_json, write_json
from qabench.model_dir import load_model
from qabench.predict import predict
from qabench.prepare import prepare
from qabench.prepare import top_up as top_up_examples

UNSEEN_KINDS = ("paragraph_entity_swap", "antonym", "negation")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model directory")
    parser.add_argument("--train", required=True, help="the SQuAD file its training set was prepared from")
    parser.add_argument("--dev", required=True)
    parser.add_argument("--dev-predictions", help="a predict rule's output folder for this model on all of dev "
                                                  "(predictions.json, na_probs.json): reused instead of predicting dev")
    parser.add_argument("--config", nargs="+", required=True, help="the config files it was trained with")
    parser.add_argument("--train-set", default="default")
    parser.add_argument("--dev-questions", type=int, help="a seeded sample of dev (default: all of it)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/threshold_sources.json")
    args = parser.parse_args(argv)
    if args.dev_predictions and args.dev_questions:
        parser.error("--dev-predictions covers all of dev; drop --dev-questions")
    torch.set_num_threads(args.threads)
    cfg = {}
    for path in args.config:  # merged the way Snakemake merges several --configfile
        update_config(cfg, qconfig.read(path))
    cfg = qconfig.validate(cfg, " ".join(args.config))
    seed, train_set = cfg["seed"], qconfig.train_set(cfg, args.train_set)
    _, originals, _ = prepare(load_squad(args.train), max_questions=train_set.get("max_questions"),
                              holdout_articles=train_set["holdout_articles"],
                              holdout_questions=train_set.get("holdout_questions"), seed=seed)
    # as the prepare_holdout rule reads the recipe: holdout_negatives' keys over those of negatives
    recipe = {**(train_set.get("negatives") or {}), **(train_set.get("holdout_negatives") or {})}
    trained = (train_set.get("negatives") or {}).get("kinds", {})

    def top_up(share: float, kinds: dict) -> list:  # as the prepare_holdout rule tops up the held-out set
        return top_up_examples(originals, {"share": share, "kinds": kinds}, seed)[0]

    recipes = {"real only": originals,
               "config": top_up(recipe.get("share") or 0.0, recipe.get("kinds", {})),
               "real + trained kinds 1:1": top_up(0.5, trained),
               "real + unseen kinds 1:1": top_up(0.5, {kind: 1.0 for kind in UNSEEN_KINDS})}
    # every recipe's negatives under ids of their own (one kind can make a different negative of the
    # same question in two recipes), scored with the held-out questions in one pass
    negatives = {name: [replace(e, id=f"{e.id}@{i}") for e in holdout if e.is_impossible]
                 for i, (name, holdout) in enumerate(recipes.items())}
    model, tokenizer, settings = load_model(args.model)
    held = predict(model, tokenizer, originals + [e for negs in negatives.values() for e in negs], settings,
                   batch_size=args.batch_size, precision=args.precision)
    held_answers = {qid: answer.text for qid, answer in held.answers.items()}
    dev = load_squad(args.dev)
    if args.dev_questions:
        dev = sorted(random.Random(seed).sample(dev, min(args.dev_questions, len(dev))), key=lambda e: e.id)
    if args.dev_predictions:
        folder = Path(args.dev_predictions)
        dev_na_probs = read_json(folder / "na_probs.json")
        if (folder / "best_spans.json").is_file():
            dev_answers, scorable_below = read_json(folder / "best_spans.json"), float("inf")
        else:  # older predictions: "" above the predict rule's own threshold, so a higher one cannot be scored
            dev_answers = read_json(folder / "predictions.json")
            scorable_below = read_json(folder / "decision.json")["threshold"]
    else:
        dev_result = predict(model, tokenizer, dev, settings, batch_size=args.batch_size, precision=args.precision)
        dev_answers = {qid: answer.text for qid, answer in dev_result.answers.items()}
        dev_na_probs = dev_result.na_probs
        scorable_below = float("inf")
    dev_oracle = metrics.evaluate(dev, dev_answers, dev_na_probs)
    results = {}
    for name, negs in negatives.items():
        holdout = originals + negs
        held_scores = metrics.evaluate(holdout, {e.id: held_answers[e.id] for e in holdout},
                                       {e.id: held.na_probs[e.id] for e in holdout})
        threshold = held_scores["best_f1_thresh"]
        results[name] = {"negatives": dict(Counter(e.origin for e in negs)),
                         "threshold": threshold, "holdout_best_f1": held_scores["best_f1"]}
        if threshold > scorable_below:
            results[name]["not_scored"] = (f"threshold above the predictions' own {scorable_below:.3f}: "
                                           "run without --dev-predictions to score it")
            continue
        scores = metrics.evaluate(dev, dev_answers, dev_na_probs, na_prob_thresh=threshold)
        results[name].update({k: scores[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_exact")})
        print(f"{name:18s} {results[name]}", flush=True)
    write_json(args.out, {"args": vars(args), "dev_questions": len(dev), "dev_best_f1": dev_oracle["best_f1"],
                          "dev_best_f1_thresh": dev_oracle["best_f1_thresh"], "results": results})
    print(f"\n{'held-out recipe':18s} {'negatives':>9s} {'thresh':>7s} {'dev EM':>7s} {'dev F1':>7s} "
          f"{'HasAns F1':>9s} {'NoAns EM':>8s}")
    for name, r in results.items():
        scores = (f"{r['exact']:7.2f} {r['f1']:7.2f} {r['HasAns_f1']:9.2f} {r['NoAns_exact']:8.2f}"
                  if "f1" in r else f"  ({r['not_scored']})")
        print(f"{name:18s} {sum(r['negatives'].values()):9d} {r['threshold']:7.2f} {scores}")
    print(f"{'dev oracle':18s} {'':9s} {dev_oracle['best_f1_thresh']:7.2f} {'':7s} {dev_oracle['best_f1']:7.2f}"
          "   (reads dev's labels: reference only)")
    return 0


if __name__ == "__main__":
    run_cli(main)
