"""qabench: SQuAD download -> examples -> tokenized shards -> models -> predictions -> EM/F1 tables."""

import json
import sys

from pathlib import Path

from qabench.config import continued_from, first_checkpoint, train_set, validate as validate_config
from qabench.download import check_local_sources
from qabench.errors import InputError
from qabench.snakemake_env import put_running_interpreter_first

put_running_interpreter_first()

# config.yaml is the default experiment; --configfile replaces it instead of being merged into it
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"



try:
    # relative data paths in a config are relative to this directory, wherever snakemake runs
    config = validate_config(
        config, ", ".join(map(str, workflow.configfiles)) or "config", base_dir=workflow.basedir
    )
    # local files that are missing or damaged are refused now, not after hours of other jobs
    check_local_sources(
        config["data"]["sources"],
        eval_sources=sorted({e["source"] for e in config["data"]["eval_sets"].values()
                             if not Path(f"results/data/raw/{e['source']}.json.gz").exists()}),
        train_sets={name: train_set(config, name)["sources"]
                    for name in sorted({m["train_set"] for m in config["models"].values()})
                    if not Path(f"results/data/train/{name}/source.json.gz").exists()},
    )
except InputError as err:
    sys.exit(f"error: {err}")

SEED = config["seed"]
DATA = config["data"]
MODELS = config["models"]
EVAL_SETS = list(DATA["eval_sets"])
SHARDS = config["tokenize"]["shards"]
COMPRESSION = config["compression"]
# every (model, variant) the summary reports: each model's base and its configured variants
MODEL_VARIANTS = [(m, v) for m, spec in MODELS.items() for v in ["base", *spec["variants"]]]
# models whose training keeps weight snapshots get a learning curve in the summary
CURVE_MODELS = [m for m, spec in MODELS.items() if spec["train"].get("snapshot_every_steps")]


wildcard_constraints:
    model="|".join(MODELS),
    eval_set="|".join(EVAL_SETS),
    source="|".join(DATA["sources"]),
    train_set="|".join(["default", *DATA["train_sets"]]),
    variant="|".join(["base", *COMPRESSION]),
    shard=r"\d+",


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/compress.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/summary.md",
