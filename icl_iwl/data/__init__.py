"""Data: tokenizer, datasets and the pipelines that feed the model."""
