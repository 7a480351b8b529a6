"""Semantic structure: wiki-like documents about a hierarchy of categories.

The world (`semantic_world`) is a forest of ~110 categories with inherited
properties and relations, all nonsense words: category nouns, property
adjectives, nouns and verbs ("are slorby", "have vrelk", "can skorb") and
relation verbs ("femp glorp troff"). Each document is about one category: 4-20
sentences stating its parent and some of its own properties and relations in
varied templates, always the category first, padded with neutral sentences.
Inherited facts are never stated.

Probes (MC, `num_choices` choices; wrong choices prefer facts that other
categories hold in the same frame or with the same verb):
  test_rephrase   trained facts in held-out templates ("Field notes confirm
                  that femp" -> " are slorby.").
  test_reversal   trained facts asked the other way round: inclusion ("Kinds
                  of glon include" -> " femp."), properties ("Those that are
                  slorby include" -> " femp.") and relations ("troff are
                  glorped by" -> " femp.").
  test_syllogism  a parent's property or relation, asked of the child
                  ("troff" -> " are slorby." when troff are a kind of femp).
  test_deduction  the same from a grandparent or higher (2+ hops).
  test_holdout    facts inherited by held-out categories, whose only trained
                  fact is their parent.
`kind` is the fact type ('isa', 'property', 'relation'), with the number of
hops for inherited facts ('property:2hop'); `facts` lists the chain of fact ids
a probe rests on.
"""

import dataclasses
import random
from typing import Iterator

import tensorflow_datasets as tfds

from icl_iwl.data import schema
from icl_iwl.data import words
from icl_iwl.data.builders import base
from icl_iwl.data.builders import filler
from icl_iwl.data.builders import semantic_world as sw

# Every trained template names the category first, so a reversal probe is
# never a rephrasing of a trained sentence.
ISA_TEMPLATES = (
    '{x} are a kind of {y}.', '{x} are a type of {y}.',
    '{x} are one of the many kinds of {y}.', '{x} belong to the {y}.',
)
CLAIM_TEMPLATES = (
    '{claim}.', 'All {claim}.', 'It is well known that {claim}.',
    'In general, {claim}.',
)
REPHRASE_ISA = 'Biologists classify {x} as a kind of'
REPHRASE_CLAIM = 'Field notes confirm that {x}'
REVERSE_ISA = 'Kinds of {y} include'
REVERSE_PROPERTY = 'Those that {phrase} include'
REVERSE_RELATION = '{y} are {participle} by'


@dataclasses.dataclass(eq=False)
class SemanticConfig(base.GeneratorConfig):
  """Sizes of the semantic-structure dataset.

  Attributes:
    level_sizes: categories per tree level, roots first.
    num_holdouts: leaves held out (only their parent is trained).
    max_properties: each category owns 1..max_properties properties.
    num_verbs: nonsense relation verbs.
    relation_prob: chance that a category owns a relation.
    num_documents: training documents, spread evenly over the categories.
    min_sentences / max_sentences: document length range.
    fact_prob: chance that a document restates each fact of its category
      (the first document of a category states them all).
    num_choices: choices per probe.
  """

  level_sizes: tuple[int, ...] = (4, 12, 30, 64)
  num_holdouts: int = 10
  max_properties: int = 6
  num_verbs: int = 10
  relation_prob: float = 0.8
  num_documents: int = 2000
  min_sentences: int = 4
  max_sentences: int = 20
  fact_prob: float = 0.6
  num_choices: int = 4


FULL = SemanticConfig(name='full', seed=0, description='Paper-like sizes.')
SMALL = SemanticConfig(
    name='small', seed=0, level_sizes=(2, 4, 8), num_holdouts=2,
    num_documents=42, description='A small tree, for tests.')
MEDIUM = SemanticConfig(
    name='medium', seed=0, level_sizes=(3, 8, 16, 30), num_holdouts=6,
    num_documents=285, description='A CPU-sized experiment: 57 categories.')


def _facts(
    world: sw.World, x: str, rng: random.Random
) -> list[tuple[str, str]]:
  """(fact id, sentence) for every fact stated about `x`."""
  facts = []
  if world.parent[x] is not None:
    facts.append((sw.isa_id(x),
                  rng.choice(ISA_TEMPLATES).format(x=x, y=world.parent[x])))
  claims = [(sw.property_id(x, p), f'{x} {p.phrase}')
            for p in world.properties[x]]
  claims += [(sw.relation_id(r), f'{x} {r.verb} {r.object}')
             for r in world.own_relations(x)]
  facts += [(i, rng.choice(CLAIM_TEMPLATES).format(claim=c)) for i, c in claims]
  return facts


def _document(world: sw.World, x: str, first: bool, rng: random.Random,
              config: SemanticConfig) -> base.Record:
  facts = _facts(world, x, rng)
  if first:
    stated = facts
  else:
    stated = [f for f in facts if rng.random() < config.fact_prob]
  stated = stated or [rng.choice(facts)]
  n = rng.randint(config.min_sentences, config.max_sentences)
  pad = max(0, n - len(stated))
  about = list(dict.fromkeys(filler.about(rng, x) for _ in range(min(3, pad))))
  body = ([s for i, s in stated if i != sw.isa_id(x)] + about
          + filler.sentences(rng, pad - len(about)))
  rng.shuffle(body)
  lead = [s for i, s in stated if i == sw.isa_id(x)]
  return {'text': ' '.join(lead + body), 'facts': [i for i, _ in stated]}


def _pick(
    rng: random.Random, hard: list[str], soft: list[str], k: int
) -> list[str]:
  """k wrong choices, hard ones (held by other entities) first."""
  wrong = rng.sample(hard, min(k, len(hard)))
  return wrong + rng.sample(soft, min(k - len(wrong), len(soft)))


class _Probes:
  """Builds MC probes with hard distractors from one world."""

  def __init__(self, world: sw.World, rng: random.Random, num_choices: int):
    self.world, self.rng, self.k = world, rng, num_choices - 1
    self.trained = [x for x in world.categories if x not in world.holdouts]

  def _mc(self, split: str, x: str, prompt: str, correct: str,
          hard: list[str], soft: list[str], facts: list[str],
          kind: str) -> base.Record:
    wrong = _pick(self.rng, hard, [s for s in soft if s not in hard], self.k)
    return base.multiple_choice(
        self.rng, f' {correct}.', [f' {w}.' for w in wrong],
        id=f'{split}:{x}:{facts[-1]}', prompt=prompt, facts=facts, kind=kind)

  def _outside(self, x: str) -> list[str]:
    """Trained categories that are neither ancestors nor descendants of `x`."""
    line = self.world.lineage(x)
    return [c for c in self.trained
            if c not in line and x not in self.world.lineage(c)]

  def isa(self, x: str) -> base.Record:
    """The parent of `x`, asked in a held-out template."""
    w, y = self.world, self.world.parent[x]
    others = self._outside(x)
    hard = [c for c in others if w.depth[c] == w.depth[y]]
    return self._mc('rephrase', x, REPHRASE_ISA.format(x=x), y, hard, others,
                    [sw.isa_id(x)], 'isa')

  def claim(self, split: str, prefix: str, x: str, owner: str,
            fact: sw.Property | sw.Relation, kind: str) -> base.Record:
    """`x` has `owner`'s property or relation (owner is x or an ancestor)."""
    w = self.world
    chain = w.chain(x, owner)
    if isinstance(fact, sw.Property):
      wrong = [p.phrase for ps in w.properties.values() for p in ps
               if p.frame == fact.frame and not w.has_property(x, p.phrase)]
      return self._mc(split, x, prefix, fact.phrase, wrong, wrong,
                      chain + [sw.property_id(owner, fact)], kind)
    wrong = [y for y in self._outside(x) if not w.related(x, fact.verb, y)]
    objects = {r.object for r in w.relations if r.verb == fact.verb}
    return self._mc(split, x, f'{prefix} {fact.verb}', fact.object,
                    [y for y in wrong if y in objects], wrong,
                    chain + [sw.relation_id(fact)], kind)

  def reverse_isa(self, x: str) -> base.Record:
    """A kind of x's parent: x, or anything else below it."""
    w, y = self.world, self.world.parent[x]
    wrong = [c for c in self.trained if c != y and c not in w.descendants(y)]
    hard = [c for c in wrong if w.depth[c] == w.depth[x]]
    return self._mc('reversal', x, REVERSE_ISA.format(y=y), x, hard, wrong,
                    [sw.isa_id(x)], 'isa')

  def reverse_property(self, x: str, p: sw.Property) -> base.Record:
    """Who has x's property: x, or anything below it."""
    w = self.world
    wrong = [c for c in self.trained if not w.has_property(c, p.phrase)]
    owners = {c for c, ps in w.properties.items()
              if any(q.frame == p.frame for q in ps)}
    return self._mc('reversal', x, REVERSE_PROPERTY.format(phrase=p.phrase),
                    x, [c for c in wrong if c in owners], wrong,
                    [sw.property_id(x, p)], 'property')

  def reverse_relation(self, r: sw.Relation) -> base.Record:
    """Who `<verb>` r.object, asked in the passive."""
    w = self.world
    wrong = [s for s in self._outside(r.object)
             if not w.related(s, r.verb, r.object)]
    subjects = {q.subject for q in w.relations if q.verb == r.verb}
    prompt = REVERSE_RELATION.format(y=r.object,
                                     participle=sw.participle(r.verb))
    return self._mc('reversal', r.object, prompt, r.subject,
                    [s for s in wrong if s in subjects], wrong,
                    [sw.relation_id(r)], 'relation')

  def inherited(self, split: str, x: str, min_hops: int,
                max_hops: int) -> Iterator[base.Record]:
    """Probes of `x`'s facts inherited from ancestors min_hops..max_hops up."""
    for hops, a in enumerate(self.world.ancestors(x), start=1):
      if not min_hops <= hops <= max_hops:
        continue
      for fact in [*self.world.properties[a], *self.world.own_relations(a)]:
        kind = 'property' if isinstance(fact, sw.Property) else 'relation'
        yield self.claim(split, x, x, a, fact, f'{kind}:{hops}hop')


def make_world(config: SemanticConfig) -> tuple[sw.World, list[str], random.Random]:
  """(the world of `config`, its category names, the generator's rng after
  drawing it): the knowledge base the documents and probes state."""
  rng = random.Random(f'semantic:{config.seed}')
  sampler = words.WordSampler(config.seed, 'semantic')
  names = sampler.words(sum(config.level_sizes))
  verbs = sampler.words(config.num_verbs)
  world = sw.make_world(rng, names, verbs, sampler.word, config.level_sizes,
                        config.num_holdouts, config.relation_prob,
                        config.max_properties)
  return world, names, rng


def generate(config: SemanticConfig) -> base.Splits:
  """All splits of the semantic-structure dataset."""
  world, names, rng = make_world(config)
  per, extra = divmod(config.num_documents, len(names))
  docs = [_document(world, x, j == 0, rng, config)
          for i, x in enumerate(names) for j in range(per + (i < extra))]
  rng.shuffle(docs)

  probes = _Probes(world, random.Random(f'semantic-probes:{config.seed}'),
                   config.num_choices)
  splits = {name: [] for name in ('rephrase', 'reversal', 'syllogism',
                                  'deduction', 'holdout')}
  for x in probes.trained:
    if world.parent[x] is not None:
      splits['rephrase'].append(probes.isa(x))
      splits['reversal'].append(probes.reverse_isa(x))
    prefix = REPHRASE_CLAIM.format(x=x)
    for p in world.properties[x]:
      splits['rephrase'].append(
          probes.claim('rephrase', prefix, x, x, p, 'property'))
      splits['reversal'].append(probes.reverse_property(x, p))
    for r in world.own_relations(x):
      splits['rephrase'].append(
          probes.claim('rephrase', prefix, x, x, r, 'relation'))
      splits['reversal'].append(probes.reverse_relation(r))
    splits['syllogism'] += probes.inherited('syllogism', x, 1, 1)
    splits['deduction'] += probes.inherited('deduction', x, 2, len(names))
  for x in sorted(world.holdouts, key=names.index):
    splits['holdout'] += probes.inherited('holdout', x, 1, len(names))
  out = {'train': [dict(d, id=f'doc-{i:04d}') for i, d in enumerate(docs)]}
  out.update({f'test_{name}': records for name, records in splits.items()})
  return out


class Semantic(base.RecordBuilder):
  """Wiki-like documents about a hierarchy of nonsense categories."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Initial release.',
      '2.0.0': 'Nonsense property words and verbs; 1-6 properties per '
               'category; test_reversal also reverses inclusion and '
               'properties; every isa template names the child first; words '
               'from fixed hash slots.',
  }
  BUILDER_CONFIGS = [FULL, SMALL, MEDIUM]
  RECORD_KINDS = (schema.DOCUMENT, schema.MC)

  def generate(self, config: SemanticConfig) -> base.Splits:
    return generate(config)
