# local even under a cluster executor: login nodes reach the internet, compute nodes often do not
rule download:
    localrule: True
    output:
        "results/data/raw/{source}.json.gz",
    params:
        source=source_args,
    log:
        "logs/download/{source}.log",
    benchmark:
        "results/benchmarks/download/{source}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.download {params.source} --out {output:q} > {log:q} 2>&1"


# a training set's data: the first of its sources that can be had (offline, the official file is
# skipped for the next); download_train.log and source.json say which one
rule download_train:
    localrule: True
    output:
        data="results/data/train/{train_set}/source.json.gz",
        record="results/data/train/{train_set}/source.json",
    params:
        sources=train_sources_json,
        mirrors=mirror_args,
    log:
        "logs/download/train-{train_set}.log",
    benchmark:
        "results/benchmarks/download_train/{train_set}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.download --first-of {params.sources:q} {params.mirrors} "
        "--out {output.data:q} --provenance-out {output.record:q} > {log:q} 2>&1"


rule prepare_train:
    input:
        data="results/data/train/{train_set}/source.json.gz",
        record="results/data/train/{train_set}/source.json",
    output:
        train="results/data/train/{train_set}/train.parquet",
        held_out="results/data/train/{train_set}/held_out_questions.parquet",
        record="results/data/train/{train_set}/record.json",
    params:
        options=train_prepare_args,
    log:
        "logs/prepare/train-{train_set}.log",
    benchmark:
        "results/benchmarks/prepare_train/{train_set}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.prepare_examples --squad {input.data:q} --source-info {input.record:q} "
        "--out {output.train:q} --holdout-out {output.held_out:q} --record-out {output.record:q} "
        "{params.options} > {log:q} 2>&1"


# the held-out articles' questions with their own synthetic negatives: the set that chooses each
# model's abstain threshold (its own rule, so a new recipe re-chooses thresholds without retraining)
rule prepare_holdout:
    input:
        "results/data/train/{train_set}/held_out_questions.parquet",
    output:
        holdout="results/data/train/{train_set}/holdout.parquet",
        record="results/data/train/{train_set}/holdout.json",
    params:
        options=holdout_prepare_args,
    log:
        "logs/prepare/holdout-{train_set}.log",
    benchmark:
        "results/benchmarks/prepare_holdout/{train_set}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.prepare_examples --squad {input:q} --out {output.holdout:q} "
        "--record-out {output.record:q} {params.options} > {log:q} 2>&1"


rule prepare_eval:
    input:
        lambda wc: f"results/data/raw/{DATA['eval_sets'][wc.eval_set]['source']}.json.gz",
    output:
        "results/data/examples/{eval_set}.parquet",
    log:
        "logs/prepare/{eval_set}.log",
    benchmark:
        "results/benchmarks/prepare_eval/{eval_set}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.prepare_examples --squad {input:q} --out {output:q} > {log:q} 2>&1"


rule tokenize_shard:
    input:
        train_examples,
    output:
        "results/features/{model}/train/shard-{shard}.parquet",
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        checkpoint=tokenizer_checkpoint_arg,
        options=options_arg,
        window=lambda wc: (
            f"--max-length {config['tokenize']['max_length']} --stride {config['tokenize']['stride']} "
            f"--max-question-tokens {config['tokenize']['max_question_tokens']}"
        ),
        shards=SHARDS,
    log:
        "logs/tokenize/{model}/train-{shard}.log",
    benchmark:
        "results/benchmarks/tokenize/{model}/train-{shard}.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.tokenize_shard --examples {input:q} --family {params.family:q} "
        "--checkpoint {params.checkpoint:q} --options {params.options:q} {params.window} "
        "--shard {wildcards.shard} --shards {params.shards} --out {output:q} > {log:q} 2>&1"


rule feature_manifest:
    input:
        expand("results/features/{{model}}/train/shard-{shard}.parquet", shard=range(SHARDS)),
    output:
        "results/features/{model}/train/manifest.json",
    log:
        "logs/tokenize/{model}/manifest.log",
    benchmark:
        "results/benchmarks/feature_manifest/{model}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.feature_manifest --shards {input:q} --out {output:q} > {log:q} 2>&1"
