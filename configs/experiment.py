"""A small real experiment: what the pretrained Gemma 3 270M knows of new facts
with nothing in context, with the training documents in context (ICL), after
fine-tuning on them (LoRA), and after fine-tuning on them plus its own
rewordings of them (augmented fine-tuning); one table and plots.

    python -m icl_iwl.main --config=configs/experiment.py --workdir=/tmp/icl_experiment

Stages (each in its own sub-workdir; see jobs/experiment.py):
  icl        eval_icl: every probe split with no context (the prior) and with
             the documents in context (the paper's protocol);
  finetune   train: LoRA rank 16 on the documents, probes scored every
             `eval.every` steps and at the end;
  augment    the local augmentation passes (rephrase, reverse, infer; see
             configs/augment.py) by the pretrained model, audited;
  augmented  train: as `finetune`, on the documents plus what `augment` wrote
             (each document of both once an epoch: 16 originals among
             83 on the small config, so it sees each original less often).
Then <workdir>/report.md and its plots (icl_iwl.report).
`--config.order="('icl','finetune')"` runs the first two stages only.

arg: the dataset (default reversals; its 'small' config: 8 facts, 16
documents, so the whole experiment takes minutes on a CPU; ictrain's task
pairs are no documents to augment: it runs icl and finetune only), and
optional words 'full' (the full dataset: hours on a CPU) and 'tiny' (a
random two-layer model, for tests).
"""

import pathlib

from icl_iwl import config_lib

_HERE = pathlib.Path(__file__).resolve().parent


def _lora(dataset: str, size: str, words: str):
  """LoRA rank 16 on `dataset`'s documents (20 steps of 8 x 128 unless tiny)."""
  ft = config_lib.load_file(f'{_HERE / "finetune.py"}:{dataset},lora{words}')
  ft.data.config = size
  if not words:
    ft.train.update(steps=20, warmup_steps=2, log_every=5)
    ft.eval.every = 10
    ft.checkpoint.every = 10
  return ft


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'dataset': config_lib.DATASET_WORDS},
                           dataset='reversals', full=False, tiny=False)
  words = ',tiny' if a.tiny else ''
  size = 'full' if a.full else 'small'
  icl = config_lib.load_file(f'{_HERE / "eval_icl.py"}:{a.dataset}{words}')
  icl.eval.config = size
  stages = {'icl': icl, 'finetune': _lora(a.dataset, size, words)}
  title = f'{a.dataset} ({size}): prior, ICL, LoRA fine-tuning'
  if a.dataset != 'ictrain':  # Task pairs, not documents: nothing to augment.
    augment = config_lib.augment_stage(str(_HERE / 'augment.py'), a.dataset,
                                       size, ['local'], a.tiny)
    augmented = _lora(a.dataset, size, words)
    augmented.data.sources = f'original:1,jsonl/{augment.augment.output}:1'
    augmented.label = f'augmented FT (LoRA {augmented.model.lora.rank}, local)'
    stages.update(augment=augment, augmented=augmented)
    title += ' and augmented LoRA fine-tuning'
  c = config_lib.ConfigDict()
  c.job = 'experiment'
  c.title = title
  c.order = tuple(stages)
  c.stages = config_lib.ConfigDict(stages)
  return c
