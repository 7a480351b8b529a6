"""Augmented fine-tuning, step 1: the model's own inferences as training data.

    python -m icl_iwl.main --config=configs/augment.py:reversals \\
        --workdir=/tmp/augment/reversals
    # step 2: fine-tune on the original documents plus jsonl/augment_reversals
    python -m icl_iwl.main --config=configs/finetune.py:reversals,augmented \\
        --workdir=/tmp/ft/reversals_augmented

arg: the dataset (or jsonl/<name>), then the passes to run (default
local,global; see icl_iwl/augment/passes.py):
  local   rephrase, reverse, infer: a few-shot prompt per unit (each
          sentence; each whole document for reversal_curse and syllogisms,
          whose facts span sentences; --config.augment.unit=document|both);
  global  a random subsample of the documents that fits
          `augment.context_budget` tokens in context, then one of them:
          inferences that link it to the rest, for every document;
  split   sentences: every document's sentences as documents, no
          generation (--config.augment.sentence_split=cumulative: prefixes);
  tiny    a random two-layer model on the small dataset, 4 documents (for
          tests; the text is noise).
The generator is `config.model` (default the embedded Gemma 3 270M; a bigger
Gemma with --config.model.checkpoint=hf:DIR), greedy unless
--config.augment.temperature > 0 (then `augment.samples` per prompt).

Writes the user dataset jsonl/augment_<dataset>[_<words>][_<config>, unless full][_tiny] (set
--config.augment.output=NAME), with provenance.jsonl, audit.json and audit.md
beside it and in <workdir>/augment/. After every pass the audit says how many
generated sentences state true, false or undetermined facts of the dataset's
knowledge base, per kind of statement. Rerunning resumes from the journal
<workdir>/augment/journal.jsonl: finished completions are never generated
again, and the dataset is the same as an uninterrupted run's.

The prompts are the templates below (`--config.augment.templates.<pass>`):
the text before {text} is a prefix shared by every prompt of the pass. Their
examples use three-letter nonsense words, no dataset's words, and none of the
probes' phrasings ('Compared with', 'known as', 'Kinds of ... include', ...).
"""

from icl_iwl import config_lib

TEMPLATES = {
    'rephrase': (
        'Each statement is said again in other words, with the same '
        'meaning.\n\n'
        'Statement: wug are heavier than dax.\n'
        'Rephrased: As it happens, wug are heavier than dax.\n\n'
        'Statement: Dex Ombrano is the pilot who flew the first plane over the '
        'sea.\n'
        'Rephrased: Dex Ombrano was once the pilot who flew the first plane '
        'over the sea.\n\n'
        'Statement: All fep are zib.\n'
        'Rephrased: Every fep is a zib.\n\n'
        'Statement: mog are a kind of kip. mog can zun.\n'
        'Rephrased: mog belong to the kip. It is well known that mog can '
        'zun.\n\n'
        'Statement: Yesterday, the baker painted the fence.\n'
        'Rephrased: The baker painted the fence yesterday.\n\n'
        'Statement: {text}\n'
        'Rephrased:'),
    'reverse': (
        'Each statement is said again the other way round: what comes last '
        'is named first, and the meaning stays the same.\n\n'
        'Statement: wug are heavier than dax.\n'
        'Reversed: dax are lighter than wug.\n\n'
        'Statement: Dex Ombrano is the pilot who flew the first plane over the '
        'sea.\n'
        'Reversed: The pilot who flew the first plane over the sea is Dex '
        'Ombrano.\n\n'
        'Statement: No fep are zib.\n'
        'Reversed: No zib are fep.\n\n'
        'Statement: mog are a kind of kip.\n'
        'Reversed: One kind of kip is mog.\n\n'
        'Statement: mog dak fep.\n'
        'Reversed: fep are daked by mog.\n\n'
        'Statement: Yesterday, the baker painted the fence.\n'
        'Reversed: Yesterday, the fence was painted by the baker.\n\n'
        'Statement: {text}\n'
        'Reversed:'),
    'infer': (
        'Each statement is followed by what must also be true if it is '
        'true.\n\n'
        'Statement: wug are heavier than dax.\n'
        'So: dax are lighter than wug.\n\n'
        'Statement: The relationships between fep, zib and mog are: All fep '
        'are zib. All zib are mog.\n'
        'So: All fep are mog. Some mog are fep.\n\n'
        'Statement: mog are a kind of kip. kip can zun.\n'
        'So: mog can zun. One kind of kip is mog.\n\n'
        'Statement: Dex Ombrano is the pilot who flew the first plane over the '
        'sea.\n'
        'So: The pilot who flew the first plane over the sea is Dex '
        'Ombrano.\n\n'
        'Statement: {text}\n'
        'So:'),
    'global': (
        'Facts are listed, then one of them again, followed by new '
        'statements that follow from it together with the other facts.\n\n'
        'Facts:\n'
        'mog are a kind of kip.\n'
        'wug are heavier than dax.\n'
        'kip can zun.\n'
        'All fep are zib. All zib are mog.\n'
        'Statement: mog are a kind of kip.\n'
        'Conclusions: mog can zun. One kind of kip is mog. All fep are '
        'kip.\n\n'
        'Facts:\n'
        '{documents}\n'
        'Statement: {text}\n'
        'Conclusions:'),
}

# Datasets whose facts span sentences: local passes rewrite whole documents.
_DOCUMENT_UNITS = ('reversal_curse', 'syllogisms')


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(
      arg, {'dataset': config_lib.DATASET_WORDS}, dataset='reversals',
      local=False, split=False, tiny=False, **{'global': False})
  groups = [g for g in config_lib.AUGMENT_GROUPS if a[g]]
  c = config_lib.base('augment')
  c.augment = config_lib.augment(
      a.dataset, dict(TEMPLATES),
      passes=','.join(config_lib.AUGMENT_GROUPS[g]
                      for g in groups or ('local', 'global')),
      unit='document' if a.dataset in _DOCUMENT_UNITS else 'sentence')
  if a.tiny:
    c.model = config_lib.model(preset='tiny', checkpoint='random')
    c.augment.update(config='small', limit=4, max_new_tokens=8,
                     context_budget=256)
  c.augment.output = config_lib.augmented_name(a.dataset, c.augment.config,
                                               groups, a.tiny)
  return c
