"""Logical axis names and the rules that map them to mesh axes.

Parameters carry logical names (see `layers.Einsum` axes): vocab, embed,
heads, kv_heads, head_dim, mlp, norm. Activations use batch, length,
act_embed, act_heads, act_mlp. The rules are config data; `fit` drops any
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

Rules = tuple[tuple[str, Any], ...]

# FSDP shards weights over 'fsdp' and the batch over ('data', 'fsdp');
# tensor parallelism splits heads, MLP and vocabulary over 'tensor'.
DEFAULT_RULES: Rules = (
    ('batch', ('data', 'fsdp')),
    ('length', None),
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv_heads', 'tensor'),
    ('head_dim', None),
    ('mlp', 'tensor'),
    ('norm', None),
    ('act_embed', None),
    ('act_heads', 'tensor'),
    ('act_mlp', 'tensor'),
)


def _axes(value) -> tuple[str, ...]:
  if value is None:
    return ()
  return (value,) if isinstance(value, str) else tuple(value)


def _dims(config: GemmaConfig) -> dict[str, int]:
  """The size of each logical (non-batch) axis for this architecture."""
  return {
      'vocab': config.vocab_size, 'embed': config.embed_dim,
      'heads': config.num_heads, 'kv_heads': config.num_kv_heads,
      'head_dim': config.head_dim, 'mlp': config.hidden_dim,
      'norm': config.embed_dim, 'act_embed': config.embed_dim,
      'act_heads': config.num_heads, 'act_mlp': config.hidden_dim,
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
