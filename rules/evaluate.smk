rule predict:
    input:
        model="results/models/{model}/{variant}",
        examples="results/data/examples/{eval_set}.parquet",
    output:
        predictions="results/predictions/{model}/{variant}/{eval_set}/predictions.json",
        na_probs="results/predictions/{model}/{variant}/{eval_set}/na_probs.json",
        decision="results/predictions/{model}/{variant}/{eval_set}/decision.json",
    params:
        out_dir=subpath(output.predictions, parent=True),
        batch_size=config["predict"]["batch_size"],
        precision=config["predict"]["precision"],
        device=config["predict"]["device"],
        decision=lambda wc: abstain_share_flag(wc.eval_set),
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
        decision="results/predictions/{model}/{variant}/{eval_set}/decision.json",
    output:
        "results/metrics/{model}/{variant}/{eval_set}.json",
    log:
        "logs/evaluate/{model}/{variant}/{eval_set}.log",
    conda:
        "../envs/data.yaml"
    shell:
        "python -m workflow_scripts.evaluate --data {input.data:q} --predictions {input.predictions:q} "
        "--na-probs {input.na_probs:q} --decision {input.decision:q} --out {output:q} > {log:q} 2>&1"


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
    conda:
        model_env
    shell:
        "python -m workflow_scripts.efficiency --model {input.model:q} --data {input.examples:q} "
        "--training {params.training:q} --questions {params.questions} "
        "--batch-size {params.batch_size} --device {params.device} --threads {params.torch_threads} --out {output:q} "
        "> {log:q} 2>&1"
