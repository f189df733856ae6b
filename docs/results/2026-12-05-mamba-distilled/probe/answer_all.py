"""Hand probe: HasAns F1 on dev when a model answers every question (its best span, from the rule's best_spans.json)."""
import json, sys
from qabench import metrics
from qabench.data import read_examples

dev = read_examples("results/data/examples/dev.parquet")
answerable = [e for e in dev if e.answer_texts]
for path in sys.argv[1:]:
    best = json.load(open(f"{path}/best_spans.json"))
    s = metrics.evaluate(answerable, best, {e.id: 0.0 for e in answerable}, na_prob_thresh=1.0)
    print(f"{path}: HasAns F1 answering all {s['f1']:.2f}, EM {s['exact']:.2f} ({len(answerable)} questions)")
