"""IC-Train task: classifying sentences by the kind of thing they mention.

An input is a template sentence about one item ("I saw a cheap violin at the
market."); its class (animal, food, vehicle, tool, instrument, clothing) is
answered by an invented label word, one per class. Similar inputs share the
template and adjective and differ in the item.

Probes (`num_choices` label words). The right and the wrong labels appear in
the context equally often, so preferring or avoiding labels seen in context
gains nothing:
  iwl   a new sentence; the context holds only classes whose labels are no
        choice.
  icl   the context relabels every class with a random derangement of the
        label words and shows one example per choice label (one of them of
        the target's class); the right answer is the new label, the trained
        label is one of the wrong ones.
  copy  the context holds a near-duplicate (same template and adjective,
        an item of another class) with its label, one of the wrong choices;
        the other examples' labels are no choice.
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
             context: list[tuple[str, str]], correct: str, wrong: list[str],
             facts: list[str]) -> base.Record:
    self.rng.shuffle(context)
    inputs, outputs = [c[0] for c in context], [c[1] for c in context]
    return base.multiple_choice(
        self.rng, schema.render_answer(correct),
        [schema.render_answer(w) for w in wrong],
        id=f'{TASK}-{kind}-{i:04d}', kind=kind, task=TASK, facts=facts,
        context_inputs=inputs, context_outputs=outputs, input=_text(e),
        prompt=schema.render_context_prompt(inputs, outputs, _text(e)))

  def _wrong(self, correct: str, fixed: Sequence[str]) -> list[str]:
    """`num_choices - 1` wrong labels: `fixed`, then random other labels."""
    wrong = list(dict.fromkeys(fixed))
    others = [v for v in self.labels.values()
              if v != correct and v not in wrong]
    return wrong + self.rng.sample(others, self.num_choices - 1 - len(wrong))

  def _others(self, k: int, labels: dict[str, str], avoid: Sequence[str]
              ) -> list[tuple[str, str]]:
    """k training examples whose label under `labels` is not in `avoid`."""
    fits = [x for x in self.pool if labels[x[3]] not in avoid]
    return [(_text(x), labels[x[3]]) for x in self.rng.sample(fits, k)]

  def iwl(self, i: int) -> base.Record:
    """A new sentence; the context holds only classes that are no choice."""
    e = self._example()
    correct = self.labels[e[3]]
    wrong = self._wrong(correct, [])
    context = self._others(self.num_context, self.labels, [correct, *wrong])
    return self._probe('iwl', i, e, context, correct, wrong,
                       [f'label:{e[3]}'])

  def icl(self, i: int) -> base.Record:
    """A new sentence; the context relabels every class (a derangement)."""
    if self.num_context < self.num_choices:
      raise ValueError('icl probes show one context example per choice.')
    e = self._example()
    while True:
      order = self.rng.sample(CLASSES, len(CLASSES))
      if all(a != b for a, b in zip(order, CLASSES)):
        break
    remap = {c: self.labels[o] for c, o in zip(CLASSES, order)}
    correct = remap[e[3]]
    wrong = self._wrong(correct, [self.labels[e[3]]])
    # One example per choice label: its class under the remapping.
    shown = [self.rng.choice(
        [x for x in self.pool if x[3] == e[3] and x[2] != e[2]])]
    for label in wrong:
      cls = next(c for c in CLASSES if remap[c] == label)
      shown.append(self.rng.choice([x for x in self.pool if x[3] == cls]))
    context = [(_text(x), remap[x[3]]) for x in shown] + self._others(
        self.num_context - len(shown), remap, [correct, *wrong])
    return self._probe('icl', i, e, context, correct, wrong,
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
    correct = self.labels[e[3]]
    wrong = self._wrong(correct, [self.labels[near[3]]])
    context = [(_text(near), self.labels[near[3]])] + self._others(
        self.num_context - 1, self.labels, [correct, *wrong])
    return self._probe('copy', i, e, context, correct, wrong,
                       [f'label:{e[3]}'])
