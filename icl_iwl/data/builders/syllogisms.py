"""Simple syllogisms: two premises over three terms; probes on the third pair.

Each item is one training document, "The relationships between troff, glon and
yomp are: All glon are yomp. All troff are glon.", in classical order: the
major premise relates the middle term A to the predicate C, the minor premise
relates the subject B to A. The probes are about the unstated pair (B, C).

Truth follows standard syllogistic logic with non-empty terms (existential
import): a statement is 'true' if it holds in every model of the premises,
'false' if in none, else 'undetermined'. Models are enumerated exactly: which
of the 7 regions of the three-set Venn diagram are inhabited, with every term
inhabited.

An item's valid conclusion is its strongest true statement about (B, C), with
the subject B as subject, as in classical syllogisms ("All troff are yomp";
'some' and 'no' statements are true in both directions, so the direction is
the classical one). Items use the 10 premise forms (of 36: all/some/no in both
orders, per premise) that have one (Bramantip, "All C are A. All A are B.",
whose strongest conclusion is 'All C are B', is Barbara with B and C swapped
and left out). Conclusions are
'all', 'some' and 'no' equally often, and the prompt names the subject first
in half of each quantifier's items, so every fixed preference for a quantifier
and a word order scores exactly 1/6.

Splits (6-way MC; choices the 6 statements all/some/no x both directions;
prompt "The relationships between yomp and troff are:"; `kind` the premise
form, e.g. "all(AC) all(BA)", A the middle term):
  train            documents, one per item.
  test_conclusion  the valid conclusion is correct (chance 1/6).
  test_control     the same for the subject of one item and the predicate of
                   the next: no premise relates them, so nothing follows; the
                   "correct" choice has the quantifier and word order of the
                   item's conclusion. It scores the preferences alone (1/6 if
                   they are fixed), the baseline for test_conclusion.
"""

import dataclasses
import functools
import itertools
import random
from typing import Sequence

import tensorflow_datasets as tfds

from icl_iwl.data import schema
from icl_iwl.data import words
from icl_iwl.data.builders import base

QUANTIFIERS = ('all', 'some', 'no')
TRUE, FALSE, UNDETERMINED = 'true', 'false', 'undetermined'


@dataclasses.dataclass(frozen=True)
class Statement:
  """`<quantifier> <subject> are <predicate>` over term symbols."""

  quantifier: str
  subject: str
  predicate: str

  def render(self, names: dict[str, str]) -> str:
    return (f'{self.quantifier.capitalize()} {names[self.subject]} are '
            f'{names[self.predicate]}.')

  @property
  def label(self) -> str:
    return f'{self.quantifier}({self.subject}{self.predicate})'


Model = tuple[frozenset[str], ...]  # The inhabited Venn regions.


@functools.cache
def _models(terms: tuple[str, ...]) -> tuple[Model, ...]:
  """Every assignment of inhabited regions in which each term is non-empty."""
  regions = [
      frozenset(c) for r in range(1, len(terms) + 1)
      for c in itertools.combinations(terms, r)
  ]
  models = []
  for inhabited in itertools.product((False, True), repeat=len(regions)):
    model = tuple(r for r, on in zip(regions, inhabited) if on)
    if all(any(t in r for r in model) for t in terms):
      models.append(model)
  return tuple(models)


def holds(statement: Statement, model: Model) -> bool:
  """Whether `statement` is true in `model`."""
  s, p = statement.subject, statement.predicate
  if statement.quantifier == 'all':
    return all(p in r for r in model if s in r)
  both = any(s in r and p in r for r in model)
  if statement.quantifier == 'some':
    return both
  if statement.quantifier == 'no':
    return not both
  raise ValueError(f'Unknown quantifier {statement.quantifier!r}.')


def truth(premises: Sequence[Statement], conclusion: Statement) -> str:
  """'true', 'false' or 'undetermined': `conclusion` given `premises`."""
  terms = {t for s in (*premises, conclusion) for t in (s.subject, s.predicate)}
  models = [
      m for m in _models(tuple(sorted(terms)))
      if all(holds(p, m) for p in premises)
  ]
  if not models:
    raise ValueError(f'Inconsistent premises {premises}.')
  values = {holds(conclusion, m) for m in models}
  if values == {True}:
    return TRUE
  return FALSE if values == {False} else UNDETERMINED


def candidates() -> list[Statement]:
  """The 6 statements about the unstated pair (B, C)."""
  return [Statement(q, s, p)
          for q in QUANTIFIERS for s, p in (('B', 'C'), ('C', 'B'))]


def conclusion(premises: Sequence[Statement]) -> Statement | None:
  """The valid conclusion: the strongest true statement with subject B.

  None if no statement is true, or if 'All C are B' is (that form is another
  one with B and C swapped).
  """
  true = [c for c in candidates() if truth(premises, c) == TRUE]
  if not true or Statement('all', 'C', 'B') in true:
    return None
  return next(c for c in true if c.subject == 'B')  # 'all' comes first.


Form = tuple[tuple[Statement, Statement], Statement]  # Premises, conclusion.


def premise_forms() -> list[Form]:
  """(major A-C, minor B-A) premise pairs with a valid conclusion, and it."""
  forms = []
  for q1, (s1, p1), q2, (s2, p2) in itertools.product(
      QUANTIFIERS, (('A', 'C'), ('C', 'A')),
      QUANTIFIERS, (('B', 'A'), ('A', 'B'))):
    premises = (Statement(q1, s1, p1), Statement(q2, s2, p2))
    if (valid := conclusion(premises)) is not None:
      forms.append((premises, valid))
  return forms


@dataclasses.dataclass(eq=False)
class SyllogismsConfig(base.GeneratorConfig):
  """Sizes of the syllogisms dataset.

  Attributes:
    num_items: items, each with three fresh terms; a multiple of 6 (3
      conclusion quantifiers x 2 prompt orders).
  """

  num_items: int = 72


FULL = SyllogismsConfig(name='full', seed=0, description='Paper-like sizes.')
SMALL = SyllogismsConfig(
    name='small', seed=0, num_items=12, description='A few items, for tests.')
MEDIUM = SyllogismsConfig(
    name='medium', seed=0, num_items=36,
    description='A CPU-sized experiment: 36 items.')


@dataclasses.dataclass(frozen=True)
class Item:
  id: str
  premises: tuple[Statement, Statement]
  conclusion: Statement
  names: dict[str, str]  # Term symbol -> nonsense word.
  subject_first: bool  # Whether the probe prompts name B before C.

  @property
  def kind(self) -> str:
    return ' '.join(p.label for p in self.premises)


def make_items(config: SyllogismsConfig) -> list[Item]:
  """Items cycling through the forms of each conclusion quantifier in turn."""
  if config.num_items % 6:
    raise ValueError('num_items must be a multiple of 6.')
  rng = random.Random(f'syllogisms:{config.seed}')
  sampler = words.WordSampler(config.seed, 'syllogisms')
  per_quantifier = config.num_items // 3
  every_form = premise_forms()
  forms, orders = {}, {}
  for q in QUANTIFIERS:
    forms[q] = [f for f in every_form if f[1].quantifier == q]
    rng.shuffle(forms[q])
    orders[q] = rng.sample([True, False] * (per_quantifier // 2),
                           per_quantifier)
  items = []
  for i in range(config.num_items):
    q, k = QUANTIFIERS[i % 3], i // 3
    premises, valid = forms[q][k % len(forms[q])]
    items.append(Item(f'item-{i:03d}', premises, valid,
                      dict(zip('ABC', sampler.words(3))), orders[q][k]))
  return items


def _six_way(rng: random.Random, item: Item, predicate: str, **fields
             ) -> base.Record:
  """The 6 statements about `item`'s B and `predicate`; the correct one has
  the form of `item`'s conclusion."""
  names = {'B': item.names['B'], 'C': predicate}
  pair = (names['B'], predicate)
  if not item.subject_first:
    pair = pair[::-1]
  wrong = [c for c in candidates() if c != item.conclusion]
  return base.multiple_choice(
      rng, ' ' + item.conclusion.render(names),
      [' ' + c.render(names) for c in wrong],
      prompt=f'The relationships between {pair[0]} and {pair[1]} are:',
      kind=item.kind, **fields)


def generate(config: SyllogismsConfig) -> base.Splits:
  """All splits of the syllogisms dataset."""
  items = make_items(config)
  rng = random.Random(f'syllogisms-docs:{config.seed}')
  train = []
  for item in items:
    listed = rng.sample(list(item.names.values()), 3)
    stated = ' '.join(p.render(item.names) for p in item.premises)
    train.append({
        'id': item.id,
        'text': (f'The relationships between {listed[0]}, {listed[1]} and '
                 f'{listed[2]} are: {stated}'),
        'facts': [item.id],
    })
  rng = random.Random(f'syllogisms-probes:{config.seed}')
  conclusions = [
      _six_way(rng, item, item.names['C'], id=f'conclusion-{item.id}',
               facts=[item.id]) for item in items]
  control = []
  for item, other in zip(items, items[1:] + items[:1]):
    control.append(_six_way(rng, item, other.names['C'],
                            id=f'control-{item.id}',
                            facts=[item.id, other.id]))
  return {'train': train, 'test_conclusion': conclusions,
          'test_control': control}


class Syllogisms(base.RecordBuilder):
  """Simple syllogisms over nonsense terms."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '2.0.0': '6-way test_conclusion (valid conclusion among the 6 '
               'statements) and test_control replace test_statements and '
               'test_mc; premises in classical order; words from fixed hash '
               'slots.',
  }
  BUILDER_CONFIGS = [FULL, SMALL, MEDIUM]
  RECORD_KINDS = (schema.DOCUMENT, schema.MC)

  def generate(self, config: SyllogismsConfig) -> base.Splits:
    return generate(config)
