"""Augmented fine-tuning: the model's in-context inferences as training data.

Lampinen et al. (2025) find that what a model infers from documents in
context (reversals, syllogistic conclusions, inherited properties) it often
fails to learn by fine-tuning on them; fine-tuning on the documents plus the
model's own in-context inferences closes much of the gap. Two steps:

    python -m icl_iwl.main --config=configs/augment.py:reversals \\
        --workdir=/tmp/augment/reversals         # -> jsonl/augment_reversals
    python -m icl_iwl.main --config=configs/finetune.py:reversals,augmented \\
        --workdir=/tmp/ft/reversals_augmented    # original + augmented

Modules:
  generate  the interface to a decoder (requests sharing a prefix), and
            `load`, the one adapter to the real one;
  passes    the PASSES registry: rephrase, reverse, infer (local), global,
            sentences (sentence splitting); how to add a pass;
  split     sentence splitting (pysbd): independent or cumulative;
  journal   completions appended per batch: runs resume where they stopped;
  runner    passes -> completions -> deduplicated user dataset + provenance;
  checkers  the datasets' knowledge bases, rebuilt from their configs, and
            parsers of generated sentences against them;
  audit     per pass and kind: true / false / undetermined / no statement;
  mixture   the training records of original + augmented datasets;
  coverage  after fine-tuning: accuracy on the probes whose facts the
            augmented data states in a new way, and on the rest.

See docs/augmentation.md.
"""
