"""IC-Train task: translating short English phrases into an invented language.

Each English content word maps to one invented word; "the" is dropped; the
invented language puts adjectives after their noun and the verb last:

    the red dog sees the small cat  ->  <dog> <red> <cat> <small> <sees>

Similar inputs share words, so their outputs share the same words.

Probes (`num_choices` outputs of the same length; wrong ones swap one word's
translation for another word of the same class, or break a word-order rule).
The words of the right and the wrong outputs appear in the context equally
often, so preferring or avoiding words seen in context gains nothing:
  iwl   a new phrase of known words; the context shares no word with any
        choice.
  icl   a phrase with one novel English word, whose invented word appears
        only in the context; never in training. The wrong choices put other
        words (known or novel) in its place, and the context shows each
        choice's word once, each in another phrase.
  copy  a known-word phrase; the context holds a training phrase that differs
        in one word, and that phrase's output is one of the wrong choices; the
        other wrong choices differ from the answer in that word or in order,
        and the rest of the context shares no word with any choice.
"""

import dataclasses
import random
from typing import Sequence

from icl_iwl.data import schema
from icl_iwl.data.builders import base

TASK = 'translation'
NOUNS = ('dog', 'cat', 'bird', 'horse', 'fish', 'farmer', 'child', 'teacher',
         'king', 'sailor', 'baker', 'wolf', 'goat', 'lion', 'queen', 'doctor',
         'mouse', 'frog', 'bear', 'girl', 'boy', 'tiger', 'rabbit', 'owl')
ADJECTIVES = ('red', 'small', 'big', 'old', 'young', 'happy', 'sad', 'tall',
              'quiet', 'brave', 'lazy', 'clever', 'angry', 'hungry')
VERBS = ('sees', 'follows', 'helps', 'chases', 'finds', 'likes', 'calls',
         'feeds', 'watches', 'visits', 'pushes', 'carries')
# English words that never occur in training; their translations are only
# ever shown in context, by the `icl` probes.
NOVEL = {'noun': ('fox', 'duck', 'judge', 'pilot', 'snake', 'monkey'),
         'adjective': ('green', 'tiny', 'sleepy', 'proud'),
         'verb': ('greets', 'hears', 'paints', 'teaches')}
KNOWN = {'noun': NOUNS, 'adjective': ADJECTIVES, 'verb': VERBS}
_SLOT_CLASS = ('adjective', 'noun', 'verb', 'adjective', 'noun')


@dataclasses.dataclass(frozen=True)
class Phrase:
  """`the [adj1] noun1 [verb the [adj2] noun2]` as 5 slots, None if absent."""

  slots: tuple[str | None, ...]

  @property
  def english(self) -> str:
    a1, n1, v, a2, n2 = self.slots
    np1 = ' '.join(w for w in ('the', a1, n1) if w)
    if v is None:
      return np1
    return f'{np1} {v} ' + ' '.join(w for w in ('the', a2, n2) if w)

  @property
  def words(self) -> list[str]:
    return [w for w in self.slots if w]

  def replace(self, i: int, word: str) -> 'Phrase':
    return Phrase(self.slots[:i] + (word,) + self.slots[i + 1:])


def translate(
    phrase: Phrase, lexicon: dict[str, str], rules: bool = True
) -> str:
  """The invented-language output; `rules=False` keeps English word order."""
  a1, n1, v, a2, n2 = (lexicon.get(w) if w else None for w in phrase.slots)
  order = (n1, a1, n2, a2, v) if rules else (a1, n1, v, a2, n2)
  return ' '.join(w for w in order if w)


def _facts(phrase: Phrase, prefix: str = 'lex') -> list[str]:
  facts = [f'{prefix}:{w}' for w in phrase.words]
  if phrase.slots[0] or phrase.slots[3]:
    facts.append('rule:adjective_after_noun')
  if phrase.slots[2]:
    facts.append('rule:verb_final')
  return facts


class TranslationTask:
  """The translation pool and its probes, from one seeded lexicon."""

  def __init__(self, rng: random.Random, invented: Sequence[str],
               num_choices: int, num_context: int):
    english = [w for c in ('noun', 'adjective', 'verb')
               for w in KNOWN[c] + NOVEL[c]]
    if len(invented) < len(english):
      raise ValueError(f'Need {len(english)} invented words.')
    self.lexicon = dict(zip(english, invented))
    self._english = {v: k for k, v in self.lexicon.items()}
    self.rng, self.num_choices, self.num_context = rng, num_choices, num_context
    self.pool: list[tuple[Phrase, str]] = []
    self._seen: set[Phrase] = set()

  def _phrase(self, sentence: bool = True, adjectives: bool = False) -> Phrase:
    """A fresh phrase of known words, distinct words, never drawn before."""
    rng = self.rng
    while True:
      n1, n2 = rng.sample(NOUNS, 2)
      a1, a2 = rng.sample(ADJECTIVES, 2)
      if not adjectives:
        a1 = a1 if rng.random() < 0.5 else None
        a2 = a2 if rng.random() < 0.5 else None
      verb = rng.choice(VERBS)
      phrase = Phrase((a1, n1, verb, a2, n2) if sentence
                      else (a1, n1, None, None, None))
      if phrase not in self._seen:
        self._seen.add(phrase)
        return phrase

  def make_pool(self, n: int) -> list[base.Record]:
    """`n` training pairs: one in 20 a noun phrase, the rest sentences."""
    num_noun_phrases = min(n // 20, len(NOUNS) * (len(ADJECTIVES) + 1) // 2)
    for i in range(n):
      phrase = self._phrase(sentence=i >= num_noun_phrases)
      self.pool.append((phrase, translate(phrase, self.lexicon)))
    self.rng.shuffle(self.pool)
    return [{'id': f'{TASK}-{i:05d}', 'input': p.english, 'output': out,
             'task': TASK, 'facts': _facts(p)}
            for i, (p, out) in enumerate(self.pool)]

  def _swap(self, phrase: Phrase, avoid: Sequence[int] = ()) -> str:
    """The output with one word's translation replaced by a same-class word."""
    i = self.rng.choice(
        [i for i, w in enumerate(phrase.slots) if w and i not in avoid])
    cls = _SLOT_CLASS[i]
    other = self.rng.choice([w for w in KNOWN[cls] if w not in phrase.words])
    return translate(phrase.replace(i, other), self.lexicon)

  def _wrong(self, phrase: Phrase, fixed: Sequence[str],
             avoid: Sequence[int] = ()) -> list[str]:
    """`num_choices - 1` distinct wrong outputs, starting with `fixed`."""
    correct = translate(phrase, self.lexicon)
    wrong = list(dict.fromkeys(fixed))
    candidates = [translate(phrase, self.lexicon, rules=False)]
    while len(wrong) < self.num_choices - 1:
      c = candidates.pop() if candidates else self._swap(phrase, avoid)
      if c != correct and c not in wrong:
        wrong.append(c)
    return wrong

  def _english_words(self, outputs: Sequence[str]) -> set[str]:
    """The English words behind invented outputs."""
    return {self._english[w] for out in outputs for w in out.split()}

  def _unrelated_context(self, k: int,
                         avoid: set[str]) -> list[tuple[str, str]]:
    """k distinct training pairs that use no word of `avoid`."""
    chosen: list[tuple[Phrase, str]] = []
    for _ in range(1000 * k):
      if len(chosen) == k:
        break
      pair = self.rng.choice(self.pool)
      if avoid.isdisjoint(pair[0].words) and pair not in chosen:
        chosen.append(pair)
    if len(chosen) < k:
      raise ValueError(
          f'The pool has too few phrases without {sorted(avoid)}.')
    return [(p.english, out) for p, out in chosen]

  def _probe(self, kind: str, i: int, phrase: Phrase,
             context: list[tuple[str, str]], wrong: list[str],
             facts: list[str]) -> base.Record:
    self.rng.shuffle(context)
    inputs, outputs = [c[0] for c in context], [c[1] for c in context]
    return base.multiple_choice(
        self.rng, schema.render_answer(translate(phrase, self.lexicon)),
        [schema.render_answer(w) for w in wrong],
        id=f'{TASK}-{kind}-{i:04d}', kind=kind, task=TASK, facts=facts,
        context_inputs=inputs, context_outputs=outputs, input=phrase.english,
        prompt=schema.render_context_prompt(inputs, outputs, phrase.english))

  def _context_avoiding(self, phrase: Phrase, wrong: list[str], k: int
                        ) -> list[tuple[str, str]]:
    """k training pairs that share no word with any choice."""
    outputs = [translate(phrase, self.lexicon), *wrong]
    return self._unrelated_context(k, self._english_words(outputs))

  def iwl(self, i: int) -> base.Record:
    """A new phrase of known words; the context shares no word with it."""
    phrase = self._phrase(adjectives=True)
    wrong = self._wrong(phrase, [])
    return self._probe('iwl', i, phrase,
                       self._context_avoiding(phrase, wrong, self.num_context),
                       wrong, _facts(phrase))

  def icl(self, i: int) -> base.Record:
    """A phrase with a novel word, shown translated only in the context."""
    if self.num_context < self.num_choices:
      raise ValueError('icl probes show one context example per choice.')
    phrase = self._phrase(adjectives=True)
    slot = self.rng.choice(range(5))
    cls = _SLOT_CLASS[slot]
    novel = self.rng.choice(NOVEL[cls])
    phrase = phrase.replace(slot, novel)
    # In the novel word's place: a trained word, another novel one, others.
    known = self.rng.choice([w for w in KNOWN[cls] if w not in phrase.words])
    other_novel = self.rng.choice([w for w in NOVEL[cls] if w != novel])
    rest = [w for w in KNOWN[cls] + NOVEL[cls]
            if w not in phrase.words and w not in (known, other_novel)]
    swaps = ([known, other_novel]
             + self.rng.sample(rest, len(rest)))[:self.num_choices - 1]
    shown = []  # One other phrase per choice, with its word in the slot.
    for word in [novel] + swaps:
      while True:
        other = self._phrase(adjectives=True)
        if set(other.words).isdisjoint(phrase.words + swaps):
          break
      other = other.replace(slot, word)
      shown.append((other.english, translate(other, self.lexicon)))
    wrong = [translate(phrase.replace(slot, w), self.lexicon) for w in swaps]
    context = shown + self._unrelated_context(
        self.num_context - len(shown), set(phrase.words + swaps))
    facts = [f'novel:{novel}'] + [
        f for f in _facts(phrase) if f != f'lex:{novel}']
    return self._probe('icl', i, phrase, context, wrong, facts)

  def copy(self, i: int) -> base.Record:
    """A phrase whose context holds a training phrase one word away."""
    sentences = [(p, out) for p, out in self.pool if p.slots[2]]
    while True:
      near, near_out = self.rng.choice(sentences)
      slot = self.rng.choice([j for j, w in enumerate(near.slots) if w])
      cls = _SLOT_CLASS[slot]
      word = self.rng.choice([w for w in KNOWN[cls] if w not in near.words])
      phrase = near.replace(slot, word)
      if phrase not in self._seen:
        self._seen.add(phrase)
        break
    # Other wrong choices: the rule-broken order, or another word in the slot.
    wrong = self._wrong(phrase, [near_out],
                        avoid=[j for j in range(5) if j != slot])
    context = [(near.english, near_out)] + self._context_avoiding(
        phrase, wrong, self.num_context - 1)
    return self._probe('copy', i, phrase, context, wrong, _facts(phrase))
