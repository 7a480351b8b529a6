"""The world behind the semantic-structure dataset: a category tree with facts.

Categories are nonsense words in a forest a few levels deep. Each category that
is not held out owns 1-6 properties, each a nonsense word in an English frame
("are slorby", "have vrelk", "can skorb"), and maybe a relation, a nonsense
verb, to another category ("femp glorp troff"); both are inherited by every
descendant. Every property word belongs to one category, so inherited facts
never contradict. Relations also hold for the descendants of their object: if
femp glorp troff, femp glorp every kind of troff.

Held-out categories are leaves that own nothing and are no relation's object;
only their parent is ever stated about them.
"""

import dataclasses
import random
from typing import Callable, Iterator

# Property frames: a nonsense adjective, noun or verb after English words.
FRAMES = ('are {}', 'have {}', 'can {}')


def participle(verb: str) -> str:
  """The passive participle of a nonsense verb: 'glorp' -> 'glorped'."""
  return verb + ('d' if verb.endswith('e') else 'ed')


@dataclasses.dataclass(frozen=True)
class Property:
  frame: str  # One of FRAMES.
  word: str

  @property
  def phrase(self) -> str:
    return self.frame.format(self.word)


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

  def descendants(self, x: str) -> set[str]:
    """The categories below `x` (`x` excluded)."""
    return {c for c in self.parent if c != x and x in self.lineage(c)}

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
  return f'prop:{x}:{p.word}'


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
    verbs: list[str],
    new_word: Callable[[], str],
    level_sizes: tuple[int, ...],
    num_holdouts: int,
    relation_prob: float,
    max_properties: int,
) -> World:
  """A random world over `names`, one per category (sum(level_sizes)).

  Args:
    rng: the world's randomness.
    names: the categories, roots first.
    verbs: the relations' nonsense verbs.
    new_word: a fresh nonsense word per call, for properties.
    level_sizes: categories per tree level.
    num_holdouts: leaves that own nothing.
    relation_prob: chance that a category owns a relation.
    max_properties: properties per category are uniform in [1, this].
  """
  if len(names) != sum(level_sizes):
    raise ValueError(f'Need {sum(level_sizes)} names, got {len(names)}.')
  parent, depth = _tree(rng, names, level_sizes)
  leaves = [x for x in names if depth[x] == len(level_sizes) - 1]
  holdouts = frozenset(rng.sample(leaves, num_holdouts))
  world = World(parent, depth, {x: [] for x in names}, [], holdouts)
  trained = [x for x in names if x not in holdouts]
  for x in trained:
    world.properties[x] = [Property(rng.choice(FRAMES), new_word())
                           for _ in range(rng.randint(1, max_properties))]
  for x in trained:
    if rng.random() >= relation_prob:
      continue
    verb = rng.choice(verbs)
    line = set(world.lineage(x))
    objects = [y for y in trained
               if y not in line and x not in world.lineage(y)
               and not world.related(x, verb, y)]
    if objects:
      world.relations.append(Relation(x, verb, rng.choice(objects)))
  return world
