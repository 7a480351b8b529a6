"""Samplers: how each training sequence is built from a dataset's train split.

A sampler turns example index i (and a per-example RNG) into text pieces,
each marked as a loss target or not:

  documents   knowledge fine-tuning: one document, every token a target.
  random      IC-Train: k random other pairs of the target's task as context
              examples, then the target pair; only the target output is a
              loss target.

Register new samplers (similar, contrastive mixtures, ...) with
`@SAMPLERS.register(name)`; they receive the train records and the config.
"""

import abc
from typing import Any, Mapping, Protocol, Sequence

import ml_collections
import numpy as np

from icl_iwl import registry
from icl_iwl.data import schema

Piece = tuple[str, bool]  # (text, is a loss target)


class Sampler(Protocol):
  """Builds training example `index` (of `len(self)` per epoch)."""

  def __len__(self) -> int: ...

  def __call__(self, index: int, rng: np.random.Generator) -> list[Piece]: ...


SAMPLERS: registry.Registry = registry.Registry('sampler')


@SAMPLERS.register('documents')
class Documents:
  """Each document is one example; all its tokens are targets."""

  def __init__(self, records: Sequence[Mapping[str, Any]],
               config: ml_collections.ConfigDict):
    del config
    self.texts = [r['text'] for r in records if r.get('text')]
    if not self.texts:
      raise ValueError("Sampler 'documents' needs records with a 'text' field.")

  def __len__(self) -> int:
    return len(self.texts)

  def __call__(self, index: int, rng: np.random.Generator) -> list[Piece]:
    del rng
    return [(self.texts[index], True)]


class TaskPairs(abc.ABC):
  """Base of IC-Train samplers: k context pairs chosen by `context`, then pair i."""

  def __init__(self, records: Sequence[Mapping[str, Any]],
               config: ml_collections.ConfigDict):
    self.pairs = [r for r in records if r.get('input') and r.get('output')]
    if len(self.pairs) < 2:
      raise ValueError(f'Sampler {type(self).__name__} needs task pairs with '
                       "'input' and 'output' fields.")
    self.num_context = config.num_context

  def __len__(self) -> int:
    return len(self.pairs)

  @abc.abstractmethod
  def context(self, index: int, rng: np.random.Generator) -> list[int]:
    """Indices of the context pairs for target pair `index` (never `index`)."""

  def __call__(self, index: int, rng: np.random.Generator) -> list[Piece]:
    chosen = [self.pairs[j] for j in self.context(index, rng)]
    target = self.pairs[index]
    prompt = schema.render_context_prompt(
        [p['input'] for p in chosen], [p['output'] for p in chosen], target['input'])
    return [(prompt, False), (schema.render_answer(target['output']), True)]


@SAMPLERS.register('random')
class RandomContext(TaskPairs):
  """k context examples drawn uniformly from the other pairs of its task."""

  def __init__(self, records: Sequence[Mapping[str, Any]],
               config: ml_collections.ConfigDict):
    super().__init__(records, config)
    tasks: dict[str, list[int]] = {}
    for j, pair in enumerate(self.pairs):
      tasks.setdefault(pair.get('task', ''), []).append(j)
    small = sorted(t for t, js in tasks.items() if len(js) <= self.num_context)
    if small:
      raise ValueError(f'Tasks {small} have no {self.num_context} other pairs '
                       'to fill a context.')
    # Pair index -> (the indices of its task's pairs, its position there).
    self._task_of: dict[int, tuple[list[int], int]] = {}
    for js in tasks.values():
      for k, j in enumerate(js):
        self._task_of[j] = (js, k)

  def context(self, index: int, rng: np.random.Generator) -> list[int]:
    same, position = self._task_of[index]
    others = rng.choice(len(same) - 1, size=self.num_context, replace=False)
    return [same[int(j) + (j >= position)] for j in others]
