r"""One lm-eval task through both backends: ours ('icl_iwl') vs lm-eval's HF.

A local multiple-choice task (`icl_iwl.lm_eval.write_task`) over probes of a
dataset's test splits, with `--num_fewshot` examples in front of every
question (lm-eval's 'first_n' sampler: the same examples each time, as a
fixed few-shot prompt is), is run with `lm_eval.simple_evaluate` twice in
one process, on the embedded Gemma 3 270M in float32:

  ours       `IclIwlLM(checkpoint='embedded', dtype='float32')`: our jitted
             scorer on the default mesh; the few-shot prefix is encoded once,
             each question once for all its choices;
  reference  lm-eval's `HFLM` on transformers' own GGUF load of the same
             model (`common.torch_model`), transformers' tokenizer from the
             GGUF, `add_bos_token=True`, `--ref_batch_size`: a full forward
             of context + choice for every request.

  flock /tmp/heavy.lock python benchmarks/lm_eval_backend.py --num_items=64

Each side runs once untimed (ours compiles its shapes; the reference on
`--ref_warmup_items` items), then `--repeats` timed `simple_evaluate` calls
of the whole task. Reported: items/s end to end (task setup, tokenization,
the model, metrics) and of the model's `loglikelihood` call alone, both
medians; ratio = ours / reference end to end (> 1: ours is faster; target
>= 5); agreement as the max |logprob diff| over every request and both
accuracies.

Logs go to stderr; the last stdout line is one JSON object:
  {"benchmark": "lm_eval_backend", "items": ..., "num_fewshot": 5,
   "ours_items_s": ..., "ref_items_s": ..., "ratio": ...,
   "ours_loglikelihood_items_s": ..., ..., "max_abs_logprob_diff": ...,
   "ours_acc": ..., "ref_acc": ..., "machine": {...}}
"""

import json
import statistics
import tempfile
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

import common  # benchmarks/common.py: a script's own directory is on sys.path.

from icl_iwl import lm_eval as backend
from icl_iwl import paths
from icl_iwl.data import datasets
from icl_iwl.eval import probes

_DATASET = flags.DEFINE_string('dataset', 'reversals', 'Probe dataset (config full).')
_NUM_ITEMS = flags.DEFINE_integer('num_items', 64, 'Questions of the task.')
_NUM_FEWSHOT = flags.DEFINE_integer('num_fewshot', 5, 'Examples before each.')
_REF_BATCH_SIZE = flags.DEFINE_integer('ref_batch_size', 16,
                                       "HFLM's batch size (requests per forward).")
_REF_WARMUP_ITEMS = flags.DEFINE_integer('ref_warmup_items', 2,
                                         'Items of the reference warm-up.')
_REPEATS = flags.DEFINE_integer('repeats', 1, 'Timed runs of each side.')

_TARGET = 5.0  # Wanted ratio = ours / reference.


def _task(directory: str) -> str:
  """The task: fewshot examples, then questions, from the test splits."""
  dataset = datasets.resolve(_DATASET.value, 'full')
  splits = dataset.probe_splits()
  per_split = -(-(_NUM_ITEMS.value + _NUM_FEWSHOT.value) // len(splits))
  items = [i for split in splits for i in probes.items(dataset.records(split, per_split))]
  fewshot, items = items[:_NUM_FEWSHOT.value], items[_NUM_FEWSHOT.value:]
  return backend.write_task(directory, f'icl_iwl_{_DATASET.value}', items[:_NUM_ITEMS.value],
                            fewshot, _NUM_FEWSHOT.value)


class _Timed:
  """Wraps an LM's `loglikelihood` to time it."""

  def __init__(self, lm):
    self.lm, self.seconds = lm, []
    inner = lm.loglikelihood

    def timed(requests, *args, **kwargs):
      out, s = common.timed(lambda: inner(requests, *args, **kwargs))
      self.seconds.append(s)
      return out

    lm.loglikelihood = timed


def _side(name: str, lm, task: str, manager, warmup_limit: int | None
          ) -> dict[str, Any]:
  """Warm-up, then timed runs; per-request logprobs and accuracy."""
  import lm_eval  # pylint: disable=g-import-not-at-top

  timed = _Timed(lm)

  def run(limit=None):
    return lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager,
                                   log_samples=True, limit=limit)

  _, warmup_s = common.timed(lambda: run(warmup_limit))
  logging.info('%s: warm-up %.1fs', name, warmup_s)
  timed.seconds.clear()
  seconds, out = [], None
  for i in range(_REPEATS.value):
    out, s = common.timed(run)
    seconds.append(s)
    logging.info('%s: repeat %d %.2fs (loglikelihood %.2fs)', name, i, s,
                 timed.seconds[-1])
  samples = sorted(out['samples'][task], key=lambda s: s['doc_id'])
  return {
      'seconds': seconds, 'loglikelihood_seconds': list(timed.seconds),
      'warmup_s': warmup_s, 'acc': out['results'][task]['acc,none'],
      'logprob': np.asarray([r[0][0] for s in samples for r in s['resps']]),
      'requests': sum(len(s['resps']) for s in samples),
      'context_chars': float(np.mean([len(a[0]) for s in samples for a in s['arguments']])),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import transformers  # pylint: disable=g-import-not-at-top
  from lm_eval.models.huggingface import HFLM  # pylint: disable=g-import-not-at-top
  from lm_eval.tasks import TaskManager  # pylint: disable=g-import-not-at-top

  directory = tempfile.mkdtemp(prefix='icl_iwl_lm_eval_')
  task = _task(directory)
  manager = TaskManager(include_path=directory)
  n = _NUM_ITEMS.value

  ours_lm = backend.IclIwlLM(checkpoint='embedded', dtype='float32')
  ours = _side('ours', ours_lm, task, manager, None)
  del ours_lm

  path = paths.embedded_gguf()
  hf_tok = transformers.AutoTokenizer.from_pretrained(str(path.parent),
                                                      gguf_file=path.name)
  ref_lm = HFLM(pretrained=common.torch_model(), tokenizer=hf_tok,
                batch_size=_REF_BATCH_SIZE.value, add_bos_token=True)
  ref = _side('reference', ref_lm, task, manager, _REF_WARMUP_ITEMS.value)

  diff = np.abs(ours['logprob'] - ref['logprob'])
  items_s = {side: n / statistics.median(r['seconds'])
             for side, r in (('ours', ours), ('ref', ref))}
  ll_items_s = {side: n / statistics.median(r['loglikelihood_seconds'])
                for side, r in (('ours', ours), ('ref', ref))}
  ratio = items_s['ours'] / items_s['ref']
  result = {
      'benchmark': 'lm_eval_backend', 'dataset': _DATASET.value, 'dtype': 'float32',
      'reference': 'lm_eval_hf', 'items': n, 'requests': ours['requests'],
      'num_fewshot': _NUM_FEWSHOT.value, 'fewshot_sampler': 'first_n',
      'mean_context_chars': round(ours['context_chars'], 1),
      'ref_batch_size': _REF_BATCH_SIZE.value, 'repeats': _REPEATS.value,
      'ours_items_s': round(items_s['ours'], 3), 'ref_items_s': round(items_s['ref'], 3),
      'ratio': round(ratio, 2), 'target_ratio': _TARGET,
      'meets_target': bool(ratio >= _TARGET),
      'ours_loglikelihood_items_s': round(ll_items_s['ours'], 3),
      'ref_loglikelihood_items_s': round(ll_items_s['ref'], 3),
      'loglikelihood_ratio': round(ll_items_s['ours'] / ll_items_s['ref'], 2),
      'ours_s': [round(s, 2) for s in ours['seconds']],
      'ref_s': [round(s, 2) for s in ref['seconds']],
      'ours_warmup_s': round(ours['warmup_s'], 1),
      'max_abs_logprob_diff': float(diff.max()),
      'ours_acc': ours['acc'], 'ref_acc': ref['acc'],
      'machine': common.machine(),
  }
  logging.info('ours %.2f items/s, reference %.3f items/s, ratio %.2f (target >= %g)',
               items_s['ours'], items_s['ref'], ratio, _TARGET)
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
