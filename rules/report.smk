rule summarize:
    input:
        metrics=per_variant("results/metrics/{model}/{variant}/{eval_set}.json", eval_set=EVAL_SETS),
        decisions=per_variant("results/predictions/{model}/{variant}/{eval_set}/decision.json", eval_set=EVAL_SETS),
        models=per_variant("results/models/{model}/{variant}"),
        efficiency=per_variant("results/efficiency/{model}/{variant}.json"),
        eval_data=sorted({eval_set_file(e) for e in EVAL_SETS}),
        train_records=sorted({train_record(m) for m in MODELS}),
        curves=expand("results/curves/{model}.json", model=CURVE_MODELS),
    output:
        markdown=report("results/summary.md", category="Summary"),
        csv="results/summary.csv",
        plots=report(
            expand("results/plots/{eval_set}-f1-vs-{cost}.png", eval_set=EVAL_SETS, cost=["latency", "size"]),
            category="Pareto fronts",
        ),
        curve_plots=report(expand("results/plots/curve-{model}.png", model=CURVE_MODELS), category="Learning curves"),
    params:
        plots_dir=lambda wc, output: output.plots[0].rsplit("/", 1)[0],
        rows=summary_rows,
        eval_sets=json.dumps({e: eval_set_file(e) for e in EVAL_SETS}, sort_keys=True),
        curves=lambda wc, input: json.dumps(dict(zip(CURVE_MODELS, input.curves)), sort_keys=True),
    log:
        "logs/summarize.log",
    benchmark:
        "results/benchmarks/summarize.tsv"
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.summarize --rows {params.rows:q} --eval-sets {params.eval_sets:q} "
        "--markdown {output.markdown:q} --csv {output.csv:q} --plots-dir {params.plots_dir:q} "
        "--curves {params.curves:q} > {log:q} 2>&1"


# One target per model (`snakemake --cores 8 model_minilm`): its base and variants trained, scored
# on every eval set and measured, without touching the other models or the summary.
for _model in MODELS:

    rule:
        name:
            f"model_{_model}"
        localrule: True
        input:
            [
                path
                for m, v in MODEL_VARIANTS
                if m == _model
                for path in [
                    *expand(f"results/metrics/{m}/{v}/{{eval_set}}.json", eval_set=EVAL_SETS),
                    f"results/efficiency/{m}/{v}.json",
                ]
            ],
