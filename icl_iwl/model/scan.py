"""Converts param trees between the per-layer and the scanned (stacked) layouts.

Per layer (gemma checkpoints, `Transformer(scan_layers=False)`):
  layer_{i}/attn/q_einsum/w                      [N, D, H]
Scanned (`Transformer(scan_layers=True)`):
  layers/attn/q_einsum/w                         [L, N, D, H]   (layer i at [i])

Checkpoints keep the per-layer names at the boundary: loaders produce the
per-layer tree and `to_layout` stacks it for a scanned model; a saved train
state (params, optimizer moments: any subtree named like the params) converts
by its '/'-joined leaf names (`stack_flat`, `unstack_flat`, `convert_flat`).

Train states saved before revision f6f0d8b scanned groups of layers:
  stack_{k}/layer_{j}/attn/q_einsum/w            [groups, N, D, H]
(layer start_k + g * period_k + j at [g], segments as `_grouped_segments`);
`convert_flat` reads them into either layout.
"""

import re
from typing import Any, Mapping

from flax import traverse_util
import jax.numpy as jnp
import numpy as np

from icl_iwl.model import gemma
from icl_iwl.model import presets

_LAYER = re.compile(r'^layer_(\d+)$')
_GROUPED = re.compile(r'^stack_(\d+)$')  # Before f6f0d8b (module doc).
STACKED = 'layers'  # The scanned block's name (`gemma.Transformer._stack`).


def _stack_arrays(arrays: list[Any]) -> Any:
  if all(isinstance(a, np.ndarray) for a in arrays):
    return np.stack(arrays)
  return jnp.stack(arrays)


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


def layout_flat(flat: Mapping[str, Any]) -> str:
  """'scanned', 'grouped' (saved before f6f0d8b) or 'per_layer', by the
  '/'-joined names of a tree."""
  parts = {p for name in flat for p in name.split('/')}
  if STACKED in parts:
    return 'scanned'
  return 'grouped' if any(_GROUPED.match(p) for p in parts) else 'per_layer'


def _grouped_segments(config: presets.GemmaConfig) -> list[tuple[int, int, int]]:
  """The old layout's ((first layer, period P, groups), ...): each segment
  repeated the smallest period of the remaining layers' attention types;
  the layers left over (fewer than P) formed the next segments."""
  types, segments, start = config.attention_types, [], 0
  while start < len(types):
    rest = types[start:]
    period = next(p for p in range(1, len(rest) + 1)
                  if all(rest[i] == rest[i - p] for i in range(p, len(rest))))
    segments.append((start, period, len(rest) // period))
    start += period * (len(rest) // period)
  return segments


def _ungroup_flat(flat: Mapping[str, Any], config: presets.GemmaConfig) -> dict[str, Any]:
  """Old grouped names -> per-layer names (other names pass through)."""
  segments, out = _grouped_segments(config), {}
  for name, value in flat.items():
    path = name.split('/')
    hit = next((n for n, p in enumerate(path) if _GROUPED.match(p)), None)
    if hit is None:
      out[name] = value
      continue
    start, period, groups = segments[int(_GROUPED.match(path[hit]).group(1))]
    if value.shape[0] != groups:
      raise ValueError(f'{name} has {value.shape[0]} groups, {config.name} {groups}.')
    j = int(_LAYER.match(path[hit + 1]).group(1))
    for g in range(groups):
      layer = f'layer_{start + g * period + j}'
      out['/'.join(path[:hit] + [layer] + path[hit + 2:])] = value[g]
  return out


def convert_flat(flat: Mapping[str, Any], config: presets.GemmaConfig,
                 scanned: bool) -> dict[str, Any]:
  """'/'-joined names of any layout (`layout_flat`) -> the scanned layout if
  `scanned`, else the per-layer one."""
  layout = layout_flat(flat)
  per_layer = (unstack_flat(flat, config) if layout == 'scanned' else
               _ungroup_flat(flat, config) if layout == 'grouped' else dict(flat))
  return stack_flat(per_layer, config) if scanned else per_layer


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
