r"""Greedy generation with the real Gemma 3 270M: ours vs transformers `generate`.

The same token ids go to our `decode.Decoder` (`runtime.decoder` of the
embedded GGUF in float32 on the default mesh) and to transformers'
`generate` (the same GGUF, float32, greedy, `max_new_tokens` new tokens, EOS
stops a row on both sides), in one process. Two cases, one JSON line each:

  short   `--batch` prompts of `--prompt_tokens` tokens (BOS included; the
          first tokens of the `reversals` training documents), one batch,
          `--new_tokens` new tokens each; target ratio >= 2;
  shared  a `--context_tokens` shared context (training documents joined as
          the ICL evaluation joins them) and `--continuations` prompts (the
          first tokens of other documents) after it, `--new_tokens` each.
          Ours encodes the context once and decodes `--shared_batch` rows at
          a time; transformers' `generate` has no shared prefix, so each
          sequence is the whole context + prompt, `--ref_batch` at a time,
          timed on the first `--ref_continuations` only (its cost per
          sequence is constant; `ref_timed` in the JSON). Target ratio >= 10.

  flock /tmp/heavy.lock python benchmarks/decode.py

ratio = ours / reference new tokens per second (> 1: ours is faster). Ours:
one untimed warm-up call compiles every shape, then `--repeats` (shared:
`--shared_repeats`) timed calls
end to end (tokenization, the context's encoding, prefill, decoding, ids on
the host). transformers: one untimed warm-up `generate` (one sequence, 2 new tokens),
then as many timed calls.
Agreement: the share of sequences whose greedy ids are equal, and of new
tokens equal before the first difference (float32 on both sides, so
near-ties can break differently).

Memory bandwidth (short): a decode step of `--batch` rows reads every weight once
(the float32 embedding table alone is 0.67 GB for the logits), so the
machine's memory bandwidth bounds how fast either side can decode. Ours
reads the table through its bfloat16 copy in greedy steps (decode.py:
`greedy_screened`; the tokens are float32 argmax's), and the table too in
the steps that projected every token (shares of the steps:
`screened_steps`, `full_projection_steps`). `bandwidth` in the JSON:
`weights_gb` (every weight, float32) and `ours_step_gb` (what our average
step reads), `read_gb_s` the rate at which this machine reads the float32
table in its projection for --batch rows (jitted, best of 5: a rate, not
what a screened step runs), and
each side's weight bytes per new token times its new tokens per second
(`ours_gb_s`, `ref_gb_s`; prefill and tokenization counted as decoding, so
a lower bound) and `ratio_at_read_gb_s`, the ratio ours would reach if its
whole step ran at `read_gb_s`.
"""

import json
import statistics
from typing import Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import common
from icl_iwl import config_lib
from icl_iwl import decode
from icl_iwl import runtime
from icl_iwl.data import datasets
from icl_iwl.eval import options as eval_options
from icl_iwl.train import mfu

_CASES = flags.DEFINE_list('cases', ['short', 'shared'], 'short, shared.')
_BATCH = flags.DEFINE_integer('batch', 8, 'short: prompts (one batch).')
_PROMPT_TOKENS = flags.DEFINE_integer('prompt_tokens', 32, 'short: prompt tokens.')
_NEW_TOKENS = flags.DEFINE_integer('new_tokens', 64, 'New tokens per sequence.')
_CONTEXT_TOKENS = flags.DEFINE_integer('context_tokens', 3000,
                                       'shared: tokens of shared context.')
_CONTINUATIONS = flags.DEFINE_integer('continuations', 32,
                                      'shared: prompts after the context.')
_SHARED_BATCH = flags.DEFINE_integer('shared_batch', 32, 'shared: our rows per batch.')
_REF_CONTINUATIONS = flags.DEFINE_integer(
    'ref_continuations', 4, 'shared: continuations transformers is timed on.')
_REF_BATCH = flags.DEFINE_integer('ref_batch', 4, 'shared: transformers batch.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'short: timed calls per side (median).')
_SHARED_REPEATS = flags.DEFINE_integer('shared_repeats', 1,
                                       'shared: timed calls per side (median).')

_TARGETS = {'short': 2.0, 'shared': 10.0}


def _documents() -> list[str]:
  return [d['text'] for d in
          datasets.resolve('reversals', 'full').documents('train')]


def _prompts(tok, texts: Sequence[str], n: int, tokens: int) -> list[str]:
  """`n` prompts of exactly `tokens` ids with BOS (that round-trip)."""
  out = []
  for text in texts:
    ids = tok.encode(text)[:tokens - 1]
    prompt = tok.decode(ids)
    if len(ids) == tokens - 1 and tok.encode(prompt) == ids:
      out.append(prompt)
    if len(out) == n:
      return out
  raise ValueError(f'Only {len(out)} documents give {tokens}-token prompts.')


def _context(tok, documents: Sequence[str], budget: int) -> str:
  separator = eval_options.IclConfig().separator
  chosen, used = [], 1
  for doc in documents:
    cost = len(tok.encode(doc + separator))
    if used + cost > budget:
      break
    chosen.append(doc)
    used += cost
  return separator.join(chosen) + separator


def _reference(model, tok, prompts: Sequence[str], prefix: str, batch: int,
               new: int) -> list[list[int]]:
  """transformers' greedy ids for BOS + prefix + prompt, `batch` at a time
  (left-padded: transformers' way to batch prompts of several lengths)."""
  import torch  # pylint: disable=g-import-not-at-top
  out = []
  prefix_ids = tok.encode(prefix, add_bos=True)
  for first in range(0, len(prompts), batch):
    rows = [prefix_ids + tok.encode(p) for p in prompts[first:first + batch]]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.inference_mode():
      gen = model.generate(ids, attention_mask=mask, max_new_tokens=new,
                           do_sample=False, eos_token_id=tok.eos_id,
                           pad_token_id=tok.pad_id)
    for row in gen[:, width:].tolist():
      out.append(row[:row.index(tok.eos_id)] if tok.eos_id in row else row)
  return out


def _agreement(ours: Sequence[list[int]], ref: Sequence[list[int]]) -> dict:
  equal_prefix = []
  for a, b in zip(ours, ref):
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
      k += 1
    equal_prefix.append(k / max(len(b), 1))
  return {'sequences_equal': float(np.mean([a == b for a, b in zip(ours, ref)])),
          'tokens_equal_before_first_difference': float(np.mean(equal_prefix))}


def _case(name: str, decoder: decode.Decoder, torch_model, prompts: list[str],
          prefix: str, ref_prompts: list[str], ref_batch: int,
          repeats: int) -> dict:
  tok, new = decoder.tok, _NEW_TOKENS.value
  options = decode.Options(max_new_tokens=new)
  run = lambda: decoder.generate_ids(prompts, options, prefix=prefix)  # noqa: E731
  ours, warmup = common.timed(run)
  ours_s = [common.timed(run)[1] for _ in range(repeats)]
  ref_run = lambda: _reference(torch_model, tok, ref_prompts, prefix, ref_batch, new)  # noqa: E731
  common.timed(lambda: _reference(torch_model, tok, ref_prompts[:1], prefix, 1, 2))
  ref, first_ref_s = common.timed(ref_run)
  ref_s = [first_ref_s] + [common.timed(ref_run)[1]
                           for _ in range(repeats - 1)]
  ours_tok_s = sum(map(len, ours)) / statistics.median(ours_s)
  ref_tok_s = sum(map(len, ref)) / statistics.median(ref_s)
  return {
      'benchmark': 'decode', 'case': name, 'dtype': 'float32',
      'reference': 'transformers.generate',
      'sequences': len(prompts), 'ref_timed': len(ref_prompts),
      'prompt_tokens': len(tok.encode(prompts[0], add_bos=True)),
      'context_tokens': len(tok.encode(prefix)) if prefix else 0,
      'new_tokens': new, 'ours_batch': decoder.batch_size, 'ref_batch': ref_batch,
      'ours_tok_s': round(ours_tok_s, 2), 'ref_tok_s': round(ref_tok_s, 2),
      'ratio': round(ours_tok_s / ref_tok_s, 3), 'target': _TARGETS[name],
      'ours_s': [round(s, 2) for s in ours_s], 'ref_s': [round(s, 2) for s in ref_s],
      'ours_warmup_s': round(warmup, 2),
      **_agreement(ours[:len(ref)], ref),
  }


def _bandwidth(rt: runtime.Runtime, decoder: decode.Decoder, result: dict) -> dict:
  """Weight bytes a decode step reads, and the rates (see the module doc)."""
  table = rt.params['embedder']['input_embedding']
  h = jnp.ones((result['ours_batch'], table.shape[1]), table.dtype)
  logits = jax.jit(lambda h, t: jnp.einsum('BD,VD->BV', h, t))
  gb = sum(x.nbytes for x in jax.tree.leaves(rt.params)) / 1e9
  read = table.nbytes / 1e9 / mfu.best_seconds(lambda: logits(h, table), 5)
  # A step reads every weight once and makes one token per row: the table
  # when it projects every token, its bfloat16 copy when screened (both
  # when a screened step is left unproven).
  steps = max(decoder.steps['all'], 1)
  screened, full = (decoder.steps[k] / steps for k in ('screened', 'full'))
  table_gb = table.nbytes / 1e9
  step_gb = gb - table_gb + screened * table_gb / 2 + full * table_gb
  ours, ref = step_gb / result['ours_batch'], gb / result['ref_batch']
  return {'weights_gb': round(gb, 3), 'ours_step_gb': round(step_gb, 3),
          'screened_steps': round(screened, 4), 'full_projection_steps': round(full, 4),
          'read_gb_s': round(read, 2),
          'ours_gb_s': round(result['ours_tok_s'] * ours, 2),
          'ref_gb_s': round(result['ref_tok_s'] * ref, 2),
          'ratio_at_read_gb_s': round(read / ours / result['ref_tok_s'], 3)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = config_lib.base('score')  # The embedded 270M, f32, default mesh.
  rt = runtime.load(config)
  tok = rt.tok
  torch_model = common.torch_model()
  documents = _documents()
  machine = common.machine()
  for name in _CASES.value:
    if name == 'short':
      prompts = _prompts(tok, documents, _BATCH.value, _PROMPT_TOKENS.value)
      decoder = runtime.decoder(config, rt, batch_size=_BATCH.value)
      result = _case(name, decoder, torch_model, prompts, '', prompts,
                     _BATCH.value, _REPEATS.value)
      result['bandwidth'] = _bandwidth(rt, decoder, result)
    elif name == 'shared':
      context = _context(tok, documents, _CONTEXT_TOKENS.value)
      rest = documents[len(context.split(eval_options.IclConfig().separator)):]
      prompts = _prompts(tok, rest, _CONTINUATIONS.value, 8)
      decoder = runtime.decoder(config, rt, batch_size=_SHARED_BATCH.value)
      result = _case(name, decoder, torch_model, prompts, context,
                     prompts[:_REF_CONTINUATIONS.value], _REF_BATCH.value,
                     _SHARED_REPEATS.value)
    else:
      raise app.UsageError(f'Unknown case {name!r}; use {sorted(_TARGETS)}.')
    result['machine'] = machine
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
