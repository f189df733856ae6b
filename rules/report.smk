rule summarize:
    input:
        metrics=expand("results/metrics/{model}/base/{eval_set}.json", model=MODELS, eval_set=EVAL_SETS),
        decisions=expand(
            "results/predictions/{model}/base/{eval_set}/decision.json", model=MODELS, eval_set=EVAL_SETS
        ),
        models=expand("results/models/{model}/base", model=MODELS),
        eval_data=expand(
            "results/data/raw/{source}.json.gz",
            source=sorted({DATA["eval_sets"][e]["source"] for e in EVAL_SETS}),
        ),
    output:
        markdown="results/summary.md",
        csv="results/summary.csv",
    params:
        rows=lambda wc: json.dumps(
            [
                {"model": m, "variant": "base", "family": MODELS[m]["family"], "eval_set": e,
                 "metrics": f"results/metrics/{m}/base/{e}.json",
                 "decision": f"results/predictions/{m}/base/{e}/decision.json",
                 "model_dir": f"results/models/{m}/base",
                 "benchmark": f"results/benchmarks/predict/{m}/base/{e}.tsv"}
                for m in MODELS for e in EVAL_SETS
            ]
        ),
        eval_sets=lambda wc: json.dumps(
            {e: f"results/data/raw/{DATA['eval_sets'][e]['source']}.json.gz" for e in EVAL_SETS}
        ),
    log:
        "logs/summarize.log",
    conda:
        "../envs/report.yaml"
    shell:
        "python {SCRIPTS}/summarize.py --rows '{params.rows}' --eval-sets '{params.eval_sets}' "
        "--markdown {output.markdown} --csv {output.csv} > {log} 2>&1"
