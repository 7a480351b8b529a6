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


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'dataset': config_lib.DATASET_WORDS},
                           dataset='reversals', full=False, tiny=False)
  words = ',tiny' if a.tiny else ''
  size = 'full' if a.full else 'small'
  icl = config_lib.load_file(f'{_HERE / "eval_icl.py"}:{a.dataset}{words}')
  icl.eval.config = size
  stages = {'icl': icl}
  augmented = a.dataset != 'ictrain'  # Task pairs, not documents.
  for name in ('finetune', 'augmented') if augmented else ('finetune',):
    ft = config_lib.load_file(f'{_HERE / "finetune.py"}:{a.dataset},lora{words}')
    ft.data.config = size
    if not a.tiny:
      ft.train.update(steps=20, warmup_steps=2, log_every=5)
      ft.eval.every = 10
      ft.checkpoint.every = 10
    stages[name] = ft
  if augmented:
    augment = config_lib.augment_stage(str(_HERE / 'augment.py'), a.dataset,
                                       size, ['local'], a.tiny)
    stages['augment'] = augment
    ft = stages['augmented']
    ft.data.sources = f'original:1,jsonl/{augment.augment.output}:1'
    ft.label = f'augmented FT (LoRA {ft.model.lora.rank}, local)'
  c = config_lib.ConfigDict()
  c.job = 'experiment'
  c.title = (f'{a.dataset} ({size}): prior, ICL, LoRA fine-tuning'
             + (' and augmented LoRA fine-tuning' if augmented else ''))
  c.order = ('icl', 'finetune', 'augment', 'augmented') if augmented else ('icl', 'finetune')
  c.stages = config_lib.ConfigDict(stages)
  return c
