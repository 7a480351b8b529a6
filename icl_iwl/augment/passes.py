"""Augmentation passes: what is asked of the generator, and what is kept.

A pass turns the training documents into tasks (one completion each, or none
for a pass that only rewrites the data), and each completion into the texts
that become new training documents:

  rephrase   local: each unit in other words;
  reverse    local: each unit with its relations stated the other way round;
  infer      local: what follows from each unit;
  global     a random subsample of the training documents that fits
             `context_budget` tokens in context, then one of them, asking
             for inferences that link it to the rest (every document is
             asked in the context that holds it, so the context is shared);
  sentences  no generation: each document split into its sentences
             (`sentence_split='independent'`) or its prefixes
             (`'cumulative'`).

Local passes work on units: whole documents (`unit='document'`), their
sentences (`'sentence'`, or prefixes if `sentence_split='cumulative'`), or
both; a text that occurs in several documents (a repeated fact sentence) is
one unit whose provenance lists every document. Each generating pass
completes the template of its name in `config.augment.templates`: the text
before `{text}` is the shared prefix (few-shot examples; for `global`, the
documents at `{documents}`), the unit and the rest of the template the
prompt.

Add a pass by registering it, as with samplers:

    from icl_iwl.augment import passes

    # A local pass: a template named like it does the rest.
    passes.PASSES.register('negate')(passes.Local)
    # config.augment.templates.negate = '...Statement: {text}\\nNegated:'

    @passes.PASSES.register('questions')
    class Questions(passes.Pass):
      template = 'questions'
      def tasks(self, targets, documents, count_tokens): ...
      def outputs(self, task, completion): ...

and naming it in `config.augment.passes` (comma-separated).
"""

import abc
import dataclasses
import hashlib
import random
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from icl_iwl import registry
from icl_iwl.augment import generate
from icl_iwl.augment import split

Record = Mapping[str, Any]
UNITS = ('document', 'sentence', 'both')
TEXT, DOCUMENTS = '{text}', '{documents}'
_ENDS = ('.', '!', '?')

PASSES: registry.Registry = registry.Registry('augmentation pass')


@dataclasses.dataclass(frozen=True)
class Unit:
  """A text to augment and the training documents it comes from."""

  id: str  # The first document's id, '#s<i>' for sentence i, '#p<i>' prefix.
  text: str
  sources: tuple[str, ...]  # Ids of the documents that contain it.
  facts: tuple[str, ...]  # Their facts.


@dataclasses.dataclass(frozen=True)
class Task:
  """One completion of a pass (or none, when `request` is None)."""

  key: str  # '<pass>/<template>/<unit id>/<sample>': the journal key.
  pass_name: str
  template: str  # '-' for a pass without generation.
  sample: int
  unit: Unit
  request: generate.Request | None


def units(documents: Sequence[Record], unit: str, mode: str) -> list[Unit]:
  """The units of `documents` (see the module doc), each text once."""
  if unit not in UNITS:
    raise ValueError(f'Unknown unit {unit!r}; use one of {UNITS}.')
  found: dict[str, tuple[str, list[str], list[str]]] = {}  # text -> id, ...
  for doc in documents:
    pieces = [(doc['id'], doc['text'])] if unit != 'sentence' else []
    if unit != 'document':
      tag = 's' if mode == 'independent' else 'p'
      pieces += [(f'{doc["id"]}#{tag}{i}', text)
                 for i, text in enumerate(split.pieces(doc['text'], mode))]
    for unit_id, text in pieces:
      _, sources, facts = found.setdefault(text, (unit_id, [], []))
      if doc['id'] not in sources:
        sources.append(doc['id'])
      facts += [f for f in doc.get('facts', ()) if f not in facts]
  return [Unit(i, text, tuple(s), tuple(f))
          for text, (i, s, f) in found.items()]


def request_seed(seed: int, key: str) -> int:
  """A request's sampling seed: the run's seed and the task, not the batch."""
  digest = hashlib.sha256(f'{seed}:{key}'.encode()).digest()
  return int.from_bytes(digest[:4], 'big') & 0x7FFFFFFF


def text_key(text: str) -> str:
  """What two texts share when they are the same text (case and whitespace
  aside): the key of deduplication."""
  return ' '.join(text.lower().split())


def clean(completion: str) -> str:
  """The complete sentences of a completion (a cut last one is dropped)."""
  kept = [s for s in split.sentences(completion.strip()) if s.endswith(_ENDS)]
  return ' '.join(kept)


def template_halves(template: str) -> tuple[str, str]:
  """(shared prefix, rest) of a template, split at its one `{text}`."""
  if template.count(TEXT) != 1:
    raise ValueError(f'needs {TEXT} exactly once')
  before, after = template.split(TEXT)
  return before, after


class Pass(abc.ABC):
  """One way of making new training documents from the old ones.

  Attributes:
    template: the name of its template in `config.augment.templates`, ''
      for a pass that generates nothing.
  """

  template: str = ''

  def __init__(self, name: str, settings: ml_collections.ConfigDict):
    self.name, self.settings = name, settings

  @classmethod
  def check(cls, name: str, settings: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming what in `settings` this pass cannot use."""
    del name
    if cls.template and cls.template not in settings.templates:
      raise ValueError(f'no template {cls.template!r} in augment.templates')

  @abc.abstractmethod
  def tasks(self, targets: Sequence[Record], documents: Sequence[Record],
            count_tokens: Callable[[str], int]) -> list[Task]:
    """The tasks for the documents `targets` (of all the `documents`), in
    the order to run them: tasks that share a prefix are adjacent."""

  def outputs(self, task: Task, completion: str | None) -> list[str]:
    """The new documents a completion gives: its complete sentences, unless
    they only repeat the unit."""
    text = clean(completion or '')
    if not text or text_key(text) == text_key(task.unit.text):
      return []
    return [text]

  def _task(self, unit: Unit, sample: int, prefix: str | None = None,
            prompt: str = '') -> Task:
    key = f'{self.name}/{self.template or "-"}/{unit.id}/{sample}'
    request = None
    if prefix is not None:
      request = generate.Request(prefix, prompt,
                                 request_seed(self.settings.seed, key))
    return Task(key, self.name, self.template or '-', sample, unit, request)


@PASSES.register('infer')
@PASSES.register('reverse')
@PASSES.register('rephrase')
class Local(Pass):
  """Each unit completed by the few-shot template of the pass's name."""

  def __init__(self, name: str, settings: ml_collections.ConfigDict):
    super().__init__(name, settings)
    self.template = name

  @classmethod
  def check(cls, name: str, settings: ml_collections.ConfigDict) -> None:
    if name not in settings.templates:
      raise ValueError(f'no template {name!r} in augment.templates')
    template = settings.templates[name]
    try:
      template_halves(template)
    except ValueError as e:
      raise ValueError(f'augment.templates.{name} {e}') from None
    if DOCUMENTS in template:
      raise ValueError(f'augment.templates.{name}: {DOCUMENTS} is only for '
                       'the global pass')

  def tasks(self, targets, documents, count_tokens):
    del documents, count_tokens
    s = self.settings
    prefix, after = template_halves(s.templates[self.template])
    return [self._task(u, k, prefix, u.text + after)
            for u in units(targets, s.unit, s.sentence_split)
            for k in range(s.samples)]


@PASSES.register('global')
class Global(Pass):
  """Inferences from one document and the documents in context with it."""

  template = 'global'

  @classmethod
  def check(cls, name: str, settings: ml_collections.ConfigDict) -> None:
    super().check(name, settings)
    template = settings.templates[cls.template]
    try:
      before, _ = template_halves(template)
    except ValueError as e:
      raise ValueError(f'augment.templates.global {e}') from None
    if before.count(DOCUMENTS) != 1:
      raise ValueError(f'augment.templates.global needs {DOCUMENTS} once, '
                       f'before {TEXT}')

  def contexts(self, documents: Sequence[Record],
               count_tokens: Callable[[str], int]) -> list[list[Record]]:
    """The documents shuffled (seeded) and cut into consecutive groups of at
    most `context_budget` tokens (a longer document is a group alone)."""
    docs = list(documents)
    random.Random(f'augment-global:{self.settings.seed}').shuffle(docs)
    groups: list[list[Record]] = []
    used = self.settings.context_budget + 1
    for doc in docs:
      n = count_tokens(doc['text'] + '\n')
      if used + n > self.settings.context_budget:
        groups.append([])
        used = 0
      groups[-1].append(doc)
      used += n
    return groups

  def tasks(self, targets, documents, count_tokens):
    before, after = template_halves(self.settings.templates[self.template])
    wanted = {d['id'] for d in targets}
    tasks = []
    for group in self.contexts(documents, count_tokens):
      prefix = before.replace(DOCUMENTS, '\n'.join(d['text'] for d in group))
      for doc in group:
        if doc['id'] in wanted:
          unit = Unit(doc['id'], doc['text'], (doc['id'],),
                      tuple(doc.get('facts', ())))
          tasks += [self._task(unit, k, prefix, unit.text + after)
                    for k in range(self.settings.samples)]
    return tasks


@PASSES.register('sentences')
class Sentences(Pass):
  """Each document's sentences (or prefixes) as documents; no generation."""

  def tasks(self, targets, documents, count_tokens):
    del documents, count_tokens
    return [self._task(u, 0)
            for u in units(targets, 'sentence', self.settings.sentence_split)]

  def outputs(self, task: Task, completion: str | None) -> list[str]:
    del completion
    return [task.unit.text]


def check(settings: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first field of `config.augment` that the
  passes cannot use."""
  names = [n.strip() for n in settings.passes.split(',') if n.strip()]
  if not names:
    raise ValueError('augment.passes names no pass')
  for name in names:
    try:
      the_pass = PASSES.get(name)
    except registry.UnknownNameError as e:
      raise ValueError(f'augment.passes: {e}') from None
    the_pass.check(name, settings)
  if settings.unit not in UNITS:
    raise ValueError(f'augment.unit {settings.unit!r} is not one of {UNITS}')
  if settings.sentence_split not in split.MODES:
    raise ValueError(f'augment.sentence_split {settings.sentence_split!r} is '
                     f'not one of {split.MODES}')
