"""The training loss: its hand-written gradient against autodiff of the
textbook formula, and the target masking of packed batches."""

import dataclasses

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import layers
from icl_iwl.model import presets
from icl_iwl.train import loss as loss_lib
from icl_iwl.train import step as step_lib


def _reference(x_BLD, embedding_VD, targets_BL, weights_BL, softcap):
  """sum w * (logsumexp(logits) - logits[target]), differentiated by JAX."""
  logits_BLV = jnp.einsum('BLD,VD->BLV', x_BLD, embedding_VD,
                          precision=jax.lax.Precision.HIGHEST)
  if softcap is not None:
    logits_BLV = softcap * jnp.tanh(logits_BLV / softcap)
  target_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], -1)[..., 0]
  return jnp.sum(weights_BL * (jax.nn.logsumexp(logits_BLV, -1) - target_BL))


def _inputs(scale=3.0):
  k = jax.random.split(jax.random.key(0), 4)
  x_BLD = scale * jax.random.normal(k[0], (3, 7, 16))
  embedding_VD = jax.random.normal(k[1], (23, 16))
  targets_BL = jax.random.randint(k[2], (3, 7), 0, 23)
  targets_BL = targets_BL.at[1].set(5)  # One token as the target of a whole row.
  weights_BL = (jax.random.uniform(k[3], (3, 7)) > 0.3).astype(jnp.float32)
  return x_BLD, embedding_VD, targets_BL, weights_BL


@pytest.mark.parametrize('softcap', [None, 4.0])
def test_value_and_gradients_match_autodiff(softcap):
  x_BLD, embedding_VD, targets_BL, weights_BL = _inputs()

  def ours(x, e):
    return 2.5 * loss_lib.cross_entropy_sum(x, e, targets_BL, weights_BL,
                                            jnp.float32, softcap)

  def ref(x, e):
    return 2.5 * _reference(x, e, targets_BL, weights_BL, softcap)

  value, (dx, de) = jax.jit(jax.value_and_grad(ours, (0, 1)))(x_BLD, embedding_VD)
  ref_value, (ref_dx, ref_de) = jax.value_and_grad(ref, (0, 1))(x_BLD, embedding_VD)
  assert float(value) == pytest.approx(float(ref_value), rel=1e-5)
  np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(de, ref_de, rtol=1e-4, atol=1e-4)
  # Positions of weight 0 get no gradient at all.
  np.testing.assert_array_equal(np.asarray(dx)[np.asarray(weights_BL) == 0], 0.0)


def test_huge_logits_stay_finite():
  x_BLD, embedding_VD, targets_BL, weights_BL = _inputs(scale=300.0)
  value, grads = jax.value_and_grad(
      lambda x, e: loss_lib.cross_entropy_sum(x, e, targets_BL, weights_BL),
      (0, 1))(x_BLD, embedding_VD)
  ref_value = _reference(x_BLD, embedding_VD, targets_BL, weights_BL, None)
  assert float(value) == pytest.approx(float(ref_value), rel=1e-5)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


@pytest.mark.parametrize('softcap', [None, 4.0])
def test_bfloat16_chunks_over_positions_give_the_one_chunk_loss_and_gradients(
    softcap, monkeypatch):
  inputs = _inputs()

  def value_and_grad():  # Traced afresh: CHUNK_BYTES is read at trace time.
    return jax.jit(jax.value_and_grad(
        lambda x, e, t, w: loss_lib.cross_entropy_sum(x, e, t, w, jnp.bfloat16, softcap),
        (0, 1)))(*inputs)

  whole = value_and_grad()  # [3, 7, 23] logits: one chunk.
  # 7 positions in 4 chunks of 2, the last one padded.
  monkeypatch.setattr(loss_lib, 'CHUNK_BYTES', 4 * 3 * 23 * 2)
  chunked = value_and_grad()
  assert loss_lib._chunks(inputs[0], 23, jnp.bfloat16).shape == (4, 3, 2, 16)  # pylint: disable=protected-access
  for got, want in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_is_close_to_float32():
  x_BLD, embedding_VD, targets_BL, weights_BL = _inputs()
  grad = jax.grad(loss_lib.cross_entropy_sum, (0, 1))
  dx16, de16 = grad(x_BLD, embedding_VD, targets_BL, weights_BL, jnp.bfloat16)
  dx32, de32 = grad(x_BLD, embedding_VD, targets_BL, weights_BL, jnp.float32)
  assert dx16.dtype == de16.dtype == jnp.float32  # Gradients in param dtype.
  np.testing.assert_allclose(dx16, dx32, atol=0.1 * float(jnp.max(jnp.abs(dx32))))
  np.testing.assert_allclose(de16, de32, atol=0.1 * float(jnp.max(jnp.abs(de32))))


def test_loss_sums_counts_only_targets_inside_a_segment():
  """Two packed segments plus padding: next-token loss within each segment,
  only where loss_mask is set, as computed from the model's own logits."""
  config = dataclasses.replace(presets.get('tiny'), vocab_size=31)
  model = gemma.Transformer(config)
  tokens = jnp.array([[3, 4, 5, 6, 7, 8, 9, 0]], jnp.int32)
  segments = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]], jnp.int32)
  positions = jnp.array([[0, 1, 2, 0, 1, 2, 3, 0]], jnp.int32)
  loss_mask = jnp.array([[0, 1, 1, 0, 0, 1, 1, 0]], jnp.int32)
  params = jax.jit(gemma.init_params, static_argnums=0)(model, jax.random.key(0))
  batch = dict(tokens=tokens, segment_ids=segments, positions=positions,
               loss_mask=loss_mask)
  total, count = jax.jit(lambda p: step_lib.loss_sums(model, p, batch))(params)

  logits, _ = jax.jit(model.apply)({'params': params}, tokens, positions,
                                   cache.causal_mask(segments))
  logprobs = jax.nn.log_softmax(logits[0], -1)
  # Targets (predicted at t - 1): tokens 4, 5 of segment 1; 8, 9 of segment 2.
  expected = -sum(float(logprobs[t - 1, tokens[0, t]]) for t in (1, 2, 5, 6))
  assert float(count) == 4
  assert float(total) == pytest.approx(expected, rel=1e-5)


def test_bfloat16_train_step_gradient_runs_jitted_and_is_close_to_float32():
  """bf16 compute, f32 params: the jitted gradient of the batch loss (every
  dot must have a CPU kernel) is close to the f32 one."""
  config = dataclasses.replace(presets.get('tiny'), vocab_size=31)
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 1, 31)
  ones = jnp.ones_like(tokens)
  batch = dict(tokens=tokens, segment_ids=ones, loss_mask=ones,
               positions=jnp.broadcast_to(jnp.arange(16), tokens.shape))
  params = nn.unbox(gemma.Transformer(config).init(
      jax.random.key(0), tokens, batch['positions'], cache.causal_mask(ones)))['params']
  grads = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = gemma.Transformer(config, dtype=dtype, param_dtype=jnp.float32)
    grads[dtype] = jax.jit(jax.grad(
        lambda p: step_lib.loss_sums(model, p, batch)[0]))(params)
  for g16, g32 in zip(jax.tree.leaves(grads[jnp.bfloat16]),
                      jax.tree.leaves(grads[jnp.float32])):
    assert g16.dtype == jnp.float32
    np.testing.assert_allclose(g16, g32, atol=0.05 * float(jnp.max(jnp.abs(g32))) + 1e-6)


def _packed_batch(vocab):
  """[3, 16]: packed segments, padding, loss on a few tokens per segment
  (IC-Train-like), and a row without targets."""
  tokens = jax.random.randint(jax.random.key(2), (3, 16), 1, vocab)
  segments = jnp.array([[1] * 7 + [2] * 6 + [0] * 3,
                        [1] * 16,
                        [1] * 5 + [0] * 11], jnp.int32)
  positions = jnp.array([list(range(7)) + list(range(6)) + [0] * 3,
                         list(range(16)),
                         list(range(5)) + [0] * 11], jnp.int32)
  loss_mask = np.zeros((3, 16), np.int32)
  loss_mask[0, [5, 6, 11, 12]] = 1  # The last two tokens of each segment.
  loss_mask[1, [3, 9, 15]] = 1
  loss_mask[2, 0] = 1  # A first token: predicted by nothing.
  return dict(tokens=tokens, segment_ids=segments, positions=positions,
              loss_mask=jnp.asarray(loss_mask))


def _textbook_loss(model, params, batch):
  """sum over targets of -log softmax(full logits), target positions listed
  by hand (token t of a segment predicted at t - 1)."""
  logits_BLV, _ = model.apply({'params': params}, batch['tokens'],
                              batch['positions'],
                              cache.causal_mask(batch['segment_ids']))
  logprobs_BLV = jax.nn.log_softmax(logits_BLV, -1)
  targets = [(0, 5), (0, 6), (0, 11), (0, 12), (1, 3), (1, 9), (1, 15)]
  return -sum(logprobs_BLV[b, t - 1, batch['tokens'][b, t]] for b, t in targets)


def test_gathered_targets_give_the_loss_and_gradients_of_full_logits():
  config = dataclasses.replace(presets.get('tiny'), vocab_size=31)
  # With LoRA adapters: the gradients of the base weights and of the factors.
  model = gemma.Transformer(config, lora=layers.LoraConfig(rank=2))
  batch = _packed_batch(31)
  params = nn.unbox(model.init(jax.random.key(0), batch['tokens'],
                               batch['positions'],
                               cache.causal_mask(batch['segment_ids'])))['params']
  # Random LoRA factors too (B starts at 0), so every gradient is non-zero.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])
  host = {k: np.asarray(v) for k, v in batch.items()}
  assert step_lib.target_slots(host) == 8  # 4 targets at most, 8 at least.

  ref_value, ref_grads = jax.jit(jax.value_and_grad(
      lambda p: _textbook_loss(model, p, batch)))(params)  # Op by op: ~10x slower.
  for slots in (None, 4, 8):  # 4: no padding slot in the fullest row.
    (value, count), grads = jax.jit(jax.value_and_grad(
        lambda p, s=slots: step_lib.loss_sums(model, p, batch, s), has_aux=True)
                                    )(params)
    assert float(count) == 7
    assert float(value) == pytest.approx(float(ref_value), rel=1e-5)
    for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(g, ref, rtol=1e-4,
                                 atol=1e-4 * float(jnp.max(jnp.abs(ref))) + 1e-7)


def test_target_slots_bucket_the_fullest_row_or_project_everything():
  def slots(mask_rows, length=64):
    mask = np.zeros((len(mask_rows), length), np.int32)
    for row, n in enumerate(mask_rows):
      mask[row, 1:1 + n] = 1
    tokens = np.ones_like(mask)
    return step_lib.target_slots(dict(tokens=tokens, segment_ids=tokens,
                                      loss_mask=mask))
  assert slots([0, 0]) == 8
  assert slots([3, 8]) == 8
  assert slots([9, 2]) == 16
  assert slots([17]) == 32
  assert slots([33]) is None  # More than half a row: no gather.
