import json, dataclasses
from qabench import metrics
from qabench.data import read_examples

preds = json.load(open("/tmp/probe/holdout_preds.json"))
holdout = read_examples("results/data/train/default/holdout.parquet")
dev = read_examples("results/data/examples/dev.parquet")
ans = [e for e in holdout if e.answer_texts]
real = [e for e in holdout if not e.answer_texts and e.origin == "original"]
synth = [e for e in holdout if not e.answer_texts and e.origin != "original"]
print(len(ans), len(real), len(synth))
for name in preds:
    best, na = dict(preds[name]["best"]), dict(preds[name]["na"])
    dbest = json.load(open(f"results/predictions/{name}/base/dev/best_spans.json"))
    dna = json.load(open(f"results/predictions/{name}/base/dev/na_probs.json"))
    for k in (7,):
        copies = []
        for e in real:
            for i in range(k):
                c = dataclasses.replace(e, id=f"{e.id}#{i}")
                copies.append(c); best[c.id] = best[e.id]; na[c.id] = na[e.id]
        for label, ex in (("real x%d" % k, ans + copies), ("real x%d + synth" % k, ans + copies + synth)):
            s = metrics.evaluate(ex, best, na, na_prob_thresh=0.0)
            t = s["best_f1_thresh"]
            d = metrics.evaluate(dev, dbest, dna, na_prob_thresh=t)
            print(f"{name:15s} {label:16s} best F1 {s['best_f1']:.2f} at {t:.3f} -> dev F1 {d['f1']:.2f}")
