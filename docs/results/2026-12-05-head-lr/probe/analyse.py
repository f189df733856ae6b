import json
import numpy as np
from qabench import metrics
from qabench.data import read_examples

preds = json.load(open("/tmp/probe/holdout_preds.json"))
holdout = read_examples("results/data/train/default/holdout.parquet")
dev = read_examples("results/data/examples/dev.parquet")
subsets = {
    "all": holdout,
    "real-neg": [e for e in holdout if e.answer_texts or e.origin == "original"],
    "synth-neg": [e for e in holdout if e.answer_texts or e.origin != "original"],
}
for name in preds:
    best, na = preds[name]["best"], preds[name]["na"]
    dbest = json.load(open(f"results/predictions/{name}/base/dev/best_spans.json"))
    dna = json.load(open(f"results/predictions/{name}/base/dev/na_probs.json"))
    print(name)
    for label, ex in subsets.items():
        s = metrics.evaluate(ex, best, na, na_prob_thresh=0.0)
        t = s["best_f1_thresh"]
        d = metrics.evaluate(dev, dbest, dna, na_prob_thresh=t)
        print(f"  {label:10s} n={len(ex)} best F1 {s['best_f1']:.2f} at {t:.3f} -> dev F1 {d['f1']:.2f}")
    for t in (-4.0, -3.6, -3.2, -2.8, -2.3, -1.8):
        d = metrics.evaluate(dev, dbest, dna, na_prob_thresh=t)
        h = metrics.evaluate(holdout, best, na, na_prob_thresh=t)
        r = metrics.evaluate(subsets["real-neg"], best, na, na_prob_thresh=t)
        print(f"  thr {t:5.1f}: dev {d['f1']:.2f}  held-out {h['f1']:.2f}  real-only {r['f1']:.2f}")
