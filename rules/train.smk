rule train:
    input:
        examples=train_examples,
        manifest="results/features/{model}/train/manifest.json",
        start=continued_model_dir,
    output:
        directory("results/models/{model}/base"),
    params:
        family=lambda wc: MODELS[wc.model]["family"],
        checkpoint=checkpoint_arg,
        options=options_arg,
        train_options=train_options,
        # resume checkpoints live outside the output, which Snakemake deletes before a rerun
        state_dir="results/.train_state/{model}/base",
        launch=train_launcher,
    threads: config["threads"]["train"]
    resources:
        mem_mb=8000,
        gpu=lambda wc: MODELS[wc.model]["train"]["gpus"],
    log:
        "logs/train/{model}/base.log",
    benchmark:
        "results/benchmarks/train/{model}/base.tsv"
    conda:
        model_env
    shell:
        "{params.launch} --manifest {input.manifest:q} --examples {input.examples:q} "
        "--family {params.family:q} --checkpoint {params.checkpoint:q} "
        "--options {params.options:q} --out {output:q} --state-dir {params.state_dir:q} {params.train_options} "
        "--threads {threads} > {log:q} 2>&1"
