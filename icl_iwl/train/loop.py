"""The training loop: sharded state, packed batches, eval hooks, checkpoints.

Order of a run (resume-safe):
  1. setup: model, mesh, compiled step (runtime.py), the batch pipeline;
  2. restore the newest checkpoint in <workdir>/checkpoints that loads (state
     and data iterator), else create the state from the pretrained params;
  3. per step: next batch -> step -> stop on a non-finite loss (the last good
     checkpoint stays) -> hooks: log every `train.log_every`, eval every
     `eval.every` (accuracies into metrics.jsonl, each probe's scores into
     <workdir>/items/step<N>/<split>.jsonl), checkpoint every
     `checkpoint.every` and at the end. SIGTERM
     (TPU preemption) checkpoints at the next step boundary and raises
     `Preempted`: the run is not done, and rerunning it resumes.
Restarting with the same workdir resumes bit-exactly.
"""

import pathlib
import shutil
import signal
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import tqdm

from icl_iwl import config_lib
from icl_iwl import errors
from icl_iwl import hostmem
from icl_iwl import runtime
from icl_iwl.augment import mixture
from icl_iwl.checkpoints import manager
from icl_iwl.data import datasets
from icl_iwl.data import embedding
from icl_iwl.data import pipeline
from icl_iwl.data import retrieval
from icl_iwl.data import samplers
from icl_iwl.eval import ictrain
from icl_iwl.eval import probes
from icl_iwl.eval import results
from icl_iwl.eval import scoring
from icl_iwl.model import gemma
from icl_iwl.train import metrics as metrics_lib
from icl_iwl.train import mfu
from icl_iwl.train import state as state_lib


class Preempted(Exception):
  """The run was asked to stop (SIGTERM) and saved a checkpoint to resume."""


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


class Evaluator:
  """The eval hook: scores the probe splits of `eval` with the current params,
  or with `eval.grades` the IC-Train probes by grade (eval/ictrain.py)."""

  def __init__(self, config: ml_collections.ConfigDict, rt: runtime.Runtime,
               params: Any):
    name, cfg = config_lib.eval_dataset(config)
    dataset = datasets.resolve(name, cfg)
    self.graded, self.splits = None, {}
    if config.eval.get('grades'):
      self.graded = ictrain.ProbeSet.from_dataset(
          dataset, config.eval.grades, config.data.get('tasks', ''),
          config.eval.limit)
    else:
      splits = config_lib.split_list(config.eval.splits) or dataset.probe_splits()
      self.splits = {s: probes.items(dataset.records(s, config.eval.limit or None))
                     for s in splits}
    self.scorer = runtime.scorer(config, rt, params)

  def __call__(self, params: Any, items_dir: pathlib.Path | None = None,
               ) -> dict[str, float]:
    """Accuracies by split and rule (or the graded probe scores); with
    `items_dir`, each item's scores into <items_dir>/<split>.jsonl
    (`ictrain.jsonl` for the graded probes)."""
    hostmem.trim()  # The training step's temporaries (see hostmem.py).
    self.scorer.set_params(params)
    scored = {}
    out = {}
    if self.graded:
      scored['ictrain'] = self.scorer.score(self.graded.items)
      out.update(self.graded.metrics(scored['ictrain']))
    for split, items in self.splits.items():
      scored[split] = self.scorer.score(items)
      for rule, acc in scoring.accuracy(scored[split]).items():
        out[f'eval/{split}/acc_{rule}'] = acc
    if items_dir is not None:
      items_dir.mkdir(parents=True, exist_ok=True)
      for name, scores in scored.items():
        results.write_items(items_dir / f'{name}.jsonl', scores)
    hostmem.trim()  # The scorer's.
    return out


def _embedder(config: ml_collections.ConfigDict, rt: runtime.Runtime,
              base: Any) -> Any:
  """The samplers' embedding function (the model before training, mean-pooled
  hidden states, cached on disk), if `data.similarity` asks for one."""
  if config.data.get('similarity') != 'embedding':
    return None
  params = base
  if params is None:  # A random init: the same weights the state starts from.
    params = gemma.init_params(rt.model.clone(lora=None), jax.random.key(config.seed))
  return retrieval.cached(embedding.model_embedder(rt.model, params, rt.tok),
                          embedding.model_key(config.model, config.seed))


def _batches(config: ml_collections.ConfigDict, tok, embed: Any = None) -> Any:
  """The checkpointable iterator of this process's rows of each batch."""
  dataset = datasets.resolve(config.data.dataset, config.data.config)
  if jax.process_index() == 0:  # Build the dataset once, before others read it.
    dataset.splits()
  multihost_utils.sync_global_devices('dataset ready')
  records = mixture.training_records(config.data)  # The split, plus any
  # augmented datasets of `data.sources`.
  sampler = samplers.SAMPLERS.get(config.data.sampler)(records, config.data, embed)
  tc = config.train
  pipeline.check_lengths(sampler, tok, tc.seq_len, config.data.seed)
  return iter(pipeline.batches(sampler, tok, tc.seq_len, tc.batch_size,
                               config.data.seed, jax.process_index(),
                               jax.process_count()))


def check_disk(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Refuses a run whose checkpoints the workdir's disk cannot hold, before
  any model loads (else the first save fails on a full disk, minutes in).

  The run still writes a checkpoint every `checkpoint.every` steps and at
  its last step; it keeps `checkpoint.keep` of them, writing the next before
  it deletes the oldest.

  Raises:
    errors.UserError: naming the free and the needed space.
  """
  steps = sorted(ocp.path.step.checkpoint_steps(workdir / 'checkpoints'))
  start, last, every = (steps[-1] if steps else 0), config.train.steps, config.checkpoint.every
  saves = sum(1 for s in range(start + 1, last + 1) if s % every == 0 or s == last)
  keep = config.checkpoint.keep
  count = min(saves, keep + 1 - min(len(steps), keep))
  if not count:
    return
  state = runtime.trainer(config, runtime.abstract(config)).abstract_state
  size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  existing = next(p for p in (workdir, *workdir.parents) if p.exists())
  free = shutil.disk_usage(existing).free
  if free < count * size:
    raise errors.UserError(
        f'{workdir} is on a disk with {free / 1e9:.1f} GB free; this run writes '
        f'{count} more checkpoint(s) of {size / 1e9:.2f} GB there '
        f'({count * size / 1e9:.1f} GB): free space, lower checkpoint.keep or '
        'use another --workdir.')


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, float]:
  """Runs (or resumes) fine-tuning; returns the last logged metrics.

  Raises:
    Preempted: after checkpointing, if SIGTERM arrived.
    FloatingPointError: on a non-finite loss (the last good checkpoint stays).
  """
  tc = config.train
  # 1. Setup.
  check_disk(config, workdir)
  rt, base = runtime.load_host(config)
  tr = runtime.trainer(config, rt)
  data = _batches(config, rt.tok, _embedder(config, rt, base))
  # With hostmem's malloc settings an asynchronous save's host copy of the
  # state would sit beside the next steps' temporaries, then stay mapped:
  # saves are written before training goes on, then trimmed (hostmem.py).
  ckpt = manager.Checkpointer(workdir / 'checkpoints', config.checkpoint.keep,
                              config.checkpoint.best_metric, config.checkpoint.best_mode,
                              config.checkpoint.async_save and not hostmem.active())
  # 2. Restore, else start from the pretrained params.
  restored = ckpt.restore(tr.abstract_state, config=rt.model.config)
  if restored is None:
    state, start = tr.create_state(rt, base, config.seed), 0
  else:
    state, data_state = restored
    data.set_state(data_state)
    start = int(state.step)
  del base
  logging.info('Training from step %d to %d on %s', start, tc.steps, dict(rt.mesh.shape))

  # 3. Loop, with its hooks.
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start)
  evaluator = None
  if config.eval.every:
    evaluator = Evaluator(config, rt, state_lib.merge(state.params, state.frozen))
  peak = tc.peak_flops or mfu.peak_flops(rt.model.dtype)
  tokens_per_step = tc.batch_size * tc.seq_len
  preemption = _Preemption()
  last: dict[str, float] = {}
  bar = tqdm.tqdm(total=tc.steps, initial=start, desc='train', unit='step',
                  disable=jax.process_index() != 0)
  # Setup's host copies (the pretrained load's or the restore's, the
  # evaluator's), freed but mapped (hostmem.py): given back before the first
  # step's temporaries come (a resumed 270M run peaked 13.9 GB without it,
  # 9.3 GB with it; 9.8 GB run through).
  hostmem.trim()
  tick, steps_since, flops_since, stop = time.perf_counter(), 0, 0.0, False
  try:
    for step in range(start, tc.steps):
      state, m = tr.run(state, next(data))
      loss = float(m['loss'])
      if not np.isfinite(loss) or not bool(m['params_finite']):
        ckpt.wait()
        what = f'loss {loss}' if not np.isfinite(loss) else 'parameters after the update'
        raise FloatingPointError(
            f'Non-finite {what} at step {step + 1}; stopping without saving it. '
            f'The last good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}.')
      done, steps_since, flops_since = step + 1, steps_since + 1, flops_since + m['flops']
      if step == start:  # Compilation's free pages (hostmem.py).
        hostmem.trim()
      bar.update(1)
      # Hook: eval.
      eval_metrics = None
      if evaluator and (done % config.eval.every == 0 or done == tc.steps):
        eval_metrics = evaluator(
            state_lib.merge(state.params, state.frozen),
            workdir / 'items' / f'step{done}' if jax.process_index() == 0 else None)
        writer.write(done, eval_metrics)
      # Hook: log.
      if done % tc.log_every == 0 or done == tc.steps:
        elapsed = time.perf_counter() - tick
        last = {'train/loss': loss, 'train/grad_norm': float(m['grad_norm']),
                'train/learning_rate': float(tr.schedule(step)),
                'train/target_tokens': float(m['targets']),
                'train/tokens_per_s': tokens_per_step * steps_since / elapsed,
                'train/mfu': flops_since / elapsed / peak}
        writer.write(done, last)
        bar.set_postfix(loss=f'{loss:.3f}', tok_s=f'{last["train/tokens_per_s"]:.0f}',
                        mfu=f'{last["train/mfu"]:.1%}')
        tick, steps_since, flops_since = time.perf_counter(), 0, 0.0
      # Hook: checkpoint (and preemption).
      stop = preemption.agreed()
      best_due = eval_metrics is not None and config.checkpoint.best_metric
      if done % config.checkpoint.every == 0 or done == tc.steps or stop or best_due:
        ckpt.save(done, state, data.get_state(), eval_metrics)
        hostmem.trim()  # The save's host copy of the state (see above).
      if stop and done < tc.steps:
        break
  finally:
    preemption.restore()
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  if stop and done < tc.steps:
    raise Preempted(f'Preempted (SIGTERM): saved step {done} of {tc.steps} in '
                    f'{ckpt.directory}; rerun with the same --workdir to resume.')
  if not last and jax.process_index() == 0:  # Nothing left to run: report the log.
    last = next((m for m in reversed(metrics_lib.read(workdir)) if 'train/loss' in m), {})
  return last
