"""Converts param trees between the per-layer and the scanned (stacked) layouts.

Per layer (gemma checkpoints, `Transformer(scan_layers=False)`):
  layer_{i}/attn/q_einsum/w                      [N, D, H]
Scanned (`Transformer(scan_layers=True)`):
  layers/attn/q_einsum/w                         [L, N, D, H]   (layer i at [i])

Checkpoints keep the per-layer names at the boundary: loaders produce the
per-layer tree and `to_layout` stacks it for a scanned model; a saved train
state (params, optimizer moments: any subtree named like the params) converts
by its '/'-joined leaf names (`stack_flat`, `unstack_flat`).
"""

import re
from typing import Any, Mapping

from flax import traverse_util
import jax.numpy as jnp
import numpy as np

from icl_iwl.model import gemma
from icl_iwl.model import presets

_LAYER = re.compile(r'^layer_(\d+)$')
STACKED = 'layers'  # The scanned block's name (`gemma.Transformer._stack`).


def _stack_arrays(arrays: list[Any]) -> Any:
  if all(isinstance(a, np.ndarray) for a in arrays):
    return np.stack(arrays)
  return jnp.stack(arrays)


def is_stacked_flat(flat: Mapping[str, Any]) -> bool:
  """Whether '/'-joined names hold scanned layers (`layers/...`)."""
  return any(STACKED in name.split('/') for name in flat)


def stack_flat(flat: Mapping[str, Any], config: presets.GemmaConfig) -> dict[str, Any]:
  """'/'-joined per-layer names -> scanned names (leaves stacked over layers).

  Every name with a `layer_{i}` part (under any prefix, e.g. the optimizer's
  moments) is moved; other names pass through.
  """
  out, parts = {}, {}
  for name, value in flat.items():
    path = name.split('/')
    hit = next((n for n, p in enumerate(path) if _LAYER.match(p)), None)
    if hit is None:
      out[name] = value
      continue
    new = '/'.join(path[:hit] + [STACKED] + path[hit + 1:])
    parts.setdefault(new, {})[int(_LAYER.match(path[hit]).group(1))] = value
  for new, by_layer in parts.items():
    if sorted(by_layer) != list(range(config.num_layers)):
      raise ValueError(f'{new}: layers {sorted(by_layer)} given, {config.name} has '
                       f'{config.num_layers}.')
    out[new] = _stack_arrays([by_layer[i] for i in range(config.num_layers)])
  return out


def unstack_flat(flat: Mapping[str, Any], config: presets.GemmaConfig) -> dict[str, Any]:
  """Scanned names -> '/'-joined per-layer names (the inverse of `stack_flat`)."""
  out = {}
  for name, value in flat.items():
    path = name.split('/')
    if STACKED not in path:
      out[name] = value
      continue
    if value.shape[0] != config.num_layers:
      raise ValueError(f'{name} has {value.shape[0]} layers, {config.name} '
                       f'{config.num_layers}.')
    hit = path.index(STACKED)
    for i in range(config.num_layers):
      out['/'.join(path[:hit] + [f'layer_{i}'] + path[hit + 1:])] = value[i]
  return out


def is_stacked(params: Mapping[str, Any]) -> bool:
  """Whether a param tree is in the scanned layout."""
  return STACKED in params


def stack(params: Mapping[str, Any], config: presets.GemmaConfig) -> dict[str, Any]:
  """Per-layer param tree -> scanned param tree of `config`."""
  return traverse_util.unflatten_dict(
      stack_flat(traverse_util.flatten_dict(params, sep='/'), config), sep='/')


def unstack(params: Mapping[str, Any], config: presets.GemmaConfig) -> dict[str, Any]:
  """Scanned param tree -> per-layer param tree (gemma checkpoint names)."""
  return traverse_util.unflatten_dict(
      unstack_flat(traverse_util.flatten_dict(params, sep='/'), config), sep='/')


def to_layout(params: Mapping[str, Any] | None, model: gemma.Transformer) -> Any:
  """A param tree (either layout, or None) in the layout of `model`."""
  if params is None:
    return None
  if model.scan_layers and not is_stacked(params):
    return stack(params, model.config)
  if not model.scan_layers and is_stacked(params):
    return unstack(params, model.config)
  return params
