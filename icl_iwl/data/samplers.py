"""Samplers: which records make each training sequence.

A sampler turns example index i (and a per-example RNG, so a seed fixes
every draw) into a `context.Example`; `context.fit` lays it out in tokens
under the budget. Selected by `config.data.sampler`; every one is built as
`SAMPLERS.get(name)(records, config.data, embed=None)`:

  documents    one document, every token a loss target (knowledge FT).
  random       IC-Train: `num_context` random other pairs of the target's
               task, then the target.
  similar      the `num_context` pairs of the task nearest the target by
               `similarity` ('bm25' or 'embedding'), most similar last.
  contrastive  a grade g drawn from `grades` (P(g) for g = 0, 1, ...): the
               g pairs nearest the target (or, with `near_duplicates`, pairs
               one word away with another output, topped up with the nearest)
               and num_context - g random pairs, in random order.
  mixture      per example one of `mixture`'s samplers ('random:1,
               contrastive:3'), drawn by weight.

IC-Train samplers train on the pairs of `tasks` ('translation,...'; '': every
task), the other tasks held out. IC-Train contexts hold pairs of the
target's task only, never the target itself nor another pair with the same
input (that would give the answer away). Neighbour tables are built once per sampler, on first use (not when a
config is validated); 'embedding' needs `embed` (texts -> [N, D], e.g.
`embedding.model_embedder`). Each Example records its sampler (`kind`) and
which context examples are the similar ones (`similar`, its grade).
"""

import abc
import collections
import functools
from typing import Any, Mapping, Protocol, Sequence

import ml_collections
import numpy as np

from icl_iwl import registry
from icl_iwl.data import context as context_lib
from icl_iwl.data import retrieval
from icl_iwl.data import schema

Example = context_lib.Example
Config = ml_collections.ConfigDict
Records = Sequence[Mapping[str, Any]]


class Sampler(Protocol):
  """Builds training example `index` (of `len(self)` per epoch)."""

  def __len__(self) -> int: ...

  def __call__(self, index: int, rng: np.random.Generator) -> Example: ...


SAMPLERS: registry.Registry = registry.Registry('sampler')


@SAMPLERS.register('documents')
class Documents:
  """Each document is one example; all its tokens are targets."""

  def __init__(self, records: Records, config: Config, embed=None):
    del config, embed
    self.texts = [r['text'] for r in records if r.get('text')]
    if not self.texts:
      raise ValueError("Sampler 'documents' needs records with a 'text' field.")

  def __len__(self) -> int:
    return len(self.texts)

  def __call__(self, index: int, rng: np.random.Generator) -> Example:
    del rng
    return Example(target=self.texts[index], kind='documents')


class _Nearest:
  """A neighbour table (`retrieval.neighbours`), built on first use."""

  def __init__(self, texts, groups, k, similarity, embed):
    self._args = (texts, groups, k, similarity, embed)

  @functools.cached_property
  def table(self) -> np.ndarray:
    return retrieval.neighbours(*self._args)


class TaskPairs(abc.ABC):
  """Base of IC-Train samplers: `context` picks the pairs, then the target.

  Attributes:
    pairs: the records with an input and an output.
    num_context: k, context examples per sequence.
  """

  name = ''

  def __init__(self, records: Records, config: Config,
               embed: retrieval.Embed | None = None):
    wanted = {t.strip() for t in config.get('tasks', '').split(',') if t.strip()}
    self.pairs = [r for r in records if r.get('input') and r.get('output')
                  and (not wanted or r.get('task', '') in wanted)]
    if len(self.pairs) < 2:
      only = f" of tasks {', '.join(sorted(wanted))}" if wanted else ''
      raise ValueError(f"Sampler {self.name!r} needs task pairs{only} with "
                       "'input' and 'output' fields.")
    self.num_context = k = config.num_context
    self.similarity = config.get('similarity', 'bm25')
    if self.similarity not in retrieval.SIMILARITIES:
      raise ValueError(f'data.similarity = {self.similarity!r}; use one of '
                       f'{", ".join(retrieval.SIMILARITIES)}.')
    self.tasks = [p.get('task', '') for p in self.pairs]
    inputs = [p['input'] for p in self.pairs]
    # Per task, its pairs; per pair, the positions there it may never use.
    self._task: dict[str, list[int]] = collections.defaultdict(list)
    for j, task in enumerate(self.tasks):
      self._task[task].append(j)
    self._position = {}
    self._banned: list[list[int]] = [[] for _ in self.pairs]
    for same in self._task.values():
      by_input = collections.defaultdict(list)
      for position, j in enumerate(same):
        self._position[j] = position
        by_input[inputs[j]].append(position)
      for j in same:
        self._banned[j] = by_input[inputs[j]]  # Itself and its copies.
    small = sorted(t for t, same in self._task.items()
                   if len({inputs[j] for j in same}) <= k)
    if small:
      raise ValueError(f'Tasks {small} have no {k} other inputs to fill a '
                       'context.')
    self._units = [f'Input: {p["input"]}\nOutput:{schema.render_answer(p["output"])}'
                   for p in self.pairs]
    self._prompts = [schema.render_context_prompt([], [], x) for x in inputs]
    self._targets = [schema.render_answer(p['output']) for p in self.pairs]
    self._nearest = _Nearest(inputs, self.tasks, k, self.similarity, embed)

  def __len__(self) -> int:
    return len(self.pairs)

  @property
  def nearest(self) -> np.ndarray:
    """int [N, k]: per pair the k nearest others of its task, best first."""
    return self._nearest.table

  def random(self, index: int, n: int, rng: np.random.Generator,
             exclude: Sequence[int] = ()) -> list[int]:
    """n distinct random pairs of `index`'s task, none banned for it nor in
    `exclude`."""
    same = self._task[self.tasks[index]]
    banned = sorted({*self._banned[index], *(self._position[j] for j in exclude)})
    drawn = rng.choice(len(same) - len(banned), size=n, replace=False)
    out = []
    for position in drawn:  # The position-th allowed one.
      for b in banned:
        position += position >= b
      out.append(same[position])
    return out

  @abc.abstractmethod
  def context(self, index: int, rng: np.random.Generator
              ) -> tuple[list[int], list[bool]]:
    """(the context pairs of target `index`, which are similar ones)."""

  def __call__(self, index: int, rng: np.random.Generator) -> Example:
    chosen, similar = self.context(index, rng)
    return Example(context=tuple(self._units[j] for j in chosen),
                   prompt=self._prompts[index], target=self._targets[index],
                   similar=tuple(similar), sources=tuple(chosen), kind=self.name)


@SAMPLERS.register('random')
class RandomContext(TaskPairs):
  """k context examples drawn uniformly from the other pairs of its task."""

  name = 'random'

  def context(self, index, rng):
    return self.random(index, self.num_context, rng), [False] * self.num_context


@SAMPLERS.register('similar')
class SimilarContext(TaskPairs):
  """The k nearest pairs of the task, the most similar last (nearest the
  target, and dropped last)."""

  name = 'similar'

  def context(self, index, rng):
    del rng
    chosen = [int(j) for j in self.nearest[index][::-1]]
    return chosen, [True] * len(chosen)


@SAMPLERS.register('contrastive')
class ContrastiveContext(TaskPairs):
  """g similar and k - g random pairs, g drawn per example from `grades`."""

  name = 'contrastive'

  def __init__(self, records: Records, config: Config,
               embed: retrieval.Embed | None = None):
    super().__init__(records, config, embed)
    grades = np.asarray(config.get('grades', (0.5, 0.5)), np.float64)
    if (grades.ndim != 1 or not 0 < len(grades) <= self.num_context + 1
        or (grades < 0).any() or grades.sum() <= 0):
      raise ValueError(
          f'data.grades = {tuple(grades)}: want P(grade) for grades 0, 1, ... '
          f'up to data.num_context = {self.num_context}, non-negative, not all 0.')
    self.grades = grades / grades.sum()
    self.near_duplicates: list[list[int]] | None = None
    if config.get('near_duplicates', False):
      outputs = [p['output'] for p in self.pairs]
      near = retrieval.near_duplicates([p['input'] for p in self.pairs], self.tasks)
      self.near_duplicates = [[j for j in js if outputs[j] != outputs[i]]
                              for i, js in enumerate(near)]

  def similar(self, index: int, grade: int, rng: np.random.Generator) -> list[int]:
    """`grade` pairs similar to `index`: near-duplicates (if asked for) drawn
    at random, then its nearest neighbours."""
    out = []
    if self.near_duplicates is not None and grade:
      duplicates = self.near_duplicates[index]
      picks = rng.choice(len(duplicates), min(grade, len(duplicates)), replace=False)
      out = [duplicates[p] for p in picks]
    for j in self.nearest[index]:
      if len(out) == grade:
        break
      if j not in out:
        out.append(int(j))
    return out

  def context(self, index, rng):
    grade = int(rng.choice(len(self.grades), p=self.grades))
    close = self.similar(index, grade, rng)
    chosen = close + self.random(index, self.num_context - grade, rng, close)
    order = rng.permutation(self.num_context)
    return [chosen[o] for o in order], [bool(o < grade) for o in order]


@SAMPLERS.register('mixture')
class Mixture:
  """Per example, one of `config.mixture`'s IC-Train samplers by weight.

  `config.mixture` is 'name:weight,...', e.g. 'random:1,contrastive:3'; the
  samplers share the config, `embed` and one neighbour table.
  """

  name = 'mixture'

  def __init__(self, records: Records, config: Config,
               embed: retrieval.Embed | None = None):
    spec = config.get('mixture', '')
    parts = [p.partition(':') for p in spec.split(',') if p.strip()]
    try:
      weights = np.asarray([float(w) for _, _, w in parts])
    except ValueError:
      weights = np.zeros(0)
    if not parts or len(weights) != len(parts) or (weights <= 0).any():
      raise ValueError(f"data.mixture = {spec!r}: want 'name:weight,...' with "
                       "positive weights, e.g. 'random:1,contrastive:1'.")
    self.samplers = []
    for name, _, _ in parts:
      try:
        factory = SAMPLERS.get(name.strip())
      except registry.UnknownNameError as e:
        raise ValueError(f'data.mixture: {e}') from None
      if not (isinstance(factory, type) and issubclass(factory, TaskPairs)):
        raise ValueError(f'data.mixture: {name.strip()!r} is not an IC-Train '
                         'sampler (random, similar, contrastive).')
      self.samplers.append(factory(records, config, embed))
    for sampler in self.samplers[1:]:  # One neighbour table for all.
      sampler._nearest = self.samplers[0]._nearest  # pylint: disable=protected-access
    self.weights = weights / weights.sum()

  def __len__(self) -> int:
    return len(self.samplers[0])

  def __call__(self, index: int, rng: np.random.Generator) -> Example:
    sampler = self.samplers[int(rng.choice(len(self.samplers), p=self.weights))]
    return sampler(index, rng)
