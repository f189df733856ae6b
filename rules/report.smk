rule summarize:
    input:
        metrics=expand("results/metrics/{model}/base/{eval_set}.json", model=MODELS, eval_set=EVAL_SETS),
        decisions=expand(
            "results/predictions/{model}/base/{eval_set}/decision.json", model=MODELS, eval_set=EVAL_SETS
        ),
        models=expand("results/models/{model}/base", model=MODELS),
        efficiency=expand("results/efficiency/{model}/base.json", model=MODELS),
        eval_data=sorted({eval_set_file(e) for e in EVAL_SETS}),
    output:
        markdown="results/summary.md",
        csv="results/summary.csv",
    params:
        rows=summary_rows,
        eval_sets=json.dumps({e: eval_set_file(e) for e in EVAL_SETS}),
    log:
        "logs/summarize.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python -m workflow_scripts.summarize --rows '{params.rows}' --eval-sets '{params.eval_sets}' "
        "--markdown {output.markdown} --csv {output.csv} > {log} 2>&1"
