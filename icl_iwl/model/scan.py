"""Converts param trees between the per-layer and the scanned (stacked) layouts.

Per layer (gemma checkpoints, `Transformer(scan_layers=False)`):
  layer_{i}/attn/q_einsum/w                      [N, D, H]
Scanned (`Transformer(scan_layers=True)`, see `gemma.scan_segments`):
  stack_{k}/layer_{j}/attn/q_einsum/w            [groups, N, D, H]
where layer i = start_k + g * period_k + j for group g of segment k.

Checkpoints keep the per-layer names at the boundary: loaders produce the
per-layer tree and `to_layout` stacks it for a scanned model; a saved train
state (params, optimizer moments: any subtree named like the params) converts
by its '/'-joined leaf names (`convert_flat`).
"""

import re
from typing import Any, Mapping

from flax import traverse_util
import jax.numpy as jnp
import numpy as np

from icl_iwl.model import gemma
from icl_iwl.model import presets

_LAYER = re.compile(r'^layer_(\d+)$')
_STACK = re.compile(r'^stack_(\d+)$')


def _stack_arrays(arrays: list[Any]) -> Any:
  if all(isinstance(a, np.ndarray) for a in arrays):
    return np.stack(arrays)
  return jnp.stack(arrays)


def is_stacked_flat(flat: Mapping[str, Any]) -> bool:
  """Whether '/'-joined names hold scanned segments (`stack_k/...`)."""
  return any(_STACK.match(part) for name in flat for part in name.split('/'))


def _locate(layer: int, segments) -> tuple[int, int, int]:
  """(segment k, group g, index j in the group) of layer `layer`."""
  for k, (start, period, groups) in enumerate(segments):
    if start <= layer < start + period * groups:
      g, j = divmod(layer - start, period)
      return k, g, j
  raise ValueError(f'Layer {layer} is beyond the model.')


def stack_flat(flat: Mapping[str, Any], config: presets.GemmaConfig) -> dict[str, Any]:
  """'/'-joined per-layer names -> scanned names (leaves stacked per group).

  Every name with a `layer_{i}` part (under any prefix, e.g. the optimizer's
  moments) is moved; other names pass through.
  """
  segments = gemma.scan_segments(config.attention_types)
  out, parts = {}, {}
  for name, value in flat.items():
    path = name.split('/')
    hit = next((n for n, p in enumerate(path) if _LAYER.match(p)), None)
    if hit is None:
      out[name] = value
      continue
    k, g, j = _locate(int(_LAYER.match(path[hit]).group(1)), segments)
    new = '/'.join(path[:hit] + [gemma.stack_name(k), f'layer_{j}'] + path[hit + 1:])
    parts.setdefault(new, {})[g] = value
  for new, by_group in parts.items():
    k = int(_STACK.match(next(p for p in new.split('/') if _STACK.match(p))).group(1))
    groups = segments[k][2]
    if sorted(by_group) != list(range(groups)):
      raise ValueError(f'{new}: layers of groups {sorted(by_group)} given, the '
                       f'segment has {groups} groups.')
    out[new] = _stack_arrays([by_group[g] for g in range(groups)])
  return out


def unstack_flat(flat: Mapping[str, Any], config: presets.GemmaConfig) -> dict[str, Any]:
  """Scanned names -> '/'-joined per-layer names (the inverse of `stack_flat`)."""
  segments = gemma.scan_segments(config.attention_types)
  out = {}
  for name, value in flat.items():
    path = name.split('/')
    hit = next((n for n, p in enumerate(path) if _STACK.match(p)), None)
    if hit is None:
      out[name] = value
      continue
    start, period, groups = segments[int(_STACK.match(path[hit]).group(1))]
    j = int(_LAYER.match(path[hit + 1]).group(1))
    if value.shape[0] != groups:
      raise ValueError(f'{name} has {value.shape[0]} groups, the preset {groups}.')
    for g in range(groups):
      layer = f'layer_{start + g * period + j}'
      out['/'.join(path[:hit] + [layer] + path[hit + 2:])] = value[g]
  return out


def is_stacked(params: Mapping[str, Any]) -> bool:
  """Whether a param tree is in the scanned layout."""
  return any(_STACK.match(k) for k in params)


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
