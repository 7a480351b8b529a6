"""IC-Train: fine-tune on "k context examples + target", loss on the target only.

    python -m icl_iwl.main --config=configs/ictrain.py:translation,contrastive \
        --workdir=/tmp/ictrain/translation_contrastive
    python -m icl_iwl.main --config=configs/ictrain.py:all,random,lora \
        --workdir=/tmp/ictrain/all_random_lora

arg: the task trained on ('translation' or 'classification', the other one
held out and probed as out of domain; 'all' both), the context sampler
('none': no context, the target alone (plain fine-tuning on the pairs);
'random', 'similar', 'contrastive', 'mixture' (random:1,similar:1): see
docs/samplers.md), and optional words: 'lora' (rank-16 adapters on the
embedded Gemma 3 270M instead of full fine-tuning), 'scratch' (the two-layer
'tiny' preset from a random init, full fine-tuning at a higher learning rate:
the cheap from-scratch model of configs/ictrain_experiment.py), 'tiny' (the
small dataset and 6 steps, for tests). Sequences are packed; every
`eval.every` steps and at the end the IWL / ICL / copy probes are scored by
similarity grade and domain (eval/ictrain.py, docs/ictrain.md), written to
<workdir>/metrics.jsonl as probe/<score>/<domain>/<grade>.
"""

from icl_iwl import config_lib

TASKS = ('translation', 'classification', 'all')
SAMPLERS = ('none', 'random', 'similar', 'contrastive', 'mixture')
GRADES = 'none,random,similar,near_duplicate'


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'task': TASKS, 'sampler': SAMPLERS},
                           task='translation', sampler='contrastive',
                           lora=False, scratch=False, tiny=False)
  c = config_lib.base('train')
  c.label = f'IC-Train {a.sampler}' if a.sampler != 'none' else 'FT, no context'
  c.data = config_lib.data(
      'ictrain', sampler='random' if a.sampler == 'none' else a.sampler,
      num_context=0 if a.sampler == 'none' else 4,
      tasks='' if a.task == 'all' else a.task)
  if a.sampler == 'mixture':
    c.data.mixture = 'random:1,similar:1'
  # An IC-Train sequence of 4 examples and the target has 70-116 tokens: one
  # per row of 128. Without context one per row of 26 (an example has 11-25
  # tokens; only the 5% translation noun phrases, 11-13, can pair up), so
  # that a step trains on about as many targets as with context.
  c.train = config_lib.train(steps=200, seq_len=26 if a.sampler == 'none' else 128)
  c.checkpoint = config_lib.checkpoint()
  c.eval = config_lib.evaluation(every=50, limit=50, grades=GRADES)
  c.scorer = config_lib.scorer()
  if a.lora:
    c.model.lora.rank = 16
    c.train.learning_rate = 1e-3
    c.label += ' (LoRA 16)'
  if a.scratch:
    c.model.preset, c.model.checkpoint = 'tiny', 'random'
    c.train.update(steps=300, learning_rate=3e-3, warmup_steps=20, log_every=25)
    c.eval.update(every=50, limit=25)
    c.checkpoint.every = 100
    c.label += ' (scratch)'
  if a.tiny:
    c.model.preset, c.model.checkpoint = 'tiny', 'random'
    c.data.config = 'small'
    c.train.update(steps=6, batch_size=8, warmup_steps=2, log_every=1)
    c.checkpoint.every = 3
    c.eval.update(every=3, limit=4)
  return c
