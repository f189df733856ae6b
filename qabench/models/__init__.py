"""Model families. Each module builds a span-extraction model with a no-answer score."""
