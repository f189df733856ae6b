rule summarize:
    input:
        metrics=per_variant("results/metrics/{model}/{variant}/{eval_set}.json", eval_set=EVAL_SETS),
        decisions=per_variant("results/predictions/{model}/{variant}/{eval_set}/decision.json", eval_set=EVAL_SETS),
        models=per_variant("results/models/{model}/{variant}"),
        efficiency=per_variant("results/efficiency/{model}/{variant}.json"),
        eval_data=sorted({eval_set_file(e) for e in EVAL_SETS}),
    output:
        markdown=report("results/summary.md", category="Summary"),
        csv="results/summary.csv",
        plots=report(
            expand("results/plots/{eval_set}-f1-vs-{cost}.png", eval_set=EVAL_SETS, cost=["latency", "size"]),
            category="Pareto fronts",
        ),
    params:
        plots_dir=lambda wc, output: output.plots[0].rsplit("/", 1)[0],
        rows=summary_rows,
        eval_sets=json.dumps({e: eval_set_file(e) for e in EVAL_SETS}),
    log:
        "logs/summarize.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.summarize --rows '{params.rows}' --eval-sets '{params.eval_sets}' "
        "--markdown {output.markdown} --csv {output.csv} --plots-dir {params.plots_dir} > {log} 2>&1"
