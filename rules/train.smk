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
    )


rule train:
    input:
        manifest="results/features/{model}/train/manifest.json",
        examples="results/data/examples/train.parquet",
        holdout="results/data/examples/holdout.parquet",
    output:
        directory("results/models/{model}/base"),
    params:
        checkpoint=lambda wc: json.dumps(MODELS[wc.model]["checkpoint"]) if isinstance(MODELS[wc.model]["checkpoint"], dict) else MODELS[wc.model]["checkpoint"],
        options=train_options,
        # resume checkpoints live outside the output, which Snakemake deletes before a rerun
        state_dir="results/.train_state/{model}/base",
    threads: config["threads"]["train"]
    resources:
        mem_mb=8000,
    log:
        "logs/train/{model}/base.log",
    benchmark:
        "results/benchmarks/train/{model}/base.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python {SCRIPTS}/train.py --manifest {input.manifest} --examples {input.examples} "
        "--holdout {input.holdout} --checkpoint '{params.checkpoint}' --out {output} "
        "--state-dir {params.state_dir} {params.options} --threads {threads} > {log} 2>&1"
