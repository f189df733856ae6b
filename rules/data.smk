# local even under a cluster executor: login nodes reach the internet, compute nodes often do not
rule download:
    localrule: True
    output:
        "results/data/raw/{source}.json.gz",
    params:
        source=source_args,
    log:
        "logs/download/{source}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.download {params.source} --out {output} > {log} 2>&1"


rule prepare_train:
    input:
        lambda wc: f"results/data/raw/{train_set(config, wc.train_set)['source']}.json.gz",
    output:
        train="results/data/train/{train_set}/train.parquet",
        holdout="results/data/train/{train_set}/holdout.parquet",
    params:
        options=train_prepare_args,
        holdout_articles=lambda wc: train_set(config, wc.train_set)["holdout_articles"],
    log:
        "logs/prepare/train-{train_set}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.prepare_examples --squad {input} --out {output.train} "
        "--holdout-out {output.holdout} --holdout-articles {params.holdout_articles} {params.options} > {log} 2>&1"


rule prepare_eval:
    input:
        lambda wc: f"results/data/raw/{DATA['eval_sets'][wc.eval_set]['source']}.json.gz",
    output:
        "results/data/examples/{eval_set}.parquet",
    log:
        "logs/prepare/{eval_set}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.prepare_examples --squad {input} --out {output} > {log} 2>&1"


rule tokenize_shard:
    input:
        lambda wc: train_examples(wc)["train"],
    output:
        "results/features/{model}/train/shard-{shard}.parquet",
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        checkpoint=checkpoint_arg,
        options=options_arg,
        window=lambda wc: (
            f"--max-length {config['tokenize']['max_length']} --stride {config['tokenize']['stride']} "
            f"--max-question-tokens {config['tokenize']['max_question_tokens']}"
        ),
        shards=SHARDS,
    log:
        "logs/tokenize/{model}/train-{shard}.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.tokenize_shard --examples {input} --family {params.family} "
        "--checkpoint '{params.checkpoint}' --options '{params.options}' {params.window} "
        "--shard {wildcards.shard} --shards {params.shards} --out {output} > {log} 2>&1"


rule feature_manifest:
    input:
        expand("results/features/{{model}}/train/shard-{shard}.parquet", shard=range(SHARDS)),
    output:
        "results/features/{model}/train/manifest.json",
    log:
        "logs/tokenize/{model}/manifest.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.feature_manifest --shards {input} --out {output} > {log} 2>&1"
