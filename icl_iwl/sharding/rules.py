"""Logical axis names and the rules that map them to mesh axes.

The names and the default rules live in `axes.py` (no jax, so configs can
import them). The rules are config data; `fit` drops any
mesh axis that does not divide the dimension it would shard (e.g. one KV
head over 2 tensor shards), so one rule table serves every preset.
"""

import contextlib
import math
from typing import Any, Sequence

from flax import linen as nn
import jax
import numpy as np

from icl_iwl.model import gemma
from icl_iwl.model.presets import GemmaConfig
from icl_iwl.sharding import axes

Rules = axes.Rules
DEFAULT_RULES = axes.DEFAULT_RULES


def _axes(value) -> tuple[str, ...]:
  if value is None:
    return ()
  return (value,) if isinstance(value, str) else tuple(value)


def _dims(config: GemmaConfig) -> dict[str, int]:
  """The size of each logical (non-batch) axis for this architecture."""
  return {
      axes.VOCAB: config.vocab_size, axes.EMBED: config.embed_dim,
      axes.HEADS: config.num_heads, axes.KV_HEADS: config.num_kv_heads,
      axes.HEAD_DIM: config.head_dim, axes.MLP: config.hidden_dim,
      axes.NORM: config.embed_dim, axes.ACT_EMBED: config.embed_dim,
      axes.ACT_HEADS: config.num_heads, axes.ACT_MLP: config.hidden_dim,
      axes.LOGITS_VOCAB: config.vocab_size,
  }


def fit(rules: Sequence[tuple[str, Any]], config: GemmaConfig,
        mesh: jax.sharding.Mesh) -> Rules:
  """Rules with every mesh axis that does not divide its dimension dropped.

  Unknown mesh axis names fail loudly (a typo would silently replicate).
  """
  dims = _dims(config)
  fitted = []
  for logical, value in rules:
    kept = []
    for axis in _axes(value):
      if axis not in mesh.shape:
        raise ValueError(f'Sharding rule {logical!r} -> {axis!r}: the mesh has '
                         f'no axis {axis!r} (it has {tuple(mesh.shape)}).')
      size = math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]
      if logical not in dims or dims[logical] % size == 0:
        kept.append(axis)
    fitted.append((logical, tuple(kept) if kept else None))
  return tuple(fitted)


def shardings(logical_tree: Any, mesh: jax.sharding.Mesh, rules: Rules) -> Any:
  """A NamedSharding tree for a tree of logical PartitionSpecs."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, list(rules))


def logical_specs(abstract_variables: Any) -> Any:
  """Logical PartitionSpecs of `jax.eval_shape(model.init, ...)` output."""
  return nn.get_partition_spec(abstract_variables)


def param_shardings(model: gemma.Transformer, mesh: jax.sharding.Mesh, rules: Rules) -> Any:
  """NamedShardings of `model`'s params ({'params': ...} stripped) under rules."""
  return shardings(logical_specs(gemma.abstract_params(model)), mesh, rules)


def activation_context(mesh: jax.sharding.Mesh, rules: Rules):
  """Context in which the model's logical activation constraints apply."""
  stack = contextlib.ExitStack()
  stack.enter_context(jax.set_mesh(mesh))
  stack.enter_context(nn.logical_axis_rules(list(rules)))
  return stack


def place_params(model: gemma.Transformer, params: Any, mesh: jax.sharding.Mesh,
                 rules: Rules, seed: int = 0) -> Any:
  """Params on the mesh, in the model's param dtype; random init if None.

  Random params are created already sharded (`jit(init, out_shardings=...)`),
  so no host ever holds the whole model.
  """
  target = param_shardings(model, mesh, rules)
  if params is None:
    init = jax.jit(gemma.init_params, static_argnums=0, out_shardings=target)
    return init(model, jax.random.key(seed))
  return jax.device_put(
      jax.tree.map(lambda x: np.asarray(x, model.param_dtype), params), target)
