"""Base layers of our Gemma: Einsum, RMSNorm, RoPE, Embedder.

Dimension letters used in every einsum of the model:
  B batch, T query length, S key length, N query heads, K key/value heads,
  G query heads per key/value head (N = K * G), H head dim, D model width,
  F MLP width, V vocabulary, C stacked projections (q/k/v or gate/up).

Weights are stored in `param_dtype` and cast to the compute `dtype` at use;
every contraction accumulates in float32 (`preferred_element_type`), which is
what TPUs want and, for bf16 on this kind of CPU, 2x faster than bf16 output.
"""

import dataclasses
import math
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def einsum(
    eqn: str, x: jax.Array, y: jax.Array, dtype: Dtype, out_dtype: Dtype = None
) -> jax.Array:
  """`jnp.einsum` of x and y cast to `dtype`, accumulated in float32.

  The result is cast to `out_dtype` (default: `dtype`).
  """
  out = jnp.einsum(
      eqn, x.astype(dtype), y.astype(dtype), preferred_element_type=jnp.float32
  )
  return out.astype(out_dtype or dtype)


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters: W + (alpha / rank) * A @ B on the `targets` weights.

  targets name weights: q_einsum, kv_einsum, qkv_einsum, attn_vec_einsum,
  gating_einsum, linear.
  """

  rank: int
  alpha: float = 16.0
  targets: tuple[str, ...] = ('q_einsum', 'kv_einsum', 'qkv_einsum',
                              'attn_vec_einsum', 'gating_einsum', 'linear')


def with_lora(module: nn.Module, target: str, weight_name: str, w: jax.Array,
              eqn: str, lora: LoraConfig | None) -> jax.Array:
  """`w`, plus its LoRA update if `target` is adapted.

  The weight's dims contracted with the input in `eqn` ('x,w->y') go through
  A [in, rank] (params `<weight_name>_lora_a`), the others through B [rank,
  out] (`<weight_name>_lora_b`). B starts at zero: training starts exactly
  from the base model.
  """
  if lora is None or not lora.rank or target not in lora.targets:
    return w
  x_letters, w_letters = eqn.split('->')[0].split(',')
  ins = [i for i, c in enumerate(w_letters) if c in x_letters]
  outs = [i for i, c in enumerate(w_letters) if c not in x_letters]
  n_in = math.prod(w.shape[i] for i in ins)
  n_out = math.prod(w.shape[i] for i in outs)
  a = module.param(f'{weight_name}_lora_a', nn.with_logical_partitioning(
      nn.initializers.normal(n_in**-0.5), (None, None)), (n_in, lora.rank), w.dtype)
  b = module.param(f'{weight_name}_lora_b', nn.with_logical_partitioning(
      nn.initializers.zeros_init(), (None, None)), (lora.rank, n_out), w.dtype)
  delta = (a.astype(jnp.float32) @ b.astype(jnp.float32)) * (lora.alpha / lora.rank)
  order = ins + outs  # Axis k of `delta` is axis order[k] of w.
  delta = delta.reshape([w.shape[i] for i in order])
  return w + delta.transpose([order.index(j) for j in range(w.ndim)]).astype(w.dtype)


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
    """[..., D] -> [..., V] logits in float32."""
    return einsum('...D,VD->...V', x_BTD, self.input_embedding, self.dtype,
                  jnp.float32)
