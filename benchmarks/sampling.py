r"""What building IC-Train sequences costs, next to a training step.

    flock /tmp/heavy.lock python benchmarks/sampling.py --examples=3000 --steps=3

Per sampler of `--samplers` on ictrain/full's train split (6000 pairs, two
tasks), built from configs/finetune.py:ictrain: the neighbour table's build
(once per run: BM25 over each task) and the per-example cost of exactly what
`pipeline.batches` does per example, the draw (`sampler(i, rng)`) plus
`context.fit` (tokenize, budget), timed over `--examples` examples. Then, in
the same run, the training step of that config (full fine-tuning of the
embedded Gemma 3 270M, f32, batch 8 x 128; `--model=tiny` for a quick smoke
run with the tiny random model) through `runtime.trainer`, fed the pipeline's
own batches of the contrastive sampler: the median of `--steps` steps after
one untimed step.

The last stdout line is one JSON object:
  {"benchmark": "sampling", "model": ..., "step_s": ...,
   "examples_per_batch": ...,   # segments packed into one batch, measured
   "samplers": {name: {"index_s", "example_us", "example_fraction",
                       "batch_fraction"}}, "machine": {...}}
example_fraction = one example's cost / one step; batch_fraction = the cost
of all the examples one batch packs / one step (the data time a step waits
for if the pipeline did not run ahead). Target: example_fraction < 0.01.
"""

import json
import pathlib
import statistics
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

import common  # benchmarks/common.py: a script's own directory is on sys.path.
from icl_iwl import config_lib
from icl_iwl import runtime
from icl_iwl.data import context
from icl_iwl.data import datasets
from icl_iwl.data import pipeline
from icl_iwl.data import samplers

_SAMPLERS = flags.DEFINE_list('samplers', ['random', 'similar', 'contrastive', 'mixture'],
                              'Samplers to time.')
_EXAMPLES = flags.DEFINE_integer('examples', 3000, 'Examples timed per sampler.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed training steps (median).')
_MODEL = flags.DEFINE_enum('model', 'gemma3_270m', ['gemma3_270m', 'tiny'],
                           'gemma3_270m: the embedded model; tiny: a smoke run.')

_FINETUNE = pathlib.Path(__file__).resolve().parent.parent / 'configs' / 'finetune.py'


def _config(model: str):
  config = config_lib.load_file(f'{_FINETUNE}:ictrain' + (',tiny' if model == 'tiny' else ''))
  config.data.config = 'full'  # The paper-sized pool, also for the smoke run.
  config.data.update(grades=(0.25, 0.25, 0.25, 0.25),
                     mixture='random:1,similar:1,contrastive:2')
  return config


def _time_sampler(name: str, records, config, tok, n: int) -> dict[str, float]:
  sampler = samplers.SAMPLERS.get(name)(records, config.data)
  rng = np.random.default_rng(0)
  start = time.perf_counter()
  sampler(0, rng)  # Builds the neighbour table, if any.
  index_s = time.perf_counter() - start
  start = time.perf_counter()
  for i in range(n):
    context.fit(sampler(i % len(sampler), rng), tok, config.train.seq_len)
  return {'index_s': index_s, 'example_s': (time.perf_counter() - start) / n}


def main(argv):
  del argv
  config = _config(_MODEL.value)
  dataset = datasets.resolve(config.data.dataset, config.data.config)
  records = dataset.records(config.data.split)
  rt, base = runtime.load_host(config)
  timings = {}
  for name in _SAMPLERS.value:
    config.data.sampler = name
    timings[name] = _time_sampler(name, records, config, rt.tok, _EXAMPLES.value)
    logging.info('%s: %s', name, timings[name])

  # The training step, on the pipeline's own batches.
  config.data.sampler = 'contrastive'
  tc = config.train
  sampler = samplers.SAMPLERS.get('contrastive')(records, config.data)
  data = iter(pipeline.batches(sampler, rt.tok, tc.seq_len, tc.batch_size, 0))
  trainer = runtime.trainer(config, rt)
  state = trainer.create_state(rt, base, config.seed)
  del base
  step_s, segments = [], []
  for i in range(_STEPS.value + 1):
    batch = next(data)
    segments.append(sum(len(set(row.tolist()) - {0}) for row in batch['segment_ids']))
    start = time.perf_counter()
    state, m = trainer.run(state, batch)
    jax.block_until_ready(m)
    if i:  # The first step is a warm-up.
      step_s.append(time.perf_counter() - start)
    logging.info('step %d: %.2fs, loss %.3f', i, time.perf_counter() - start,
                 float(m['loss']))
  step = statistics.median(step_s)
  per_batch = statistics.mean(segments)
  out = {'benchmark': 'sampling', 'model': _MODEL.value,
         'batch': tc.batch_size, 'seq_len': tc.seq_len, 'pool': len(records),
         'step_s': round(step, 4), 'step_s_all': [round(s, 4) for s in step_s],
         'examples_per_batch': per_batch, 'samplers': {}}
  for name, t in timings.items():
    out['samplers'][name] = {
        'index_s': round(t['index_s'], 4),
        'example_us': round(t['example_s'] * 1e6, 1),
        'example_fraction': float(f'{t["example_s"] / step:.3g}'),
        'batch_fraction': float(f'{t["example_s"] * per_batch / step:.3g}')}
  out['machine'] = common.machine()
  print(json.dumps(out))


if __name__ == '__main__':
  app.run(main)
