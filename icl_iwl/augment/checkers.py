"""Knowledge-base checkers: which facts of a dataset a sentence states.

Every synthetic dataset is a pure function of its config, so its knowledge
base is rebuilt here from the same config (`reversals.make_facts(config)`,
...) and a generated sentence is parsed for statements about its entities.
Each statement found is a `Claim`:

  true          the knowledge base entails it;
  false         the knowledge base contradicts it;
  undetermined  it relates entities the knowledge base does not relate
                (terms of two different syllogisms, two facts' entities).

What each checker parses, and its claim kinds:

  reversals       "x are <comparative> than y", "Compared with y, x are
                  <comparative>"; kind 'forward' (x is the fact's first
                  entity) or 'reverse'; 'other relation' (a comparative of
                  another relation between the fact's entities: undetermined)
                  and 'unrelated' (entities of two facts: undetermined).
  reversal_curse  a person's full name and the distinctive part of a
                  description ("<deed> <where>") in one sentence: true if
                  the description is that person's, false if another's; kind
                  '<group>, name first' or '<group>, description first'.
  syllogisms      "All/Every/Some/No x are y" over an item's terms, decided
                  by `syllogisms.truth` under that item's premises; kind
                  'premise pair' or 'conclusion pair' (the unstated pair),
                  'unrelated terms' (two items' terms: undetermined).
  semantic        inclusion ("x are a kind of y", "Kinds of y include x",
                  "One kind of y is x"),
                  properties ("x are/have/can w", "Those that ... w include
                  x"; the frame is not checked, the nonsense word decides)
                  and relations ("x <verb> y", "y are <verb>ed by x"),
                  checked against the world with inheritance, closed-world
                  (a category has exactly the properties and relations the
                  world gives it); kind 'isa' / 'property' / 'relation', with
                  ' reversed' for the reversed forms and ' inherited' for a
                  true fact that was never stated (a deduction).

Register a checker for another dataset with `@CHECKERS.register(name)` on a
factory `(builder config) -> Checker`.
"""

import dataclasses
import re
from typing import Iterable, Protocol

from icl_iwl import registry
from icl_iwl.data.builders import reversal_curse
from icl_iwl.data.builders import reversals
from icl_iwl.data.builders import semantic
from icl_iwl.data.builders import semantic_world as sw
from icl_iwl.data.builders import syllogisms

TRUE, FALSE, UNDETERMINED = 'true', 'false', 'undetermined'


@dataclasses.dataclass(frozen=True)
class Claim:
  label: str  # TRUE, FALSE or UNDETERMINED.
  kind: str
  fact: str = ''  # The id of the fact it is about, if any.


class Checker(Protocol):

  def claims(self, sentence: str) -> list[Claim]:
    """The statements about the knowledge base in `sentence`."""


CHECKERS: registry.Registry = registry.Registry('audit checker')


def for_dataset(name: str, config: str) -> Checker | None:
  """The checker of registered dataset `name` at builder config `config`, or
  None if it has none (imported datasets, ictrain)."""
  if name not in CHECKERS:
    return None
  # pylint: disable=g-import-not-at-top
  from icl_iwl.data import builders
  configs = {c.name: c for c in builders.DATASETS.get(name).BUILDER_CONFIGS}
  return CHECKERS.get(name)(configs[config])


def _alternation(options: Iterable[str]) -> str:
  """A regex group body matching any of `options`, longest first."""
  return '|'.join(re.escape(o) for o in sorted(set(options), key=len,
                                                reverse=True))


@CHECKERS.register('reversals')
class Reversals:
  """Comparisons between the entities of the facts."""

  def __init__(self, config: reversals.ReversalsConfig):
    self.facts = reversals.make_facts(config)
    self.fact_of = {e: f for f in self.facts for e in (f.a, f.b)}
    entity = _alternation(self.fact_of)
    comparative = _alternation(w for pair in reversals.RELATIONS for w in pair)
    degree = r'(?:(?:much|far|a\s+bit|slightly|even)\s+)?'
    # Groups: x, comparative, y.
    self._plain = re.compile(
        rf'\b({entity})\s+(?:are|is)\s+{degree}({comparative})\s+than\s+'
        rf'(?:the\s+)?({entity})\b', re.IGNORECASE)
    # Groups: y, x, comparative.
    self._compared = re.compile(
        rf'\bcompared\s+(?:with|to)\s+(?:the\s+)?({entity}),\s*(?:the\s+)?'
        rf'({entity})\s+are\s+{degree}({comparative})\b', re.IGNORECASE)

  def claims(self, sentence: str) -> list[Claim]:
    found = [m.groups() for m in self._plain.finditer(sentence)]
    found += [(x, c, y) for y, x, c in
              (m.groups() for m in self._compared.finditer(sentence))]
    claims = []
    for x, comparative, y in found:
      x, y = x.lower(), y.lower()
      comparative = ' '.join(comparative.lower().split())
      fact = self.fact_of[x]
      if x == y:
        continue
      if self.fact_of[y] is not fact:
        claims.append(Claim(UNDETERMINED, 'unrelated'))
      elif comparative not in (fact.stated, fact.converse):
        claims.append(Claim(UNDETERMINED, 'other relation', fact.id))
      else:
        forward = x == fact.a
        true = (comparative == fact.stated) == forward
        claims.append(Claim(TRUE if true else FALSE,
                            'forward' if forward else 'reverse', fact.id))
    return claims


@CHECKERS.register('reversal_curse')
class ReversalCurse:
  """Names and descriptions of the invented people."""

  def __init__(self, config: reversal_curse.ReversalCurseConfig):
    people = reversal_curse.make_people(config)
    self.by_name = {p.name.lower(): p for p in people}
    # 'the <adjective> <deed> <where>': deed and where identify the person.
    self.by_core = {p.description.split(' ', 2)[2].lower(): p for p in people}
    self._names = re.compile(rf'\b({_alternation(self.by_name)})\b',
                             re.IGNORECASE)
    self._cores = re.compile(rf'\b({_alternation(self.by_core)})\b',
                             re.IGNORECASE)

  def claims(self, sentence: str) -> list[Claim]:
    named = [(m.start(), self.by_name[m.group(1).lower()])
             for m in self._names.finditer(sentence)]
    described = [(m.start(), self.by_core[' '.join(m.group(1).lower().split())])
                 for m in self._cores.finditer(sentence)]
    claims = []
    for at, person in described if named else []:
      name_at, named_person = min(named, key=lambda n: abs(n[0] - at))
      order = 'name first' if name_at < at else 'description first'
      claims.append(Claim(TRUE if named_person is person else FALSE,
                          f'{person.group}, {order}', person.id))
    return claims


@CHECKERS.register('syllogisms')
class Syllogisms:
  """Quantified statements over the terms of the items."""

  _QUANTIFIER = {'all': 'all', 'every': 'all', 'each': 'all', 'some': 'some',
                 'no': 'no'}

  def __init__(self, config: syllogisms.SyllogismsConfig):
    self.term = {}  # word -> (item, symbol)
    for item in syllogisms.make_items(config):
      self.term.update((w, (item, s)) for s, w in item.names.items())
    term = _alternation(self.term)
    self._statement = re.compile(
        rf'(?<!not )\b(all|every|each|some|no)\s+({term})s?\s+(?:are|is)\s+'
        rf'(?:an?\s+)?({term})s?\b', re.IGNORECASE)

  def claims(self, sentence: str) -> list[Claim]:
    claims = []
    for quantifier, x, y in (m.groups() for m in
                             self._statement.finditer(sentence)):
      (item, sx), (other, sy) = self.term[x.lower()], self.term[y.lower()]
      if sx == sy and item is other:
        continue
      if item is not other:
        claims.append(Claim(UNDETERMINED, 'unrelated terms'))
        continue
      statement = syllogisms.Statement(self._QUANTIFIER[quantifier.lower()],
                                       sx, sy)
      pair = 'conclusion pair' if {sx, sy} == {'B', 'C'} else 'premise pair'
      claims.append(Claim(syllogisms.truth(item.premises, statement), pair,
                          item.id))
    return claims


_ISA_CUES = frozenset({
    'kind', 'kinds', 'type', 'types', 'sort', 'sorts', 'belong', 'belongs',
    'member', 'members', 'subtype', 'subtypes', 'class', 'classify',
    'classified', 'category', 'variety', 'form', 'forms'})
_BARE_ISA = frozenset({'are', 'is', 'a', 'an', 'the', 'all'})
_INCLUDE = frozenset({'include', 'includes', 'including', 'such'})
# Before the parent in a reversed inclusion: "One kind of y is x".
_KIND_BEFORE = frozenset({'kind', 'kinds', 'type', 'types', 'sort', 'sorts',
                          'among'})
_REACH = 8  # Most words between the parts of one statement.


@CHECKERS.register('semantic')
class Semantic:
  """Inclusion, properties and relations of the category world."""

  def __init__(self, config: semantic.SemanticConfig):
    self.world = w = semantic.make_world(config)[0]
    self.owner = {p.word: (x, p) for x, ps in w.properties.items() for p in ps}
    self.verb_form = {}
    for r in w.relations:
      v = r.verb
      self.verb_form.update({v: (v, False), v + 's': (v, False),
                             v + 'es': (v, False),
                             sw.participle(v): (v, True)})

  def _category(self, word: str) -> str | None:
    if word in self.world.parent:
      return word
    if word.endswith('s') and word[:-1] in self.world.parent:
      return word[:-1]
    return None

  def claims(self, sentence: str) -> list[Claim]:
    toks = [t.lower() for t in re.findall(r'[A-Za-z]+', sentence)]
    cats = [(i, c) for i, t in enumerate(toks)
            if (c := self._category(t)) is not None]

    def before(i: int) -> str | None:
      near = [c for j, c in cats if i - _REACH <= j < i]
      return near[-1] if near else None

    def after(i: int) -> str | None:
      near = [c for j, c in cats if i < j <= i + _REACH]
      return near[0] if near else None

    claims = []
    for (i, x), (j, y) in zip(cats, cats[1:]):  # Inclusion: x ... y.
      between = set(toks[i + 1:j])
      if x == y or j - i - 1 > _REACH:
        continue
      if between & _INCLUDE or (set(toks[max(0, i - 3):i]) & _KIND_BEFORE
                                and between <= _BARE_ISA):
        claims.append(self._isa(y, x, reversed_=True))
      elif between & _ISA_CUES or (between <= _BARE_ISA
                                   and between & {'are', 'is'}):
        claims.append(self._isa(x, y, reversed_=False))
    for i, t in enumerate(toks):
      if t in self.owner:  # Properties: x are w; those that are w include x.
        k = next((k for k in range(i + 1, min(i + 4, len(toks)))
                  if toks[k] in _INCLUDE), None)
        x = after(k) if k is not None else before(i)
        if x is not None:
          claims.append(self._property(x, t, reversed_=k is not None))
      elif t in self.verb_form:  # Relations: x v y; y are v-ed by x.
        verb, passive = self.verb_form[t]
        if passive and i + 1 < len(toks) and toks[i + 1] == 'by':
          x, y = after(i + 1), before(i)
        elif not passive:
          x, y = before(i), after(i)
        else:
          continue
        if x is not None and y is not None:
          claims.append(self._relation(x, verb, y, reversed_=passive))
    return claims

  @staticmethod
  def _kind(kind: str, reversed_: bool, inherited: bool) -> str:
    return (kind + (' reversed' if reversed_ else '')
            + (' inherited' if inherited else ''))

  def _isa(self, x: str, y: str, reversed_: bool) -> Claim:
    ancestors = list(self.world.ancestors(x))
    true = y in ancestors
    return Claim(TRUE if true else FALSE,
                 self._kind('isa', reversed_, true and y != ancestors[0]),
                 sw.isa_id(x))

  def _property(self, x: str, word: str, reversed_: bool) -> Claim:
    owner, prop = self.owner[word]
    true = owner in self.world.lineage(x)
    return Claim(TRUE if true else FALSE,
                 self._kind('property', reversed_, true and owner != x),
                 sw.property_id(owner, prop))

  def _relation(self, x: str, verb: str, y: str, reversed_: bool) -> Claim:
    xs, ys = self.world.lineage(x), self.world.lineage(y)
    held = [r for r in self.world.relations
            if r.verb == verb and r.subject in xs and r.object in ys]
    stated = sw.Relation(x, verb, y) in held
    return Claim(TRUE if held else FALSE,
                 self._kind('relation', reversed_, bool(held) and not stated),
                 sw.relation_id(held[0]) if held else '')
