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


def loss_sums(model: gemma.Transformer, params: Any,
              batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, number of target tokens) of a [B, L] batch."""
  tokens, segments = batch['tokens'], batch['segment_ids']
  hidden_BLD, _ = model.apply({'params': params}, tokens, batch['positions'],
                              cache.causal_mask(segments), return_hidden=True)
  # [B, L]: token t+1 as predicted at t; the last position predicts nothing.
  shift = lambda x: jnp.pad(x[:, 1:], ((0, 0), (0, 1)))  # noqa: E731
  weights = (shift(batch['loss_mask']) * (shift(segments) == segments)
             * (shift(segments) != 0)).astype(jnp.float32)
  loss = loss_lib.cross_entropy_sum(
      hidden_BLD, params['embedder']['input_embedding'], shift(tokens), weights,
      model.dtype, model.config.final_logit_softcap)
  return loss, jnp.sum(weights)


def train_step(state: state_lib.TrainState, batch: dict[str, jax.Array], *,
               model: gemma.Transformer, optimizer: optax.GradientTransformation,
               accum: int) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
  """One optimizer update from `accum` micro-batches of the [B, L] batch."""

  def grad_sums(mb):
    """((summed loss, target count), summed gradients) of a micro-batch."""
    def f(trained):
      return loss_sums(model, state_lib.merge(trained, state.frozen), mb)
    return jax.value_and_grad(f, has_aux=True)(state.params)

  def micro(carry, mb):
    (loss_sum, count), grads = grad_sums(mb)
    total_loss, total_count, total_grads = carry
    return (total_loss + loss_sum, total_count + count,
            jax.tree.map(jnp.add, total_grads, grads)), None

  if accum == 1:  # No accumulator: saves a params-sized buffer.
    (loss_sum, count), grads = grad_sums(batch)
  else:
    micro_batches = jax.tree.map(
        lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    (loss_sum, count, grads), _ = jax.lax.scan(
        micro, (jnp.zeros(()), jnp.zeros(()), zeros), micro_batches)
  denom = jnp.maximum(count, 1.0)
  grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
  return new_state, {'loss': loss_sum / denom, 'grad_norm': optax.global_norm(grads),
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

