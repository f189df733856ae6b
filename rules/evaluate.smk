# every model and variant chooses its own abstain threshold: best F1 on the held-out questions
rule choose_threshold:
    input:
        model="results/models/{model}/{variant}",
        holdout=holdout_examples,
    output:
        "results/thresholds/{model}/{variant}.json",
    params:
        batch_size=config["predict"]["batch_size"],
        precision=config["predict"]["precision"],
        device=config["predict"]["device"],
    threads: config["threads"]["predict"]
    log:
        "logs/threshold/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/threshold/{model}/{variant}.tsv"
    conda:
        model_env
    shell:
        "python -m workflow_scripts.choose_threshold --model {input.model:q} --holdout {input.holdout:q} "
        "--out {output:q} --batch-size {params.batch_size} --precision {params.precision} "
        "--device {params.device} --threads {threads} > {log:q} 2>&1"


rule predict:
    input:
        unpack(threshold_input),
        model="results/models/{model}/{variant}",
        examples="results/data/examples/{eval_set}.parquet",
    output:
        predictions="results/predictions/{model}/{variant}/{eval_set}/predictions.json",
        na_probs="results/predictions/{model}/{variant}/{eval_set}/na_probs.json",
        best_spans="results/predictions/{model}/{variant}/{eval_set}/best_spans.json",
        decision="results/predictions/{model}/{variant}/{eval_set}/decision.json",
    params:
        out_dir=subpath(output.predictions, parent=True),
        batch_size=config["predict"]["batch_size"],
        precision=config["predict"]["precision"],
        device=config["predict"]["device"],
        decision=decision_args,
    threads: config["threads"]["predict"]
    log:
        "logs/predict/{model}/{variant}/{eval_set}.log",
    benchmark:
        "results/benchmarks/predict/{model}/{variant}/{eval_set}.tsv"
    conda:
        model_env
    shell:
        "python -m workflow_scripts.predict --model {input.model:q} --data {input.examples:q} "
        "--out-dir {params.out_dir:q} --batch-size {params.batch_size} --precision {params.precision} "
        "--device {params.device} {params.decision} --threads {threads} > {log:q} 2>&1"


rule evaluate:
    input:
        data=lambda wc: eval_set_file(wc.eval_set),
        predictions="results/predictions/{model}/{variant}/{eval_set}/predictions.json",
        na_probs="results/predictions/{model}/{variant}/{eval_set}/na_probs.json",
        best_spans="results/predictions/{model}/{variant}/{eval_set}/best_spans.json",
        decision="results/predictions/{model}/{variant}/{eval_set}/decision.json",
    output:
        "results/metrics/{model}/{variant}/{eval_set}.json",
    log:
        "logs/evaluate/{model}/{variant}/{eval_set}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{variant}/{eval_set}.tsv"
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.evaluate --data {input.data:q} --predictions {input.predictions:q} "
        "--na-probs {input.na_probs:q} --best-spans {input.best_spans:q} --decision {input.decision:q} "
        "--out {output:q} > {log:q} 2>&1"


rule efficiency:
    input:
        model="results/models/{model}/{variant}",
        examples=f"results/data/examples/{config['efficiency']['eval_set']}.parquet",
    output:
        "results/efficiency/{model}/{variant}.json",
    params:
        questions=config["efficiency"]["questions"],
        batch_size=config["efficiency"]["batch_size"],
        torch_threads=config["threads"]["predict"],
        device=config["predict"]["device"],
        training=lambda wc, input: f"{input.model}/training.json",
    # all cores are claimed so that no other job runs beside the timing
    threads: lambda wildcards: workflow.cores
    log:
        "logs/efficiency/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/efficiency/{model}/{variant}.tsv"
    conda:
        model_env
    shell:
        "python -m workflow_scripts.efficiency --model {input.model:q} --data {input.examples:q} "
        "--training {params.training:q} --questions {params.questions} "
        "--batch-size {params.batch_size} --device {params.device} --threads {params.torch_threads} --out {output:q} "
        "> {log:q} 2>&1"


# a model scored at the weight snapshots its training kept (models with train.snapshot_every_steps)
rule learning_curve:
    input:
        model="results/models/{model}/base",
        holdout=holdout_examples,
        eval_sets=lambda wc: [f"results/data/examples/{e}.parquet" for e in config["learning_curves"]["eval_sets"]],
    output:
        "results/curves/{model}.json",
    params:
        eval_sets=lambda wc, input: shlex.join(
            arg for name, path in zip(config["learning_curves"]["eval_sets"], input.eval_sets)
            for arg in ("--eval", f"{name}={path}")
        ),
        batch_size=config["predict"]["batch_size"],
        precision=config["predict"]["precision"],
        device=config["predict"]["device"],
    threads: config["threads"]["predict"]
    log:
        "logs/curves/{model}.log",
    benchmark:
        "results/benchmarks/curves/{model}.tsv"
    conda:
        model_env
    shell:
        "python -m workflow_scripts.learning_curve --model {input.model:q} --holdout {input.holdout:q} "
        "{params.eval_sets} --out {output:q} --batch-size {params.batch_size} --precision {params.precision} "
        "--device {params.device} --threads {threads} > {log:q} 2>&1"
