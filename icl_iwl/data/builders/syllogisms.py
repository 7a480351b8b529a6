"""Simple syllogisms: two premises over three terms; probes on the third pair.

Each item is one training document, "The relationships between troff, glon and
yomp are: All glon are yomp. All troff are glon." The premises relate the
middle term A to C and B to A; the probes are about the unstated pair (B, C).

Truth follows standard syllogistic logic with non-empty terms (existential
import): a statement is 'true' if it holds in every model of the premises,
'false' if in none, else 'undetermined'. Models are enumerated exactly: which
of the 7 regions of the three-set Venn diagram are inhabited, with every term
inhabited. Items use only the premise forms (out of all/some/no, both orders,
for each premise) that determine at least one true and one false statement.

Splits:
  train            documents, one per item.
  test_statements  the 6 statements all/some/no x both directions about
                   (B, C), one record each: prompt "The relationships between
                   B and C are:", the statement as the single choice, and its
                   truth value as `kind`. Compare log-likelihoods by kind.
  test_mc          2-way MC for every (true, false) pair of statements of an
                   item; `kind` names the premise form, e.g. "all(AC) all(BA)".
"""

import dataclasses
import functools
import itertools
import random
from typing import Sequence

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


def premise_forms() -> list[tuple[Statement, Statement]]:
  """Premise pairs (A-C, B-A) with at least one true and one false candidate."""
  forms = []
  for q1, (s1, p1), q2, (s2, p2) in itertools.product(
      QUANTIFIERS, (('A', 'C'), ('C', 'A')),
      QUANTIFIERS, (('B', 'A'), ('A', 'B'))):
    premises = (Statement(q1, s1, p1), Statement(q2, s2, p2))
    values = {truth(premises, c) for c in candidates()}
    if TRUE in values and FALSE in values:
      forms.append(premises)
  return forms


@dataclasses.dataclass(eq=False)
class SyllogismsConfig(base.GeneratorConfig):
  """Sizes of the syllogisms dataset.

  Attributes:
    num_items: items, each with three fresh terms, cycling through the forms.
  """

  num_items: int = 70


FULL = SyllogismsConfig(name='full', seed=0, description='Paper-like sizes.')
SMALL = SyllogismsConfig(
    name='small', seed=0, num_items=12, description='A few items, for tests.')


def generate(config: SyllogismsConfig) -> base.Splits:
  """All splits of the syllogisms dataset."""
  rng = random.Random(f'syllogisms:{config.seed}')
  sampler = words.WordSampler(config.seed, 'syllogisms')
  forms = premise_forms()
  rng.shuffle(forms)
  train, statements, mc = [], [], []
  for i in range(config.num_items):
    item = f'item-{i:03d}'
    premises = forms[i % len(forms)]
    names = dict(zip('ABC', sampler.words(3)))
    listed = rng.sample(list(names.values()), 3)
    stated = ' '.join(p.render(names) for p in rng.sample(premises, 2))
    train.append({
        'id': item,
        'text': (f'The relationships between {listed[0]}, {listed[1]} and '
                 f'{listed[2]} are: {stated}'),
        'facts': [item],
    })
    pair = rng.sample([names['B'], names['C']], 2)
    prompt = f'The relationships between {pair[0]} and {pair[1]} are:'
    kind = ' '.join(p.label for p in premises)
    values = {c: truth(premises, c) for c in candidates()}
    for c, value in values.items():
      statements.append({
          'id': f'{item}-{c.label}', 'prompt': prompt,
          'choices': [' ' + c.render(names)], 'answer': 0, 'facts': [item],
          'kind': value,
      })
    for good, bad in itertools.product(
        [c for c, v in values.items() if v == TRUE],
        [c for c, v in values.items() if v == FALSE]):
      mc.append(base.multiple_choice(
          rng, ' ' + good.render(names), [' ' + bad.render(names)],
          id=f'{item}-{good.label}-vs-{bad.label}', prompt=prompt,
          facts=[item], kind=kind))
  return {'train': train, 'test_statements': statements, 'test_mc': mc}


class Syllogisms(base.RecordBuilder):
  """Simple syllogisms over nonsense terms."""

  BUILDER_CONFIGS = [FULL, SMALL]
  RECORD_KINDS = (schema.DOCUMENT, schema.MC)

  def generate(self, config: SyllogismsConfig) -> base.Splits:
    return generate(config)
