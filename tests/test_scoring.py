"""The multiple-choice scorer against a straightforward reference computation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl.data import tokenizer
from icl_iwl.eval import packing
from icl_iwl.eval import scoring
from icl_iwl.eval.packing import Item
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import presets
from icl_iwl.sharding import mesh as mesh_lib

_CONTEXT = 'Femp are more dangerous than glon. Troff are bigger than yomp. ' * 12


@functools.cache
def _setup():
  model = gemma.Transformer(presets.get('tiny'))
  params = jax.jit(lambda: jax.tree.map(
      lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape),
      gemma.init_params(model, jax.random.key(0))))()
  return model, params, tokenizer.load_default()


def _items(context=''):
  return [
      Item('The capital of France is', (' Paris', ' Rome', ' a big city'), 0,
           context=context, id='a'),
      Item('2 + 2 =', (' 4', ' five'), 1, context=context, id='b'),
      Item('glon are ', ('less dangerous than femp.', 'more dangerous than femp.'),
           0, context=context, id='c'),
      Item('', (' Hello', ' World'), None, context=context, id='d'),
  ]


@functools.cache
def _forward_rows(model: gemma.Transformer, length: int, rows: int):
  """jit: (params, ids [1, length], at [rows]) -> log_softmax over the
  vocabulary of the logits at those positions, [rows, V], from a full
  forward of ids with no cache (right padding is harmless: causal)."""

  def f(params, ids, at):
    hidden, _ = model.apply({'params': params}, ids, jnp.arange(length)[None],
                            cache.causal_mask(jnp.ones_like(ids)), return_hidden=True)
    return jax.nn.log_softmax(model.apply({'params': params}, hidden[0, at],
                                          method=model.logits))

  return jax.jit(f)


def reference_logp(ids: list[int], at, model: gemma.Transformer | None = None,
                   params=None) -> np.ndarray:
  """log p(. | ids[:k + 1]) for each k in `at`: [len(at), V], float32, by
  `model` with `params` (default: `_setup()`'s tiny model); ids right-padded
  to 64, 256 or 512 tokens, `at` to a multiple of 16."""
  if model is None:
    model, params, _ = _setup()
  length = next(n for n in (64, 256, 512) if n >= len(ids))
  rows = -(-len(at) // 16) * 16
  out = _forward_rows(model, length, rows)(
      params, jnp.asarray([np.pad(ids, (0, length - len(ids)))]),
      jnp.asarray(np.pad(at, (0, rows - len(at)))))
  return np.asarray(out)[:len(at)]


@functools.cache
def _reference(item: Item) -> list[float]:
  """Full forward over [BOS] + context + prompt + choice; log_softmax; gather."""
  _, _, tok = _setup()
  prefix = tok.encode(item.context, add_bos=True) if item.context else [tok.bos_id]
  prefix = prefix + tok.encode(item.prompt.rstrip())
  out = []
  for choice in packing.choice_texts(item):
    ids = tok.encode(choice)
    logp = reference_logp(prefix + ids, np.arange(len(ids)) + len(prefix) - 1)
    out.append(float(logp[np.arange(len(ids)), ids].astype(np.float64).sum()))
  return out


def _scorer(mesh=None, **config):
  model, params, tok = _setup()
  return scoring.Scorer(model, params, tok, scoring.ScorerConfig(**config), mesh)


@pytest.mark.parametrize('context', ['', _CONTEXT])
def test_scores_equal_the_reference(context):
  items = _items(context)
  got = _scorer().score(items)
  for item, score in zip(items, got):
    np.testing.assert_allclose(score.logprob, _reference(item), atol=1e-4, rtol=0)
    assert score.num_tokens == tuple(
        len(_setup()[2].encode(c)) for c in packing.choice_texts(item))


def test_shared_context_equals_the_context_inlined_in_each_row():
  items = _items(_CONTEXT)
  cached = _scorer(context_chunk=64, logit_chunk=8).score(items)  # Several chunks.
  inline = _scorer(share_context=False, buckets=(512,)).score(items)
  for a, b in zip(cached, inline):
    np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-4, rtol=0)


def test_eight_devices_equal_one_and_shapes_compile_a_handful_of_times():
  rng = np.random.default_rng(0)
  words = 'femp glon troff yomp are more less dangerous than all some no'.split()
  items = [Item(' '.join(rng.choice(words, rng.integers(1, 30))),
                tuple(' ' + ' '.join(rng.choice(words, rng.integers(1, 6)))
                      for _ in range(rng.integers(2, 5))), 0, id=str(i))
           for i in range(60)]
  sharded = _scorer(mesh_lib.make_mesh([('data', 4), ('fsdp', 2), ('tensor', 1)]))
  single = _scorer(mesh_lib.make_mesh(mesh_lib.DEFAULT_MESH, jax.devices()[:1]))
  a, b = sharded.score(items), single.score(items)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x.logprob, y.logprob, atol=1e-4, rtol=0)
  assert sharded.num_compiled <= 4
  np.testing.assert_allclose(a[7].logprob, _reference(items[7]), atol=1e-4, rtol=0)


def test_rules_and_accuracy():
  s = scoring.ItemScore('x', 1, logprob=(-3.0, -4.0), num_tokens=(1, 4),
                        num_chars=(2, 10))
  assert s.prediction('sum') == 0 and s.prediction('mean') == 1
  assert s.prediction('char') == 1 and s.correct('mean')
  assert scoring.accuracy([s]) == {'sum': 0.0, 'mean': 1.0, 'char': 1.0}


def test_tree_mask_choices_see_the_prompt_not_each_other():
  segments = jnp.array([[1, 1, 1, 1, 1, 2, 2, 0]])
  branches = jnp.array([[0, 0, 1, 2, 2, 0, 1, 0]])
  mask = np.asarray(scoring.tree_mask(segments, branches)[0]).astype(int)
  np.testing.assert_array_equal(mask, [
      [1, 0, 0, 0, 0, 0, 0, 0],
      [1, 1, 0, 0, 0, 0, 0, 0],
      [1, 1, 1, 0, 0, 0, 0, 0],
      [1, 1, 0, 1, 0, 0, 0, 0],
      [1, 1, 0, 1, 1, 0, 0, 0],
      [0, 0, 0, 0, 0, 1, 0, 0],
      [0, 0, 0, 0, 0, 1, 1, 0],
      [0, 0, 0, 0, 0, 0, 0, 0],
  ])


def test_bad_items_fail_clearly():
  with pytest.raises(ValueError, match="'q' has no choices"):
    Item('prompt', (), id='q')
  with pytest.raises(ValueError, match="'q': answer 2 is out of range for 2 choices"):
    Item('prompt', (' a', ' b'), 2, id='q')
  long = Item('word ' * 100, (' a', ' b'), 0, id='long')
  with pytest.raises(ValueError, match="Item 'long' needs 1[0-9]{2} tokens .* largest bucket is 32"):
    _scorer(buckets=(16, 32)).score([long])
  with pytest.raises(ValueError, match="too_long must be"):
    _scorer(too_long='ignore')


def test_truncate_left_keeps_bos_and_the_end_of_the_prompt():
  _, _, tok = _setup()
  end = ' The capital of France is'
  long = Item('word' * 100 + end, (' Paris', ' Rome'), 0, id='x')
  got = _scorer(buckets=(32,), too_long='truncate_left').score([long])[0]
  # 32 tokens: BOS, the prompt's last 32 - 1 - 2 tokens, the two choices.
  kept = tok.encode(long.prompt)[-(32 - 3):]
  assert tok.encode(tok.decode(kept)) == kept
  np.testing.assert_allclose(got.logprob, _reference(Item(tok.decode(kept), long.choices)),
                             atol=1e-4, rtol=0)


def test_short_items_share_rows_and_a_partial_batch_has_fewer_rows():
  tok = tokenizer.load_default()
  items = [Item('The fact is', (' true', ' false'), 0, id=str(i)) for i in range(20)]
  encoded = packing.encode(items, range(len(items)), tok, [tok.bos_id])
  # [BOS] The fact is | true | false: 6 tokens, 2 of them targets.
  assert [e.length for e in encoded] == [6] * 20
  # (min_row_length, row_multiple) -> shapes, by hand: rows of 128 hold 21
  # items, so 1 row, padded to 2 rows (the multiple); rows of the smallest
  # bucket, 32, hold 5 items, so 4 rows; a partial batch has the next of 1,
  # 2, 3, 4, 6, 8 (times the multiple) rows, not all 8. Targets (2 an item)
  # are listed per shard: 40 in one shard (padded to 48), or 10 in each of 4.
  expected = {(128, 2): ((2, 128), (2, 48)), (0, 1): ((4, 32), (1, 48)),
              (0, 4): ((4, 32), (4, 12))}
  for (min_row_length, row_multiple), (shape, targets) in expected.items():
    [batch] = packing.pack(encoded, 0, (32, 64, 128), 8, min_row_length, row_multiple)
    assert batch.tokens.shape == shape and batch.targets.shape == targets
    assert sorted(batch.item[batch.item >= 0].tolist()) == sorted(list(range(20)) * 2)
  # 15 items in rows of 32: 3 rows, a batch of 3 (not 4); 2 shards: 4.
  assert [b.tokens.shape for b in packing.pack(encoded[:15], 0, (32,), 8)] == [(3, 32)]
  assert [b.tokens.shape for b in packing.pack(encoded[:15], 0, (32,), 8, 0, 2)] == [(4, 32)]
  assert [packing.num_rows_bucket(n) for n in range(1, 14)] == [
      1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16]


def test_each_target_is_read_from_the_token_before_it_in_its_shard():
  """Sources index a shard's rows flattened: the token there is the one before
  the target in its branch (the prompt's last for a first choice token)."""
  tok = tokenizer.load_default()
  words = ' apple river stone cloud horse table green music water paper'.split()
  items = [Item(f'The fact is {w}' + '!' * (i % 3), (' true', ' not so'), 0, id=str(i))
           for i, w in enumerate(words * 4)]
  encoded = packing.encode(items, range(len(items)), tok, [tok.bos_id])
  # Items differ in their last prompt token and in length: rows differ.
  assert len({e.prompt[-1] for e in encoded}) > 10
  assert len({e.length for e in encoded}) > 1
  assert {len(c) for e in encoded for c in e.choices} == {1, 2}
  # (min_row_length, row_multiple): one row per shard; one shard of several
  # rows; several shards of several rows (40 items of ~8 tokens in rows of 32).
  for min_row_length, row_multiple in [(128, 2), (0, 1), (0, 2), (0, 4)]:
    batches = list(packing.pack(encoded, 0, (32, 64, 128), 8, min_row_length,
                                row_multiple))
    seen = set()
    for batch in batches:
      g = batch.targets.shape[0]
      assert g == row_multiple and batch.tokens.shape[0] % g == 0
      rows = batch.tokens.reshape(g, -1)  # Each shard's rows, flattened.
      for s, k in zip(*np.nonzero(batch.item >= 0)):
        e, j = encoded[batch.item[s, k]], batch.choice[s, k]
        choice = e.choices[j]
        # The m-th token of the choice: count its earlier slots in the shard.
        m = sum(1 for kk in range(k) if (batch.item[s, kk], batch.choice[s, kk])
                == (e.index, j))
        before = e.prompt[-1] if m == 0 else choice[m - 1]
        assert (rows[s, batch.sources[s, k]], batch.targets[s, k]) == (before, choice[m])
        seen.add((e.index, j, m))
    assert len(seen) == sum(len(c) for e in encoded for c in e.choices)
    if (min_row_length, row_multiple) == (0, 2):
      assert batches[0].tokens.shape[0] // 2 > 1  # Several rows per shard.
  with pytest.raises(ValueError, match='not a multiple'):
    next(packing.pack(encoded, 0, (32,), 3, 0, 2))
  with pytest.raises(ValueError, match='power of two'):
    scoring.ScorerConfig(logit_chunk=100)
  # Chunks divide N and bound the logits over all shards, also for 3 shards.
  for n, shards, limit, want in [(768, 1, 512, 256), (512, 1, 512, 512),
                                 (768, 3, 512, 128), (96, 8, 512, 32), (12, 8, 4, 1)]:
    c = scoring.chunk_size(n, shards, limit)
    assert (c, n % c, shards * c <= max(limit, shards)) == (want, 0, True)


def test_recurring_contexts_are_encoded_once_and_calls_overlap():
  """Two contexts, alternating, over many batches in flight: each context is
  encoded once while cached, and every score equals the reference."""
  other = 'Glon are smaller than yomp. ' * 20
  items = [dataclasses.replace(item, context=context, id=f'{k}{item.id}')
           for k, context in enumerate([_CONTEXT, other, _CONTEXT, other])
           for item in _items()]
  encoded = []

  def run(one_call, **config):
    scorer = _scorer(rows_per_batch=1, min_row_length=0, **config)
    encode = scorer.encode_context
    scorer.encode_context = lambda ids: encoded.append(len(ids)) or encode(ids)
    if one_call:  # Many batches in flight, one context after the other.
      return scorer.score(items)
    return [s for item in items for s in scorer.score([item])]

  got = run(True)
  assert len(encoded) == 2
  for item, score in zip(items[:8], got):
    np.testing.assert_allclose(score.logprob, _reference(item), atol=1e-4, rtol=0)
  for cache_size, encodes in [(2, 2), (1, 4)]:
    encoded.clear()
    again = run(False, context_cache=cache_size)
    assert len(encoded) == encodes
    for a, b in zip(again, got):
      np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-5, rtol=0)
