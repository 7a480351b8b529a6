"""Low-rank adapters (LoRA): the update, what trains, and folding it back in.

A weight W adapted by LoRA is used as W + (alpha / rank) * A @ B, with A
[in, rank] over the dims of W contracted with the input and B [rank, out]
over the others (flattened in W's axis order). `with_lora` is the one place
that computes it, both in the forward pass and for `merge`.
"""

import dataclasses
import math
from typing import Any, Callable

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp

from icl_iwl.model import presets

A_SUFFIX, B_SUFFIX = '_lora_a', '_lora_b'  # Param names: <weight name><suffix>.
MERGED = 'lora_merged'  # Collection where `with_lora` sows W + update.


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Low-rank adapters: W + (alpha / rank) * A @ B on the `targets` weights.

  targets name weights: q_einsum, kv_einsum, qkv_einsum, attn_vec_einsum,
  gating_einsum, linear.
  """

  rank: int
  alpha: float = 16.0
  targets: tuple[str, ...] = presets.LORA_TARGETS


def with_lora(module: nn.Module, target: str, weight_name: str, w: jax.Array,
              eqn: str, lora: LoraConfig | None) -> jax.Array:
  """`w`, plus its LoRA update if `target` is adapted.

  The weight's dims contracted with the input in `eqn` ('x,w->y') go through
  A [in, rank] (params `<weight_name>_lora_a`), the others through B [rank,
  out] (`<weight_name>_lora_b`). B starts at zero: training starts exactly
  from the base model. The sum is also sown (a no-op unless `merge` asks).
  """
  if lora is None or not lora.rank or target not in lora.targets:
    return w
  x_letters, w_letters = eqn.split('->')[0].split(',')
  ins = [i for i, c in enumerate(w_letters) if c in x_letters]
  outs = [i for i, c in enumerate(w_letters) if c not in x_letters]
  n_in = math.prod(w.shape[i] for i in ins)
  n_out = math.prod(w.shape[i] for i in outs)
  a = module.param(weight_name + A_SUFFIX, nn.with_logical_partitioning(
      nn.initializers.normal(n_in**-0.5), (None, None)), (n_in, lora.rank), w.dtype)
  b = module.param(weight_name + B_SUFFIX, nn.with_logical_partitioning(
      nn.initializers.zeros_init(), (None, None)), (lora.rank, n_out), w.dtype)
  delta = (a.astype(jnp.float32) @ b.astype(jnp.float32)) * (lora.alpha / lora.rank)
  order = ins + outs  # Axis k of `delta` is axis order[k] of w.
  delta = delta.reshape([w.shape[i] for i in order])
  merged = w + delta.transpose([order.index(j) for j in range(w.ndim)]).astype(w.dtype)
  module.sow(MERGED, weight_name, merged, init_fn=lambda: None,
             reduce_fn=lambda _, x: x)
  return merged


def is_adapter(path: str) -> bool:
  """Whether a '/'-joined param path names a LoRA factor."""
  return path.endswith((A_SUFFIX, B_SUFFIX))


def trainable(lora: LoraConfig | None) -> Callable[[str], bool]:
  """Which params train ('/'-joined path -> bool): under LoRA only the
  factors, otherwise all. Pass the model's `lora` field."""
  if lora is None or not lora.rank:
    return lambda path: True
  return is_adapter


def merge(model: nn.Module, params: Any) -> Any:
  """`params` of a LoRA model with every adapter folded into its weight.

  Args:
    model: a `gemma.Transformer` with `lora` set.
    params: its full param tree (base weights and factors).

  Returns:
    the param tree of the same model without LoRA: each adapted weight is
    W + (alpha / rank) * A @ B exactly as the LoRA forward pass uses it
    (read back from one forward pass on one token), no factors.
  """
  tokens = jnp.zeros((1, 1), jnp.int32)
  _, sown = model.apply({'params': params}, tokens, tokens,
                        jnp.ones((1, 1, 1), bool), mutable=[MERGED])
  flat = traverse_util.flatten_dict(params, sep='/')
  flat.update(traverse_util.flatten_dict(sown.get(MERGED, {}), sep='/'))
  return traverse_util.unflatten_dict(
      {k: v for k, v in flat.items() if not is_adapter(k)}, sep='/')
