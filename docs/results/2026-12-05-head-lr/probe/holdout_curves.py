"""Hand probe: held-out and dev F1 against the abstain threshold, for two MiniLM models."""
import json, sys
import numpy as np
from qabench import cli, metrics
from qabench.data import read_examples
from qabench.model_dir import load_model
from qabench.predict import predict

cli.setup(2)
holdout = read_examples("results/data/train/default/holdout.parquet")
out = {}
for name in sys.argv[1:]:
    model, tok, settings = load_model(f"results/models/{name}/base")
    r = predict(model, tok, holdout, settings, batch_size=64, precision="fp32", progress=False)
    out[name] = {"best": r.best_answers(), "na": r.na_probs}
json.dump(out, open("/tmp/probe/holdout_preds.json", "w"))
