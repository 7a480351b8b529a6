r"""Multiple-choice scoring of the real Gemma 3 270M: ours vs lm-eval-harness.

The same items are scored by our jitted `eval.scoring.Scorer` and by
lm-eval-harness (`lm_eval.models.huggingface.HFLM`, the HF backend, driven
through its `loglikelihood` requests: one per (item, choice), context =
item.context + item.prompt, continuation = the choice), both in float32, in
one process. Two cases:

  short  probes of the `reversals` test splits as they are (~11 tokens per
         request: BOS, a short prompt, one of two short choices);
  icl    the same kind of probes after ~`--context_tokens` tokens of training
         documents (the train split, shuffled, joined as `eval/icl.py` joins
         them), the SAME context string for every item, so it is shared: one
         ICL subsample of the paper protocol, every probe in one context.

  flock /tmp/heavy.lock python benchmarks/scoring.py \
      --num_items=64 --num_icl_items=128 --context_tokens=3700

Logs go to stderr; the last stdout line is one JSON object:
  {"benchmark": "scoring", "dtype": "float32", "reference": "lm_eval", ...,
   "short": {"items": 64, "ours_items_s": ..., "ref_items_s": ...,
             "ratio": ..., "max_abs_logprob_diff": ..., ...},
   "icl": {...}, "machine": {...}}
ratio = ours / reference items per second (> 1: ours is faster); the targets
are ratio >= 2 (short) and >= 100 (icl, with >= 100 items).

lm-eval shares nothing between requests, so its cost per item is constant at
a given context length: in the icl case it is timed on the first
`--ref_icl_items` items only (`ref_items_timed` in the JSON; agreement is
measured on those), ours on all of them.

Ours: the scorer the jobs use (`runtime.scorer` of the embedded GGUF in
float32 on the default mesh, `--rows_per_batch` rows). One untimed warm-up `score(items)` on the
same items compiles every shape (`ours_warmup_s`, of which `ours_compile_s` =
warm-up minus the median timed run); each timed `score(items)` is end to end
(tokenization, packing, the shared context's encoding, the scoring calls,
results on the host). The Scorer keeps the last shared context's key/value
memory between calls, so it is dropped before each timed run
(`set_params(scorer.params)`): every timed run encodes the context once.

Reference (`--reference=lm_eval`): lm-eval-harness with the preloaded
transformers model (`AutoModelForCausalLM.from_pretrained(dir,
gguf_file=name, dtype=float32)`, as tests/test_gemma3_270m.py loads it) and
transformers' tokenizer from the same GGUF, `add_bos_token=True` (Gemma needs
its BOS; ours adds it too), default `logits_cache` (reuse for one-token
continuations; these choices are longer) and log-softmax in float32 (its
default). Every request is a full forward over context + prompt + choice with
all-vocabulary logits, as lm-eval does; it does not share the context across
requests. `--reference=hf_loop`: the equivalent plain transformers loop on our
token ids (right-padded batches, log_softmax, gather); `auto` (default) uses
lm_eval if it imports, else hf_loop (the JSON says which ran). One untimed
warm-up request, then `--repeats` timed runs of all requests (short) or
`--icl_ref_repeats` (icl: slow, default 1). items/s = items / median seconds.

Reference batch sizes: `--ref_batch_size` (short) and `--ref_icl_batch_size`
(icl). lm-eval materializes float32 logits and their log-softmax for every
position of the batch: [B, T, 262144] x 4 bytes x 2 = 4.2 GB per 2k-token row,
hence 1 for icl by default.

Agreement: max |our logprob - reference logprob| over all choices, and how
many requests the two tokenize differently (ours encodes [BOS] + context,
prompt.rstrip() and whitespace + choice separately, then concatenates; lm-eval
encodes context + prompt + choice whole and splits off the continuation
tokens; these only differ if a token merges across a boundary). torch's float32
log_softmax over 262k logits is off by up to ~6e-5 per token (JAX's by ~1e-7;
see tests/test_gemma3_270m.py), so expect diffs of a few 1e-4;
`--ref_softmax_dtype=float64` takes that part out (timings then favour ours).

Full run: ~15-20 minutes on a 2-core CPU, most of it the reference's icl
case (8 items x 2 choices x ~3.7k tokens of full forwards).
"""

import dataclasses
import gc
import json
import random
import statistics
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import jax.numpy as jnp
import numpy as np

import common  # benchmarks/common.py: a script's own directory is on sys.path.

from icl_iwl import config_lib
from icl_iwl import paths
from icl_iwl import runtime
from icl_iwl.data import datasets
from icl_iwl.data import tokenizer as tokenizer_lib
from icl_iwl.eval import icl
from icl_iwl.eval import packing
from icl_iwl.eval import probes
from icl_iwl.eval import scoring
from icl_iwl.eval.packing import Item

_CASES = flags.DEFINE_list('cases', ['short', 'icl'], 'Cases to run: short, icl.')
_DATASET = flags.DEFINE_string('dataset', 'reversals',
                               'Probe dataset (its test splits, config full).')
_NUM_ITEMS = flags.DEFINE_integer(
    'num_items', 64, 'Items of the short case (split evenly over the test '
    'splits, the first of each).')
_NUM_ICL_ITEMS = flags.DEFINE_integer(
    'num_icl_items', 128, 'Items of the icl case (the same kind of probes).')
_REF_ICL_ITEMS = flags.DEFINE_integer(
    'ref_icl_items', 8, 'Of those, how many the reference is timed on (its '
    'cost per item is constant: it shares nothing).')
_CONTEXT_TOKENS = flags.DEFINE_integer(
    'context_tokens', 3700, 'Budget of the shared icl context in our tokens '
    '(BOS included): shuffled train documents are added while they fit.')
_REFERENCE = flags.DEFINE_enum(
    'reference', 'auto', ['auto', 'lm_eval', 'hf_loop'],
    'lm_eval: lm-eval-harness HFLM.loglikelihood; hf_loop: a plain '
    'transformers loop; auto: lm_eval if it imports, else hf_loop.')
_REF_BATCH_SIZE = flags.DEFINE_integer(
    'ref_batch_size', 16, 'Reference batch size (requests per forward), short.')
_REF_ICL_BATCH_SIZE = flags.DEFINE_integer(
    'ref_icl_batch_size', 1, 'Reference batch size, icl (~4 GB of logits per '
    '2k-token request).')
_REF_SOFTMAX_DTYPE = flags.DEFINE_enum(
    'ref_softmax_dtype', 'float32', ['float32', 'float64'],
    "lm-eval's softmax_dtype (its default: the logits' float32); float64 "
    "shows how much of the logprob diff is torch's float32 log_softmax.")
_ROWS_PER_BATCH = flags.DEFINE_integer(
    'rows_per_batch', 8, "Our ScorerConfig.rows_per_batch (the jobs' default).")
_REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Timed runs of ours (both cases) and of the reference '
    '(short); the median is reported.')
_ICL_REF_REPEATS = flags.DEFINE_integer(
    'icl_ref_repeats', 1, 'Timed runs of the reference in the icl case.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the documents shuffle.')
_TOLERANCE = flags.DEFINE_float(
    'tolerance', 1e-3, 'Max |logprob diff| expected between ours and the '
    'reference; exceeding it is logged as an error (timings still reported).')

_TARGETS = {'short': 2.0, 'icl': 100.0}  # Wanted ratio = ours / reference.


@dataclasses.dataclass(frozen=True)
class _Side:
  """One side's result on one case: log-likelihoods and timings."""

  logprob: list[list[float]]  # [item][choice].
  seconds: list[float]  # Timed runs.
  extra: dict[str, Any]


def _probe_items(n: int, context: str = '') -> list[Item]:
  """The first ~n / splits probes of each test split of the dataset, n total."""
  dataset = datasets.resolve(_DATASET.value, 'full')
  splits = dataset.probe_splits()
  if not splits:
    raise app.UsageError(f'{_DATASET.value!r} has no multiple-choice splits.')
  per_split = -(-n // len(splits))
  items = []
  for split in splits:
    records = dataset.records(split, per_split)
    items += probes.items(records, context)
  if len(items) < n:
    raise app.UsageError(f'{_DATASET.value!r} has only {len(items)} probes.')
  return items[:n]


def _icl_context(tok: tokenizer_lib.Tokenizer, budget: int) -> str:
  """Shuffled train documents, joined as eval/icl.py does, within `budget`."""
  config = icl.IclConfig()
  texts = [r['text'] for r in datasets.resolve(_DATASET.value, 'full').records('train')]
  random.Random(_SEED.value).shuffle(texts)
  used = len(tok.encode(config.template.format(documents=''), add_bos=True))
  sep = len(tok.encode(config.separator))
  chosen = []
  for text, ids in zip(texts, tok.encode_batch(texts)):
    if used + len(ids) + sep > budget:
      break
    chosen.append(text)
    used += len(ids) + sep
  context = config.template.format(documents=config.separator.join(chosen))
  # Per-document counts are an estimate (merges across a join); trim if over.
  while len(tok.encode(context, add_bos=True)) > budget and chosen:
    chosen.pop()
    context = config.template.format(documents=config.separator.join(chosen))
  return context


def _our_ids(tok: tokenizer_lib.Tokenizer, item: Item
             ) -> list[tuple[list[int], list[int]]]:
  """(prefix, choice) token ids of each choice, as the Scorer encodes them."""
  prefix = tok.encode(item.context, add_bos=True) + tok.encode(item.prompt.rstrip())
  return [(prefix, tok.encode(c)) for c in packing.choice_texts(item)]


def _ours(scorer: scoring.Scorer, items: Sequence[Item]) -> _Side:
  """Times `scorer.score(items)`, compile excluded (see the module doc)."""
  compiled_before = scorer.num_compiled
  scorer.set_params(scorer.params)  # Drops any cached shared-context memory.
  _, warmup_s = common.timed(lambda: scorer.score(items))
  logging.info('ours: warm-up (compiles) %.1fs, %d new shapes', warmup_s,
               scorer.num_compiled - compiled_before)
  seconds, scores = [], None
  for i in range(_REPEATS.value):
    scorer.set_params(scorer.params)  # Each timed run encodes the context.
    scores, s = common.timed(lambda: scorer.score(items))
    seconds.append(s)
    logging.info('ours: repeat %d %.2fs', i, s)
  return _Side(
      logprob=[list(s.logprob) for s in scores], seconds=seconds,
      extra={'ours_warmup_s': round(warmup_s, 2),
             'ours_compile_s': round(warmup_s - statistics.median(seconds), 2),
             'ours_num_compiled': scorer.num_compiled - compiled_before,
             'ours_rows_per_batch': scorer.rows})


def _hf_tokenizer():
  """transformers' Gemma tokenizer from the embedded GGUF's metadata."""
  import transformers  # pylint: disable=g-import-not-at-top

  path = paths.embedded_gguf()
  return transformers.AutoTokenizer.from_pretrained(str(path.parent),
                                                    gguf_file=path.name)


def _lm_eval_available() -> bool:
  try:
    import lm_eval.models.huggingface  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    logging.warning('lm-eval does not import (%s); using the hf_loop reference.', e)
    return False
  return True


def _group(flat: Sequence[float], items: Sequence[Item]) -> list[list[float]]:
  """Per-request values (items x choices, in order) as [item][choice]."""
  flat, out = iter(flat), []
  for item in items:
    out.append([next(flat) for _ in item.choices])
  return out


def _time_reference(run: Callable[[Sequence[int]], list[float]], n: int,
                    items: Sequence[Item], repeats: int) -> _Side:
  """Warm-up on request 0, then `repeats` timed runs over all `n` requests."""
  _, warmup_s = common.timed(lambda: run([0]))
  logging.info('reference: warm-up (1 request) %.1fs', warmup_s)
  seconds, flat = [], None
  for i in range(repeats):
    flat, s = common.timed(lambda: run(range(n)))
    seconds.append(s)
    logging.info('reference: repeat %d %.2fs', i, s)
  return _Side(logprob=_group(flat, items), seconds=seconds,
               extra={'ref_warmup_s': round(warmup_s, 2)})


def _lm_eval(torch_model, hf_tok, tok: tokenizer_lib.Tokenizer,
             items: Sequence[Item], batch_size: int, repeats: int) -> _Side:
  """lm-eval-harness HFLM.loglikelihood over every (item, choice)."""
  from lm_eval.api.instance import Instance  # pylint: disable=g-import-not-at-top
  from lm_eval.models.huggingface import HFLM  # pylint: disable=g-import-not-at-top

  softmax_dtype = _REF_SOFTMAX_DTYPE.value
  lm = HFLM(pretrained=torch_model, tokenizer=hf_tok, batch_size=batch_size,
            add_bos_token=True,
            softmax_dtype=None if softmax_dtype == 'float32' else softmax_dtype)
  pairs = [(item.context + item.prompt, choice)
           for item in items for choice in item.choices]
  requests = [Instance(request_type='loglikelihood', doc={}, arguments=pair,
                       idx=i) for i, pair in enumerate(pairs)]

  # What lm-eval feeds the model (context ids, continuation ids), against
  # what ours does.
  ours = [pc for item in items for pc in _our_ids(tok, item)]
  theirs = [lm._encode_pair(*pair) for pair in pairs]  # pylint: disable=protected-access
  same = [(list(p), list(c)) == (list(b), list(d))
          for (p, c), (b, d) in zip(ours, theirs)]
  if not all(same):
    logging.warning('%d of %d requests are tokenized differently by lm-eval; '
                    'first: %r', same.count(False), len(same),
                    pairs[same.index(False)])

  def run(indices):
    out = lm.loglikelihood([requests[i] for i in indices], disable_tqdm=True)
    return [logprob for logprob, _ in out]

  side = _time_reference(run, len(requests), items, repeats)
  side.extra.update({
      'ref_batch_size': batch_size,
      'ref_tokens_per_request': round(float(np.mean(
          [len(b) + len(c) for b, c in theirs])), 1),
      'token_mismatches': same.count(False),
      'same_tokens': same})
  return side


def _hf_loop(torch_model, tok: tokenizer_lib.Tokenizer, items: Sequence[Item],
             batch_size: int, repeats: int) -> _Side:
  """A plain transformers loop on our token ids: forward, log_softmax, gather."""
  import torch  # pylint: disable=g-import-not-at-top

  def run(indices):
    # Tokenized inside the timed run, as lm-eval and ours do.
    requests = [pc for item in items for pc in _our_ids(tok, item)]
    indices = sorted(indices, key=lambda i: -sum(map(len, requests[i])))
    out = {}
    for start in range(0, len(indices), batch_size):
      chunk = indices[start:start + batch_size]
      # The last choice token predicts nothing; right padding changes nothing
      # before it (causal).
      rows = [(requests[i][0] + requests[i][1])[:-1] for i in chunk]
      width = max(map(len, rows))
      ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
      with torch.inference_mode():
        logits = torch_model(ids, use_cache=False).logits
        logp = torch.log_softmax(
            logits, -1, dtype=getattr(torch, _REF_SOFTMAX_DTYPE.value))
      for row, i in enumerate(chunk):
        prefix, choice = requests[i]
        at = torch.arange(len(prefix) - 1, len(prefix) - 1 + len(choice))
        out[i] = float(logp[row, at, torch.tensor(choice)].sum())
    return [out[i] for i in sorted(out)]

  requests = [pc for item in items for pc in _our_ids(tok, item)]
  side = _time_reference(run, len(requests), items, repeats)
  side.extra.update({
      'ref_batch_size': batch_size,
      'ref_tokens_per_request': round(float(np.mean(
          [len(p) + len(c) for p, c in requests])), 1),
      'token_mismatches': 0,  # Our ids by construction.
      'same_tokens': [True] * len(requests)})
  return side


def _case(name: str, items: list[Item], scorer: scoring.Scorer,
          tok: tokenizer_lib.Tokenizer, reference: str, torch_model, hf_tok
          ) -> dict[str, Any]:
  """Both sides on one case's items; speeds and agreement."""
  num_choices = sum(len(item.choices) for item in items)
  logging.info('%s: %d items, %d choices, context %d tokens', name, len(items),
               num_choices, len(tok.encode(items[0].context, add_bos=True)))
  ours = _ours(scorer, items)
  gc.collect()
  batch_size = (_REF_ICL_BATCH_SIZE if name == 'icl' else _REF_BATCH_SIZE).value
  repeats = (_ICL_REF_REPEATS if name == 'icl' else _REPEATS).value
  ref_items = items[:_REF_ICL_ITEMS.value] if name == 'icl' else items
  if reference == 'lm_eval':
    ref = _lm_eval(torch_model, hf_tok, tok, ref_items, batch_size, repeats)
  else:
    ref = _hf_loop(torch_model, tok, ref_items, batch_size, repeats)
  gc.collect()

  same_tokens = ref.extra.pop('same_tokens')
  diff = np.abs(np.concatenate([np.subtract(a, b) for a, b in
                                zip(ours.logprob, ref.logprob)]))  # ref_items.
  same = np.asarray(same_tokens)
  agree = np.mean([np.argmax(a) == np.argmax(b)
                   for a, b in zip(ours.logprob, ref.logprob)])
  logging.info('%s: max |logprob diff| %.3g (same tokens: %.3g), prediction '
               'agreement %.4f', name, diff.max(),
               diff[same].max() if same.any() else float('nan'), agree)
  if diff.max() > _TOLERANCE.value:
    logging.error('%s: logprobs differ by %.3g > %.3g', name, diff.max(),
                  _TOLERANCE.value)
  ours_items_s = len(items) / statistics.median(ours.seconds)
  ref_items_s = len(ref_items) / statistics.median(ref.seconds)
  ratio = ours_items_s / ref_items_s
  logging.info('%s: ours %.2f items/s, reference %.3f items/s, ratio %.2f '
               '(target >= %g)', name, ours_items_s, ref_items_s, ratio,
               _TARGETS[name])
  return {
      'items': len(items),
      'ref_items_timed': len(ref_items),
      'choices': num_choices,
      'context_tokens': len(tok.encode(items[0].context, add_bos=True)),
      'ours_items_s': round(ours_items_s, 3),
      'ref_items_s': round(ref_items_s, 4),
      'ratio': round(ratio, 2),
      'target_ratio': _TARGETS[name],
      'meets_target': bool(ratio >= _TARGETS[name]),
      'ours_s': [round(s, 3) for s in ours.seconds],
      'ref_s': [round(s, 3) for s in ref.seconds],
      **ours.extra,
      **ref.extra,
      'max_abs_logprob_diff': float(diff.max()),
      'max_abs_logprob_diff_same_tokens': (
          float(diff[same].max()) if same.any() else None),
      'mean_abs_logprob_diff': float(diff.mean()),
      'prediction_agreement': float(agree),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cases = _CASES.value
  if not cases or set(cases) - set(_TARGETS):
    raise app.UsageError(f'--cases must be a subset of {sorted(_TARGETS)}.')
  reference = _REFERENCE.value
  if reference == 'auto':
    reference = 'lm_eval' if _lm_eval_available() else 'hf_loop'

  config = config_lib.base('score')  # The embedded 270M, f32, default mesh.
  config.scorer = config_lib.scorer(rows_per_batch=_ROWS_PER_BATCH.value)
  rt = runtime.load(config)
  assert rt.model.dtype == jnp.float32, rt.model.dtype
  scorer, tok = runtime.scorer(config, rt), rt.tok
  torch_model = common.torch_model()
  hf_tok = _hf_tokenizer() if reference == 'lm_eval' else None
  logging.info('reference %s, torch attention implementation %r', reference,
               torch_model.config._attn_implementation)  # pylint: disable=protected-access

  result = {'benchmark': 'scoring', 'dataset': _DATASET.value,
            'dtype': 'float32', 'reference': reference,
            'ref_softmax_dtype': _REF_SOFTMAX_DTYPE.value,
            'repeats': _REPEATS.value, 'icl_ref_repeats': _ICL_REF_REPEATS.value}
  for case in cases:
    if case == 'short':
      items = _probe_items(_NUM_ITEMS.value)
    else:
      context = _icl_context(tok, _CONTEXT_TOKENS.value)
      items = _probe_items(_NUM_ICL_ITEMS.value, context)
    result[case] = _case(case, items, scorer, tok, reference, torch_model, hf_tok)
  result['machine'] = common.machine()
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
