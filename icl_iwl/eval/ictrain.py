"""IC-Train probes by similarity grade: the IWL, ICL and copy scores.

    probes = ictrain.ProbeSet.from_dataset(datasets.resolve('ictrain'),
                                           grades='none,random,similar,near_duplicate',
                                           trained_tasks='translation')
    metrics = probes.metrics(scorer.score(probes.items))
    metrics['probe/icl/out/random']   # ICL accuracy, held-out task, random grade

The IC-Train dataset (data/builders/ictrain.py) has three probe splits, each
probe with the context its builder made (`context_inputs`/`context_outputs`):
test_iwl (known mappings, a context sharing no word with any choice),
test_icl (a novel word or remapped labels, inferable only from the context),
test_copy (a known-word target whose context holds a training pair one word
away, whose output is one of the wrong choices). Here each probe is scored
again with the context of a similarity grade:

  none            no context: the target input alone.
  random          the builder's context, in which each training pair one
                  word away from the target with another output (for copy
                  probes the near-duplicate; in iwl probes 8% of the
                  classification contexts hold one by chance) is replaced
                  by a random training pair of the task whose output shares
                  no word with any choice. icl contexts stay as built: their
                  examples show the choices (5% of the classification ones
                  hold a pair one word away by chance).
  similar         the random grade's context plus, last (next to the
                  target), the target's nearest training pair of its task by
                  BM25 over inputs that is neither the target's input nor one
                  word away from it with another output.
  near_duplicate  the copy probe's builder context, its one near-duplicate
                  kept, any other pair one word away replaced as above (8%
                  of the classification ones hold a second by chance).

Scores (predictions by summed log-likelihood):
  iwl   accuracy on test_iwl at none, random, similar; at near_duplicate the
        accuracy on test_copy (known mappings despite a misleading example).
  icl   accuracy on test_icl at none, random, similar. At none the answer
        cannot be inferred: translation is at chance, classification below
        it for a model that knows the trained label (a wrong choice).
  copy  on test_copy at none, random, near_duplicate: the fraction of probes
        whose prediction is the near-duplicate's output. At none and random
        the same choice without the example in context: the reference rate.
Chance (guessing uniformly among a probe's choices) is the same for all
three. Each score is split by domain: 'in' for probes of a task the run
trained on (`data.tasks`; '' every task), 'out' for a held-out task.
Metric names: probe/<score>/<domain>/<grade>, .../chance and .../n (probes).
"""

import collections
import dataclasses
import random
from typing import Any, Mapping, Sequence

import numpy as np

from icl_iwl.data import retrieval
from icl_iwl.data import schema
from icl_iwl.eval.packing import Item

GRADES = ('none', 'random', 'similar', 'near_duplicate')
KINDS = ('iwl', 'icl', 'copy')
SCORES = ('iwl', 'icl', 'copy')
DOMAINS = ('in', 'out')
# The grades each probe kind is scored at.
KIND_GRADES = {'iwl': ('none', 'random', 'similar'),
               'icl': ('none', 'random', 'similar'),
               'copy': ('none', 'random', 'near_duplicate')}
RULE = 'sum'
Pair = tuple[str, str]  # (input, output)
Record = Mapping[str, Any]


def one_word_apart(a: str, b: str) -> bool:
  """Whether `a` and `b` have as many words and differ in exactly one
  (retrieval.near_duplicates' definition)."""
  return retrieval.near_duplicates([a, b], [0, 0])[0] == [1]


def answer(record: Record) -> str:
  return record['choices'][record['answer']].strip()


def copy_choice(record: Record) -> int | None:
  """The index of the wrong choice that a context example outputs (a copy
  probe's near-duplicate), else None."""
  outputs = set(record['context_outputs'])
  return next((i for i, c in enumerate(record['choices'])
               if i != record['answer'] and c.strip() in outputs), None)


class Pool:
  """The training pairs of each task: where graded contexts come from."""

  def __init__(self, records: Sequence[Record]):
    self.pairs: dict[str, list[Pair]] = collections.defaultdict(list)
    for r in records:
      if r.get('input') and r.get('output'):
        self.pairs[r.get('task', '')].append((r['input'], r['output']))
    self._bm25: dict[str, retrieval.Bm25] = {}

  def nearest(self, task: str, target: str, output: str) -> Pair:
    """The pair of `task` nearest `target` by BM25, not `target` itself nor
    one word away from it with an output other than `output`."""
    pairs = self.pairs[task]
    if task not in self._bm25:
      self._bm25[task] = retrieval.Bm25([x for x, _ in pairs])
    scores = self._bm25[task].scores([target])[0]
    for j in np.argsort(-scores, kind='stable'):
      x, y = pairs[j]
      if x != target and not (y != output and one_word_apart(x, target)):
        return x, y
    raise ValueError(f'Task {task!r} has no pair similar to {target!r}.')

  def unrelated(self, task: str, target: str, avoid: set[str],
                taken: Sequence[Pair], rng: random.Random) -> Pair:
    """A random pair of `task` whose output has no word of `avoid`, not
    `target`'s input, not in `taken`."""
    fits = [p for p in self.pairs[task] if p[0] != target and p not in taken
            and avoid.isdisjoint(p[1].split())]
    if not fits:
      raise ValueError(f'Task {task!r} has no pair without {sorted(avoid)}.')
    return rng.choice(fits)


def graded_context(record: Record, grade: str, pool: Pool) -> tuple[Pair, ...]:
  """The context of probe `record` at `grade` (see the module doc)."""
  built = tuple(zip(record['context_inputs'], record['context_outputs']))
  kind, task, target = record['kind'], record['task'], record['input']
  if grade not in KIND_GRADES[kind]:
    raise ValueError(f'{kind} probes have no grade {grade!r}; they have '
                     f'{", ".join(KIND_GRADES[kind])}.')
  if grade == 'none':
    return ()
  if kind != 'icl':  # Near-duplicates drawn by chance go (icl: see doc).
    keep = (record['choices'][copy_choice(record)].strip()
            if kind == 'copy' and grade == 'near_duplicate' else None)
    avoid = {w for c in record['choices'] for w in c.split()}
    rng = random.Random(f'{record["id"]}:{grade}')
    right, context = answer(record), []
    for x, y in built:
      if y != keep and y != right and one_word_apart(x, target):
        x, y = pool.unrelated(task, target, avoid, built + tuple(context), rng)
      context.append((x, y))
    built = tuple(context)
  if grade == 'similar':
    return built + (pool.nearest(task, target, answer(record)),)
  return built


@dataclasses.dataclass(frozen=True)
class Probe:
  """One probe record at one grade: `item` is what the scorer scores;
  `copy` the near-duplicate's choice (copy probes)."""

  kind: str
  task: str
  grade: str
  context: tuple[Pair, ...]
  item: Item
  copy: int | None = None


def probe(record: Record, grade: str, pool: Pool) -> Probe:
  """`record` with its context at `grade`, as an item to score."""
  context = graded_context(record, grade, pool)
  prompt = schema.render_context_prompt([x for x, _ in context],
                                        [y for _, y in context], record['input'])
  item = Item(prompt=prompt, choices=tuple(record['choices']),
              answer=record['answer'], id=f'{record["id"]}@{grade}')
  copy = copy_choice(record) if record['kind'] == 'copy' else None
  return Probe(record['kind'], record['task'], grade, context, item, copy)


def metrics(probes: Sequence[Probe], predictions: Sequence[int],
            trained_tasks: Sequence[str] = ()) -> dict[str, float]:
  """{'probe/<score>/<domain>/<grade>': value, ... '/chance': chance, ...
  '/n': number of probes} from each probe's predicted choice (see the module
  doc); `trained_tasks` empty means every task is in domain."""
  values, chance = collections.defaultdict(list), collections.defaultdict(list)
  for p, pred in zip(probes, predictions, strict=True):
    domain = 'in' if not trained_tasks or p.task in trained_tasks else 'out'
    hits = []
    if p.kind == 'copy':
      hits.append(('copy', pred == p.copy))
      if p.grade == 'near_duplicate':
        hits.append(('iwl', pred == p.item.answer))
    else:
      hits.append((p.kind, pred == p.item.answer))
    for score, hit in hits:
      key = f'probe/{score}/{domain}/{p.grade}'
      values[key].append(float(hit))
      chance[key].append(1 / len(p.item.choices))
  out = {}
  for key in sorted(values):
    out[key] = float(np.mean(values[key]))
    out[f'{key}/chance'] = float(np.mean(chance[key]))
    out[f'{key}/n'] = len(values[key])
  return out


def parse_key(key: str) -> tuple[str, str, str] | None:
  """(score, domain, grade) of a 'probe/<score>/<domain>/<grade>' metric."""
  parts = key.split('/')
  if len(parts) == 4 and parts[0] == 'probe' and parts[1] in SCORES:
    return parts[1], parts[2], parts[3]
  return None


@dataclasses.dataclass(frozen=True)
class ProbeSet:
  """The graded probes an IC-Train run is scored on (built once)."""

  probes: tuple[Probe, ...]
  trained_tasks: tuple[str, ...]

  @property
  def items(self) -> list[Item]:
    return [p.item for p in self.probes]

  def metrics(self, scores: Sequence[Any]) -> dict[str, float]:
    """`metrics` of the scorer's ItemScores of `items`."""
    return metrics(self.probes, [s.prediction(RULE) for s in scores],
                   self.trained_tasks)

  @classmethod
  def from_dataset(cls, dataset: Any, grades: str, trained_tasks: str = '',
                   limit: int = 0) -> 'ProbeSet':
    """Probes of `dataset` (a datasets.Dataset with IC-Train splits) at the
    comma-separated `grades`, the first `limit` of each task per split (0:
    all); contexts from its train split."""
    wanted = [g.strip() for g in grades.split(',') if g.strip()]
    pool = Pool(dataset.records('train'))
    out = []
    for kind in KINDS:
      seen = collections.Counter()
      for r in dataset.records(f'test_{kind}'):
        seen[r['task']] += 1
        if limit and seen[r['task']] > limit:
          continue
        out.extend(probe(r, g, pool) for g in KIND_GRADES[kind] if g in wanted)
    tasks = tuple(t.strip() for t in trained_tasks.split(',') if t.strip())
    return cls(tuple(out), tasks)
