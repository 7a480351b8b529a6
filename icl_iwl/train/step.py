"""The jitted train step and its signature (shared by training and planning).

Loss: mean cross-entropy over target tokens; token t is predicted at t - 1
within its packed segment and counts if `loss_mask[t]` is set. When the
targets are a small part of the rows (IC-Train: the loss is on the target
only), the step gathers the final hidden states at the target positions
before the vocabulary projection, as the scorer does: `target_slots` buckets
the batch's most targets in a row on the host, and the step is compiled for
that many slots per row (padded slots weigh 0), so it projects [B, R] rather
than [B, L] positions onto the vocabulary. Gradient accumulation scans over
micro-batches inside one step, so one call is one optimizer update; the state
is donated.
"""

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from icl_iwl.model import cache
from icl_iwl.model import gemma
from icl_iwl.model import layers
from icl_iwl.sharding import mesh as mesh_lib
from icl_iwl.sharding import rules as rules_lib
from icl_iwl.train import loss as loss_lib
from icl_iwl.train import state as state_lib

BATCH_KEYS = ('tokens', 'segment_ids', 'positions', 'loss_mask')


def target_weights(batch: Mapping[str, Any]) -> Any:
  """[B, L] float32: 1 where token t + 1 is a target predicted at t (same
  segment, not padding, loss_mask set); the last position predicts nothing.
  Works on jax and (on the host) numpy arrays alike."""
  segments = batch['segment_ids']
  nxt = _next(segments)
  return (_next(batch['loss_mask']) * (nxt == segments) * (nxt != 0)
          ).astype(np.float32)


def _next(x_BL: Any) -> Any:
  """[B, L]: x[:, t + 1] at t, 0 at the end (padding the small [B, L]
  arrays, never slicing [B, L, V] logits)."""
  xp = np if isinstance(x_BL, np.ndarray) else jnp
  return xp.pad(x_BL[:, 1:], ((0, 0), (0, 1)))


def target_slots(batch: Mapping[str, np.ndarray]) -> int | None:
  """Target slots per row to gather for a host batch of [B, L] arrays: the
  most targets in a row rounded up to a power of two, at least 8 (a few
  compiled shapes), or None (project every position) when that is more than
  half a row, where gathering saves little (knowledge fine-tuning: nearly
  every token is a target)."""
  length = batch['tokens'].shape[1]
  most = int(target_weights(batch).sum(axis=1).max(initial=0))
  slots = 1 << (max(most, 8) - 1).bit_length()
  return None if 2 * slots > length else slots


def loss_sums(model: gemma.Transformer, params: Any,
              batch: dict[str, jax.Array], slots: int | None = None
              ) -> tuple[jax.Array, jax.Array]:
  """(summed cross-entropy, number of target tokens) of a [B, L] batch.

  slots: if set, the loss is computed at the first `slots` target positions
    of each row only (gathered before the vocabulary projection); a row must
    not have more targets than that (see `target_slots`).
  """
  hidden_BLD, _ = model.apply(
      {'params': params}, batch['tokens'], batch['positions'],
      cache.causal_mask(batch['segment_ids']), return_hidden=True)
  weights_BL = target_weights(batch)
  targets_BL = _next(batch['tokens'])
  count = jnp.sum(weights_BL)
  if slots is not None:
    # [B, R]: the target positions of each row first, in order (a stable sort
    # on "is not a target"), then non-targets, whose weight 0 pads the slots.
    index_BR = jnp.argsort(weights_BL == 0, axis=1, stable=True)[:, :slots]
    hidden_BLD = jnp.take_along_axis(hidden_BLD, index_BR[..., None], axis=1)
    targets_BL = jnp.take_along_axis(targets_BL, index_BR, axis=1)
    weights_BL = jnp.take_along_axis(weights_BL, index_BR, axis=1)
  hidden_BLD, table_VD = layers.output_sharded(
      hidden_BLD, params['embedder']['input_embedding'])
  loss = loss_lib.cross_entropy_sum(hidden_BLD, table_VD, targets_BL, weights_BL,
                                    model.dtype, model.config.final_logit_softcap)
  return loss, count


def train_step(state: state_lib.TrainState, batch: dict[str, jax.Array], *,
               model: gemma.Transformer, optimizer: optax.GradientTransformation,
               accum: int, slots: int | None = None
               ) -> tuple[state_lib.TrainState, dict[str, jax.Array]]:
  """One optimizer update from `accum` micro-batches of the [B, L] batch,
  the loss gathered at `slots` target positions per row if set (`loss_sums`).

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
      merged = state_lib.merge(trained, state.frozen)
      return loss_sums(model, merged, mb, slots)[0] / denom
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
                 accum: int = 1, slots: int | None = None) -> jax.stages.Compiled:
  """The step, jitted with explicit shardings and donated state, compiled
  ahead of time for [global_batch, seq_len] batches with `slots` target slots
  per row (None: every position; see `target_slots`). No arrays needed: use
  `.memory_analysis()` / `.cost_analysis()` to size a slice."""
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
      lambda s, b: train_step(s, b, model=model, optimizer=optimizer, accum=accum,
                              slots=slots),
      in_shardings=(state_sharding, batch_sharding),
      out_shardings=(state_sharding, jax.NamedSharding(mesh, jax.P())),
      donate_argnums=0)
  with rules_lib.activation_context(mesh, rules):
    return step.lower(abstract_state, abstract_batch).compile()

