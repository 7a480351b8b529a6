"""LoRA: which params train, and merging adapters back into the weights."""

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from icl_iwl import config_lib
from icl_iwl.model import build
from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import lora
from icl_iwl.model import presets


def _lora_model(rank: int = 4, alpha: float = 8.0) -> gemma.Transformer:
  config = config_lib.model('tiny', 'random')
  config.lora.update(rank=rank, alpha=alpha)
  return build.model(config)


def _trained(model: gemma.Transformer) -> dict:
  """Random params with every factor nonzero (B starts at zero)."""
  params = gemma.init_params(model, jax.random.key(0))
  flat = traverse_util.flatten_dict(params, sep='/')
  for i, key in enumerate(sorted(flat)):
    if lora.is_adapter(key):
      flat[key] = jax.random.normal(jax.random.key(i), flat[key].shape) * 0.1
  return traverse_util.unflatten_dict(flat, sep='/')


def test_trainable_is_the_factors_under_lora_else_everything():
  model = _lora_model()
  paths = list(traverse_util.flatten_dict(gemma.abstract_params(model), sep='/'))
  trained = [p for p in paths if lora.trainable(model.lora)(p)]
  # Per layer: q, kv, attn_vec, gating, linear, two factors each.
  assert len(trained) == 2 * 5 * presets.get('tiny').num_layers
  assert all(p.endswith(('_lora_a', '_lora_b')) for p in trained)
  assert 'layer_0/attn/q_einsum/w_lora_a' in trained
  assert 'layer_0/mlp/gating_einsum_lora_b' in trained
  assert all(lora.trainable(None)(p) for p in paths)
  assert build.model(config_lib.model('tiny', 'random')).lora is None


def test_merge_adds_alpha_over_rank_a_times_b_in_the_weights_layout():
  model = _lora_model(rank=4, alpha=8.0)
  params = _trained(model)
  merged = lora.merge(model, params)
  c = presets.get('tiny')
  attn = params['layer_1']['attn']
  # q_einsum w [N, D, H] meets the input on D: A [D, r], B [r, N*H].
  a, b = np.asarray(attn['q_einsum']['w_lora_a']), np.asarray(attn['q_einsum']['w_lora_b'])
  delta = (a @ b * 2.0).reshape(c.embed_dim, c.num_heads, c.head_dim).transpose(1, 0, 2)
  np.testing.assert_allclose(merged['layer_1']['attn']['q_einsum']['w'],
                             attn['q_einsum']['w'] + delta, rtol=1e-6, atol=1e-6)
  # attn_vec_einsum w [N, H, D] meets the input on N, H: A [N*H, r], B [r, D].
  a = np.asarray(attn['attn_vec_einsum']['w_lora_a'])
  b = np.asarray(attn['attn_vec_einsum']['w_lora_b'])
  delta = (a @ b * 2.0).reshape(c.num_heads, c.head_dim, c.embed_dim)
  np.testing.assert_allclose(merged['layer_1']['attn']['attn_vec_einsum']['w'],
                             attn['attn_vec_einsum']['w'] + delta, rtol=1e-6, atol=1e-6)
  flat = traverse_util.flatten_dict(merged, sep='/')
  assert not [k for k in flat if lora.is_adapter(k)]
  np.testing.assert_array_equal(flat['embedder/input_embedding'],
                                params['embedder']['input_embedding'])

  # The plain model on merged weights computes what the LoRA model does.
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 1000, (2, 24)))
  positions = jnp.broadcast_to(jnp.arange(24), (2, 24))
  mask = cache.causal_mask(jnp.ones((2, 24), jnp.int32))
  expected, _ = jax.jit(model.apply)({'params': params}, tokens, positions, mask)
  plain = jax.jit(gemma.Transformer(c).apply)
  got, _ = plain({'params': merged}, tokens, positions, mask)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
  base, _ = plain({'params': lora.merge(model, gemma.init_params(
      model, jax.random.key(0)))}, tokens, positions, mask)
  assert np.abs(np.asarray(base) - np.asarray(expected)).max() > 1e-2
