"""Our Gemma: preset sizes, masks, KV-cache decoding, shared prefixes, dtypes."""

import dataclasses
import functools

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl.checkpoints import params as params_lib
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import layers
from icl_iwl.model import presets

# Published sizes (text towers), in millions of parameters.
_SIZES_M = {
    'gemma1_2b': 2506.4, 'gemma1_7b': 8538.1, 'gemma2_2b': 2614.6,
    'gemma2_9b': 9242.2, 'gemma3_270m': 268.1, 'gemma3_1b': 999.9,
    'gemma3_4b': 3880.1, 'gemma3_12b': 11765.8,
}


@pytest.mark.parametrize('name', sorted(_SIZES_M))
def test_full_size_presets_have_the_published_parameter_count(name):
  shapes = params_lib.shapes(presets.get(name))
  count = sum(int(np.prod(s)) for s in shapes.values())
  assert count / 1e6 == pytest.approx(_SIZES_M[name], abs=0.05)


def test_unknown_preset_names_close_matches():
  with pytest.raises(KeyError, match="Did you mean 'gemma3_270m'"):
    presets.get('gemma3_207m')


@functools.cache
def _tiny_cached(overrides):
  return _tiny_build(**dict(overrides))


def _tiny(**overrides):
  return _tiny_cached(tuple(sorted(overrides.items())))


def _tiny_build(**overrides):
  config = dataclasses.replace(presets.get('tiny'), vocab_size=97, **overrides)
  model = gemma.Transformer(config)

  @jax.jit
  def init():
    tokens = jnp.zeros((1, 4), jnp.int32)
    variables = model.init(jax.random.key(0), tokens, tokens,
                           cache.causal_mask(jnp.ones((1, 4), jnp.int32)))
    # Random norm scales too, so (1 + scale) conventions are exercised.
    return jax.tree.map(
        lambda x: x + 0.3 * jax.random.normal(jax.random.key(1), x.shape),
        nn.unbox(variables)['params'])

  return config, model, init()


def _inputs(batch, length, vocab=97, seed=0):
  tokens = jax.random.randint(jax.random.key(seed), (batch, length), 0, vocab)
  positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
  return tokens, positions


def _forward(model, params, tokens, positions, segments=None, memory=None,
             return_hidden=False):
  segments = jnp.ones_like(tokens) if segments is None else segments
  return _apply(model, return_hidden)(params, tokens, positions,
                                      cache.causal_mask(segments), memory)


@functools.cache
def _apply(model, return_hidden):
  return jax.jit(lambda params, *args: model.apply(
      {'params': params}, *args, return_hidden=return_hidden))


@pytest.mark.parametrize('overrides', [
    {},  # Gemma 3 style: local + global, GQA with 1 kv head, qk-norm.
    dict(num_kv_heads=2),  # Multi-head: one qkv_einsum.
    dict(attn_logit_softcap=5.0, final_logit_softcap=3.0, use_qk_norm=False,
         transpose_gating_einsum=False),  # Gemma 2 style.
])
def test_kv_cache_decoding_matches_the_full_forward_pass(overrides):
  config, model, params = _tiny(**overrides)
  b, t, prefill = 2, 40, 7  # Longer than the sliding window (16).
  tokens, positions = _inputs(b, t)
  full, _ = _forward(model, params, tokens, positions)

  step = jax.jit(lambda tok, pos, mem: model.apply(
      {'params': params}, tok, pos, jnp.ones((b, 1, 1), bool), memory=mem))
  logits, kv = _forward(model, params, tokens[:, :prefill], positions[:, :prefill])
  kv_cache = cache.write(cache.init(config, b, t), kv, positions[:, :prefill],
                         jnp.ones((b, prefill), bool), 0)
  outs = [logits]
  for i in range(prefill, t):
    logits, kv = step(tokens[:, i:i + 1], positions[:, i:i + 1], kv_cache)
    kv_cache = cache.write(kv_cache, kv, positions[:, i:i + 1],
                           jnp.ones((b, 1), bool), i)
    outs.append(logits)
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-5, rtol=0)


def test_a_shared_prefix_of_batch_one_serves_every_row():
  _, model, params = _tiny()
  tokens, positions = _inputs(1, 30)
  full, _ = _forward(model, params, tokens, positions)
  p = 20
  _, kv = _forward(model, params, tokens[:, :p], positions[:, :p])
  memory = cache.from_kv(kv, positions[:, :p], jnp.ones((1, p), bool))
  # Three rows continue the same prefix; row 1 also checks a masked-out slot.
  cont = jnp.repeat(tokens[:, p:], 3, axis=0)
  cont_pos = jnp.repeat(positions[:, p:], 3, axis=0)
  logits, _ = _forward(model, params, cont, cont_pos, memory=memory)
  for row in range(3):
    np.testing.assert_allclose(logits[row], full[0, p:], atol=2e-5, rtol=0)
  hidden_mask = memory['mask'].at[0, 5].set(False)
  masked, _ = _forward(model, params, cont, cont_pos,
                       memory=dict(memory, mask=hidden_mask))
  assert np.abs(masked - logits).max() > 1e-3


def test_local_layers_attend_to_the_window_of_a_long_memory_and_equal_the_full_pass():
  config, model, params = _tiny()
  w = config.sliding_window
  tokens, positions = _inputs(1, 70)
  full, _ = _forward(model, params, tokens, positions)
  p = 60  # A memory longer than window + T - 1 slots: the gathered path.
  _, kv = _forward(model, params, tokens[:, :p], positions[:, :p])
  memory = cache.from_kv(kv, positions[:, :p], jnp.ones((1, p), bool))
  rows = jnp.repeat(tokens[:, p:p + 4], 2, axis=0)
  rows_pos = jnp.repeat(positions[:, p:p + 4], 2, axis=0)
  assert p > w + 4 - 1
  logits, _ = _forward(model, params, rows, rows_pos, memory=memory)
  for row in range(2):
    np.testing.assert_allclose(logits[row], full[0, p:p + 4], atol=2e-5, rtol=0)
  # Rows far apart in position: their visible slots do not fit in the
  # window's size together, so the batch attends to the whole memory; each
  # row alone fits and takes the gathered path.
  rows = jnp.stack([tokens[0, 10:14], tokens[0, p:p + 4]])
  rows_pos = jnp.stack([positions[0, 10:14], positions[0, p:p + 4]])
  layer0 = {k: v[0] if k in ('k', 'v') else v for k, v in memory.items()}
  assert not cache.window(layer0, rows_pos, cache.causal_mask(jnp.ones_like(rows)),
                          w, w + 3)[1]
  logits, _ = _forward(model, params, rows, rows_pos, memory=memory)
  np.testing.assert_allclose(logits[1], full[0, p:p + 4], atol=2e-5, rtol=0)
  alone, _ = _forward(model, params, rows[:1], rows_pos[:1], memory=memory)
  np.testing.assert_allclose(logits[0], alone[0], atol=2e-5, rtol=0)


def test_window_gathers_exactly_the_visible_slots():
  rng = np.random.default_rng(0)
  s, w, size = 40, 8, 12
  positions = jnp.asarray(np.sort(rng.choice(100, (2, s), replace=False), -1))
  mask = jnp.asarray(rng.random((2, s)) < 0.8)
  memory = {'k': jnp.arange(2 * s, dtype=jnp.float32).reshape(2, s, 1, 1),
            'positions': positions, 'mask': mask}
  memory['v'] = -memory['k']
  q_pos = jnp.asarray([[60, 61, 62, 0], [90, 91, 92, 93]])
  q_mask = cache.causal_mask(jnp.asarray([[1, 1, 1, 0], [1, 1, 1, 1]]))
  got, fits = cache.window(memory, q_pos, q_mask, w, size)
  counts = []
  for m, (lo, hi) in enumerate([(60, 62), (90, 93)]):  # Padding query ignored.
    want = [i for i in range(s) if mask[m, i] and lo - w < positions[m, i] <= hi]
    n = int(got['mask'][m].sum())
    counts.append(n)
    assert n == len(want) and bool(fits)
    np.testing.assert_array_equal(got['k'][m, :n, 0, 0], memory['k'][m, want, 0, 0])
    np.testing.assert_array_equal(got['positions'][m, :n], positions[m, want])
  assert max(counts) > 1
  _, fits = cache.window(memory, q_pos, q_mask, w, max(counts) - 1)
  assert not bool(fits)


def test_packed_segments_equal_separate_sequences():
  _, model, params = _tiny()
  a, pos_a = _inputs(1, 12, seed=1)
  b, pos_b = _inputs(1, 9, seed=2)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 3), jnp.int32)], axis=1)
  positions = jnp.concatenate([pos_a, pos_b, jnp.zeros((1, 3), jnp.int32)], axis=1)
  segments = jnp.array([[1] * 12 + [2] * 9 + [0] * 3])
  logits, _ = _forward(model, params, packed, positions, segments)
  alone_a, _ = _forward(model, params, a, pos_a)
  alone_b, _ = _forward(model, params, b, pos_b)
  np.testing.assert_allclose(logits[0, :12], alone_a[0], atol=2e-5, rtol=0)
  np.testing.assert_allclose(logits[0, 12:21], alone_b[0], atol=2e-5, rtol=0)


def test_sliding_window_limits_what_local_layers_see():
  config, model, params = _tiny(attention_types=(presets.AttentionType.LOCAL,) * 2)
  tokens, positions = _inputs(1, 40)
  logits, _ = _forward(model, params, tokens, positions)
  # Changing a token more than 2 windows back (2 local layers) changes nothing.
  far = tokens.at[0, 2].set((tokens[0, 2] + 1) % 97)
  far_logits, _ = _forward(model, params, far, positions)
  reach = 2 * (config.sliding_window - 1)
  np.testing.assert_array_equal(logits[0, 2 + reach + 1:], far_logits[0, 2 + reach + 1:])
  assert np.abs(logits[0, 2 + reach] - far_logits[0, 2 + reach]).max() > 0


def test_remat_and_bf16():
  config, model, params = _tiny()
  tokens, positions = _inputs(2, 24)
  full, _ = _forward(model, params, tokens, positions)
  remat = gemma.Transformer(config, remat='full')
  np.testing.assert_allclose(_forward(remat, params, tokens, positions)[0], full,
                             atol=1e-6, rtol=0)
  bf16 = gemma.Transformer(config, dtype=jnp.bfloat16)
  low, _ = _forward(bf16, params, tokens, positions)
  assert low.dtype == jnp.float32  # Logits always come out in f32.
  assert np.abs(low - full).max() < 0.05 * np.abs(full).max()


def test_return_hidden_then_logits_equals_logits():
  _, model, params = _tiny()
  tokens, positions = _inputs(2, 10)
  logits, _ = _forward(model, params, tokens, positions)
  hidden, _ = _forward(model, params, tokens, positions, return_hidden=True)
  again = jax.jit(lambda p, h: model.apply({'params': p}, h, method=model.logits))(
      params, hidden)
  np.testing.assert_allclose(again, logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize('eqn, x_shape, y_shape', [
    ('BTD,NDH->BTNH', (2, 5, 8), (3, 8, 4)),  # A projection.
    ('BTKGH,BSKH->BTKGS', (2, 5, 1, 3, 4), (2, 6, 1, 4)),  # Attention logits.
    ('...D,VD->...V', (2, 5, 8), (11, 8)),  # The tied output layer.
])
def test_bf16_einsum_gradients_are_f32_sums_of_bf16_operands(eqn, x_shape, y_shape):
  """bf16 compute: value and gradients equal float32 autodiff of the einsum of
  the bf16-rounded operands with a bf16-exact cotangent, and the gradients
  come back unrounded in the operands' own dtype."""
  kx, ky, kc = jax.random.split(jax.random.key(0), 3)
  x, y = jax.random.normal(kx, x_shape), jax.random.normal(ky, y_shape)
  out_shape = jax.eval_shape(lambda: jnp.einsum(eqn, x, y)).shape
  c = jax.random.normal(kc, out_shape).astype(jnp.bfloat16).astype(jnp.float32)
  rounded = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)  # noqa: E731

  def ours(x, y):
    return jnp.sum(c * layers.einsum(eqn, x, y, jnp.bfloat16, jnp.float32))

  def reference(x, y):
    return jnp.sum(c * jnp.einsum(eqn, x, y, precision=jax.lax.Precision.HIGHEST))

  value, (dx, dy) = jax.jit(jax.value_and_grad(ours, (0, 1)))(x, y)
  ref_value, (ref_dx, ref_dy) = jax.value_and_grad(reference, (0, 1))(
      rounded(x), rounded(y))
  assert dx.dtype == dy.dtype == jnp.float32
  assert float(value) == pytest.approx(float(ref_value), rel=1e-5)
  np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dy, ref_dy, rtol=1e-5, atol=1e-5)


def test_bf16_logits_stay_close_to_f32_logits():
  """bf16 compute with the f32 residual stream, norms and softmax: logits
  within 1% of the largest f32 logit, on f32 and on bf16 params."""
  config, model, params = _tiny()
  tokens, positions = _inputs(4, 40)  # Past the sliding window (16).
  full, _ = _forward(model, params, tokens, positions)
  for param_dtype in (jnp.float32, jnp.bfloat16):
    bf16 = gemma.Transformer(config, dtype=jnp.bfloat16, param_dtype=param_dtype)
    cast = jax.tree.map(lambda p: p.astype(param_dtype), params)
    low, _ = _forward(bf16, cast, tokens, positions)
    error = float(np.abs(low - full).max() / np.abs(full).max())
    assert error < 0.01, (param_dtype, error)
