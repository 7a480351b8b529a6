"""Checkpoint loaders (GGUF, Hugging Face safetensors) and orbax management."""
