"""One standalone CLI per Snakemake rule: `python -m workflow_scripts.NAME --help`."""
