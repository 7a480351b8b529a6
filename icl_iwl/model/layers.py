"""Base layers of our Gemma: Einsum, RMSNorm, RoPE, Embedder.

Dimension letters used in every einsum of the model:
  B batch, T query length, S key length, N query heads, K key/value heads,
  G query heads per key/value head (N = K * G), H head dim, D model width,
  F MLP width, V vocabulary, C stacked projections (q/k/v or gate/up).

Weights are stored in `param_dtype` and cast to the compute `dtype` at use;
every contraction accumulates in float32 (`preferred_element_type`), which is
what TPUs want and, for bf16 on this kind of CPU, 2x faster than bf16 output.
Below float32 the gradient contractions do the same (`einsum`).
"""

import functools
from typing import Any, Callable

from flax import linen as nn
import jax
import jax.numpy as jnp

# LoRA lives in lora.py; gemma.py still names these through layers.
from icl_iwl.model.lora import LoraConfig
from icl_iwl.model.lora import with_lora
from icl_iwl.sharding import axes

Dtype = Any


def einsum(
    eqn: str, x: jax.Array, y: jax.Array, dtype: Dtype, out_dtype: Dtype = None
) -> jax.Array:
  """`jnp.einsum` of x and y cast to `dtype`, accumulated in float32.

  The result is cast to `out_dtype` (default: `dtype`). Below float32 the
  backward pass runs the same way (see `_low_precision_einsum`).
  """
  if jnp.dtype(dtype) == jnp.float32:
    out = jnp.einsum(eqn, x.astype(dtype), y.astype(dtype),
                     preferred_element_type=jnp.float32)
  else:
    out = _low_precision_einsum(eqn, jnp.dtype(dtype), x.dtype, y.dtype)(x, y)
  return out.astype(out_dtype or dtype)


@functools.cache
def _low_precision_einsum(eqn: str, dtype: Dtype, x_dtype: Dtype,
                          y_dtype: Dtype) -> Callable[[jax.Array, jax.Array],
                                                      jax.Array]:
  """(x, y) -> float32 `eqn` of their `dtype` casts, with a gradient whose two
  contractions also take `dtype` inputs (the cotangent rounded to `dtype`, as
  torch autocast does) and accumulate in float32; the gradients come back in
  x's and y's own dtypes, unrounded (a float32 master weight gets a float32
  gradient). Autodiff would contract the float32 cotangent with the `dtype`
  operand, which XLA:CPU runs as a float32 matmul (half the bf16 rate or less).
  """
  inputs, out = eqn.split('->')
  xs, ys = inputs.split(',')
  f32 = jnp.float32

  def fwd(x, y):
    x, y = x.astype(dtype), y.astype(dtype)
    return jnp.einsum(eqn, x, y, preferred_element_type=f32), (x, y)

  def bwd(residuals, g):
    x, y = residuals
    g = g.astype(dtype)
    dx = jnp.einsum(f'{out},{ys}->{xs}', g, y, preferred_element_type=f32)
    dy = jnp.einsum(f'{xs},{out}->{ys}', x, g, preferred_element_type=f32)
    return dx.astype(x_dtype), dy.astype(y_dtype)

  f = jax.custom_vjp(lambda x, y: fwd(x, y)[0])
  f.defvjp(fwd, bwd)
  return f


class Einsum(nn.Module):
  """A weight of `shape` (logical `axes`) contracted with the input by `eqn`."""

  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  weight_name: str = 'w'
  lora: LoraConfig | None = None

  @nn.compact
  def __call__(self, eqn: str, x: jax.Array) -> jax.Array:
    w = self.param(
        self.weight_name,
        nn.with_logical_partitioning(nn.initializers.normal(), self.axes),
        self.shape,
        self.param_dtype,
    )
    w = with_lora(self, self.name, self.weight_name, w, eqn, self.lora)
    return einsum(eqn, x, w, self.dtype)


class RMSNorm(nn.Module):
  """x / rms(x) * (1 + scale), computed in float32 and returned in x.dtype."""

  eps: float = 1e-6
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param(
        'scale',
        nn.with_logical_partitioning(nn.initializers.zeros_init(), ('norm',)),
        (x.shape[-1],),
        self.param_dtype,
    )
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = x32 * jax.lax.rsqrt(var + self.eps)
    scale = jnp.expand_dims(scale.astype(jnp.float32), range(x.ndim - 1))
    return (normed * (1.0 + scale)).astype(x.dtype)


def apply_rope(
    x_BTNH: jax.Array, positions_BT: jax.Array, base: float, scale: float = 1.0
) -> jax.Array:
  """Rotary embedding on the two halves of the head dim (Gemma's layout).

  Args:
    x_BTNH: [B, T, N, H] queries or keys.
    positions_BT: [B, T] absolute positions.
    base: wavelength base.
    scale: linear position interpolation factor (positions / scale).

  Returns:
    [B, T, N, H] rotated, in x's dtype.
  """
  head_dim = x_BTNH.shape[-1]
  # [H/2], computed as transformers does, so positions far out stay bit-close.
  inv_freq = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  # [B, T, 1, H/2]
  angles = positions_BT.astype(jnp.float32)[..., None, None] * (
      inv_freq / scale)[None, None, None, :]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)


class Embedder(nn.Module):
  """Token embedding, scaled by sqrt(D); `decode` is the tied output layer."""

  vocab_size: int
  embed_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.input_embedding = self.param(
        'input_embedding',
        nn.with_logical_partitioning(nn.initializers.normal(), ('vocab', 'embed')),
        (self.vocab_size, self.embed_dim),
        self.param_dtype,
    )

  def encode(self, tokens_BT: jax.Array) -> jax.Array:
    """[B, T] int -> [B, T, D] in the compute dtype."""
    x_BTD = self.input_embedding[tokens_BT].astype(self.dtype)
    return x_BTD * jnp.sqrt(self.embed_dim).astype(self.dtype)

  def decode(self, x_BTD: jax.Array) -> jax.Array:
    """[B, ..., D] -> [B, ..., V] logits in float32."""
    x_BTD, table_VD = output_sharded(x_BTD, self.input_embedding)
    return einsum('...D,VD->...V', x_BTD, table_VD, self.dtype, jnp.float32)


def output_sharded(x_BTD: jax.Array, table_VD: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """The operands of the output projection, constrained (under a mesh) to
  split the vocabulary rather than the batch: [B, ..., D] hidden states
  gathered over FSDP and the [V, D] table split over FSDP x tensor by rows
  (`axes.LOGITS_VOCAB`), so no device holds the whole table."""
  x_BTD = nn.with_logical_constraint(
      x_BTD, (axes.LOGITS_BATCH,) + (None,) * (x_BTD.ndim - 1))
  return x_BTD, nn.with_logical_constraint(table_VD, (axes.LOGITS_VOCAB, None))
