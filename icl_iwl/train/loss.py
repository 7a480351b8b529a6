"""Cross-entropy through the tied output layer, with a hand-written gradient.

`cross_entropy_sum` takes the final hidden states and the embedding table
rather than logits, and its VJP is written out: the forward pass of a
gradient computation keeps one [B, L, V] array, exp(logits - max), and the
backward pass is the two matmuls that read it (the per-row softmax scale and
the upstream gradient go on their small operands). Autodiff of
`logsumexp(logits) - take_along_axis(logits, targets)` instead computes the
exponentials twice, scatters the one-hot targets into a [B, L, V] gradient
and has XLA copy that transposed for the embedding matmul: on the 270M
(V = 262144, [8, 128] tokens) that is 1 GiB per extra pass and about a fifth
of the step on CPU.

The forward computes the logits Q positions at a time (a scan over M
chunks), so the only [B, L, V]-sized array is the kept exponentials, in the
compute dtype (unchunked, the [B, L, V] f32 logits would sit next to it:
1.5 GiB rather than 0.5 GiB in bf16 for the 270M at [8, 128]; in f32 the
exponentials are as large as the logits, and one chunk is faster).

The one-hot part of the gradient (-1 at each target) never touches [B, L, V]:
it is applied to the small [B, L, D] and [V, D] results, through the gathered
target embeddings.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

from icl_iwl.model import layers

Dtype = Any


def _target_logits(x_BLD, embedding_VD, targets_BL, dtype, softcap):
  """([B, L] logit of each target, [B, L, D] target embeddings, [B, L] d
  logit / d raw logit): the target column of the logits, without the
  [B, L, V] array."""
  e_BLD = embedding_VD[targets_BL]
  # A row-wise dot as multiply-and-sum: XLA:CPU has no bf16 x bf16 -> f32
  # kernel for this batched dot.
  cast = lambda a: a.astype(dtype).astype(jnp.float32)  # noqa: E731
  z_BL = jnp.sum(cast(x_BLD) * cast(e_BLD), axis=-1)
  if softcap is None:
    return z_BL, e_BLD, jnp.ones_like(z_BL)
  t_BL = jnp.tanh(z_BL / softcap)
  return t_BL * softcap, e_BLD, 1.0 - jnp.square(t_BL)


def _logits(x_BLD, embedding_VD, dtype, softcap):
  """([B, L, V] f32 logits, d logits / d raw logits or None)."""
  z_BLV = layers.einsum('BLD,VD->BLV', x_BLD, embedding_VD, dtype, jnp.float32)
  if softcap is None:
    return z_BLV, None
  t_BLV = jnp.tanh(z_BLV / softcap)
  return t_BLV * softcap, 1.0 - jnp.square(t_BLV)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def cross_entropy_sum(x_BLD: jax.Array, embedding_VD: jax.Array,
                      targets_BL: jax.Array, weights_BL: jax.Array,
                      dtype: Dtype = jnp.float32,
                      softcap: float | None = None) -> jax.Array:
  """sum_{b, l} weights[b, l] * -log softmax(logits[b, l])[targets[b, l]].

  Args:
    x_BLD: [B, L, D] final-normed hidden states.
    embedding_VD: [V, D] the (tied) output embedding.
    targets_BL: [B, L] int target token ids.
    weights_BL: [B, L] float32 weight of each position (0: not a target).
    dtype: compute dtype of the matmuls (inputs cast, f32 accumulation).
    softcap: logits = softcap * tanh(logits / softcap), if set (Gemma 2).

  Returns:
    The weighted sum, a float32 scalar. Gradients flow to x and the embedding
    (not to the targets or weights).
  """
  # The forward of the VJP (XLA drops the unused residuals under jit).
  return _fwd(x_BLD, embedding_VD, targets_BL, weights_BL, dtype, softcap)[0]


# The forward projects Q positions at a time, Q such that a chunk's
# [B, Q, V] f32 logits stay under this many bytes (all [B, L, V] of them are
# 1 GiB for the 270M at [8, 128], on top of the kept exponentials).
CHUNK_BYTES = 128 * 2**20


def _chunks(x_BLD, vocab, dtype):
  """[M, B, Q, D]: the L positions of x in M chunks of Q, zero-padded to
  M * Q. In float32 one chunk: the kept exponentials are as large as the
  logits, so chunking saves little memory and costs time."""
  batch, length, _ = x_BLD.shape
  size = length
  if jnp.dtype(dtype) != jnp.float32:
    size = max(1, min(length, CHUNK_BYTES // (4 * batch * vocab)))
  count = -(-length // size)
  x_BLD = jnp.pad(x_BLD, ((0, 0), (0, count * size - length), (0, 0)))
  return jnp.moveaxis(x_BLD.reshape(batch, count, size, -1), 1, 0)


def _unchunk(a_MBQ, length):
  """[B, L, ...]: the inverse of `_chunks` for a [M, B, Q, ...] array."""
  return jnp.moveaxis(a_MBQ, 0, 1).reshape(
      a_MBQ.shape[1], -1, *a_MBQ.shape[3:])[:, :length]


def _fwd(x_BLD, embedding_VD, targets_BL, weights_BL, dtype, softcap):
  # The [B, L, V] exponentials are computed chunk by chunk over positions and
  # kept in the compute dtype, in the chunked layout the backward reads.
  def chunk(x_BQD):
    logits_BQV, dcap_BQV = _logits(x_BQD, embedding_VD, dtype, softcap)
    max_BQ = jnp.max(logits_BQV, axis=-1)
    exp_BQV = jnp.exp(logits_BQV - max_BQ[..., None])
    sum_BQ = jnp.sum(exp_BQV, axis=-1)
    if dcap_BQV is not None:
      exp_BQV = exp_BQV * dcap_BQV
    return max_BQ, sum_BQ, exp_BQV.astype(dtype)

  x_MBQD = _chunks(x_BLD, embedding_VD.shape[0], dtype)
  if x_MBQD.shape[0] == 1:
    max_MBQ, sum_MBQ, exp_MBQV = (a[None] for a in chunk(x_MBQD[0]))
  else:
    max_MBQ, sum_MBQ, exp_MBQV = jax.lax.map(chunk, x_MBQD)
  max_BL, sum_BL = (_unchunk(a, x_BLD.shape[1]) for a in (max_MBQ, sum_MBQ))
  target_BL, e_BLD, dcap_BL = _target_logits(x_BLD, embedding_VD, targets_BL,
                                             dtype, softcap)
  loss = jnp.sum(weights_BL * (max_BL + jnp.log(sum_BL) - target_BL))
  # d loss / d raw logits = scale_BL * exp_BLV (* dcap_BLV) - the one-hot
  # term: the [B, L, V] factor is kept unscaled (no extra pass over it), in
  # the compute dtype the backward matmuls read anyway.
  residuals = (x_BLD, embedding_VD, targets_BL, e_BLD, weights_BL / sum_BL,
               weights_BL * dcap_BL, exp_MBQV)
  return loss, residuals


def _bwd(dtype, softcap, residuals, g):
  del softcap
  x_BLD, embedding_VD, targets_BL, e_BLD, scale_BL, onehot_BL, exp_MBQV = residuals
  scale_BL1, onehot_BL1 = scale_BL[..., None] * g, onehot_BL[..., None] * g
  x32_BLD = x_BLD.astype(jnp.float32)
  # The scaled inputs in the chunked layout (padding: scale 0).
  sx_MBQD = _chunks(scale_BL1 * x32_BLD, embedding_VD.shape[0], dtype)
  scale_MBQ1 = _chunks(scale_BL1, embedding_VD.shape[0], dtype)
  # [B, L, D]
  dx_MBQD = scale_MBQ1 * layers.einsum('MBQV,VD->MBQD', exp_MBQV, embedding_VD,
                                       dtype, jnp.float32)
  dx_BLD = (_unchunk(dx_MBQD, x_BLD.shape[1])
            - onehot_BL1 * e_BLD.astype(jnp.float32))
  # [V, D]. In f32, as [D, V] then transposed: 'MBQD,MBQV->DV' reads the
  # exponentials in their own layout and XLA folds the transpose into the
  # dot (as 'MBQV,MBQD->VD' it first copies the [M, B, Q, V] array
  # transposed). XLA:CPU has no bf16 x bf16 -> f32 kernel for that folded
  # form, so lower precisions take the direct form. The one-hot term
  # scatters into the result in place.
  if jnp.dtype(dtype) == jnp.float32:
    de_VD = layers.einsum('MBQD,MBQV->DV', sx_MBQD, exp_MBQV, dtype,
                          jnp.float32).T
  else:
    de_VD = layers.einsum('MBQV,MBQD->VD', exp_MBQV, sx_MBQD, dtype,
                          jnp.float32)
  de_VD = de_VD.at[targets_BL.reshape(-1)].add(
      -(onehot_BL1 * x32_BLD).reshape(-1, x_BLD.shape[-1]))
  return (dx_BLD.astype(x_BLD.dtype), de_VD.astype(embedding_VD.dtype), None,
          None)


cross_entropy_sum.defvjp(_fwd, _bwd)
