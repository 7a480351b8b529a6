"""Model FLOPs utilization: achieved FLOP/s over the hardware's peak.

TPU peaks are the published bf16 figures per chip. On CPU the peak is
measured once per process: the best of a few 2048^3 matmuls in the compute
dtype (bf16 inputs accumulate in f32), over the whole machine.
"""

import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp

from icl_iwl.model.presets import GemmaConfig

_TPU_PEAK = {  # bf16 FLOP/s per chip.
    'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12,
    'TPU v5p': 459e12, 'TPU v5': 459e12, 'TPU v6 lite': 918e12, 'TPU v6e': 918e12,
}


def best_seconds(fn: Callable[[], jax.Array], repeats: int) -> float:
  """The fastest of `repeats` timed calls of `fn` after one untimed call
  (compilation), each waited for."""
  fn().block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    fn().block_until_ready()
    best = min(best, time.perf_counter() - start)
  return best


@functools.cache
def _measured_cpu_peak(dtype) -> float:
  n = 2048
  x = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  return 2 * n**3 / best_seconds(lambda: f(x, x), 3)


def peak_flops(dtype) -> float:
  """Peak FLOP/s of all devices of this job for compute in `dtype`."""
  device = jax.devices()[0]
  if device.platform == 'tpu':
    kind = next((k for k in _TPU_PEAK if device.device_kind.startswith(k)), None)
    if kind:
      return _TPU_PEAK[kind] * jax.device_count()
  return _measured_cpu_peak(jnp.dtype(dtype)) * jax.process_count()


def train_flops(config: GemmaConfig, batch: int, seq_len: int,
                slots: int | None = None, frozen_weights: bool = False) -> float:
  """Model FLOPs of one [batch, seq_len] train step (PaLM's 6N + 12 L H Dh T
  per token, full fine-tuning).

  N counts the matmul weights: attention and MLP at every position, the tied
  output layer at the positions projected onto the vocabulary: every one, or
  `slots` per row when the step gathers the targets first (`step.loss_sums`).
  `frozen_weights` (LoRA): no gradient of the base weights is computed, so
  4N (forward and activation gradients; the small adapters are left out).
  """
  c = config
  attn = c.embed_dim * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
  mlp = 3 * c.embed_dim * c.hidden_dim
  k = 4 if frozen_weights else 6
  body = k * c.num_layers * (attn + mlp) + 12 * c.num_layers * c.num_heads * c.head_dim * seq_len
  head = k * c.vocab_size * c.embed_dim
  return batch * (seq_len * body + (seq_len if slots is None else slots) * head)
