"""IC-Train task: classifying sentences by the kind of thing they mention.

An input is a template sentence about one item ("I saw a cheap violin at the
market."); its class (animal, food, vehicle, tool, instrument, clothing) is
answered by an invented label word, one per class. Similar inputs share the
template and adjective and differ in the item.

Probes (`num_choices` label words):
  iwl   a new sentence; the context holds only other classes.
  icl   the context relabels every class with a random derangement of the
        label words (one example of the target class among them); the right
        answer is the new label, the trained label is one of the wrong ones.
  copy  the context holds a near-duplicate (same template and adjective,
        an item of another class) with its label, one of the wrong choices;
        no other context example has the target's class.
"""

import random
from typing import Sequence

from icl_iwl.data import schema
from icl_iwl.data.builders import base

TASK = 'classification'
ITEMS = {
    'animal': ('dog', 'horse', 'rabbit', 'lion', 'sparrow', 'goat', 'dolphin',
               'bear', 'frog', 'owl'),
    'food': ('loaf', 'cheese', 'soup', 'apple', 'pie', 'cake', 'melon',
             'yogurt', 'salad', 'sandwich'),
    'vehicle': ('truck', 'bicycle', 'bus', 'tractor', 'canoe', 'train',
                'scooter', 'van', 'ferry', 'tram'),
    'tool': ('hammer', 'wrench', 'shovel', 'saw', 'drill', 'ladder', 'chisel',
             'rake', 'screwdriver', 'crowbar'),
    'instrument': ('violin', 'drum', 'flute', 'piano', 'trumpet', 'guitar',
                   'harp', 'cello', 'banjo', 'oboe'),
    'clothing': ('jacket', 'scarf', 'boot', 'glove', 'hat', 'sweater', 'sock',
                 'coat', 'shirt', 'belt'),
}
CLASSES = tuple(ITEMS)
TEMPLATES = (
    'I saw {a} {adj} {item} at the market.',
    'There is {a} {adj} {item} in the picture.',
    'My neighbour bought {a} {adj} {item}.',
    'She pointed at the {adj} {item}.',
    'We talked about the {adj} {item} for hours.',
    'He drew {a} {adj} {item} on the wall.',
)
ADJECTIVES = ('old', 'new', 'small', 'large', 'red', 'blue', 'cheap',
              'expensive', 'heavy', 'light')

Example = tuple[int, str, str, str]  # (template index, adjective, item, class)


def _text(e: Example) -> str:
  article = 'an' if e[1][0] in 'aeiou' else 'a'
  return TEMPLATES[e[0]].format(a=article, adj=e[1], item=e[2])


class ClassificationTask:
  """The classification pool and its probes, from seeded label words."""

  def __init__(self, rng: random.Random, labels: Sequence[str],
               num_choices: int, num_context: int):
    if len(labels) < len(CLASSES):
      raise ValueError(f'Need {len(CLASSES)} label words.')
    self.labels = dict(zip(CLASSES, labels))
    self.rng, self.num_choices, self.num_context = rng, num_choices, num_context
    self.pool: list[Example] = []
    self._seen: set[Example] = set()

  def _example(self, cls: str | None = None) -> Example:
    """A fresh example (of class `cls` if given), never drawn before."""
    while True:
      c = cls or self.rng.choice(CLASSES)
      e = (self.rng.randrange(len(TEMPLATES)), self.rng.choice(ADJECTIVES),
           self.rng.choice(ITEMS[c]), c)
      if e not in self._seen:
        self._seen.add(e)
        return e

  def make_pool(self, n: int) -> list[base.Record]:
    """`n` training pairs, classes drawn uniformly."""
    self.pool = [self._example() for _ in range(n)]
    return [{'id': f'{TASK}-{i:05d}', 'input': _text(e),
             'output': self.labels[e[3]], 'task': TASK,
             'facts': [f'label:{e[3]}']} for i, e in enumerate(self.pool)]

  def _probe(self, kind: str, i: int, e: Example,
             context: list[tuple[str, str]], labels: dict[str, str],
             fixed: Sequence[str], facts: list[str]) -> base.Record:
    correct = labels[e[3]]
    wrong = list(dict.fromkeys(fixed))
    others = [v for v in labels.values() if v != correct and v not in wrong]
    wrong += self.rng.sample(others, self.num_choices - 1 - len(wrong))
    self.rng.shuffle(context)
    inputs, outputs = [c[0] for c in context], [c[1] for c in context]
    return base.multiple_choice(
        self.rng, ' ' + correct, [' ' + w for w in wrong],
        id=f'{TASK}-{kind}-{i:04d}', kind=kind, task=TASK, facts=facts,
        context_inputs=inputs, context_outputs=outputs, input=_text(e),
        prompt=schema.render_context_prompt(inputs, outputs, _text(e)))

  def _others(self, k: int, cls: str,
              skip: Example | None = None) -> list[tuple[str, str]]:
    """k training examples of classes other than `cls`, `skip` excluded."""
    fits = [e for e in self.pool if e[3] != cls and e != skip]
    return [(_text(e), self.labels[e[3]]) for e in self.rng.sample(fits, k)]

  def iwl(self, i: int) -> base.Record:
    """A new sentence; the context holds only other classes."""
    e = self._example()
    context = self._others(self.num_context, e[3])
    return self._probe('iwl', i, e, context, self.labels, [], [f'label:{e[3]}'])

  def icl(self, i: int) -> base.Record:
    """A new sentence; the context relabels every class (a derangement)."""
    e = self._example()
    while True:
      order = self.rng.sample(CLASSES, len(CLASSES))
      if all(a != b for a, b in zip(order, CLASSES)):
        break
    remap = {c: self.labels[o] for c, o in zip(CLASSES, order)}
    same = self.rng.choice(
        [x for x in self.pool if x[3] == e[3] and x[2] != e[2]])
    shown = [same] + self.rng.sample(
        [x for x in self.pool if x[3] != e[3]], self.num_context - 1)
    context = [(_text(x), remap[x[3]]) for x in shown]
    return self._probe('icl', i, e, context, remap, [self.labels[e[3]]],
                       [f'remap:{e[3]}'])

  def copy(self, i: int) -> base.Record:
    """A sentence whose context holds a near-duplicate of another class."""
    near = self.rng.choice(self.pool)
    classes = [c for c in CLASSES if c != near[3]]
    while True:
      cls = self.rng.choice(classes)
      e = (near[0], near[1], self.rng.choice(ITEMS[cls]), cls)
      if e not in self._seen:
        self._seen.add(e)
        break
    context = [(_text(near), self.labels[near[3]])] + self._others(
        self.num_context - 1, e[3], skip=near)
    return self._probe('copy', i, e, context, self.labels,
                       [self.labels[near[3]]], [f'label:{e[3]}'])
