"""qabench: train, compress and evaluate extractive QA models on SQuAD 2.0."""

__version__ = "0.1.0"
