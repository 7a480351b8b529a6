"""The jitted train step and its signature (shared by training and planning).

Loss: mean cross-entropy over target tokens; token t is predicted at t - 1
within its packed segment and counts if `loss_mask[t]` is set. Gradient
accumulation scans over micro-batches inside one step, so one call is one
optimizer update; the state is donated.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib
from icl_iwl.train import loss as loss_lib
from icl_iwl.train import state as state_lib

BATCH_KEYS = ('tokens', 'segment_ids', 'positions', 'loss_mask')


def target_weights(batch: dict[str, jax.Array]) -> jax.Array:
  """[B, L] float32: 1 where token t + 1 is a target predicted at t (same
  segment, not padding, loss_mask set); the last position predicts nothing."""
  segments = batch['segment_ids']
  nxt = _next(segments)
  return (_next(batch['loss_mask']) * (nxt == segments) * (nxt != 0)
          ).astype(jnp.float32)


def _next(x_BL: jax.Array) -> jax.Array:
  """[B, L]: x[:, t + 1] at t, 0 at the end (padding the small [B, L]
  arrays, never slicing [B, L, V] logits)."""
  return jnp.pad(x_BL[:, 1:], ((0, 0), (0, 1)))


def loss_sums(model: gemma.Transformer, params: Any,
              batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, number of target tokens) of a [B, L] batch."""
  hidden_BLD, _ = model.apply(
      {'params': params}, batch['tokens'], batch['positions'],
      cache.causal_mask(batch['segment_ids']), return_hidden=True)
  weights_BL = target_weights(batch)
  loss = loss_lib.cross_entropy_sum(
      hidden_BLD, params['embedder']['input_embedding'], _next(batch['tokens']),
      weights_BL, model.dtype, model.config.final_logit_softcap)
  return loss, jnp.sum(weights_BL)


def train_step(state: state_lib.TrainState, batch: dict[str, jax.Array], *,
               model: gemma.Transformer, optimizer: optax.GradientTransformation,
               accum: int) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
  """One optimizer update from `accum` micro-batches of the [B, L] batch.

  The loss is the mean over the target tokens of the whole batch: their
  count is known from the batch up front, so each micro-batch differentiates
  its summed loss divided by it and the gradients come out normalized (no
  extra pass over a params-sized tree).
  """
  count = jnp.sum(target_weights(batch))
  denom = jnp.maximum(count, 1.0)

  def grads_of(mb):
    """(loss share, gradients) of a micro-batch."""
    def f(trained):
      return loss_sums(model, state_lib.merge(trained, state.frozen), mb)[0] / denom
    return jax.value_and_grad(f)(state.params)

  def micro(carry, mb):
    loss, grads = grads_of(mb)
    total_loss, total_grads = carry
    return (total_loss + loss, jax.tree.map(jnp.add, total_grads, grads)), None

  if accum == 1:  # No accumulator: saves a params-sized buffer.
    loss, grads = grads_of(batch)
  else:
    micro_batches = jax.tree.map(
        lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    (loss, grads), _ = jax.lax.scan(micro, (jnp.zeros(()), zeros), micro_batches)
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
  return new_state, {'loss': loss, 'grad_norm': optax.global_norm(grads),
                     'targets': count, 'params_finite': finite}


def compile_step(model: gemma.Transformer, optimizer: optax.GradientTransformation,
                 is_trainable: state_lib.IsTrainable, mesh: jax.sharding.Mesh,
                 rules: rules_lib.Rules, global_batch: int, seq_len: int,
                 accum: int = 1) -> jax.stages.Compiled:
  """The step, jitted with explicit shardings and donated state, compiled
  ahead of time for [global_batch, seq_len] batches (no arrays needed: use
  `.memory_analysis()` / `.cost_analysis()` to size a slice)."""
  if global_batch % (accum * mesh_lib.batch_divisor(mesh, rules)):
    raise ValueError(
        f'Global batch {global_batch} must divide into {accum} micro-batches '
        f'over {mesh_lib.batch_divisor(mesh, rules)} batch shards.')
  abstract_state = state_lib.sharded_abstract(model, optimizer, is_trainable,
                                              mesh, rules)
  state_sharding = jax.tree.map(lambda s: s.sharding, abstract_state)
  batch_sharding = jax.NamedSharding(mesh, jax.P(dict(rules).get('batch')))
  abstract_batch = {k: jax.ShapeDtypeStruct((global_batch, seq_len), jnp.int32,
                                            sharding=batch_sharding)
                    for k in BATCH_KEYS}
  step = jax.jit(
      lambda s, b: train_step(s, b, model=model, optimizer=optimizer, accum=accum),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, jax.NamedSharding(mesh, jax.P())),
      donate_argnums=0)
  with rules_lib.activation_context(mesh, rules):
    return step.lower(abstract_state, abstract_batch).compile()

