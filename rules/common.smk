"""Helpers the rules share: command-line arguments built from the validated config."""
import shlex

# Parameters are written in a canonical order (sorted keys) so that reformatting a config, or
# saving it with another YAML tool, never looks like a change that reruns a job.


def source_args(wildcards):
    spec = DATA["sources"][wildcards.source]
    args = ["--path", spec["path"]] if "path" in spec else ["--url", spec["url"]]
    args += ["--sha256", spec["sha256"]] if spec.get("sha256") else []
    return shlex.join(args) + (f" {mirror_args(wildcards)}" if "url" in spec else "")


def mirror_args(wildcards):
    return shlex.join(arg for folder in DATA.get("local_mirrors", []) for arg in ("--mirror", folder))


def train_sources_json(wildcards):
    """The training set's sources, in the order they are tried, as the download script's --first-of."""
    names = train_set(config, wildcards.train_set)["sources"]
    return json.dumps([{"name": n, **DATA["sources"][n]} for n in names], sort_keys=True)


def train_examples(wildcards):
    """The examples a model trains on (and its variants): those of its training set."""
    return f"results/data/train/{MODELS[wildcards.model]['train_set']}/train.parquet"


def holdout_examples(wildcards):
    """The held-out questions that choose a model's abstain threshold."""
    return f"results/data/train/{MODELS[wildcards.model]['train_set']}/holdout.parquet"


def train_record(model):
    return f"results/data/train/{MODELS[model]['train_set']}/record.json"


def negatives_args(recipe):
    args = ["--unanswerable-share", recipe.get("share") or 0]
    return args + [arg for kind, weight in sorted(recipe.get("kinds", {}).items())
                   for arg in ("--negative", f"{kind}={weight}")]


def train_prepare_args(wildcards):
    train = train_set(config, wildcards.train_set)
    args = ["--seed", SEED, "--holdout-articles", train["holdout_articles"]]
    if train.get("max_questions"):
        args += ["--max-questions", train["max_questions"]]
    if train.get("holdout_questions"):
        args += ["--holdout-questions", train["holdout_questions"]]
    return shlex.join(map(str, args + negatives_args(train.get("negatives") or {})))


def holdout_prepare_args(wildcards):
    train = train_set(config, wildcards.train_set)
    # holdout_negatives' keys replace those of negatives (kinds without a share keep the training share)
    recipe = {**(train.get("negatives") or {}), **(train.get("holdout_negatives") or {})}
    return shlex.join(map(str, ["--seed", SEED, *negatives_args(recipe)]))


def train_options(wildcards):
    settings = MODELS[wildcards.model].get("train", {})
    window = config["tokenize"]
    return (
        f"--epochs {settings['epochs']} --learning-rate {settings['learning_rate']} "
        f"--batch-size {settings['batch_size']} --warmup-ratio {settings['warmup_ratio']} "
        f"--weight-decay {settings['weight_decay']} --precision {settings['precision']} "
        f"--save-every-steps {settings['save_every_steps']} --seed {SEED} "
        f"--max-length {window['max_length']} --stride {window['stride']} "
        f"--max-question-tokens {window['max_question_tokens']}"
        + ("" if settings["synthetic_negatives"] else " --no-synthetic-negatives")
        + (f" --snapshot-every-steps {settings['snapshot_every_steps']}" if settings.get("snapshot_every_steps") else "")
        + (f" --new-weights-learning-rate {settings['new_weights_learning_rate']}"
           if settings.get("new_weights_learning_rate") is not None else "")
    )


def train_launcher(wildcards, resources):
    """The command that trains: one process (on the CPU, or on the job's one GPU), or torchrun with
    one process per GPU, sharing every batch. It reads the job's `gpu` resource (the model's
    `train.gpus`, or what a profile sets with set-resources)."""
    gpus = int(resources.gpu)
    if gpus > 1:
        return (f"python -m torch.distributed.run --standalone --nproc-per-node {gpus} "
                "-m workflow_scripts.train --device cuda")
    return "python -m workflow_scripts.train" + (" --device cuda" if gpus == 1 else "")


def continued_model_dir(wildcards):
    """The model directory this model trains further from, when its checkpoint is another model's
    output (so that model is made first, and a change to it reruns this one); else nothing."""
    return continued_from(config, wildcards.model) or []


def checkpoint_arg(wildcards):
    return _checkpoint_json(MODELS[wildcards.model]["checkpoint"])


def tokenizer_checkpoint_arg(wildcards):
    """Where the model's tokenizer comes from; a model that trains further from another has the tokenizer
    its line began with, so its examples can be tokenized before the other model is trained."""
    return _checkpoint_json(first_checkpoint(config, wildcards.model))


def _checkpoint_json(spec):
    return json.dumps(spec, sort_keys=True) if isinstance(spec, dict) else spec


def options_arg(wildcards):
    return json.dumps(MODELS[wildcards.model].get("options", {}), sort_keys=True)


def eval_set_file(eval_set):
    return f"results/data/raw/{DATA['eval_sets'][eval_set]['source']}.json.gz"


def threshold_input(wildcards):
    """The chosen threshold a prediction abstains by, unless its eval set abstains on a known share."""
    if DATA["eval_sets"][wildcards.eval_set].get("abstain_share") is not None:
        return {}
    return {"threshold": f"results/thresholds/{wildcards.model}/{wildcards.variant}.json"}


def decision_args(wildcards, input):
    share = DATA["eval_sets"][wildcards.eval_set].get("abstain_share")
    return f"--abstain-share {share}" if share is not None else shlex.join(["--threshold-file", input.threshold])


def summary_rows(wildcards):
    rows = [
        {
            "model": m,
            "variant": v,
            "method": COMPRESSION[v]["method"] if v != "base" else "base",
            "family": MODELS[m]["family"],
            "eval_set": e,
            "metrics": f"results/metrics/{m}/{v}/{e}.json",
            "decision": f"results/predictions/{m}/{v}/{e}/decision.json",
            "model_dir": f"results/models/{m}/{v}",
            "efficiency": f"results/efficiency/{m}/{v}.json",
            "train_benchmark": f"results/benchmarks/train/{m}/{v}.tsv",
            "train_record": train_record(m),
        }
        for m, v in MODEL_VARIANTS
        for e in EVAL_SETS
    ]
    return json.dumps(rows)


def per_variant(pattern, **extra):
    """``pattern`` filled for every (model, variant) of the summary (and any extra wildcards)."""
    return [pattern.format(model=m, variant=v, **fields) for m, v in MODEL_VARIANTS for fields in _product(extra)]


def _product(extra):
    combos = [{}]
    for key, values in extra.items():
        combos = [{**c, key: value} for c in combos for value in values]
    return combos


def model_env(wildcards):
    """Conda env of a job on one model: Mamba's kernels, peft/bitsandbytes for a variant, else plain torch."""
    if MODELS[wildcards.model]["family"] == "mamba":
        return "../envs/mamba.yaml"
    if getattr(wildcards, "variant", "base") != "base":
        return "../envs/quant.yaml"
    return "../envs/torch.yaml"
