rule compress:
    input:
        examples=train_examples,
        base="results/models/{model}/base",
        manifest="results/features/{model}/train/manifest.json",
    output:
        directory("results/models/{model}/{variant}"),
    wildcard_constraints:
        variant="|".join(COMPRESSION) or "no-variant-configured",
    params:
        method=lambda wc: COMPRESSION[wc.variant]["method"],
        options=lambda wc: json.dumps(COMPRESSION[wc.variant], sort_keys=True),
        # resume checkpoints live outside the output, which Snakemake deletes before a rerun
        state_dir="results/.train_state/{model}/{variant}",
        seed=SEED,
    threads: config["threads"]["train"]
    resources:
        mem_mb=8000,
        # a variant built on the GPU (its `device: cuda`) asks for one, as the train rule does
        gpu=lambda wc: int(COMPRESSION[wc.variant].get("device", "cpu").startswith("cuda")),
    log:
        "logs/compress/{model}/{variant}.log",
    benchmark:
        "results/benchmarks/train/{model}/{variant}.tsv"
    conda:
        model_env
    shell:
        "python -m workflow_scripts.compress --method {params.method:q} --variant {wildcards.variant:q} "
        "--base {input.base:q} --out {output:q} "
        "--options {params.options:q} --manifest {input.manifest:q} --examples {input.examples:q} "
        "--state-dir {params.state_dir:q} --seed {params.seed} --threads {threads} "
        "> {log:q} 2>&1"
