"""The training loop: sharded state, packed batches, eval hooks, checkpoints.

Order of a run (resume-safe):
  1. mesh, rules, model, tokenizer; the compiled step for the batch shape;
  2. restore the latest checkpoint in <workdir>/checkpoints (state and data
     iterator), else create the state from the pretrained params;
  3. per step: next batch -> step -> stop on a non-finite loss (the last good
     checkpoint stays) -> log -> eval every `eval.every` -> checkpoint every
     `checkpoint.every` and at the end; SIGTERM (TPU preemption) checkpoints
     and returns at the next step boundary.
Restarting with the same workdir resumes bit-exactly.
"""

import pathlib
import signal
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tqdm

from icl_iwl.checkpoints import load
from icl_iwl.checkpoints import manager
from icl_iwl.data import pipeline
from icl_iwl.data import samplers
from icl_iwl.eval import probes
from icl_iwl.eval import scoring
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib
from icl_iwl.train import metrics as metrics_lib
from icl_iwl.train import mfu
from icl_iwl.train import optim
from icl_iwl.train import state as state_lib
from icl_iwl.train import step as step_lib


class _Preemption:
  """Remembers a SIGTERM until the loop reaches a step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM: checkpointing at the end of this step.')
    self.requested = True

  def agreed(self) -> bool:
    """True if any process was signalled (all processes agree)."""
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.int32(self.requested)).any())

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def is_trainable(config: ml_collections.ConfigDict) -> state_lib.IsTrainable:
  """LoRA trains only the low-rank factors; otherwise everything trains."""
  if config.model.lora.rank:
    return lambda path: '_lora_' in path
  return lambda path: True


def _global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()}


class Evaluator:
  """Scores probe splits with the current params (an eval hook)."""

  def __init__(self, config, model, params, tok, mesh, rules):
    self.splits = {}
    names = (config.eval.splits.split(',') if config.eval.splits else
             probes.probe_splits(config.data.dataset, config.data.config))
    for split in names:
      records = probes.load_records(config.data.dataset, split, config.data.config,
                                    config.eval.limit or None)
      self.splits[split] = probes.items(records)
    self.scorer = scoring.Scorer(model, params, tok,
                                 scoring.ScorerConfig(**config.scorer), mesh, rules)

  def __call__(self, params: Any) -> dict[str, float]:
    self.scorer.set_params(params)
    out = {}
    for split, items in self.splits.items():
      for rule, acc in scoring.accuracy(self.scorer.score(items)).items():
        out[f'eval/{split}/acc_{rule}'] = acc
    return out


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, float]:
  """Runs (or resumes) fine-tuning; returns the last logged metrics."""
  tc = config.train
  mesh = mesh_lib.make_mesh(config.mesh)
  model, base, tok = load.load(config.model)
  rules = rules_lib.fit(config.rules, model.config, mesh)
  trainable = is_trainable(config)
  optimizer = optim.optimizer(tc)
  schedule = optim.schedule(tc)
  compiled = step_lib.compile_step(model, optimizer, trainable, mesh, rules,
                                   tc.batch_size, tc.seq_len, tc.accum)
  batch_sharding = jax.NamedSharding(mesh, jax.P(dict(rules).get('batch')))

  if jax.process_index() == 0:  # Build the dataset once, before others read it.
    probes.load_records(config.data.dataset, config.data.split, config.data.config, 1)
  multihost_utils.sync_global_devices('dataset ready')
  records = probes.load_records(config.data.dataset, config.data.split,
                                config.data.config)
  sampler = samplers.SAMPLERS.get(config.data.sampler)(records, config.data)
  data = iter(pipeline.batches(sampler, tok, tc.seq_len, tc.batch_size,
                               config.data.seed, jax.process_index(),
                               jax.process_count()))

  ckpt = manager.Checkpointer(workdir / 'checkpoints', config.checkpoint.keep,
                              config.checkpoint.best_metric, config.checkpoint.best_mode,
                              config.checkpoint.async_save)
  target = state_lib.sharded_abstract(model, optimizer, trainable, mesh, rules)
  restored = ckpt.restore(target)
  if restored is None:
    state = state_lib.create(model, optimizer, trainable, base, mesh, rules, config.seed)
    start = 0
  else:
    state, data_state = restored
    data.set_state(data_state)
    start = int(state.step)
  del base
  logging.info('Training from step %d to %d on %s', start, tc.steps, dict(mesh.shape))

  writer = metrics_lib.MetricsWriter(workdir, resume_step=start)
  evaluator = None
  if config.eval.every:
    evaluator = Evaluator(config, model, state_lib.merge(state.params, state.frozen),
                          tok, mesh, rules)
  tokens_per_step = tc.batch_size * tc.seq_len
  flops_per_step = mfu.train_flops_per_token(
      model.config, tc.seq_len, frozen_weights=bool(config.model.lora.rank)) * tokens_per_step
  peak = tc.peak_flops or mfu.peak_flops(model.dtype)
  preemption = _Preemption()
  last: dict[str, float] = {}
  bar = tqdm.tqdm(total=tc.steps, initial=start, desc='train', unit='step',
                  disable=jax.process_index() != 0)
  tick, steps_since = time.perf_counter(), 0
  try:
    for step in range(start, tc.steps):
      batch = _global_batch(next(data), batch_sharding)
      state, m = compiled(state, batch)
      loss = float(m['loss'])
      if not np.isfinite(loss) or not bool(m['params_finite']):
        ckpt.wait()
        what = f'loss {loss}' if not np.isfinite(loss) else 'parameters after the update'
        raise FloatingPointError(
            f'Non-finite {what} at step {step + 1}; stopping without saving it. '
            f'The last good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}.')
      done = step + 1
      steps_since += 1
      bar.update(1)
      eval_metrics = None
      if evaluator and (done % config.eval.every == 0 or done == tc.steps):
        eval_metrics = evaluator(state_lib.merge(state.params, state.frozen))
        writer.write(done, eval_metrics)
      if done % tc.log_every == 0 or done == tc.steps:
        elapsed = time.perf_counter() - tick
        last = {'train/loss': loss, 'train/grad_norm': float(m['grad_norm']),
                'train/learning_rate': float(schedule(step)),
                'train/target_tokens': float(m['targets']),
                'train/tokens_per_s': tokens_per_step * steps_since / elapsed,
                'train/mfu': flops_per_step * steps_since / elapsed / peak}
        writer.write(done, last)
        bar.set_postfix(loss=f'{loss:.3f}', tok_s=f'{last["train/tokens_per_s"]:.0f}',
                        mfu=f'{last["train/mfu"]:.1%}')
        tick, steps_since = time.perf_counter(), 0
      stop = preemption.agreed()
      best_due = eval_metrics is not None and config.checkpoint.best_metric
      if done % config.checkpoint.every == 0 or done == tc.steps or stop or best_due:
        ckpt.save(done, state, data.get_state(), eval_metrics)
      if stop:
        logging.warning('Preempted: saved step %d, exiting.', done)
        break
  finally:
    preemption.restore()
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  if not last and jax.process_index() == 0:  # Nothing left to run: report the log.
    last = next((m for m in reversed(metrics_lib.read(workdir)) if 'train/loss' in m), {})
  return last
