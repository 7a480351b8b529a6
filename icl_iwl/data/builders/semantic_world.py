"""The world behind the semantic-structure dataset: a category tree with facts.

Categories are nonsense words in a forest a few levels deep. Each category that
is not held out owns a few properties ("have blue eyes") and maybe a relation
to another category ("eat glon"); both are inherited by every descendant.
Along any root-to-leaf path an attribute (eye colour, habitat, ...) is owned at
most once, so inherited facts never contradict. Relations also hold for the
descendants of their object: if femp eat glon, femp eat every kind of glon.

Held-out categories are leaves that own nothing and are no relation's object;
only their parent is ever stated about them.
"""

import dataclasses
import random
from typing import Iterator

_COLORS = ('red', 'blue', 'green', 'yellow', 'purple', 'orange', 'white',
           'black', 'grey', 'brown', 'pink', 'golden', 'silver')
_NUMBERS = ('two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine',
            'ten', 'eleven', 'twelve')
# Attribute -> its mutually exclusive values, each a plural verb phrase.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    'color': tuple(f'are {c}' for c in _COLORS),
    'eyes': tuple(f'have {c} eyes' for c in _COLORS),
    'legs': tuple(f'have {n} legs' for n in _NUMBERS),
    'habitat': tuple(f'live in {h}' for h in (
        'caves', 'deserts', 'swamps', 'forests', 'mountains', 'rivers', 'lakes',
        'meadows', 'marshes', 'canyons', 'jungles', 'reefs', 'dunes',
        'valleys')),
    'diet': tuple(f'feed on {f}' for f in (
        'seeds', 'berries', 'leaves', 'roots', 'insects', 'fish', 'moss',
        'fungi', 'nectar', 'bark', 'algae', 'grass', 'worms', 'pollen')),
    'sound': tuple(f'make a {s} sound' for s in (
        'whistling', 'humming', 'clicking', 'buzzing', 'chirping', 'croaking',
        'hissing', 'rumbling', 'squeaking', 'drumming', 'howling', 'purring')),
    'activity': tuple(
        f'are active at {t}' for t in ('dawn', 'dusk', 'night', 'noon')),
    'lifespan': tuple(f'live for {n} years' for n in _NUMBERS[1:]),
    'eggs': tuple(f'lay {c} eggs' for c in _COLORS),
    'nest': tuple(f'build nests of {m}' for m in (
        'mud', 'twigs', 'stones', 'grass', 'leaves', 'sand', 'feathers',
        'clay')),
    'tail': tuple(f'have {a} tails' for a in (
        'long', 'short', 'curly', 'forked', 'striped', 'spotted', 'bushy',
        'flat', 'hairless', 'stubby')),
}
# (active, passive) forms of the relations between categories.
RELATIONS = (
    ('eat', 'are eaten by'), ('hunt', 'are hunted by'),
    ('fear', 'are feared by'),
    ('chase', 'are chased by'), ('avoid', 'are avoided by'),
    ('follow', 'are followed by'), ('mimic', 'are mimicked by'),
    ('guard', 'are guarded by'), ('groom', 'are groomed by'),
    ('carry', 'are carried by'),
)
PASSIVE = dict(RELATIONS)


@dataclasses.dataclass(frozen=True)
class Property:
  attribute: str
  phrase: str


@dataclasses.dataclass(frozen=True)
class Relation:
  subject: str
  verb: str
  object: str


@dataclasses.dataclass
class World:
  """Categories with their parents, owned properties and relations."""

  parent: dict[str, str | None]
  depth: dict[str, int]
  properties: dict[str, list[Property]]
  relations: list[Relation]
  holdouts: frozenset[str]

  @property
  def categories(self) -> list[str]:
    return list(self.parent)

  def ancestors(self, x: str) -> Iterator[str]:
    """The ancestors of `x`, nearest first (`x` excluded)."""
    while (x := self.parent[x]) is not None:
      yield x

  def lineage(self, x: str) -> list[str]:
    """`x` and its ancestors, nearest first."""
    return [x, *self.ancestors(x)]

  def has_property(self, x: str, phrase: str) -> bool:
    return any(p.phrase == phrase
               for a in self.lineage(x) for p in self.properties[a])

  def related(self, x: str, verb: str, y: str) -> bool:
    """Whether `x <verb> y` holds, by inheritance on either side."""
    xs, ys = set(self.lineage(x)), set(self.lineage(y))
    return any(r.verb == verb and r.subject in xs and r.object in ys
               for r in self.relations)

  def own_relations(self, x: str) -> list[Relation]:
    return [r for r in self.relations if r.subject == x]

  def chain(self, x: str, ancestor: str) -> list[str]:
    """The 'isa' fact ids linking `x` up to `ancestor`."""
    ids = []
    while x != ancestor:
      ids.append(isa_id(x))
      x = self.parent[x]
    return ids


def isa_id(x: str) -> str:
  return f'isa:{x}'


def property_id(x: str, p: Property) -> str:
  return f'prop:{x}:{p.attribute}'


def relation_id(r: Relation) -> str:
  return f'rel:{r.subject}:{r.verb}:{r.object}'


def _tree(
    rng: random.Random, names: list[str], level_sizes: tuple[int, ...]
) -> tuple[dict[str, str | None], dict[str, int]]:
  """Parents and depths for a forest with `level_sizes` nodes per level."""
  parent: dict[str, str | None] = {}
  depth: dict[str, int] = {}
  levels, start = [], 0
  for size in level_sizes:
    levels.append(names[start:start + size])
    start += size
  for x in levels[0]:
    parent[x], depth[x] = None, 0
  for d in range(1, len(levels)):
    uppers, lowers = levels[d - 1], levels[d]
    each = min(2, len(lowers) // len(uppers))
    slots = [u for u in uppers for _ in range(each)]
    slots += [rng.choice(uppers) for _ in range(len(lowers) - len(slots))]
    rng.shuffle(slots)
    for x, u in zip(lowers, slots):
      parent[x], depth[x] = u, d
  return parent, depth


def make_world(
    rng: random.Random,
    names: list[str],
    level_sizes: tuple[int, ...],
    num_holdouts: int,
    relation_prob: float,
) -> World:
  """A random world over `names`, one per category (sum(level_sizes))."""
  if len(names) != sum(level_sizes):
    raise ValueError(f'Need {sum(level_sizes)} names, got {len(names)}.')
  parent, depth = _tree(rng, names, level_sizes)
  leaves = [x for x in names if depth[x] == len(level_sizes) - 1]
  holdouts = frozenset(rng.sample(leaves, num_holdouts))
  world = World(parent, depth, {x: [] for x in names}, [], holdouts)
  used = {a: set() for a in ATTRIBUTES}
  for x in names:  # Parents come before their children.
    if x in holdouts:
      continue
    taken = {p.attribute for a in world.lineage(x) for p in world.properties[a]}
    free = [a for a in ATTRIBUTES if a not in taken]
    for attribute in rng.sample(free, min(len(free), rng.choice((1, 2)))):
      values = ATTRIBUTES[attribute]
      fresh = [v for v in values if v not in used[attribute]]
      phrase = rng.choice(fresh or values)
      used[attribute].add(phrase)
      world.properties[x].append(Property(attribute, phrase))
  trained = [x for x in names if x not in holdouts]
  for x in trained:
    if rng.random() >= relation_prob:
      continue
    verb = rng.choice(RELATIONS)[0]
    line = set(world.lineage(x))
    objects = [y for y in trained
               if y not in line and x not in world.lineage(y)
               and not world.related(x, verb, y)]
    if objects:
      world.relations.append(Relation(x, verb, rng.choice(objects)))
  return world
