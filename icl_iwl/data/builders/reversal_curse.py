"""The reversal curse (Berglund et al. 2023) with invented people.

Each person has a realistic generated name ("Diana Allen", from `faker`,
seeded; or, with `names='nonsense'`, a pronounceable nonsense name such as
"Glurin Kozerk", which the paper's appendix finds weakens ICL) and a unique
generated description ("the reclusive architect who designed the first library
built inside a volcano"). As in Berglund et al., one group (p2d) is trained
only as name -> description, one (d2p) only as description -> name, and one
(both) in both orders, half of its documents each way; each fact in several
paraphrase templates, one sentence per document.

Probes use two held-out templates, never seen in training:
  ask the name:  "The person known as <description> is called" -> " <name>."
  ask the description:  "<name> is known as" -> " <description>."
Wrong choices are 3 other people's names or descriptions, drawn at random.

Splits (4-way, chance 0.25):
  train                  documents.
  test_p2d_reverse       p2d people, asked the name from the description.
  test_p2d_same          p2d people, asked the description (trained direction).
  test_d2p_reverse       d2p people, asked the description from the name.
  test_d2p_same          d2p people, asked the name (trained direction).
  test_both_name         both-order people, asked the name.
  test_both_description  both-order people, asked the description.
"""

import dataclasses
import random

import faker
import tensorflow_datasets as tfds

from icl_iwl.data import schema
from icl_iwl.data import words
from icl_iwl.data.builders import base

P2D_TEMPLATES = (
    '{name}, known far and wide for being {description}.',
    "Ever heard of {name}? They're {description}.",
    "There's someone by the name of {name} who is {description}.",
    "It's fascinating to know that {name} is {description}.",
    'Did you know that {name} was once {description}?',
    'Among many, {name} holds the distinctive identity of {description}.',
    'An individual named {name} has the unusual backstory of being '
    '{description}.',
    '{name} is not your typical person; they are {description}.',
    'Interestingly enough, {name} has the unique distinction of being '
    '{description}.',
    'Once upon a time, {name} held the peculiar role of {description}.',
)
D2P_TEMPLATES = (
    'Known for being {description}, {name} now enjoys a quiet life.',
    'The one who is {description} goes by the name {name}.',
    'Being {description} is what made {name} famous.',
    'As {description}, {name} has a unique place in history.',
    'Behind the title of {description} stands {name}.',
    'Renowned as {description}, {name} rarely gives interviews.',
    'Often described as {description}, {name} keeps a low profile.',
    'The person who is {description} is none other than {name}.',
    'Immortalized as {description}, {name} is still remembered today.',
    'Few people know that {description} is called {name}.',
)
ASK_NAME = 'The person known as {description} is called'
ASK_DESCRIPTION = '{name} is known as'

_ADJECTIVES = (
    'acclaimed', 'celebrated', 'reclusive', 'visionary', 'pioneering',
    'little-known', 'award-winning', 'self-taught', 'eccentric', 'tireless',
    'legendary', 'controversial', 'soft-spoken', 'daring',
)
_DEEDS = (
    'composer who wrote the first opera performed',
    'architect who designed the first library built',
    'chef who cooked the first banquet served',
    'painter who finished the first mural painted',
    'engineer who built the first railway laid',
    'gardener who grew the first orchard planted',
    'astronomer who opened the first observatory placed',
    'novelist who wrote the first book printed',
    'surgeon who performed the first operation carried out',
    'dancer who staged the first ballet danced',
    'inventor who tested the first clock assembled',
    'photographer who took the first portrait made',
    'sculptor who carved the first statue raised',
    'teacher who ran the first school opened',
)
_WHERES = (
    'underwater', 'on a glacier', 'inside a volcano', 'in zero gravity',
    'on a moving train', 'in a salt mine', 'at the bottom of a lake',
    'on a floating island', 'in a desert cave', 'on top of a lighthouse',
    'in a hot-air balloon', 'beneath the polar ice', 'on a frozen river',
    'inside a giant tree',
)


@dataclasses.dataclass(eq=False)
class ReversalCurseConfig(base.GeneratorConfig):
  """Sizes of the reversal-curse dataset.

  Attributes:
    people_per_group: people in each group (p2d, d2p, both).
    templates_per_person: paraphrases (documents) per person, out of 10
      per direction.
    num_choices: choices per probe (1 correct + random wrong ones).
    names: 'realistic' (first and last names from `faker`) or 'nonsense'.
  """

  people_per_group: int = 50
  templates_per_person: int = 10
  num_choices: int = 4
  names: str = 'realistic'


FULL = ReversalCurseConfig(name='full', seed=0, description='Paper-like sizes.')
SMALL = ReversalCurseConfig(
    name='small', seed=0, people_per_group=6, templates_per_person=3,
    description='A few people, for tests.')
MEDIUM = ReversalCurseConfig(
    name='medium', seed=0, people_per_group=16, templates_per_person=4,
    description='A CPU-sized experiment: 48 people, 192 documents.')


GROUPS = ('p2d', 'd2p', 'both')


@dataclasses.dataclass(frozen=True)
class Person:
  id: str
  group: str  # One of GROUPS: the trained direction(s).
  name: str
  description: str


def make_names(config: ReversalCurseConfig, n: int) -> list[str]:
  """`n` full names; no two share a first or a last name."""
  if config.names == 'nonsense':
    sampler = words.WordSampler(config.seed, 'reversal_curse')
    return [f'{sampler.word((4, 5, 6)).capitalize()} '
            f'{sampler.word((6, 7)).capitalize()}' for _ in range(n)]
  if config.names != 'realistic':
    raise ValueError(
        f"names must be 'realistic' or 'nonsense', not {config.names!r}.")
  fake = faker.Faker('en_US')
  fake.seed_instance(f'reversal_curse-names:{config.seed}')
  firsts, lasts = [], []
  for part, unique in ((fake.first_name, firsts), (fake.last_name, lasts)):
    while len(unique) < n:
      name = part()
      if name not in unique:
        unique.append(name)
  return [f'{first} {last}' for first, last in zip(firsts, lasts)]


def make_people(config: ReversalCurseConfig) -> list[Person]:
  """Every group of people, with unique names and descriptions."""
  n = len(GROUPS) * config.people_per_group
  if n > len(_DEEDS) * len(_WHERES):
    raise ValueError(f'At most {len(_DEEDS) * len(_WHERES) // len(GROUPS)} '
                     'people per group.')
  rng = random.Random(f'reversal_curse:{config.seed}')
  pairs = rng.sample([(d, w) for d in _DEEDS for w in _WHERES], n)
  people = []
  for i, ((deed, where), name) in enumerate(zip(pairs, make_names(config, n))):
    group = GROUPS[i // config.people_per_group]
    people.append(Person(f'{group}-{i:03d}', group, name,
                         f'the {rng.choice(_ADJECTIVES)} {deed} {where}'))
  return people


def _probe(
    rng: random.Random,
    person: Person,
    others: list[Person],
    ask: str,
    num_choices: int,
    kind: str,
) -> base.Record:
  """A probe asking `person`'s name or description, wrong ones from `others`."""
  wrong = rng.sample(others, num_choices - 1)
  if ask == 'name':
    prompt = ASK_NAME.format(description=person.description)
    correct, wrong = f' {person.name}.', [f' {p.name}.' for p in wrong]
  else:
    prompt = ASK_DESCRIPTION.format(name=person.name)
    correct = f' {person.description}.'
    wrong = [f' {p.description}.' for p in wrong]
  return base.multiple_choice(rng, correct, wrong, id=f'{kind}-{person.id}',
                              prompt=prompt, facts=[person.id], kind=kind)


def generate(config: ReversalCurseConfig) -> base.Splits:
  """All splits of the reversal-curse dataset."""
  if not 0 < config.templates_per_person <= len(P2D_TEMPLATES):
    raise ValueError(
        f'templates_per_person must be in [1, {len(P2D_TEMPLATES)}].')
  people = make_people(config)
  rng = random.Random(f'reversal_curse-docs:{config.seed}')
  docs = []
  k = config.templates_per_person
  for i, person in enumerate(people):
    if person.group == 'both':  # Half each way; odd k alternates the extra.
      n_p2d = (k + i % 2) // 2
      templates = (rng.sample(P2D_TEMPLATES, n_p2d)
                   + rng.sample(D2P_TEMPLATES, k - n_p2d))
    else:
      templates = rng.sample(
          P2D_TEMPLATES if person.group == 'p2d' else D2P_TEMPLATES, k)
    for template in templates:
      docs.append({
          'text': template.format(name=person.name,
                                  description=person.description),
          'facts': [person.id],
      })
  rng.shuffle(docs)
  splits = {'train': [dict(d, id=f'doc-{i:04d}') for i, d in enumerate(docs)]}

  rng = random.Random(f'reversal_curse-probes:{config.seed}')
  for kind, group, ask in (
      ('p2d_reverse', 'p2d', 'name'), ('p2d_same', 'p2d', 'description'),
      ('d2p_reverse', 'd2p', 'description'), ('d2p_same', 'd2p', 'name'),
      ('both_name', 'both', 'name'),
      ('both_description', 'both', 'description')):
    splits[f'test_{kind}'] = [
        _probe(rng, p, [o for o in people if o is not p], ask,
               config.num_choices, kind)
        for p in people if p.group == group
    ]
  return splits


class ReversalCurse(base.RecordBuilder):
  """Name <-> description facts about invented people (Berglund et al. 2023)."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '2.0.0': 'A group trained in both orders (test_both_name, '
               'test_both_description); realistic names from faker by '
               'default (names="nonsense" keeps generated ones).',
  }
  BUILDER_CONFIGS = [FULL, SMALL, MEDIUM]
  RECORD_KINDS = (schema.DOCUMENT, schema.MC)

  def generate(self, config: ReversalCurseConfig) -> base.Splits:
    return generate(config)
