"""A small real experiment: what the pretrained Gemma 3 270M knows of new facts
with nothing in context, with the training documents in context (ICL), and
after fine-tuning on them (LoRA); one table and plots.

    python -m icl_iwl.main --config=configs/experiment.py --workdir=/tmp/icl_experiment

Stages (each in its own sub-workdir; see jobs/experiment.py):
  icl       eval_icl: every probe split with no context (the prior) and with
            the documents in context (the paper's protocol);
  finetune  train: LoRA rank 16 on the documents, probes scored every
            `eval.every` steps and at the end.
Then <workdir>/report.md and its plots (icl_iwl.report).

arg: the dataset (default reversals; its 'small' config: 8 facts, 16
documents, so the whole experiment takes minutes on a CPU), and optional
words 'full' (the full dataset: hours on a CPU) and 'tiny' (a random two-layer
model, for tests).
"""

import pathlib

from icl_iwl import config_lib

_HERE = pathlib.Path(__file__).resolve().parent


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'dataset': config_lib.DATASET_WORDS},
                           dataset='reversals', full=False, tiny=False)
  words = ',tiny' if a.tiny else ''
  icl = config_lib.load_file(f'{_HERE / "eval_icl.py"}:{a.dataset}{words}')
  finetune = config_lib.load_file(f'{_HERE / "finetune.py"}:{a.dataset},lora{words}')
  size = 'full' if a.full else 'small'
  icl.eval.config = finetune.data.config = size
  if not a.tiny:
    finetune.train.update(steps=40, warmup_steps=4, log_every=5)
    finetune.eval.every = 10
    finetune.checkpoint.every = 10
  c = config_lib.ConfigDict()
  c.job = 'experiment'
  c.title = f'{a.dataset} ({size}): prior, ICL and LoRA fine-tuning'
  c.order = ('icl', 'finetune')
  c.stages = config_lib.ConfigDict({'icl': icl, 'finetune': finetune})
  return c
