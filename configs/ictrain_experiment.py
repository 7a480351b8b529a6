"""The contrastive-context study's comparison (Malu et al. 2026) on IC-Train.

    flock /tmp/heavy.lock python -m icl_iwl.main \
        --config=configs/ictrain_experiment.py:translation \
        --workdir=/tmp/ictrain_experiment/scratch
    python -m icl_iwl.report --root=/tmp/ictrain_experiment/scratch \
        --out=docs/ictrain/scratch --title='IC-Train from scratch'

Stages (jobs/experiment.py: each in its own sub-workdir, resumable), each a
configs/ictrain.py run on the task named by the arg (the other task held
out, probed as out of domain):
  <sampler>_s<k>  sampler none (fine-tuning on the target alone), random,
                  similar, contrastive; seeds k = 0, 1, 2 (model init, data
                  order and context draws);
then <workdir>/report.md with the IWL / ICL / copy scores by grade and
domain, mean and min-max over seeds, and their plots over training steps.

Default: (a) the two-layer 'tiny' preset trained from scratch (word
'scratch' of configs/ictrain.py, 300 steps). With 'lora': (b) LoRA rank 16
on the embedded Gemma 3 270M, one seed, 30 steps, 25 probes per task and
split. 'steps=N' and 'seeds=N' (the first N of 0, 1, 2) shorten either;
probes are scored 4 times per run. 'tiny': the small dataset, 1 step
(probes scored after it), sampler none with seed 0 and contrastive with
seeds 0 and 1, for tests.
"""

import pathlib

from icl_iwl import config_lib

_HERE = pathlib.Path(__file__).resolve().parent
SAMPLERS = ('none', 'random', 'similar', 'contrastive')
SEEDS = (0, 1, 2)


def get_config(arg: str | None = None):
  a = config_lib.parse_arg(arg, {'task': ('translation', 'classification')},
                           task='translation', lora=False, tiny=False, steps=0,
                           seeds=0)
  samplers, seeds = SAMPLERS, SEEDS[:a.seeds or len(SEEDS)]
  words = ',lora' if a.lora else ',scratch'
  if a.lora:
    seeds = SEEDS[:a.seeds or 1]
  if a.tiny:
    samplers, seeds, words = ('none', 'contrastive'), (0, 1), words + ',tiny'
  stages = {}
  for seed in seeds:  # Seed-major: a cut run has every sampler's first seeds.
    for sampler in samplers:
      if a.tiny and (sampler, seed) == ('none', 1):
        continue
      run = config_lib.load_file(f'{_HERE / "ictrain.py"}:{a.task},{sampler}{words}')
      run.seed = run.data.seed = seed
      steps = 1 if a.tiny else a.steps or (30 if a.lora else run.train.steps)
      run.train.update(steps=steps, warmup_steps=min(run.train.warmup_steps,
                                                     max(1, steps // 10)))
      run.eval.every = max(1, steps // 4)
      run.checkpoint.every = steps
      if a.lora and not a.tiny:
        run.train.log_every = 5
        run.eval.limit = 25
      stages[f'{sampler}_s{seed}'] = run
  c = config_lib.ConfigDict()
  c.job = 'experiment'
  kind = 'LoRA on Gemma 3 270M' if a.lora else 'a two-layer model from scratch'
  c.title = f'IC-Train on {a.task}: no context, random, similar, contrastive ({kind})'
  c.order = tuple(stages)
  c.stages = config_lib.ConfigDict(stages)
  return c
