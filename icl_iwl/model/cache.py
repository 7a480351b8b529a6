"""Attention masks and key/value caches.

A cache (also the read-only `memory` a prefix leaves behind) is a dict:
  k, v:       [L, M, S, K, H]  keys (after RoPE) and values of every layer
  positions:  [M, S]           position of each slot
  mask:       [M, S]           which slots hold a real token
M is the batch, or 1 for a prefix shared by the whole batch (never broadcast
in memory: attention contracts it without a batch dimension). A model call
may attend to several caches at once (`Memory`), e.g. a shared prefix and
the rows' own caches when decoding after it.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from icl_iwl.model import presets

Cache = dict[str, jax.Array]
# What a forward pass attends to before its own tokens: one cache, several
# (attended to as one, in order: e.g. a shared prefix, then each row's
# cache), or none.
Memory = Cache | Sequence[Cache] | None


def as_tuple(memory: Memory) -> tuple[Cache, ...]:
  """The caches of `memory`, in order."""
  if memory is None:
    return ()
  return (memory,) if isinstance(memory, dict) else tuple(memory)


def causal_mask(segment_ids_BT: jax.Array) -> jax.Array:
  """[B, T, T] bool: same non-zero segment and key index <= query index.

  Segment 0 is padding; packed sequences use segments 1, 2, ...
  """
  t = segment_ids_BT.shape[1]
  same = segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
  real = (segment_ids_BT != 0)[:, None, :]
  return same & real & jnp.tril(jnp.ones((t, t), bool))[None]


def init(
    config: presets.GemmaConfig, batch: int, length: int, dtype=jnp.float32
) -> Cache:
  """An empty cache of `length` slots for `batch` rows."""
  shape = (config.num_layers, batch, length, config.num_kv_heads, config.head_dim)
  return {
      'k': jnp.zeros(shape, dtype),
      'v': jnp.zeros(shape, dtype),
      'positions': jnp.zeros((batch, length), jnp.int32),
      'mask': jnp.zeros((batch, length), bool),
  }


def from_kv(kv: Cache, positions_BT: jax.Array, mask_BT: jax.Array) -> Cache:
  """The memory left by a forward pass: its keys/values, positions and mask."""
  return {'k': kv['k'], 'v': kv['v'], 'positions': positions_BT, 'mask': mask_BT}


def write(
    cache: Cache, kv: Cache, positions_BT: jax.Array, mask_BT: jax.Array,
    index: jax.Array | int,
) -> Cache:
  """Writes T new slots (kv from a forward pass) at slot `index` of the cache."""
  dtype = cache['k'].dtype
  return {
      'k': jax.lax.dynamic_update_slice_in_dim(
          cache['k'], kv['k'].astype(dtype), index, axis=2),
      'v': jax.lax.dynamic_update_slice_in_dim(
          cache['v'], kv['v'].astype(dtype), index, axis=2),
      'positions': jax.lax.dynamic_update_slice_in_dim(
          cache['positions'], positions_BT.astype(jnp.int32), index, axis=1),
      'mask': jax.lax.dynamic_update_slice_in_dim(
          cache['mask'], mask_BT, index, axis=1),
  }


def window(memory: Cache, positions_BT: jax.Array, mask_BTT: jax.Array,
           sliding_window: int, size: int) -> tuple[Cache, jax.Array]:
  """The slots of one layer's `memory` that a sliding-window layer can see,
  gathered into `size` slots.

  A query at position p sees a real slot at position q if p - window < q <= p;
  the real queries (those that attend to themselves in `mask_BTT`) of a row
  of memory batch M = B, or of the whole batch for M = 1, see the slots in
  (min p - window, max p]. The gathered memory keeps them in slot order and
  fills the rest with masked slots; attention over it equals attention over
  the whole memory when every such slot fits.

  Args:
    memory: one layer's {'k', 'v': [M, S, K, H], 'positions', 'mask': [M, S]}.
    positions_BT: [B, T] positions of the queries.
    mask_BTT: [B, T, T] the queries' own mask (its diagonal marks real ones).
    sliding_window: the layer's window.
    size: slots to keep (window + T - 1 hold every visible slot when the
      memory's positions are distinct and the real queries of a row lie
      within T consecutive positions).

  Returns:
    (the gathered memory, [M, size, ...]; a bool scalar: whether every
    visible slot fit).
  """
  m = memory['mask'].shape[0]
  real_BT = jnp.diagonal(mask_BTT, axis1=1, axis2=2)
  big = jnp.iinfo(jnp.int32).max
  lo_B = jnp.where(real_BT, positions_BT, big).min(-1)
  hi_B = jnp.where(real_BT, positions_BT, -big).max(-1)
  if m != positions_BT.shape[0]:  # A memory shared by the batch.
    lo_B, hi_B = lo_B.min(keepdims=True), hi_B.max(keepdims=True)
  pos_MS = memory['positions']
  seen_MS = memory['mask'] & (pos_MS > lo_B[:, None] - sliding_window) & (
      pos_MS <= hi_B[:, None])
  count_M = seen_MS.sum(-1)
  index_MW = jax.vmap(lambda s: jnp.nonzero(s, size=size, fill_value=0)[0])(seen_MS)
  take = lambda x: jnp.take_along_axis(
      x, index_MW.reshape(index_MW.shape + (1,) * (x.ndim - 2)), axis=1)
  gathered = {
      'k': take(memory['k']), 'v': take(memory['v']),
      'positions': take(pos_MS),
      'mask': jnp.arange(size)[None, :] < count_M[:, None],
  }
  return gathered, jnp.all(count_M <= size)
