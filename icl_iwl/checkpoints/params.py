"""Param trees: flat '/'-joined views, and checks of a checkpoint against a
preset (its architecture, its param shapes)."""

from typing import Any, Mapping

from flax import linen as nn
import numpy as np

from icl_iwl.model import gemma
from icl_iwl.model import presets

Params = dict[str, Any]


class CheckpointError(ValueError):
  """A checkpoint that is missing, unreadable, or does not fit the preset."""


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}."""
  flat = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + '/'))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> Params:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree: Params = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def shapes(config: presets.GemmaConfig) -> dict[str, tuple[int, ...]]:
  """Flat {path: shape} of the preset's params (no memory is allocated)."""
  abstract = nn.unbox(gemma.abstract_params(gemma.Transformer(config)))
  return {k: tuple(v.shape) for k, v in flatten(abstract).items()}


def check(flat: Mapping[str, np.ndarray], config: presets.GemmaConfig,
          source: str) -> None:
  """Raises CheckpointError naming every missing, extra or misshapen param."""
  expected = shapes(config)
  problems = []
  for path in sorted(expected.keys() - flat.keys()):
    problems.append(f'missing {path} (the preset expects shape {expected[path]})')
  for path in sorted(flat.keys() - expected.keys()):
    problems.append(f'unexpected {path} (shape {tuple(np.shape(flat[path]))})')
  for path in sorted(expected.keys() & flat.keys()):
    got = tuple(np.shape(flat[path]))
    if got != expected[path]:
      problems.append(f'{path} has shape {got} in the checkpoint, the preset '
                      f'expects {expected[path]}')
  if problems:
    raise CheckpointError(
        f'{source} does not match preset {config.name!r}:\n  ' + '\n  '.join(problems))


def check_architecture(found: presets.GemmaConfig, preset: presets.GemmaConfig,
                       source: str) -> None:
  """Raises CheckpointError naming every field where the architecture a
  checkpoint states (`found`) differs from `preset`, with both values."""
  def show(value):
    if isinstance(value, tuple) and value and isinstance(value[0], presets.AttentionType):
      return str(tuple(t.value for t in value))
    return repr(value)

  problems = [f'{field}: {show(got)} in the checkpoint, {show(want)} in the preset'
              for field, (got, want) in presets.mismatches(found, preset).items()]
  if problems:
    raise CheckpointError(f'{source} is not a {preset.name!r} model:\n  '
                          + '\n  '.join(problems))
