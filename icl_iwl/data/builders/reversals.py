"""Simple reversals: "femp are more dangerous than glon" -> "glon are less ...".

Each fact compares two nonsense entities with one of 28 comparison relations;
every entity occurs in one fact only. Each fact is stated, always as the same
sentence, at the end of `docs_per_fact` training documents that open with a
random preamble of neutral filler sentences.

Facts come in pairs over one relation, one stated with each of its words
("more dangerous" / "less dangerous", which one first drawn per pair), so in
every split each word of every relation is the right answer equally often: a
model that prefers one word of a pair, knowing no fact, scores exactly 0.5.

Splits:
  train          documents.
  test_reversal  2-way MC: the reversal ("glon are" -> " less dangerous than
                 femp.") against its contradiction (" more dangerous than
                 femp."). Never stated in training.
  test_forward   2-way MC in the trained direction with a rephrased prompt
                 ("Compared with glon, femp are" -> " more dangerous."), a
                 ceiling check.
"""

import dataclasses
import random

import tensorflow_datasets as tfds

from icl_iwl.data import schema
from icl_iwl.data import words
from icl_iwl.data.builders import base
from icl_iwl.data.builders import filler

# Converse comparatives: "a are <one> than b" == "b are <other> than a". Every
# comparative occurs once.
RELATIONS = (
    ('more dangerous', 'less dangerous'), ('bigger', 'smaller'),
    ('heavier', 'lighter'), ('faster', 'slower'), ('older', 'younger'),
    ('taller', 'shorter'), ('stronger', 'weaker'), ('louder', 'quieter'),
    ('warmer', 'colder'), ('brighter', 'darker'), ('rarer', 'more common'),
    ('softer', 'harder'), ('wider', 'narrower'), ('deeper', 'shallower'),
    ('richer', 'poorer'), ('more intelligent', 'less intelligent'),
    ('braver', 'more timid'), ('calmer', 'more restless'),
    ('friendlier', 'more hostile'), ('more expensive', 'cheaper'),
    ('more popular', 'less popular'), ('sweeter', 'more bitter'),
    ('thicker', 'thinner'), ('happier', 'sadder'),
    ('more valuable', 'less valuable'), ('more flexible', 'more rigid'),
    ('more famous', 'less famous'), ('more curious', 'less curious'),
)


@dataclasses.dataclass(eq=False)
class ReversalsConfig(base.GeneratorConfig):
  """Sizes of the simple-reversals dataset.

  Attributes:
    num_facts: facts, each between two fresh entities; even (pairs of facts
      share a relation, stated once with each of its words).
    num_relations: how many of `RELATIONS` the facts cycle through.
    docs_per_fact: training documents stating each fact.
    max_preamble: most filler sentences before the fact (at least one).
  """

  num_facts: int = 100
  num_relations: int = 28
  docs_per_fact: int = 10
  max_preamble: int = 4


FULL = ReversalsConfig(name='full', seed=0, description='Paper-like sizes.')
SMALL = ReversalsConfig(
    name='small', seed=0, num_facts=8, num_relations=4, docs_per_fact=2,
    description='A few facts, for tests.')
MEDIUM = ReversalsConfig(
    name='medium', seed=0, num_facts=40, num_relations=20, docs_per_fact=4,
    description='A CPU-sized experiment: 40 facts, 160 documents.')


@dataclasses.dataclass(frozen=True)
class Fact:
  """`a are <stated> than b`, which means `b are <converse> than a`."""

  id: str
  a: str
  b: str
  stated: str
  converse: str

  @property
  def sentence(self) -> str:
    return f'{self.a} are {self.stated} than {self.b}.'


def make_facts(config: ReversalsConfig) -> list[Fact]:
  """The facts of `config`, each over two fresh nonsense entities.

  Facts 2k and 2k+1 share a relation and state it with different words.
  """
  if not 0 < config.num_relations <= len(RELATIONS):
    raise ValueError(f'num_relations must be in [1, {len(RELATIONS)}].')
  if config.num_facts % 2:
    raise ValueError('num_facts must be even: each relation is stated once '
                     'with each of its words.')
  rng = random.Random(config.seed)
  relations = rng.sample(RELATIONS, config.num_relations)
  sampler = words.WordSampler(config.seed, 'reversals')
  facts = []
  for k in range(config.num_facts // 2):
    pair = relations[k % len(relations)]
    first = rng.randrange(2)
    for i, stated in ((2 * k, first), (2 * k + 1, 1 - first)):
      a, b = sampler.words(2)
      facts.append(
          Fact(f'fact-{i:03d}', a, b, pair[stated], pair[1 - stated]))
  return facts


def generate(config: ReversalsConfig) -> base.Splits:
  """All splits of the simple-reversals dataset."""
  facts = make_facts(config)
  rng = random.Random(f'reversals-docs:{config.seed}')
  docs = []
  for fact in facts:
    texts: list[str] = []  # Distinct documents for each fact.
    while len(texts) < config.docs_per_fact:
      preamble = filler.sentences(rng, rng.randint(1, config.max_preamble))
      text = ' '.join(preamble + [fact.sentence])
      if text not in texts:
        texts.append(text)
    docs += [{'text': t, 'facts': [fact.id]} for t in texts]
  rng.shuffle(docs)
  train = [dict(doc, id=f'doc-{i:04d}') for i, doc in enumerate(docs)]

  rng = random.Random(f'reversals-probes:{config.seed}')
  reversal, forward = [], []
  for fact in facts:
    reversal.append(base.multiple_choice(
        rng, f' {fact.converse} than {fact.a}.',
        [f' {fact.stated} than {fact.a}.'],
        id=f'reversal-{fact.id}', prompt=f'{fact.b} are', facts=[fact.id],
        kind='reversal'))
    forward.append(base.multiple_choice(
        rng, f' {fact.stated}.', [f' {fact.converse}.'],
        id=f'forward-{fact.id}', prompt=f'Compared with {fact.b}, {fact.a} are',
        facts=[fact.id], kind='forward'))
  return {'train': train, 'test_reversal': reversal, 'test_forward': forward}


class Reversals(base.RecordBuilder):
  """Simple reversals of comparison facts between nonsense entities."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '2.0.0': 'Each relation is stated once with each of its words, so a '
               'word preference scores 0.5; words from fixed hash slots.',
  }
  BUILDER_CONFIGS = [FULL, SMALL, MEDIUM]
  RECORD_KINDS = (schema.DOCUMENT, schema.MC)

  def generate(self, config: ReversalsConfig) -> base.Splits:
    return generate(config)
