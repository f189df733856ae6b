"""Learning curves: a trained model scored at the weight snapshots its training kept and at its end.

Each point chooses its own abstain threshold on the held-out questions (as the choose_threshold rule
does for the finished model) and reports, against training time: the held-out F1 at that threshold,
the held-out HasAns F1 when every question is answered (how well spans are learned, whatever the
abstain decision), and for each eval set given the F1 at the held-out threshold and the dev-oracle
best F1. A curve still rising at its end is a model that wants more training; a flat one has stalled.
"""

from __future__ import annotations

import math
from pathlib import Path

from qabench import metrics, train
from qabench import threshold as abstain_threshold
from qabench.data import Example
from qabench.io import read_json
from qabench.model_dir import load_model
from qabench.predict import predict
from qabench.progress import bar as progress_bar

EVAL_KEYS = ("exact", "f1", "HasAns_f1", "NoAns_exact", "best_f1")


def points(model_dir: str | Path) -> list[dict]:
    """The snapshots of a base model directory and its final weights (path None), by step."""
    training = read_json(Path(model_dir) / "training.json")
    final = {"step": int(training["steps"]), "trained_s": float(training.get("wall_s", 0.0)), "path": None}
    return [*train.snapshots(model_dir), final]


def score(model, tokenizer, settings: dict, holdout: list[Example], eval_sets: dict[str, list[Example]],
          batch_size: int, precision: str) -> dict:
    """One point: the threshold chosen on ``holdout`` and the scores it gives there and on each eval set."""
    held = predict(model, tokenizer, holdout, settings, batch_size=batch_size, precision=precision, progress=False)
    chosen = abstain_threshold.choose(holdout, held.best_answers(), held.na_probs)
    answer_all = metrics.evaluate(holdout, held.best_answers(), held.na_probs, na_prob_thresh=math.inf)
    point = {"threshold": chosen["threshold"],
             "holdout": {"f1": chosen["holdout_scores"]["best_f1"], "HasAns_f1_answering_all": answer_all["HasAns_f1"]}}
    for name, examples in eval_sets.items():
        result = predict(model, tokenizer, examples, settings, batch_size=batch_size, precision=precision,
                         threshold=chosen["threshold"], progress=False)
        scores = metrics.evaluate(examples, result.best_answers(), result.na_probs, na_prob_thresh=chosen["threshold"])
        point[name] = {key: scores[key] for key in EVAL_KEYS}
    return point


def curve(model_dir: str | Path, holdout: list[Example], eval_sets: dict[str, list[Example]], batch_size: int = 64,
          precision: str = "fp32", device: str = "cpu") -> list[dict]:
    """Every point of ``model_dir``'s training, scored (see ``score``)."""
    model, tokenizer, settings = load_model(model_dir, device)
    final = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    scored = []
    for point in progress_bar(points(model_dir), desc="learning curve", unit="point"):
        if point["path"] is None:
            model.load_state_dict(final)
        else:
            train.load_snapshot(model, point["path"])
        scored.append({"step": point["step"], "trained_s": point["trained_s"],
                       **score(model, tokenizer, settings, holdout, eval_sets, batch_size, precision)})
    return scored
